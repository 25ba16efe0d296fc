//! A private PostgreSQL server run from the machine's PostgreSQL binaries
//! (`initdb`, `postgres`), for machines without Docker: the test harness
//! falls back to it, and the development stack keeps its data in one.
//!
//! PostgreSQL refuses to run as root; when this process is root, the server
//! runs as `nobody` and its data directory is handed to that user.

use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged account the server runs as when this process is root.
const NOBODY: (u32, u32) = (65534, 65534);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL binaries not found: set PG_BIN_DIR to the directory holding initdb and postgres"
    )]
    BinariesNotFound,
    #[error("{what} failed: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("postgres did not accept connections within {0:?}: {1}")]
    NotReady(Duration, String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Whether a server keeps what it acknowledged through a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL's defaults (`fsync` on): for data that is kept, such as
    /// the run command's.
    Durable,
    /// `fsync` off, for throwaway data (tests, schema checks): faster, and
    /// a crash may lose or corrupt everything.
    Scratch,
}

/// A running server. Dropping it stops the server (fast shutdown).
#[derive(Debug)]
pub struct LocalPostgres {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

impl LocalPostgres {
    /// Starts a server on `127.0.0.1:port` (0 picks a free port) over
    /// `data_dir`, creating the cluster there first if the directory holds
    /// none. Authentication is `trust` for the `postgres` superuser, so the
    /// server must only ever listen on loopback.
    pub fn start(data_dir: &Path, port: u16, durability: Durability) -> Result<Self, Error> {
        let bin = bin_dir().ok_or(Error::BinariesNotFound)?;
        let as_root = is_root();
        let port = if port == 0 { free_port()? } else { port };

        if !data_dir.join("PG_VERSION").exists() {
            std::fs::create_dir_all(data_dir).map_err(io_error("creating the data directory"))?;
            if as_root {
                hand_to_nobody(data_dir)?;
            }
            let output = command(&bin.join("initdb"), as_root)
                .arg("--pgdata")
                .arg(data_dir)
                .args([
                    "--username=postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ])
                .arg("--no-instructions")
                .args((durability == Durability::Scratch).then_some("--no-sync"))
                .output()
                .map_err(io_error("running initdb"))?;
            if !output.status.success() {
                return Err(Error::Initdb(
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                ));
            }
        }

        let log = data_dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(io_error("creating server.log"))?;
        let child = command(&bin.join("postgres"), as_root)
            .arg("-D")
            .arg(data_dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", data_dir.display()))
            .args(["-c", "max_connections=300"])
            .args(match durability {
                Durability::Durable => &[][..],
                Durability::Scratch => &["-c", "fsync=off"][..],
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io_error("starting postgres"))?;
        let mut server = LocalPostgres {
            child,
            port,
            data_dir: data_dir.to_owned(),
        };
        server.wait_until_ready(&log)?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the postmaster, for cleanup by another process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn wait_until_ready(&mut self, log: &Path) -> Result<(), Error> {
        let limit = Duration::from_secs(30);
        let started = Instant::now();
        loop {
            let log_text = || {
                let mut text = String::new();
                let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
                text
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NotReady(
                    limit,
                    format!("postgres exited ({status}): {}", log_text()),
                ));
            }
            if log_text().contains("ready to accept connections")
                && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(Error::NotReady(limit, log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How the server ended, if it has: it should not have, unless it was
    /// stopped through [`LocalPostgres::stop`].
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks the server to finish (fast shutdown) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGINT is PostgreSQL's "fast shutdown".
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn command(program: &Path, as_root: bool) -> Command {
    let mut command = Command::new(program);
    if as_root {
        command.uid(NOBODY.0).gid(NOBODY.1);
    }
    command
}

/// Whether this process runs as root (effective uid 0), read from procfs.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status
                .lines()
                .find(|line| line.starts_with("Uid:"))?
                .to_owned();
            uids.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Lets `nobody` own the data directory and reach it through its parents.
fn hand_to_nobody(data_dir: &Path) -> Result<(), Error> {
    std::os::unix::fs::chown(data_dir, Some(NOBODY.0), Some(NOBODY.1))
        .map_err(io_error("handing the data directory to nobody"))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error("restricting the data directory"))?;
    let mut parent = data_dir.parent();
    while let Some(dir) = parent {
        if let Ok(meta) = dir.metadata() {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
                    .map_err(io_error(format!("opening {} to nobody", dir.display())))?;
            }
        }
        parent = dir.parent();
    }
    Ok(())
}

fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error("finding a free port"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(io_error("finding a free port"))
}

/// `PG_BIN_DIR`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").exists() && dir.join("postgres").exists();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from) {
        return has_binaries(&dir).then_some(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_binaries(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|dir| has_binaries(dir))
        .collect();
    versions.sort();
    versions.pop()
}
