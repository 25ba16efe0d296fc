//! The services as real processes, started from the workspace's own
//! binaries, for faults only a process can have: `kill -9` mid-call, and a
//! restart on the same address and database.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::services::{ADMIN_NAME, ADMIN_PASSWORD, SERVICE_SECRET};

/// A service that runs as a process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Chat,
}

impl Service {
    /// This package's binary that runs the service's own entry point
    /// (`auth::cli::main`, `chat::cli::main`).
    fn binary_name(self) -> &'static str {
        match self {
            Service::Auth => "auth-under-test",
            Service::Chat => "chat-under-test",
        }
    }
}

/// The binary of `service`, as this run built it.
///
/// The binaries belong to this package, so cargo builds them, with the
/// features of the same build, before it runs any integration test: a test
/// finds them next to its own executable and starts no compiler. An example
/// (the benchmark, the soak run) is not given that promise, so it asks cargo
/// once, before any clock starts, to bring them up to date together with
/// itself: the same package, profile and features, so nothing but the two
/// small binaries is ever compiled for it.
pub fn binary(service: Service) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the path of this executable");
        let dir = exe.parent().expect("the executable's directory");
        if dir.ends_with("examples") {
            build_for_example(&exe);
        }
        if dir.ends_with("deps") || dir.ends_with("examples") {
            dir.parent().expect("the profile's directory").to_owned()
        } else {
            dir.to_owned()
        }
    });
    let path = dir.join(service.binary_name());
    assert!(
        path.is_file(),
        "{} is missing: run the tests of package `tests` through cargo, which builds it",
        path.display()
    );
    path
}

/// `cargo build` of this package's binaries beside the example `exe`, in its
/// profile, so that the feature set, and with it every dependency already
/// built for the example, stays the same.
fn build_for_example(exe: &Path) {
    let example = exe
        .file_stem()
        .and_then(|name| name.to_str())
        .expect("the example's name");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "--profile", profile])
        .args(["-p", env!("CARGO_PKG_NAME"), "--bins", "--example", example])
        .stderr(Stdio::inherit())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the service binaries failed");
}

/// A loopback address nobody listens on now.
/// Waits until something accepts connections on `addr`; panics naming
/// `what` if nothing does `within`.
pub fn wait_until_listening(addr: SocketAddr, within: std::time::Duration, what: &str) {
    let deadline = std::time::Instant::now() + within;
    while std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {addr} within {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// A service process; killed (SIGKILL) when dropped.
pub struct Process {
    name: String,
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `env` (and nothing else of this process's
    /// service settings) and waits until its gRPC health says SERVING at
    /// `addr`.
    pub async fn start(
        name: &str,
        binary: &Path,
        addr: SocketAddr,
        env: &[(String, String)],
    ) -> Process {
        let log =
            std::env::temp_dir().join(format!("{name}-{}-{}.log", std::process::id(), addr.port()));
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file"))
            .stderr(log_file)
            .spawn()
            .expect("starting the service");
        let mut process = Process {
            name: name.to_owned(),
            child,
            addr,
            log,
        };
        process.wait_until_serving().await;
        process
    }

    async fn wait_until_serving(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}): {}", self.name, self.log_text());
            }
            let serving = async {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                        .ok()?
                        .connect()
                        .await
                        .ok()?;
                let mut health = HealthClient::new(channel);
                let answer = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?;
                Some(answer.into_inner().status() == ServingStatus::Serving)
            };
            if tokio::time::timeout(Duration::from_secs(1), serving).await == Ok(Some(true)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} is not serving after 30 s: {}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process has written to its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident memory of the process now, in bytes.
    pub fn rss(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// `kill -9`: no shutdown, no flush, nothing answered.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The signing key test auth processes use.
pub const SIGNING_KEY: &str = "test:test-signing-key-0123456789abcdef";

/// The environment of an auth process on `database_url`, at `addr`, with
/// the test admin and cheap hashes.
pub fn auth_env(database_url: &str, addr: SocketAddr) -> Vec<(String, String)> {
    [
        ("AUTH_DATABASE_URL", database_url),
        ("AUTH_GRPC_ADDR", &addr.to_string()),
        ("AUTH_HTTP_ADDR", "off"),
        ("AUTH_METRICS_ADDR", "off"),
        ("AUTH_JWT_KEYS", SIGNING_KEY),
        ("AUTH_SERVICE_SECRET", SERVICE_SECRET),
        ("AUTH_ARGON2_MEMORY_KIB", "1024"),
        ("AUTH_ARGON2_ITERATIONS", "1"),
        ("AUTH_BOOTSTRAP_ADMIN_NAME", ADMIN_NAME),
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
        // Every client here calls from loopback: one address for them all.
        ("AUTH_QUOTA_REGISTRATIONS", "off"),
        ("AUTH_QUOTA_ANONYMOUS_CALLS", "off"),
        ("AUTH_LOCKOUT_ADDRESS_MAX_FAILURES", "1000000"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The environment of a chat process on `database_url`, at `addr`, asking
/// the auth service at `auth_url`.
pub fn chat_env(database_url: &str, addr: SocketAddr, auth_url: &str) -> Vec<(String, String)> {
    [
        ("CHAT_DATABASE_URL", database_url),
        ("CHAT_GRPC_ADDR", &addr.to_string()),
        ("CHAT_HTTP_ADDR", "off"),
        ("CHAT_METRICS_ADDR", "off"),
        ("CHAT_AUTH_URL", auth_url),
        ("CHAT_AUTH_SERVICE_SECRET", SERVICE_SECRET),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}
