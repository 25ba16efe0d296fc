//! A certificate authority for development and tests: it issues server and
//! client certificates for `localhost` and `127.0.0.1`, as PEM, for the
//! development stack (`STACK_TLS=1`) and for the tests that check TLS. Never
//! for production: whoever holds the CA's key can issue anything.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _,
};
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

pub use rcgen::Error;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A CA, its key held in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, which clients are told to trust.
    pub cert_pem: String,
}

/// A certificate the CA issued, with its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    /// The key's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

impl DevCa {
    /// A new CA named `name`, valid from an hour ago for `days`.
    pub fn generate(name: &str, days: i64) -> Result<DevCa, Error> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = from_an_hour_ago(Duration::days(days));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// A certificate named `name`, for `localhost` and `127.0.0.1`, valid
    /// from an hour ago for `days`.
    pub fn issue(&self, name: &str, usage: Usage, days: i64) -> Result<Issued, Error> {
        self.issue_between(name, usage, from_an_hour_ago(Duration::days(days)), &[])
    }

    /// A certificate valid between these times (an expired one, say), for
    /// `localhost`, `127.0.0.1` and `hosts`.
    pub fn issue_between(
        &self,
        name: &str,
        usage: Usage,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
        hosts: &[String],
    ) -> Result<Issued, Error> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(hosts.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            spki_der: key.subject_public_key_info(),
        })
    }
}

fn from_an_hour_ago(span: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + span)
}

/// A development set of files in one directory: the CA (`ca.pem`), one
/// server certificate for every service (`server.pem`, `server-key.pem`)
/// and the client certificate chat presents to auth (`chat-client.pem`,
/// `chat-client-key.pem`). Made when any is missing, kept otherwise, so
/// that whoever was told to trust `ca.pem` goes on trusting it.
pub struct DevSet {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevSet {
    /// The set in `dir`, made first, valid for `days`, if any file is
    /// missing; the server certificate names `hosts` beside `localhost`
    /// and `127.0.0.1`.
    pub fn in_dir(dir: &Path, hosts: &[String], days: i64) -> std::io::Result<DevSet> {
        let set = DevSet {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("chat-client.pem"),
            client_key: dir.join("chat-client-key.pem"),
        };
        let files = [
            &set.ca,
            &set.server_cert,
            &set.server_key,
            &set.client_cert,
            &set.client_key,
        ];
        if files.iter().all(|file| file.is_file()) {
            return Ok(set);
        }
        std::fs::create_dir_all(dir)?;
        let made = || -> Result<_, Error> {
            let ca = DevCa::generate("chat backend development CA", days)?;
            let validity = from_an_hour_ago(Duration::days(days));
            let server =
                ca.issue_between("chat backend (development)", Usage::Server, validity, hosts)?;
            let client = ca.issue_between("chat", Usage::Client, validity, &[])?;
            Ok((ca.cert_pem, server, client))
        };
        let (ca, server, client) = made().map_err(std::io::Error::other)?;
        for (path, contents) in [
            (&set.ca, &ca),
            (&set.server_key, &server.key_pem),
            (&set.server_cert, &server.cert_pem),
            (&set.client_key, &client.key_pem),
            (&set.client_cert, &client.cert_pem),
        ] {
            std::fs::write(path, contents)?;
        }
        Ok(set)
    }
}
