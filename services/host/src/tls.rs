//! TLS on a service's gRPC and REST listeners (rustls), from PEM files:
//! `<PREFIX>_TLS_CERT_FILE` (the certificate, then its chain) and
//! `<PREFIX>_TLS_KEY_FILE`. With them set, a listener speaks TLS only: a
//! plaintext client's connection ends at its first bytes. Metrics stay
//! plaintext on their own port.
//!
//! The files are read again every `<PREFIX>_TLS_RELOAD_SECS` (10 s): a
//! certificate rotated in place (cert-manager, a Kubernetes Secret) is
//! served to new connections, and open ones, streams included, go on. A
//! rotation that does not load (a half-written file, a key that does not
//! match) is logged and the previous certificate kept. At start-up the
//! same faults, and an expired certificate, stop the service with the
//! file's name.
//!
//! `<PREFIX>_CLIENT_CA_FILE` asks clients for a certificate issued by that
//! CA. A client may connect without one; one that presents a certificate
//! the CA did not issue is refused. The service decides which calls need
//! one (see [`peer_certified`]).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
pub use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::Vars;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once, per listener; a connection beyond them
/// is closed at once, so that idle connections cannot hold the listener.
const CONCURRENT_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one client address: no one address
/// takes the listener's handshakes for itself.
const HANDSHAKES_PER_ADDRESS: usize = 16;
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// Where a service's certificate and key are, and how it checks clients.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA whose client certificates are accepted, if clients are asked
    /// for one.
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are read again.
    pub reload_interval: Duration,
    /// The variables' names, for messages: `AUTH_TLS_CERT_FILE`, ...
    names: [String; 2],
}

impl TlsSettings {
    pub fn new(cert_file: PathBuf, key_file: PathBuf) -> TlsSettings {
        TlsSettings {
            cert_file,
            key_file,
            client_ca_file: None,
            reload_interval: Duration::from_secs(10),
            names: ["TLS_CERT_FILE".into(), "TLS_KEY_FILE".into()],
        }
    }

    /// `<PREFIX>_TLS_CERT_FILE`, `_TLS_KEY_FILE` (both or neither),
    /// `_TLS_RELOAD_SECS` and `_CLIENT_CA_FILE` (which needs the other
    /// two); `None` when TLS is off.
    pub fn from_vars(var: &impl Vars, prefix: &str) -> anyhow::Result<Option<TlsSettings>> {
        let name = |setting: &str| format!("{prefix}_{setting}");
        let path = |setting: &str| var(&name(setting)).filter(|value| !value.trim().is_empty());
        let client_ca = path("CLIENT_CA_FILE");
        let (cert, key) = match (path("TLS_CERT_FILE"), path("TLS_KEY_FILE")) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if client_ca.is_some() {
                    bail!(
                        "{} asks clients for certificates, which takes TLS: set {} and {}",
                        name("CLIENT_CA_FILE"),
                        name("TLS_CERT_FILE"),
                        name("TLS_KEY_FILE")
                    );
                }
                return Ok(None);
            }
            (Some(_), None) | (None, Some(_)) => bail!(
                "TLS takes both {} and {}",
                name("TLS_CERT_FILE"),
                name("TLS_KEY_FILE")
            ),
        };
        let reload_secs: u64 = crate::config::var_or(var, &name("TLS_RELOAD_SECS"), "10")?;
        anyhow::ensure!(
            reload_secs > 0,
            "{} must be at least 1",
            name("TLS_RELOAD_SECS")
        );
        Ok(Some(TlsSettings {
            cert_file: cert.into(),
            key_file: key.into(),
            client_ca_file: client_ca.map(PathBuf::from),
            reload_interval: Duration::from_secs(reload_secs),
            names: [name("TLS_CERT_FILE"), name("TLS_KEY_FILE")],
        }))
    }

    /// Loads the certificate, its key and the client CA, refusing what
    /// would not serve: a missing file, a key that does not match, an
    /// expired certificate.
    pub fn load(&self) -> anyhow::Result<ServerTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = self.certified_key(&provider)?;
        let resolver = Arc::new(Rotating {
            current: RwLock::new(Arc::new(certified.key)),
        });
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path, "CLIENT_CA_FILE")? {
                    roots
                        .add(cert)
                        .with_context(|| format!("{}: not a CA certificate", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .allow_unauthenticated()
                        .build()
                        .with_context(|| format!("{}: no usable CA", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        // gRPC needs HTTP/2; gRPC-Web and REST clients may speak HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            resolver,
            settings: self.clone(),
            loaded: certified.files,
        })
    }

    fn certified_key(&self, provider: &rustls::crypto::CryptoProvider) -> anyhow::Result<Loaded> {
        let [cert_name, key_name] = &self.names;
        let cert_pem = std::fs::read(&self.cert_file)
            .with_context(|| format!("{cert_name}={}: cannot read it", self.cert_file.display()))?;
        let key_pem = std::fs::read(&self.key_file)
            .with_context(|| format!("{key_name}={}: cannot read it", self.key_file.display()))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|error| {
                anyhow::anyhow!(
                    "{cert_name}={}: not PEM certificates: {error}",
                    self.cert_file.display()
                )
            })?;
        let Some(leaf) = chain.first() else {
            bail!(
                "{cert_name}={}: holds no certificate",
                self.cert_file.display()
            );
        };
        check_validity(leaf)
            .with_context(|| format!("{cert_name}={}", self.cert_file.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
            anyhow::anyhow!(
                "{key_name}={}: not a PEM private key: {error}",
                self.key_file.display()
            )
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|error| {
                anyhow::anyhow!(
                    "{key_name}={}: an unusable key: {error}",
                    self.key_file.display()
                )
            })?;
        let key = CertifiedKey::new(chain, signing_key);
        if key.keys_match().is_err() {
            bail!(
                "{key_name}={} is not the key of the certificate in {cert_name}={}",
                self.key_file.display(),
                self.cert_file.display()
            );
        }
        Ok(Loaded {
            key,
            files: (cert_pem, key_pem),
        })
    }
}

struct Loaded {
    key: CertifiedKey,
    files: (Vec<u8>, Vec<u8>),
}

/// Refuses a certificate that is not valid now.
fn check_validity(leaf: &CertificateDer<'_>) -> anyhow::Result<()> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|error| anyhow::anyhow!("not an X.509 certificate: {error}"))?;
    let validity = cert.tbs_certificate.validity;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if validity.not_after.to_unix_duration() < now {
        bail!("the certificate expired at {}", validity.not_after);
    }
    if validity.not_before.to_unix_duration() > now {
        bail!(
            "the certificate is not valid before {}",
            validity.not_before
        );
    }
    Ok(())
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|error| anyhow::anyhow!("{what}={}: {error}", path.display()))?;
    if certs.is_empty() {
        bail!("{what}={}: holds no certificate", path.display());
    }
    Ok(certs)
}

/// The certificate served now; replaced when its files change.
#[derive(Debug)]
struct Rotating {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A service's TLS, loaded: what its listeners hand clients.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    resolver: Arc<Rotating>,
    settings: TlsSettings,
    /// The files' contents as last loaded.
    loaded: (Vec<u8>, Vec<u8>),
}

impl ServerTls {
    /// Reads the files again every reload interval and serves what they
    /// hold once it loads, until `stopping`.
    pub fn keep_current(
        mut self,
        stopping: CancellationToken,
    ) -> (Arc<ServerConfig>, tokio::task::JoinHandle<()>) {
        let config = self.config.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(self.settings.reload_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = every.tick() => self.reload(),
                    () = stopping.cancelled() => return,
                }
            }
        });
        (config, task)
    }

    fn reload(&mut self) {
        let (Ok(cert), Ok(key)) = (
            std::fs::read(&self.settings.cert_file),
            std::fs::read(&self.settings.key_file),
        ) else {
            tracing::warn!(file = %self.settings.cert_file.display(), "the certificate or its key cannot be read; serving the one loaded before");
            return;
        };
        if (&cert, &key) == (&self.loaded.0, &self.loaded.1) {
            return;
        }
        let provider = rustls::crypto::ring::default_provider();
        match self.settings.certified_key(&provider) {
            Ok(loaded) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded.key);
                self.loaded = loaded.files;
                tracing::info!(file = %self.settings.cert_file.display(), "certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "a changed certificate does not load; serving the one loaded before"
                );
            }
        }
    }
}

/// Connections on `listener` that finished a TLS handshake, with their
/// peers' addresses. Handshakes run beside each other, each given
/// [`HANDSHAKE_TIMEOUT`]; one that fails (a plaintext client, say) only
/// closes its connection. Connections keep being accepted however many
/// handshakes are under way: one beyond [`CONCURRENT_HANDSHAKES`], or
/// beyond [`HANDSHAKES_PER_ADDRESS`] from its address, is closed at once.
pub fn accept(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stopping: CancellationToken,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let per_address: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopping.cancelled() => return,
                () = sender.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many TLS handshakes under way; connection closed");
                continue;
            };
            let Some(slot) = AddressSlot::take(&per_address, peer.ip()) else {
                tracing::debug!(%peer, "too many TLS handshakes from this address; connection closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                drop((permit, slot));
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = sender.send((tls, peer)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "a TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}

/// One handshake of an address under way; the address's count goes down
/// when it is dropped, and its entry goes with its last handshake.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    address: std::net::IpAddr,
}

impl AddressSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        address: std::net::IpAddr,
    ) -> Option<AddressSlot> {
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = map.entry(address).or_insert(0);
        if *count >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// The handshaken connections of [`accept`] as an axum listener.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    pub fn new(
        accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
        local_addr: SocketAddr,
    ) -> TlsListener {
        TlsListener {
            accepted,
            local_addr,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped: so is the server, about to.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Connects to this machine's own TLS server on `addr` (loopback), taking
/// whatever certificate it serves: a service probing itself (its health
/// check) asks whether it serves, not who it is, and nothing but itself
/// answers on its own loopback port. It must not trust only the files on
/// disk: after a rotation that does not load, the server rightly goes on
/// serving the pair it loaded before, and a probe that refused it would
/// have the orchestrator restart a healthy service into a failing start.
pub async fn connect_to_self(
    addr: SocketAddr,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "a service probes itself on loopback only, not {addr}"
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OwnServer { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?.to_owned();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

/// Takes the certificate of the service's own server on loopback (see
/// [`connect_to_self`]); the handshake's signatures are still checked.
#[derive(Debug)]
struct OwnServer {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for OwnServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The common names in a certificate's subject (DER).
pub fn common_names(cert: &[u8]) -> Vec<String> {
    use x509_cert::der::Decode as _;
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    const COMMON_NAME: x509_cert::der::asn1::ObjectIdentifier =
        x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    let Ok(cert) = x509_cert::Certificate::from_der(cert) else {
        return Vec::new();
    };
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|attribute| attribute.oid == COMMON_NAME)
        .filter_map(|attribute| {
            Utf8StringRef::try_from(&attribute.value)
                .map(|name| name.as_str().to_owned())
                .or_else(|_| {
                    PrintableStringRef::try_from(&attribute.value)
                        .map(|name| name.as_str().to_owned())
                })
                .ok()
        })
        .collect()
}

/// Whether the connection's client certificate (which the handshake
/// verified against the client CA) names one of `allowed` as its common
/// name: of the certificates a CA issues, only the services' open what
/// services may call.
pub fn peer_named(
    certs: Option<&std::sync::Arc<Vec<CertificateDer<'static>>>>,
    allowed: &[String],
) -> bool {
    certs.and_then(|certs| certs.first()).is_some_and(|leaf| {
        common_names(leaf.as_ref())
            .iter()
            .any(|name| allowed.iter().any(|allowed| allowed == name))
    })
}

/// The client certificates of the connection an HTTP request came over.
pub fn peer_certs<B>(
    request: &http::Request<B>,
) -> Option<std::sync::Arc<Vec<CertificateDer<'static>>>> {
    request
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(tonic::transport::server::TlsConnectInfo::peer_certs)
}
