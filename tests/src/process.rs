//! The services as real processes, started from the workspace's own
//! binaries, for faults only a process can have: `kill -9` mid-call, and a
//! restart on the same address and database.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::services::{ADMIN_NAME, ADMIN_PASSWORD, WATCH_SECRET};

/// The workspace's binary `name` (of the package of the same name), built
/// now by cargo if it is not current, in this program's own profile (a
/// release soak run measures release services).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--message-format=json",
            "--profile",
            profile,
        ])
        .args(["-p", name, "--bin", name])
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build");
    assert!(output.status.success(), "building {name} failed");
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == name)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no executable for {name}"));
    built.insert(name.to_owned(), path.clone());
    path
}

/// A loopback address nobody listens on now.
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

    fn log_text(&self) -> String {
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
        ("AUTH_WATCH_SECRET", WATCH_SECRET),
        ("AUTH_ARGON2_MEMORY_KIB", "1024"),
        ("AUTH_ARGON2_ITERATIONS", "1"),
        ("AUTH_BOOTSTRAP_ADMIN_NAME", ADMIN_NAME),
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
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
        ("CHAT_AUTH_WATCH_SECRET", WATCH_SECRET),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}
