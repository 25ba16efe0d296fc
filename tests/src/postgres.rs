//! One PostgreSQL server per test binary, a fresh database per test.
//!
//! Where the server comes from, in order:
//! 1. `TEST_DATABASE_URL`: an existing server (its URL names any database
//!    the test user may connect to; tests create their own next to it).
//! 2. testcontainers: a container of `TEST_POSTGRES_IMAGE` (default
//!    `postgres:17-alpine`), when a Docker engine answers.
//! 3. The machine's own PostgreSQL binaries, in a temporary directory.
//!
//! With `CI=true` only testcontainers will do: a run that cannot start a
//! container fails instead of falling back.
//!
//! The server outlives every test of the binary; a small watcher process
//! removes it once the test binary has exited.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::Connection as _;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::ImageExt as _;
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;

const DEFAULT_IMAGE: &str = "postgres:17-alpine";

/// Which kind of server the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    External,
    Testcontainers,
    LocalBinaries,
}

#[derive(Debug)]
struct Server {
    provider: Provider,
    /// A URL of the server without the database name: `postgres://u:p@h:port`.
    base_url: String,
    /// The database to connect to when creating test databases.
    admin_database: String,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// A URL of the server's administrative database, for statements about
/// a test database that cannot run inside it.
pub fn admin_url() -> String {
    let server = server();
    format!("{}/{}", server.base_url, server.admin_database)
}

/// The kind of server this test binary uses, starting it if need be.
pub fn provider() -> Provider {
    server().provider
}

/// A new, empty database with a unique name; returns its URL.
pub async fn fresh_database() -> String {
    let server = server();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin =
        sqlx::PgConnection::connect(&format!("{}/{}", server.base_url, server.admin_database))
            .await
            .expect("connecting to the test PostgreSQL server");
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
        .execute(&mut admin)
        .await
        .expect("creating a test database");
    let _ = admin.close().await;
    format!("{}/{name}", server.base_url)
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        // Started on a thread of its own, with a runtime of its own, so that
        // it does not depend on the runtime of whichever test came first.
        let server = std::thread::spawn(start)
            .join()
            .unwrap_or_else(|_| panic!("starting the test PostgreSQL server panicked"));
        let _ = writeln!(
            std::io::stderr(),
            "test postgres: {:?} at {}",
            server.provider,
            redact_password(&server.base_url)
        );
        server
    })
}

fn start() -> Server {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        let (base_url, admin_database) = url
            .rsplit_once('/')
            .filter(|(base, _)| base.contains("://") && base.matches('/').count() >= 2)
            .expect("TEST_DATABASE_URL looks like postgres://user:password@host:port/database");
        return Server {
            provider: Provider::External,
            base_url: base_url.to_owned(),
            admin_database: admin_database.to_owned(),
        };
    }
    let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    match start_container() {
        Ok(server) => server,
        Err(error) if in_ci => {
            panic!("CI=true needs PostgreSQL from testcontainers, which failed: {error}")
        }
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "test postgres: no container ({error}); using the local PostgreSQL binaries"
            );
            start_local()
        }
    }
}

fn start_container() -> Result<Server, String> {
    let image = std::env::var("TEST_POSTGRES_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let (name, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async {
        let container = Postgres::default()
            .with_host_auth()
            .with_name(name)
            .with_tag(tag)
            .with_label("org.chat-backend.tests", "postgres")
            .start()
            .await
            .map_err(|error| format!("{image}: {error}"))?;
        let host = container
            .get_host()
            .await
            .map_err(|error| error.to_string())?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(|error| error.to_string())?;
        let id = container.id().to_owned();
        // The container must outlive this runtime: forget the handle (whose
        // drop would remove it) and let the watcher remove it at exit.
        std::mem::forget(container);
        remove_when_this_process_exits(&format!("docker rm --force --volumes {id}"));
        Ok(Server {
            provider: Provider::Testcontainers,
            base_url: format!("postgres://postgres:postgres@{host}:{port}"),
            admin_database: "postgres".to_owned(),
        })
    })
}

fn start_local() -> Server {
    let dir = std::env::temp_dir().join(format!("chat-tests-pg-{}", uuid::Uuid::new_v4().simple()));
    let server = local_postgres::LocalPostgres::start(
        &dir.join("data"),
        0,
        local_postgres::Durability::Scratch,
    )
    .unwrap_or_else(|error| panic!("no Docker engine and no local PostgreSQL: {error}"));
    let base_url = server.url("").trim_end_matches('/').to_owned();
    remove_when_this_process_exits(&format!(
        "kill -INT {pid}; while kill -0 {pid}; do sleep 0.1; done; rm -rf '{dir}'",
        pid = server.pid(),
        dir = dir.display()
    ));
    std::mem::forget(server);
    Server {
        provider: Provider::LocalBinaries,
        base_url,
        admin_database: "postgres".to_owned(),
    }
}

/// Starts a detached shell that waits for this process to exit, then runs
/// `cleanup`. Unlike a destructor, it also runs when the tests are killed.
fn remove_when_this_process_exits(cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {cleanup}",
        pid = std::process::id()
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(error) = spawned {
        let _ = writeln!(
            std::io::stderr(),
            "test postgres: cannot watch for exit ({error}); clean up by hand"
        );
    }
}

fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
            let user_end = url[scheme + 3..at].find(':').map_or(at, |i| scheme + 3 + i);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A server of the machine's binaries in `dir`, on `port` (0: any), apart
/// from the shared one: for runs that stop and start their own server, or
/// that measure it. Started off the async threads.
pub async fn private_server(
    dir: std::path::PathBuf,
    port: u16,
    durability: local_postgres::Durability,
) -> local_postgres::LocalPostgres {
    tokio::task::spawn_blocking(move || {
        local_postgres::LocalPostgres::start(&dir, port, durability)
    })
    .await
    .expect("starting postgres")
    .expect("a private PostgreSQL from the machine's binaries")
}

/// Makes the databases `auth` and `chat` on `server`, one per service.
pub async fn create_service_databases(server: &local_postgres::LocalPostgres) {
    let mut admin = sqlx::PgConnection::connect(&server.url("postgres"))
        .await
        .expect("the server");
    for statement in ["create database auth", "create database chat"] {
        sqlx::raw_sql(statement)
            .execute(&mut admin)
            .await
            .expect("creating a database");
    }
}
