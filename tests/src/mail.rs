//! A real SMTP server on loopback: `aiosmtpd` from PyPI (which `.ci/run`
//! installs), writing what it receives to a Maildir the tests read. It can
//! require STARTTLS with a certificate the tests issue, and be stopped and
//! started again on the same port, as an outage is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auth::config::{SmtpConfig, SmtpSecurity};

use crate::certificates::Issued;
use crate::process::{free_addr, wait_until_listening};

/// The Python that runs `aiosmtpd` (`PYTHON`, else `python3`).
fn python() -> PathBuf {
    std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// A mail the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl Received {
    /// The token after `#<what>=` in the mail's link (`verify`, `reset`).
    pub fn link_token(&self, what: &str) -> String {
        let marker = format!("#{what}=");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {marker} link in {:?}", self.body))
            + marker.len();
        self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    }
}

/// An SMTP server; killed when dropped.
pub struct MailServer {
    pub addr: SocketAddr,
    maildir: PathBuf,
    /// STARTTLS with this certificate, required before any mail.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl MailServer {
    /// Whether `aiosmtpd` can be run here.
    pub fn available() -> bool {
        Command::new(python())
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// A plain SMTP server on a free port, listening when this returns.
    pub fn start() -> MailServer {
        MailServer::start_on(free_addr(), None)
    }

    /// A server that takes mail only after STARTTLS, with `certificate`
    /// (issued for 127.0.0.1).
    pub fn start_with_starttls(certificate: &Issued) -> MailServer {
        MailServer::start_on(
            free_addr(),
            Some((certificate.cert_file.clone(), certificate.key_file.clone())),
        )
    }

    /// A server that is not running yet, on a port of its own: auth can be
    /// pointed at it, and it started later with [`MailServer::restart`].
    pub fn stopped() -> MailServer {
        MailServer::new(free_addr(), None)
    }

    fn new(addr: SocketAddr, tls: Option<(PathBuf, PathBuf)>) -> MailServer {
        let maildir = std::env::temp_dir().join(format!(
            "chat-test-maildir-{}-{}",
            std::process::id(),
            addr.port()
        ));
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("a Maildir");
        }
        MailServer {
            addr,
            maildir,
            tls,
            child: None,
        }
    }

    fn start_on(addr: SocketAddr, tls: Option<(PathBuf, PathBuf)>) -> MailServer {
        let mut server = MailServer::new(addr, tls);
        server.restart();
        server
    }

    /// How auth reaches this server: STARTTLS trusting `ca_file` if it
    /// requires TLS, plain otherwise.
    pub fn smtp_config(&self, ca_file: Option<&Path>) -> SmtpConfig {
        SmtpConfig {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            security: if self.tls.is_some() {
                SmtpSecurity::StartTls
            } else {
                SmtpSecurity::None
            },
            credentials: None,
            ca_file: ca_file.map(Path::to_path_buf),
            timeout: Duration::from_secs(10),
        }
    }

    /// Kills the server; its port refuses connections after this.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new(python());
        command
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(self.addr.to_string());
        if let Some((cert, key)) = &self.tls {
            command.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        command
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("starting aiosmtpd failed ({error}): install it with `pip install aiosmtpd`")
            });
        self.child = Some(child);
        wait_until_listening(self.addr, Duration::from_secs(15), "aiosmtpd");
    }

    /// Every mail received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .flat_map(|sub| {
                std::fs::read_dir(self.maildir.join(sub))
                    .into_iter()
                    .flatten()
            })
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let modified = entry.metadata().ok()?.modified().ok()?;
                Some((modified, entry.path()))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .map(|text| parse(&text))
            .collect()
    }

    /// The mails received for `to`, oldest first.
    pub fn received_by(&self, to: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|mail| mail.to.eq_ignore_ascii_case(to))
            .collect()
    }

    /// Waits until `to` has received `count` mails whose subject contains
    /// `subject`, and answers the last of them.
    pub async fn wait_for(
        &self,
        to: &str,
        subject: &str,
        count: usize,
        within: Duration,
    ) -> Received {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<Received> = self
                .received_by(to)
                .into_iter()
                .filter(|mail| mail.subject.contains(subject))
                .collect();
            if found.len() >= count {
                return found.last().cloned().expect("a mail");
            }
            assert!(
                Instant::now() < deadline,
                "no mail {subject:?} number {count} to {to} within {within:?}; received: {:?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Headers, then the body after the first empty line.
fn parse(text: &str) -> Received {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let body = match header("Content-Transfer-Encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "quoted-printable" => quoted_printable(body),
        _ => body.to_owned(),
    };
    Received {
        to: header("X-RcptTo"),
        subject: header("Subject"),
        body,
    }
}

/// Decodes quoted-printable text (RFC 2045 section 6.7), as mail clients do.
fn quoted_printable(text: &str) -> String {
    let bytes = text.replace("=\n", "").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}
