//! TLS on every listener, chat reaching auth over TLS, mutual TLS for the
//! calls chat makes on its own behalf, and certificates rotated on disk,
//! with certificates made by the test's own CA.

use std::sync::Arc;
use std::time::Duration;

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tests::certificates::{Issued, TestCa};
use tests::services::{TestAuth, TestChat, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::streams::{connect, next_message};

/// The certificate a TLS server at `addr` hands a client that trusts `ca`.
async fn served_certificate(ca: &TestCa, addr: std::net::SocketAddr) -> Vec<u8> {
    handshake_from(ca, addr, "127.0.0.1")
        .await
        .unwrap_or_else(|error| panic!("a TLS handshake with {addr}: {error}"))
}

async fn health(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_gets_in_and_a_plaintext_one_is_refused() {
    let ca = TestCa::generate();
    let cert = ca.server("auth");
    let auth = TestAuth::spawn_with(|config| config.edge.tls = Some(ca.settings(&cert))).await;

    // Over TLS: registering and logging in work (the harness's channel).
    let ada = auth.register("ada").await;
    assert!(ada.id > 0);
    let trusted = ca.channel(auth.addr, None).await.expect("a TLS connection");
    health(trusted).await.expect("health over TLS");

    // gRPC in plaintext: the connection ends at its first bytes.
    let plaintext = Channel::from_shared(format!("http://{}", auth.addr))
        .expect("a URI")
        .connect_lazy();
    let refused = health(plaintext).await.expect_err("plaintext gRPC");
    assert!(
        matches!(refused.code(), Code::Unavailable | Code::Unknown),
        "{refused:?}"
    );

    // A client that does not trust the CA gets no connection.
    let stranger = TestCa::generate();
    assert!(stranger.channel(auth.addr, None).await.is_err());

    // REST serves the same certificate, and answers no plaintext request.
    assert_eq!(served_certificate(&ca, auth.http_addr).await, cert.cert_der);
    let mut tcp = tokio::net::TcpStream::connect(auth.http_addr)
        .await
        .expect("connecting");
    tcp.write_all(b"GET /v1/users/1 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("writing");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plaintext REST request was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn chat_refuses_an_auth_whose_certificate_it_does_not_trust_and_fails_closed() {
    let ca = TestCa::generate();
    let cert = ca.server("auth");
    let auth = TestAuth::spawn_with(|config| config.edge.tls = Some(ca.settings(&cert))).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;

    let stranger = TestCa::generate();
    let misled = TestChat::spawn_with(&auth, |config| {
        config.auth.tls.ca_file = Some(stranger.ca_file());
    })
    .await;
    let refused = misled
        .chats()
        .create(ada.request(pb::CreateRequest {
            usernames: vec![grace.name.clone()],
            title: "a chat".into(),
        }))
        .await
        .expect_err("auth's certificate is not trusted");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    let trusting = TestChat::spawn_with(&auth, |config| {
        config.auth.tls.ca_file = Some(ca.ca_file());
    })
    .await;
    let chat_id = trusting.create_chat(&ada, &[&grace]).await;
    assert!(chat_id > 0);
}

/// Auth asking for client certificates from its client CA.
async fn auth_with_mutual_tls(ca: &TestCa) -> TestAuth {
    let cert = ca.server("auth");
    TestAuth::spawn_with(|config| {
        let mut tls = ca.settings(&cert);
        tls.client_ca_file = Some(ca.ca_file());
        config.edge.tls = Some(tls);
    })
    .await
}

#[tokio::test]
async fn mutual_tls_refuses_a_check_without_a_client_certificate() {
    let ca = TestCa::generate();
    let auth = auth_with_mutual_tls(&ca).await;
    let ada = auth.register("ada").await;
    let check = || {
        ada.request(auth_pb::CheckRequest {
            endpoint_address: "/chat.v1.ChatService/SendMessage".into(),
        })
    };

    // Users call auth's own services without a certificate (the harness).
    let without = auth
        .access()
        .check(check())
        .await
        .expect_err("no certificate");
    assert_eq!(without.code(), Code::Unauthenticated, "{without:?}");
    assert!(host::error::refuses_service_credential(&without));

    let chat_cert = ca.client("chat");
    let certified = ca
        .channel(auth.addr, Some(&chat_cert))
        .await
        .expect("a mutual TLS connection");
    let mut access = auth_pb::access_service_client::AccessServiceClient::new(certified.clone());
    let me = access
        .check(check())
        .await
        .expect("a certified check")
        .into_inner();
    assert_eq!(me.user_id, ada.id);
    // The certificate stands for the service secret on the lookups.
    let names = auth_pb::user_service_client::UserServiceClient::new(certified)
        .lookup_user_ids(auth_pb::LookupUserIdsRequest { ids: vec![ada.id] })
        .await
        .expect("a certified lookup")
        .into_inner();
    assert_eq!(names.users[0].name, "ada");
    // A secret alone no longer opens them.
    let secret_only = auth
        .users()
        .lookup_user_ids(tests::services::with_token(
            auth_pb::LookupUserIdsRequest { ids: vec![ada.id] },
            tests::services::SERVICE_SECRET,
        ))
        .await
        .expect_err("a secret without a certificate");
    assert_eq!(secret_only.code(), Code::Unauthenticated);

    // Of the certificates the client CA issues, only a service's (by its
    // common name, AUTH_SERVICE_CLIENT_NAMES) stands for a service.
    let ingress = ca.client("ingress");
    let not_a_service = auth_pb::access_service_client::AccessServiceClient::new(
        ca.channel(auth.addr, Some(&ingress))
            .await
            .expect("a certified connection"),
    )
    .check(check())
    .await
    .expect_err("a certificate that is no service's");
    assert!(
        host::error::refuses_service_credential(&not_a_service),
        "{not_a_service:?}"
    );

    // A certificate from another CA gets no connection at all.
    let stranger = TestCa::generate();
    let forged = stranger.client("chat");
    let refused = async {
        let channel = ca.channel(auth.addr, Some(&forged)).await?;
        Ok::<_, Box<dyn std::error::Error>>(
            auth_pb::access_service_client::AccessServiceClient::new(channel)
                .check(check())
                .await?,
        )
    }
    .await;
    assert!(refused.is_err(), "a stranger's certificate was accepted");
}

#[tokio::test]
async fn chat_with_its_client_certificate_needs_no_secret_and_chat_without_one_fails_closed() {
    let ca = TestCa::generate();
    let auth = auth_with_mutual_tls(&ca).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_cert = ca.client("chat");

    let certified = TestChat::spawn_with(&auth, |config| {
        config.auth.service_secret = None;
        config.auth.tls.ca_file = Some(ca.ca_file());
        config.auth.tls.client_cert_file = Some(chat_cert.cert_file.clone());
        config.auth.tls.client_key_file = Some(chat_cert.key_file.clone());
    })
    .await;
    let chat_id = certified.create_chat(&ada, &[&grace]).await;
    let chat = certified
        .chats()
        .get_chat(grace.request(pb::GetChatRequest { id: chat_id }))
        .await
        .expect("members' names, looked up with the certificate")
        .into_inner()
        .chat
        .expect("the chat");
    let names: Vec<_> = chat
        .members
        .iter()
        .map(|member| member.username.as_str())
        .collect();
    assert_eq!(names, ["ada", "grace"]);

    let uncertified = TestChat::spawn_with(&auth, |config| {
        config.auth.tls.ca_file = Some(ca.ca_file());
    })
    .await;
    let refused = uncertified
        .chats()
        .get_chat(grace.request(pb::GetChatRequest { id: chat_id }))
        .await
        .expect_err("chat has no certificate");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_to_new_connections_while_an_open_stream_survives()
{
    let ca = TestCa::generate();
    let auth = TestAuth::spawn().await;
    let first = ca.server("chat");
    let chat = TestChat::spawn_with(&auth, |config| {
        let mut tls = ca.settings(&first);
        tls.reload_interval = Duration::from_millis(200);
        config.edge.tls = Some(tls);
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    assert_eq!(served_certificate(&ca, chat.addr).await, first.cert_der);
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    // A half-written rotation is not served: the old certificate stays.
    std::fs::write(&first.cert_file, "-----BEGIN CERTIFICATE-----\n").expect("truncating");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_certificate(&ca, chat.addr).await, first.cert_der);

    let second: Issued = ca.server("chat-rotated");
    second.write_to(&first.cert_file, &first.key_file);
    let rotated =
        eventually(|| async { served_certificate(&ca, chat.addr).await == second.cert_der }).await;
    assert!(rotated, "the rotated certificate is not served");

    chat.send(&ada, chat_id, "still here").await;
    let message = next_message(&mut stream).await;
    assert_eq!(message.text, "still here");
}

#[tokio::test]
async fn bad_tls_settings_stop_the_service_at_start_naming_the_file() {
    let ca = TestCa::generate();
    let good = ca.server("auth");
    let other = ca.server("other");
    let expired = ca.expired_server("expired");
    let settings = |cert: &std::path::Path, key: &std::path::Path| {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        host::tls::TlsSettings::from_vars(
            &move |name: &str| match name {
                "AUTH_TLS_CERT_FILE" => Some(cert.clone()),
                "AUTH_TLS_KEY_FILE" => Some(key.clone()),
                _ => None,
            },
            "AUTH",
        )
        .expect("settings")
        .expect("TLS is on")
    };
    let missing = ca.dir.join("missing.pem");
    for (cert, key, expected) in [
        (&missing, &good.key_file, "AUTH_TLS_CERT_FILE"),
        (
            &good.cert_file,
            &other.key_file,
            "is not the key of the certificate",
        ),
        (&expired.cert_file, &expired.key_file, "expired"),
    ] {
        let failed = match settings(cert, key).load() {
            Ok(_) => panic!("{} with {} loaded", cert.display(), key.display()),
            Err(error) => format!("{error:#}"),
        };
        assert!(failed.contains(expected), "{failed}");
        let path = if expected == "AUTH_TLS_CERT_FILE" {
            cert
        } else {
            key
        };
        assert!(
            failed.contains(&path.display().to_string())
                || failed.contains(&cert.display().to_string()),
            "{failed}"
        );
    }
    let half = host::tls::TlsSettings::from_vars(
        &|name: &str| (name == "AUTH_TLS_CERT_FILE").then(|| "cert.pem".to_owned()),
        "AUTH",
    )
    .expect_err("a certificate without a key");
    assert!(half.to_string().contains("AUTH_TLS_KEY_FILE"), "{half}");
}

/// The container health check (`auth healthcheck`) speaks TLS to a TLS
/// port, and goes on passing while a rotation that does not load leaves
/// the server on its previous certificate: it asks whether the service
/// serves, and a failing probe would restart a healthy service into a
/// start that fails on the same files.
#[tokio::test]
async fn the_health_check_probes_a_tls_port_and_survives_a_rotation_that_does_not_load() {
    let ca = TestCa::generate();
    let cert = ca.server("auth");
    let auth = TestAuth::spawn_with(|config| {
        let mut tls = ca.settings(&cert);
        tls.reload_interval = Duration::from_millis(200);
        config.edge.tls = Some(tls);
    })
    .await;
    let probe = |tls: bool| {
        let mut command =
            tokio::process::Command::new(tests::process::binary(tests::process::Service::Auth));
        command
            .arg("healthcheck")
            .env("AUTH_GRPC_ADDR", auth.addr.to_string())
            .env_remove("AUTH_TLS_CERT_FILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if tls {
            command.env("AUTH_TLS_CERT_FILE", &cert.cert_file);
        }
        async move {
            command
                .status()
                .await
                .expect("running auth healthcheck")
                .success()
        }
    };
    assert!(probe(true).await, "the probe over TLS fails");
    assert!(
        !probe(false).await,
        "a plaintext probe of a TLS port passes"
    );
    // Another certificate over the old key: it does not load, and the
    // server goes on with the pair it had.
    let other = ca.server("other");
    std::fs::write(&cert.cert_file, &other.cert_pem).expect("a bad rotation");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_certificate(&ca, auth.addr).await, cert.cert_der);
    assert!(probe(true).await, "the probe fails while the server serves");
}

/// Idle connections that never finish a handshake cannot hold a TLS port:
/// past 16 under way from one address, that address's next connection is
/// closed at once, and other addresses still get in.
#[tokio::test]
async fn one_address_cannot_hold_a_tls_port_with_idle_handshakes() {
    let ca = TestCa::generate();
    let cert = ca.server("auth");
    let auth = TestAuth::spawn_with(|config| config.edge.tls = Some(ca.settings(&cert))).await;
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(
            tokio::net::TcpStream::connect(auth.addr)
                .await
                .expect("connecting"),
        );
    }
    // Let the listener take them all in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let same = handshake_from(&ca, auth.addr, "127.0.0.1").await;
    assert!(same.is_err(), "a 17th handshake from one address went on");
    let other = handshake_from(&ca, auth.addr, "127.0.0.2")
        .await
        .expect("another address gets in");
    assert_eq!(other, cert.cert_der);
    drop(idle);
    let again =
        eventually(|| async { handshake_from(&ca, auth.addr, "127.0.0.1").await.is_ok() }).await;
    assert!(
        again,
        "the address gets in once its idle connections are gone"
    );
}

/// A TLS handshake with the server at `addr` from the local address
/// `from`; the certificate it served.
async fn handshake_from(
    ca: &TestCa,
    addr: std::net::SocketAddr,
    from: &str,
) -> Result<Vec<u8>, String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("the CA"))
        .expect("trusting the CA");
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = tokio::net::TcpSocket::new_v4().map_err(|error| error.to_string())?;
    socket
        .bind(format!("{from}:0").parse().expect("an address"))
        .map_err(|error| error.to_string())?;
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|error| error.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("a name"), tcp),
    )
    .await
    .map_err(|_| "no handshake in time".to_owned())?
    .map_err(|error| error.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec())
}
