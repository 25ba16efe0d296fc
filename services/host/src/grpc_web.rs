//! gRPC-Web on the gRPC port, for browsers: they speak neither HTTP/2
//! trailers nor gRPC. A call in gRPC-Web (binary `application/grpc-web`
//! or base64 `application/grpc-web-text`, unary or server streaming) is
//! translated into a gRPC call before anything else sees it, so the
//! metrics, request ids and access check that apply to gRPC apply to it
//! unchanged. Plain gRPC calls pass through untouched.
//!
//! Browsers call from another origin (the web client's), so the same layer
//! answers CORS: only the [`CorsOrigins`] configured may call, none by
//! default but the bundled web client's own.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The bundled web client's origin, as the stack serves it.
pub const WEB_CLIENT_ORIGIN: &str = "http://127.0.0.1:8080";
/// The same page, opened by the name of the loopback address.
const WEB_CLIENT_LOCALHOST: &str = "http://localhost:8080";

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Origins whose pages may call the service from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigins(Vec<HeaderValue>);

impl CorsOrigins {
    /// A comma-separated list of origins (`scheme://host[:port]`); empty
    /// allows none. A wildcard is refused: calls carry bearer tokens.
    pub fn parse(name: &str, value: &str) -> anyhow::Result<CorsOrigins> {
        let mut origins = Vec::new();
        for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let uri: http::Uri = origin
                .parse()
                .map_err(|error| anyhow::anyhow!("{name}: {origin:?} is not an origin: {error}"))?;
            let well_formed = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some()
                && uri
                    .path_and_query()
                    .is_none_or(|path| path.as_str().is_empty() || path == "/")
                && !origin.ends_with('/');
            if !well_formed {
                anyhow::bail!(
                    "{name}: {origin:?} is not an origin (scheme://host[:port], no path, no wildcard)"
                );
            }
            origins.push(HeaderValue::from_str(origin)?);
        }
        Ok(CorsOrigins(origins))
    }

    /// The bundled web client's origin only (by address or as localhost).
    pub fn web_client() -> CorsOrigins {
        CorsOrigins(vec![
            HeaderValue::from_static(WEB_CLIENT_ORIGIN),
            HeaderValue::from_static(WEB_CLIENT_LOCALHOST),
        ])
    }

    /// From `name`, or the web client's origin when unset.
    pub fn from_var(var: &impl crate::config::Vars, name: &str) -> anyhow::Result<CorsOrigins> {
        match var(name) {
            Some(value) => CorsOrigins::parse(name, &value),
            None => Ok(CorsOrigins::web_client()),
        }
    }

    pub fn origins(&self) -> &[HeaderValue] {
        &self.0
    }
}

/// The layers, outermost first: CORS, then the gRPC-Web translation. Put
/// them outside every other layer of the gRPC server, whose builder must
/// accept HTTP/1.1.
pub fn layers(
    origins: &CorsOrigins,
) -> ServiceBuilder<Stack<tonic_web::GrpcWebLayer, Stack<CorsLayer, Identity>>> {
    ServiceBuilder::new()
        .layer(cors(origins))
        .layer(tonic_web::GrpcWebLayer::new())
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.0.iter().cloned()))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("authorization"),
            header("content-type"),
            header("grpc-timeout"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("x-request-id"),
            header("traceparent"),
            header("tracestate"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            header("x-request-id"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let parsed =
            CorsOrigins::parse("ORIGINS", "http://127.0.0.1:8080, https://chat.example.com")
                .expect("two origins");
        assert_eq!(parsed.origins().len(), 2);
        assert!(
            CorsOrigins::parse("ORIGINS", "")
                .expect("none")
                .origins()
                .is_empty()
        );
        for bad in [
            "*",
            "chat.example.com",
            "ftp://chat.example.com",
            "https://chat.example.com/app",
            "https://chat.example.com/",
        ] {
            let error = CorsOrigins::parse("ORIGINS", bad).expect_err(bad);
            assert!(error.to_string().starts_with("ORIGINS"), "{error}");
        }
        let unset = |_: &str| None;
        assert_eq!(
            CorsOrigins::from_var(&unset, "ORIGINS").expect("the default"),
            CorsOrigins::web_client()
        );
    }
}
