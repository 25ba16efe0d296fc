//! Certificates made for a test by a CA of its own ([`dev_ca`]), written as
//! PEM files in a directory of their own, as a deployment hands them to the
//! services.

use std::path::{Path, PathBuf};

use dev_ca::{DevCa, Usage};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A test's CA. Its certificate is `ca.pem` in [`TestCa::dir`], where the
/// certificates it issues are written too.
pub struct TestCa {
    ca: DevCa,
    pub dir: PathBuf,
    pub cert_pem: String,
}

/// A certificate the CA issued, and its key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    /// The key's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

impl TestCa {
    pub fn generate() -> TestCa {
        let dir = std::env::temp_dir().join(format!("tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        let ca = DevCa::generate("chat backend test CA", 1).expect("a CA");
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).expect("writing ca.pem");
        TestCa {
            cert_pem: ca.cert_pem.clone(),
            ca,
            dir,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `localhost` and `127.0.0.1`, written as
    /// `<name>.pem` and `<name>-key.pem`.
    pub fn server(&self, name: &str) -> Issued {
        self.written(name, self.ca.issue(name, Usage::Server, 1))
    }

    /// A client certificate named `name` (its common name), for mutual
    /// TLS, written as `<name>-client.pem` and `<name>-client-key.pem`, so
    /// that it never overwrites a server certificate of the same name.
    pub fn client(&self, name: &str) -> Issued {
        self.written(
            &format!("{name}-client"),
            self.ca.issue(name, Usage::Client, 1),
        )
    }

    /// A server certificate that expired yesterday.
    pub fn expired_server(&self, name: &str) -> Issued {
        let now = time::OffsetDateTime::now_utc();
        let validity = (now - time::Duration::days(2), now - time::Duration::days(1));
        self.written(
            name,
            self.ca.issue_between(name, Usage::Server, validity, &[]),
        )
    }

    fn written(&self, name: &str, issued: Result<dev_ca::Issued, dev_ca::Error>) -> Issued {
        let issued = issued.expect("a certificate");
        let issued = Issued {
            cert_file: self.dir.join(format!("{name}.pem")),
            key_file: self.dir.join(format!("{name}-key.pem")),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            cert_der: issued.cert_der,
            spki_der: issued.spki_der,
        };
        issued.write_to(&issued.cert_file, &issued.key_file);
        issued
    }

    /// What a client that trusts this CA connects with, presenting
    /// `identity` if given.
    pub fn client_tls(&self, identity: Option<&Issued>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.cert_pem))
            .domain_name("localhost");
        match identity {
            Some(issued) => config.identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem)),
            None => config,
        }
    }

    /// A channel to a TLS service on `addr`.
    pub async fn channel(
        &self,
        addr: std::net::SocketAddr,
        identity: Option<&Issued>,
    ) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .expect("a valid URI")
            .tls_config(self.client_tls(identity))?
            .connect()
            .await
    }

    /// The TLS settings of a service serving `issued`.
    pub fn settings(&self, issued: &Issued) -> host::tls::TlsSettings {
        host::tls::TlsSettings::new(issued.cert_file.clone(), issued.key_file.clone())
    }
}

impl Issued {
    /// Writes the certificate and key over the files at these paths.
    pub fn write_to(&self, cert_file: &Path, key_file: &Path) {
        std::fs::write(key_file, &self.key_pem).expect("writing the key");
        std::fs::write(cert_file, &self.cert_pem).expect("writing the certificate");
    }

    /// The SHA-256 of the key's SubjectPublicKeyInfo, base64: how Chromium
    /// names a key to trust (`--ignore-certificate-errors-spki-list`).
    pub fn spki_sha256_base64(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&self.spki_der))
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client TLS a test service's own channel uses: trusting the CA whose
/// `ca.pem` lies beside the service's certificate.
pub fn client_tls_for(settings: &host::tls::TlsSettings) -> Option<ClientTlsConfig> {
    let ca = std::fs::read_to_string(settings.cert_file.parent()?.join("ca.pem")).ok()?;
    Some(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost"),
    )
}
