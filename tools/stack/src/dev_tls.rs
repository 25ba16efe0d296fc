//! `STACK_TLS=1`: a development CA and the certificates it issues, kept in
//! `.stack/tls/` from one run to the next (so a browser or `grpcurl` told
//! to trust `ca.pem` once goes on trusting it), made again when any file is
//! missing. Every port is then served over TLS, and chat reaches auth with
//! mutual TLS. For development only: the certificates live a year.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use dev_ca::{DevCa, Usage};

/// Days the development certificates are valid.
const DAYS: i64 = 365;

/// The files, by what they are for.
pub struct DevTls {
    pub ca: PathBuf,
    /// Served by auth, chat and the web client: `localhost`, `127.0.0.1`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// What chat presents to auth.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevTls {
    /// The certificates under `dir`, made first if any is missing.
    pub fn in_dir(dir: &Path) -> anyhow::Result<DevTls> {
        let tls = DevTls {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("chat-client.pem"),
            client_key: dir.join("chat-client-key.pem"),
        };
        let files = [
            &tls.ca,
            &tls.server_cert,
            &tls.server_key,
            &tls.client_cert,
            &tls.client_key,
        ];
        if files.iter().all(|file| file.is_file()) {
            return Ok(tls);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = DevCa::generate("chat backend development CA", DAYS)?;
        let server = ca.issue("chat backend (development)", Usage::Server, DAYS)?;
        let client = ca.issue("chat service (development)", Usage::Client, DAYS)?;
        for (path, contents) in [
            (&tls.ca, &ca.cert_pem),
            (&tls.server_key, &server.key_pem),
            (&tls.server_cert, &server.cert_pem),
            (&tls.client_key, &client.key_pem),
            (&tls.client_cert, &client.cert_pem),
        ] {
            std::fs::write(path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(tls)
    }

    /// The services' settings for it: `<PREFIX>_TLS_CERT_FILE` and so on.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let path = |file: &PathBuf| file.display().to_string();
        vec![
            ("AUTH_TLS_CERT_FILE", path(&self.server_cert)),
            ("AUTH_TLS_KEY_FILE", path(&self.server_key)),
            ("CHAT_TLS_CERT_FILE", path(&self.server_cert)),
            ("CHAT_TLS_KEY_FILE", path(&self.server_key)),
            ("WEB_TLS_CERT_FILE", path(&self.server_cert)),
            ("WEB_TLS_KEY_FILE", path(&self.server_key)),
            ("AUTH_CLIENT_CA_FILE", path(&self.ca)),
            ("CHAT_AUTH_CA_FILE", path(&self.ca)),
            ("CHAT_AUTH_CLIENT_CERT_FILE", path(&self.client_cert)),
            ("CHAT_AUTH_CLIENT_KEY_FILE", path(&self.client_key)),
        ]
    }
}
