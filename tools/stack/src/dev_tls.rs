//! `STACK_TLS=1`: a development CA and the certificates it issues
//! ([`dev_ca::DevSet`]), kept in `.stack/tls/` from one run to the next (so
//! a browser or `grpcurl` told to trust `ca.pem` once goes on trusting it).
//! Every port is then served over TLS, and chat reaches auth with mutual
//! TLS.

use std::path::Path;

use anyhow::Context as _;
use dev_ca::DevSet;

/// The certificates in `dir`, made first if any is missing.
pub fn in_dir(dir: &Path) -> anyhow::Result<DevSet> {
    DevSet::in_dir(dir, &[], 365)
        .with_context(|| format!("development certificates in {}", dir.display()))
}

/// The services' settings for them: `<PREFIX>_TLS_CERT_FILE` and so on.
pub fn settings(set: &DevSet) -> Vec<(&'static str, String)> {
    let path = |file: &Path| file.display().to_string();
    vec![
        ("AUTH_TLS_CERT_FILE", path(&set.server_cert)),
        ("AUTH_TLS_KEY_FILE", path(&set.server_key)),
        ("CHAT_TLS_CERT_FILE", path(&set.server_cert)),
        ("CHAT_TLS_KEY_FILE", path(&set.server_key)),
        ("WEB_TLS_CERT_FILE", path(&set.server_cert)),
        ("WEB_TLS_KEY_FILE", path(&set.server_key)),
        ("AUTH_CLIENT_CA_FILE", path(&set.ca)),
        ("CHAT_AUTH_CA_FILE", path(&set.ca)),
        ("CHAT_AUTH_CLIENT_CERT_FILE", path(&set.client_cert)),
        ("CHAT_AUTH_CLIENT_KEY_FILE", path(&set.client_key)),
    ]
}
