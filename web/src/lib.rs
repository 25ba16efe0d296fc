//! The browser client, served.
//!
//! # Layout
//! - `app/`: the client, in TypeScript; it calls auth and chat with
//!   gRPC-Web through Connect-ES, with the types `buf generate` writes to
//!   `gen/ts`.
//! - `dist/`: the bundle esbuild makes of it (`npm run build`), checked in
//!   so that running the system needs no Node.js; CI rebuilds it and fails
//!   on any difference.
//! - [`WebClient`]: serves `dist/`, embedded in the binary, and
//!   `/config.json`, which tells the page where the services are.
//!
//! Every response carries a Content-Security-Policy that allows scripts
//! and styles from this origin only, and calls to the two services only:
//! should text ever reach the page as HTML, no script in it would run.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use tokio::net::TcpListener;

const INDEX: &[u8] = include_bytes!("../dist/index.html");
const APP: &[u8] = include_bytes!("../dist/app.js");
const STYLE: &[u8] = include_bytes!("../dist/style.css");

/// Where the page is served, and where it finds the services.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Auth's gRPC port as the browser reaches it (gRPC-Web).
    pub auth_url: String,
    /// Chat's gRPC port as the browser reaches it (gRPC-Web).
    pub chat_url: String,
    /// TLS for the page (`WEB_TLS_CERT_FILE`, `WEB_TLS_KEY_FILE`); a page
    /// served in plaintext can be pointed at another auth by anyone on the
    /// way.
    pub tls: Option<host::tls::TlsSettings>,
}

impl Config {
    /// `WEB_ADDR`, `WEB_AUTH_URL`, `WEB_CHAT_URL`, and TLS as
    /// [`host::tls::TlsSettings::from_vars`] reads it under `WEB`.
    pub fn from_env() -> anyhow::Result<Config> {
        let var = |name: &str| std::env::var(name).ok();
        Config::from_vars(&var)
    }

    pub fn from_vars(var: &impl host::config::Vars) -> anyhow::Result<Config> {
        let url = |name: &str, default: &str| -> anyhow::Result<String> {
            let url = var(name).unwrap_or_else(|| default.to_owned());
            let parsed: http::Uri = url
                .parse()
                .with_context(|| format!("{name}={url:?} is not a URL"))?;
            anyhow::ensure!(
                matches!(parsed.scheme_str(), Some("http" | "https")) && parsed.host().is_some(),
                "{name}={url:?} must be an http(s) URL"
            );
            Ok(url.trim_end_matches('/').to_owned())
        };
        let config = Config {
            addr: host::config::var_or(var, "WEB_ADDR", "0.0.0.0:8080")?,
            auth_url: url("WEB_AUTH_URL", "http://127.0.0.1:50051")?,
            chat_url: url("WEB_CHAT_URL", "http://127.0.0.1:50052")?,
            tls: host::tls::TlsSettings::from_vars(var, "WEB")?,
        };
        // A page served over TLS may not call the services in plaintext:
        // browsers refuse it, and the tokens would cross in clear.
        if config.tls.is_some() {
            for (name, url) in [
                ("WEB_AUTH_URL", &config.auth_url),
                ("WEB_CHAT_URL", &config.chat_url),
            ] {
                anyhow::ensure!(
                    url.starts_with("https://"),
                    "{name}={url:?} must be https:// when the page is served over TLS"
                );
            }
        }
        Ok(config)
    }
}

pub struct WebClient {
    listener: TcpListener,
    router: Router,
    tls: Option<host::tls::ServerTls>,
}

impl WebClient {
    /// Binds the listener (port 0 picks one; see [`WebClient::local_addr`]).
    pub async fn bind(config: &Config) -> anyhow::Result<WebClient> {
        let listener = host::config::bind(config.addr, "the web client").await?;
        WebClient::on(listener, config)
    }

    /// Serves on a listener already bound, whose origin the services must
    /// know before the client can be configured (`config.addr` is unused).
    pub fn on(listener: TcpListener, config: &Config) -> anyhow::Result<WebClient> {
        let tls = match &config.tls {
            Some(settings) => Some(settings.load().context("the web client's TLS")?),
            None => None,
        };
        Ok(WebClient {
            listener,
            router: router(config)?,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        match self.tls {
            Some(tls) => {
                tracing::info!(%addr, "web client listening (TLS)");
                let stopping = tokio_util::sync::CancellationToken::new();
                let (config, reloading) = tls.keep_current(stopping.clone());
                let accepted = host::tls::accept(self.listener, config, stopping.clone());
                let listener = host::tls::TlsListener::new(accepted, addr);
                let served = axum::serve(listener, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await;
                stopping.cancel();
                reloading.abort();
                served?;
            }
            None => {
                tracing::info!(%addr, "web client listening (plaintext)");
                axum::serve(self.listener, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            }
        }
        Ok(())
    }
}

fn router(config: &Config) -> anyhow::Result<Router> {
    let policy = HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' {} {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        origin(&config.auth_url)?,
        origin(&config.chat_url)?
    ))
    .context("the services' URLs must be printable ASCII")?;
    let settings = serde_json::json!({
        "authUrl": config.auth_url,
        "chatUrl": config.chat_url,
    })
    .to_string();
    let asset = move |kind: &'static str, body: &'static [u8], policy: HeaderValue| {
        move || {
            let policy = policy.clone();
            async move { served(kind, body.to_vec(), policy) }
        }
    };
    Ok(Router::new()
        .route(
            "/",
            get(asset("text/html; charset=utf-8", INDEX, policy.clone())),
        )
        .route(
            "/index.html",
            get(asset("text/html; charset=utf-8", INDEX, policy.clone())),
        )
        .route(
            "/app.js",
            get(asset("text/javascript; charset=utf-8", APP, policy.clone())),
        )
        .route(
            "/style.css",
            get(asset("text/css; charset=utf-8", STYLE, policy.clone())),
        )
        .route(
            "/config.json",
            get(move || {
                let (settings, policy) = (settings.clone(), policy.clone());
                async move { served("application/json", settings.into_bytes(), policy) }
            }),
        )
        .route("/healthz", get(|| async { "ok" })))
}

/// `scheme://host[:port]` of `url`: a policy source with a path would
/// allow that one path only, not the service's methods under it.
fn origin(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse()?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok(format!("{scheme}://{authority}")),
        _ => anyhow::bail!("{url:?} is not an absolute URL"),
    }
}

fn served(kind: &'static str, body: Vec<u8>, policy: HeaderValue) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CONTENT_SECURITY_POLICY, policy),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> anyhow::Result<Config> {
        Config::from_vars(&move |asked: &str| (asked == name).then(|| value.to_owned()))
    }

    #[test]
    fn the_services_urls_must_be_http() {
        let config = with("WEB_CHAT_URL", "https://chat.example.com/").expect("valid");
        assert_eq!(config.chat_url, "https://chat.example.com");
        assert_eq!(config.auth_url, "http://127.0.0.1:50051");
        for bad in ["chat.example.com", "ftp://x", "http://"] {
            assert!(with("WEB_AUTH_URL", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_served_over_tls_calls_the_services_over_tls() {
        let vars = |auth_url: &'static str| {
            move |name: &str| match name {
                "WEB_TLS_CERT_FILE" => Some("cert.pem".to_owned()),
                "WEB_TLS_KEY_FILE" => Some("key.pem".to_owned()),
                "WEB_AUTH_URL" => Some(auth_url.to_owned()),
                "WEB_CHAT_URL" => Some("https://chat.example.com".to_owned()),
                _ => None,
            }
        };
        let refused = Config::from_vars(&vars("http://auth.example.com")).expect_err("plaintext");
        assert!(refused.to_string().contains("WEB_AUTH_URL"), "{refused}");
        assert!(Config::from_vars(&vars("https://auth.example.com")).is_ok());
    }

    #[test]
    fn the_policy_names_the_services_origins() {
        assert_eq!(
            origin("https://example.com:8443/chat").expect("a URL"),
            "https://example.com:8443"
        );
        assert!(origin("/relative").is_err());
    }

    #[test]
    fn the_bundle_is_embedded() {
        assert!(std::str::from_utf8(INDEX).is_ok_and(|page| page.contains("/app.js")));
        assert!(!APP.is_empty() && !STYLE.is_empty());
    }
}
