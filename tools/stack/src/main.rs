//! `cargo run -p stack`: the whole system on this machine, with one command.
//!
//! Starts auth (gRPC on 50051, REST on 8081, metrics on 9101) and chat
//! (gRPC on 50052, REST on 8082, metrics on 9102), and serves the web
//! client on 8080, in this process, each with its own
//! database. Unless `AUTH_DATABASE_URL` and `CHAT_DATABASE_URL` name
//! databases, both live on a private PostgreSQL run from the machine's
//! binaries, with its data under `.stack/` in the project (kept between
//! runs). Every service setting can be changed through the services' own
//! environment variables. Ctrl-C stops everything, PostgreSQL included.
//!
//! The private PostgreSQL is supervised: if it dies (a crash, `kill -9`),
//! the stack says so and starts it again on the same data. Its `fsync` is
//! on, so crash recovery keeps every transaction it acknowledged, and the
//! services reconnect by themselves.

mod dev_tls;

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use host::server::Hosted as _;
use local_postgres::{Durability, LocalPostgres};
use secrecy::ExposeSecret as _;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

/// Where the private PostgreSQL listens unless `STACK_POSTGRES_PORT` says.
const DEFAULT_POSTGRES_PORT: u16 = 54329;

fn main() -> anyhow::Result<()> {
    let _logs = host::telemetry::init("stack");
    let data_dir = std::env::var_os("STACK_DATA_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.stack"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;

    // One stack per data directory: a second start says so.
    let lock_path = data_dir.join("stack.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "a stack is already running from {} (pid in {}); stop it with Ctrl-C first",
            data_dir.display(),
            data_dir.join("stack.pid").display()
        );
    }
    std::fs::write(data_dir.join("stack.pid"), std::process::id().to_string())?;

    // The stack's defaults; the environment wins over them.
    let mut defaults: HashMap<&str, String> = HashMap::new();
    for (variable, value) in [
        ("AUTH_DEV_MODE", "true"),
        ("AUTH_BOOTSTRAP_ADMIN_NAME", "admin"),
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", "admin-password"),
        ("AUTH_GRPC_ADDR", "127.0.0.1:50051"),
        ("AUTH_HTTP_ADDR", "127.0.0.1:8081"),
        ("AUTH_METRICS_ADDR", "127.0.0.1:9101"),
        ("CHAT_GRPC_ADDR", "127.0.0.1:50052"),
        ("CHAT_HTTP_ADDR", "127.0.0.1:8082"),
        ("CHAT_METRICS_ADDR", "127.0.0.1:9102"),
        ("WEB_ADDR", "127.0.0.1:8080"),
    ] {
        defaults.insert(variable, value.to_owned());
    }
    // Chat calls auth on its own behalf with a secret they share; one per
    // run, since nothing outside the stack needs it.
    let service_secret: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    defaults.insert("AUTH_SERVICE_SECRET", service_secret.clone());
    defaults.insert("CHAT_AUTH_SERVICE_SECRET", service_secret);
    // STACK_TLS=1: every port over TLS, chat to auth with mutual TLS.
    let tls = match std::env::var("STACK_TLS").as_deref() {
        Ok("1" | "true") => Some(dev_tls::in_dir(&data_dir.join("tls"))?),
        Ok("" | "0" | "false") | Err(_) => None,
        Ok(other) => bail!("STACK_TLS={other:?}: 1 turns TLS on, 0 (or nothing) leaves it off"),
    };
    for (variable, value) in tls.iter().flat_map(dev_tls::settings) {
        defaults.insert(variable, value);
    }
    let (scheme, host) = if tls.is_some() {
        ("https", "localhost")
    } else {
        ("http", "127.0.0.1")
    };
    // Where a client reaches a port: by name under TLS, as the
    // certificate says.
    let url = |addr: std::net::SocketAddr| format!("{scheme}://{host}:{}", addr.port());
    let var = |defaults: &HashMap<&str, String>, name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| defaults.get(name).cloned())
    };

    // Ports first, so that a taken one is named before anything starts.
    for (variable, what) in [
        ("AUTH_GRPC_ADDR", "auth gRPC"),
        ("AUTH_HTTP_ADDR", "auth REST"),
        ("AUTH_METRICS_ADDR", "auth metrics"),
        ("CHAT_GRPC_ADDR", "chat gRPC"),
        ("CHAT_HTTP_ADDR", "chat REST"),
        ("CHAT_METRICS_ADDR", "chat metrics"),
        ("WEB_ADDR", "the web client"),
    ] {
        let addr = var(&defaults, variable).unwrap_or_default();
        if !addr.is_empty() && addr != "off" && TcpListener::bind(&addr).is_err() {
            bail!(
                "{what} cannot listen on {addr}: the port is already taken (set {variable} to use another)"
            );
        }
    }

    let postgres = if std::env::var_os("AUTH_DATABASE_URL").is_some()
        && std::env::var_os("CHAT_DATABASE_URL").is_some()
    {
        None
    } else {
        let port = match std::env::var("STACK_POSTGRES_PORT") {
            Ok(port) => port.parse().context("STACK_POSTGRES_PORT is not a port")?,
            Err(_) => DEFAULT_POSTGRES_PORT,
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            bail!(
                "the private PostgreSQL cannot listen on port {port}: it is taken (set STACK_POSTGRES_PORT to use another)"
            );
        }
        let server = LocalPostgres::start(&data_dir.join("postgres"), port, Durability::Durable)
            .context(
                "starting the private PostgreSQL (or set AUTH_DATABASE_URL and CHAT_DATABASE_URL)",
            )?;
        defaults.insert("AUTH_DATABASE_URL", server.url("auth"));
        defaults.insert("CHAT_DATABASE_URL", server.url("chat"));
        Some(Arc::new(Mutex::new(server)))
    };

    // The web client's page calls both services from its own origin.
    let web_addr: std::net::SocketAddr = host::config::var_or(
        &|name: &str| var(&defaults, name),
        "WEB_ADDR",
        "127.0.0.1:8080",
    )?;
    let web_origin = url(web_addr);
    let other_name = if tls.is_some() {
        "127.0.0.1"
    } else {
        "localhost"
    };
    for variable in ["AUTH_CORS_ORIGINS", "CHAT_CORS_ORIGINS"] {
        let origins = format!("{web_origin},{scheme}://{other_name}:{}", web_addr.port());
        defaults.insert(variable, origins);
    }
    // Links in mails lead to the page.
    defaults.insert("AUTH_MAIL_LINK_BASE", format!("{web_origin}/"));
    let auth_config = auth::config::Config::from_vars(|name| var(&defaults, name))?;
    defaults.insert("CHAT_AUTH_URL", url(auth_config.edge.grpc_addr));
    let chat_config = chat::config::Config::from_vars(|name| var(&defaults, name))?;
    defaults.insert("WEB_AUTH_URL", url(auth_config.edge.grpc_addr));
    defaults.insert("WEB_CHAT_URL", url(chat_config.edge.grpc_addr));
    let web_config = web::Config::from_vars(&|name: &str| var(&defaults, name))?;

    // Where mail goes, said loudly when it goes nowhere.
    let mail_note = match &auth_config.mail.smtp {
        None => "MAIL IS NOT SENT: AUTH_SMTP_HOST is not set, so verification and password reset mails\n\
                 are printed to this log instead (look for \"mail NOT sent\"). Set AUTH_SMTP_HOST (and\n\
                 AUTH_SMTP_PORT, AUTH_SMTP_SECURITY, AUTH_SMTP_USERNAME, AUTH_SMTP_PASSWORD) to send it.\n"
            .to_owned(),
        Some(smtp) => format!("mail goes to {}:{}\n", smtp.host, smtp.port),
    };

    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async move {
        if postgres.is_some() {
            for config_url in [
                auth_config.database.url.expose_secret(),
                chat_config.database.url.expose_secret(),
            ] {
                create_database_if_missing(config_url).await?;
            }
        }
        let auth = auth::startup::Application::build(auth_config).await?;
        let chat = chat::startup::Application::build(chat_config).await?;
        let web = web::WebClient::bind(&web_config).await?;
        print_banner(
            &auth,
            &chat,
            &web,
            tls.as_ref().map(|tls| tls.ca.as_path()),
            postgres
                .as_ref()
                .map(|server| locked(server).data_dir().display().to_string()),
        );
        println!("{mail_note}");
        if std::env::var_os("AUTH_JWT_KEYS").is_none() {
            println!(
                "DEVELOPMENT DEFAULTS: access tokens are signed with the public development key and the\n\
                 admin is admin / admin-password, so anyone who can reach these ports can forge an admin\n\
                 token. The defaults bind to 127.0.0.1 only; set AUTH_JWT_KEYS and\n\
                 AUTH_BOOTSTRAP_ADMIN_PASSWORD before exposing anything.\n"
            );
        }

        let stop = CancellationToken::new();
        let signal = {
            let stop = stop.clone();
            async move {
                host::shutdown::signal().await;
                stop.cancel();
            }
        };
        let supervising = postgres
            .clone()
            .map(|server| tokio::spawn(supervise(server, stop.clone())));
        let (_, auth, chat, web) = tokio::join!(
            signal,
            auth.run_until_stopped(stop.clone().cancelled_owned()),
            chat.run_until_stopped(stop.clone().cancelled_owned()),
            web.run_until_stopped(stop.clone().cancelled_owned()),
        );
        if let Some(supervising) = supervising {
            let _ = supervising.await;
        }
        auth.and(chat).and(web)
    });
    // The private PostgreSQL stops when `postgres` drops, above.
    drop(runtime);
    drop(lock);
    result
}

fn locked(server: &Mutex<LocalPostgres>) -> std::sync::MutexGuard<'_, LocalPostgres> {
    server
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps the private PostgreSQL running until `stop`: when it dies, it is
/// started again on the same data directory and port, retrying while the
/// old server's processes are still going away.
async fn supervise(server: Arc<Mutex<LocalPostgres>>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(status) = locked(&server).exited() else {
            continue;
        };
        let (data_dir, port) = {
            let server = locked(&server);
            (server.data_dir().to_owned(), server.port())
        };
        println!("The private PostgreSQL stopped unexpectedly ({status}); starting it again.");
        loop {
            let data_dir = data_dir.clone();
            let started = tokio::task::spawn_blocking(move || {
                LocalPostgres::start(&data_dir, port, Durability::Durable)
            })
            .await;
            match started {
                Ok(Ok(restarted)) => {
                    *locked(&server) = restarted;
                    println!("The private PostgreSQL is back, with everything it acknowledged.");
                    break;
                }
                Ok(Err(error)) => tracing::warn!(%error, "restarting PostgreSQL failed; retrying"),
                Err(error) => tracing::warn!(%error, "restarting PostgreSQL failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// An address others can connect to: 0.0.0.0 becomes 127.0.0.1.
fn connectable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    }
}

async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let (server, name) = url
        .rsplit_once('/')
        .context("a database URL ends with /name")?;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
            .execute(&mut admin)
            .await?;
        tracing::info!(database = name, "database created");
    }
    Ok(())
}

fn print_banner(
    auth: &auth::startup::Application,
    chat: &chat::startup::Application,
    web: &web::WebClient,
    ca: Option<&std::path::Path>,
    postgres: Option<String>,
) {
    // Under TLS, by the name the certificates carry.
    let (scheme, name) = match ca {
        Some(_) => ("https", "localhost".to_owned()),
        None => ("http", Ipv4Addr::LOCALHOST.to_string()),
    };
    let at = |addr: std::net::SocketAddr| format!("{name}:{}", connectable(addr).port());
    let auth_grpc = at(auth.local_addr());
    let rest = auth.http_addr().map(at);
    let line = |what: &str, where_: String| println!("  {what:<16} {where_}");
    println!();
    println!("The chat backend is up. Ctrl-C stops it.");
    line(
        "web client",
        format!(
            "{scheme}://{}  (open it in a browser)",
            at(web.local_addr())
        ),
    );
    line("auth gRPC", auth_grpc.clone());
    if let Some(rest) = &rest {
        line(
            "auth REST",
            format!("{scheme}://{rest}  (OpenAPI: {scheme}://{rest}/openapi.json)"),
        );
    }
    line("chat gRPC", at(chat.local_addr()));
    if let Some(rest) = chat.http_addr().map(at) {
        line(
            "chat REST",
            format!("{scheme}://{rest}  (OpenAPI: {scheme}://{rest}/openapi.json)"),
        );
    }
    if let Some(ca) = ca {
        line(
            "TLS",
            format!(
                "every port but metrics; chat to auth with mutual TLS; the CA is {}",
                ca.display()
            ),
        );
    }
    if let Some(metrics) = auth.metrics_addr() {
        line(
            "auth metrics",
            format!("http://{}/metrics", connectable(metrics)),
        );
    }
    if let Some(metrics) = chat.metrics_addr() {
        line(
            "chat metrics",
            format!("http://{}/metrics", connectable(metrics)),
        );
    }
    if let Some(dir) = postgres {
        line("databases", format!("a private PostgreSQL, data in {dir}"));
    }
    println!();
    println!("Try it:");
    println!("  cargo run -p chatctl -- register ada ada@example.com");
    println!("  cargo run -p chatctl -- login ada");
    let (grpcurl, curl) = match ca {
        Some(ca) => (
            format!("-cacert {}", ca.display()),
            format!("--cacert {} ", ca.display()),
        ),
        None => ("-plaintext".to_owned(), String::new()),
    };
    println!("  grpcurl {grpcurl} {auth_grpc} list");
    if let Some(rest) = rest {
        println!(
            "  curl -s {curl}-X POST {scheme}://{rest}/v1/auth/login -d '{{\"username\":\"admin\",\"password\":\"admin-password\"}}'"
        );
    }
    println!();
}
