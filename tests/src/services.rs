//! The services, started in-process on port 0 against fresh databases,
//! and helpers that make users and tokens through their public API.

use std::net::SocketAddr;
use std::time::Duration;

use api::auth::v1 as pb;
use api::auth::v1::access_service_client::AccessServiceClient;
use api::auth::v1::auth_service_client::AuthServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use api::chat::v1 as chat_pb;
use api::chat::v1::chat_service_client::ChatServiceClient;
use auth::config::{BootstrapAdmin, Config, SigningKey};
use host::server::Hosted as _;
use secrecy::SecretString;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::postgres;

/// What test chat services present to watch revocations.
pub const SERVICE_SECRET: &str = "test-service-secret-0123456789abcdef";

/// An access token lifetime longer than any test runs, for tests whose
/// tokens must stay valid across a step the machine decides the length of
/// and that the test does not end by logging in again: a held stream
/// through a restart, senders through a database outage. Tests that are
/// about expiry set their own.
pub const OUTLASTS_ANY_TEST: Duration = Duration::from_secs(60 * 60);

/// The admin every test auth service starts with.
pub const ADMIN_NAME: &str = "root";
pub const ADMIN_PASSWORD: &str = "root-password";

/// Settings for a test auth service: defaults, but a test signing key and
/// argon2 parameters cheap enough for hundreds of hashes.
pub fn auth_config(database_url: String) -> Config {
    let mut config = Config::with_defaults(
        SecretString::from(database_url),
        vec![SigningKey {
            id: "test".into(),
            secret: "test-signing-key-0123456789abcdef".to_owned().into(),
        }],
    );
    config.edge.grpc_addr = "127.0.0.1:0".parse().expect("a socket address");
    config.edge.http_addr = Some("127.0.0.1:0".parse().expect("a socket address"));
    config.edge.metrics_addr = Some("127.0.0.1:0".parse().expect("a socket address"));
    config.database.max_connections = 8;
    config.passwords.memory_kib = 1024;
    config.passwords.iterations = 1;
    // Every test client calls from loopback, one address for them all:
    // per-address quotas and lockouts are tested on their own.
    config.quotas = auth::config::QuotaConfig {
        registrations: None,
        anonymous_calls: None,
        password_resets: None,
        password_resets_per_email: None,
        email_changes: None,
    };
    config.lockout.address_max_failures = 1_000_000;
    config.service_secret = Some(SERVICE_SECRET.to_owned().into());
    config.bootstrap_admin = Some(BootstrapAdmin {
        name: ADMIN_NAME.into(),
        email: "root@example.com".into(),
        password: ADMIN_PASSWORD.to_owned().into(),
    });
    config
}

/// A service running on this test's runtime; stops when dropped.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl Running {
    /// Serves `run` (an application's `run_until_stopped`) until stopped.
    fn spawn<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stop_received) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        let serving = run(stop_received);
        tokio::spawn(async move {
            if let Err(error) = serving.await {
                eprintln!("a test service failed: {error:?}");
            }
            let _ = stopped_tx.send(());
        });
        Running {
            stop: Some(stop),
            stopped: Some(stopped),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A channel to `addr`, connected now: a test's clients share its one
/// connection, so no call a test times, and no token it just minted, waits
/// for a first connection. Should the server go away, the channel connects
/// again on the next call, as any channel does.
async fn connected_channel(
    addr: SocketAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Channel {
    let endpoint = match tls {
        Some(tls) => Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .expect("a valid URI")
            .tls_config(tls)
            .expect("TLS settings"),
        None => Channel::from_shared(format!("http://{addr}")).expect("a valid URI"),
    };
    endpoint
        .connect()
        .await
        .unwrap_or_else(|error| panic!("connecting to the test service at {addr}: {error}"))
}

/// A service running in this process on port 0, against its own
/// database; stops when dropped. [`TestAuth`] and [`TestChat`] are one
/// each, and read as one.
pub struct Spawned {
    pub addr: SocketAddr,
    /// The REST gateway.
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub database_url: String,
    /// The service's own database, for checking what it stored.
    pub db: sqlx::PgPool,
    /// Shared by every client of the service that the test makes.
    channel: Channel,
    running: Running,
    /// Whether the service serves TLS.
    pub tls: bool,
}

/// What a test needs of either service's `Application`.
trait Application: Sized {
    fn addrs(&self) -> (SocketAddr, Option<SocketAddr>, Option<SocketAddr>);
    fn db(&self) -> &sqlx::PgPool;
    fn serve(
        self,
        stop: oneshot::Receiver<()>,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static;
}

macro_rules! application {
    ($application:ty) => {
        impl Application for $application {
            fn addrs(&self) -> (SocketAddr, Option<SocketAddr>, Option<SocketAddr>) {
                (self.local_addr(), self.http_addr(), self.metrics_addr())
            }

            fn db(&self) -> &sqlx::PgPool {
                self.pool()
            }

            fn serve(
                self,
                stop: oneshot::Receiver<()>,
            ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
                self.run_until_stopped(async {
                    let _ = stop.await;
                })
            }
        }
    };
}

application!(auth::startup::Application);
application!(chat::startup::Application);

impl Spawned {
    async fn serve(
        app: impl Application,
        database_url: String,
        tls: Option<&host::tls::TlsSettings>,
    ) -> Spawned {
        let (addr, http_addr, metrics_addr) = app.addrs();
        let db = app.db().clone();
        let running = Running::spawn(|stop| app.serve(stop));
        Spawned {
            addr,
            http_addr: http_addr.expect("the REST gateway is on"),
            metrics_addr: metrics_addr.expect("metrics are on"),
            database_url,
            db,
            channel: connected_channel(addr, tls.and_then(crate::certificates::client_tls_for))
                .await,
            tls: tls.is_some(),
            running,
        }
    }

    /// Stops the service and waits until it has.
    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// The channel to the service, connected when the service started.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The value of one series of the service's metrics, such as
    /// `chat_messages_sent_total` or `x_total{label="value"}`, if it is
    /// exported.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let scrape = crate::http::request(self.metrics_addr, "GET", "/metrics", None, None)
            .await
            .body;
        scrape
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

/// An auth service running in this process; stops when dropped.
pub struct TestAuth(Spawned);

impl std::ops::Deref for TestAuth {
    type Target = Spawned;

    fn deref(&self) -> &Spawned {
        &self.0
    }
}

impl TestAuth {
    pub async fn spawn() -> TestAuth {
        TestAuth::spawn_with(|_| {}).await
    }

    /// With settings changed by `customize`.
    pub async fn spawn_with(customize: impl FnOnce(&mut Config)) -> TestAuth {
        TestAuth::spawn_on(postgres::fresh_database().await, customize).await
    }

    /// Another replica on `database_url`.
    pub async fn spawn_on(database_url: String, customize: impl FnOnce(&mut Config)) -> TestAuth {
        let mut config = auth_config(database_url.clone());
        customize(&mut config);
        let tls = config.edge.tls.clone();
        let app = auth::startup::Application::build(config)
            .await
            .expect("building the auth service");
        TestAuth(Spawned::serve(app, database_url, tls.as_ref()).await)
    }

    /// Stops the service and waits until it has.
    pub async fn stop(self) {
        self.0.stop().await;
    }

    /// The address chat services reach this one at.
    /// Where chat reaches it: `https://localhost:<port>` over TLS.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel())
    }

    pub fn sessions(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel())
    }

    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channel())
    }

    /// Registers `name` (email `<name>@example.com`, password
    /// `<name>-password`) and logs in.
    pub async fn register(&self, name: &str) -> TestUser {
        let password = format!("{name}-password");
        let id = self
            .users()
            .create(pb::CreateRequest {
                name: name.into(),
                email: format!("{name}@example.com"),
                password: password.clone(),
                password_confirm: password.clone(),
                role: pb::Role::Unspecified.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("registering {name}: {status:?}"))
            .into_inner()
            .id;
        self.login(id, name, &password).await
    }

    /// The admin the service started with, logged in.
    pub async fn admin(&self) -> TestUser {
        let id: i64 = sqlx::query_scalar("select id from users where name = $1")
            .bind(ADMIN_NAME)
            .fetch_one(&self.db)
            .await
            .expect("the bootstrap admin exists");
        self.login(id, ADMIN_NAME, ADMIN_PASSWORD).await
    }

    /// `user` logged in anew: tokens minted now, for a test that needs one
    /// after a step whose length depends on the machine (a process start,
    /// a restart, a browser start).
    pub async fn login_again(&self, user: &TestUser) -> TestUser {
        self.login(user.id, &user.name, &user.password).await
    }

    pub async fn login(&self, id: i64, name: &str, password: &str) -> TestUser {
        let tokens = self
            .sessions()
            .login(pb::LoginRequest {
                username: name.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("logging in {name}: {status:?}"))
            .into_inner();
        TestUser {
            id,
            name: name.into(),
            password: password.into(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        }
    }
}

/// A chat service running in this process; stops when dropped.
pub struct TestChat(Spawned);

impl std::ops::Deref for TestChat {
    type Target = Spawned;

    fn deref(&self) -> &Spawned {
        &self.0
    }
}

/// Settings for a test chat service that asks the auth service at `auth_url`.
pub fn chat_config(database_url: String, auth_url: String) -> chat::config::Config {
    let mut config =
        chat::config::Config::with_defaults(SecretString::from(database_url), auth_url);
    config.edge.grpc_addr = "127.0.0.1:0".parse().expect("a socket address");
    config.edge.http_addr = Some("127.0.0.1:0".parse().expect("a socket address"));
    config.edge.metrics_addr = Some("127.0.0.1:0".parse().expect("a socket address"));
    config.database.max_connections = 8;
    config.auth.service_secret = Some(SERVICE_SECRET.to_owned().into());
    config
}

impl TestChat {
    /// A chat service of its own database, guarded by `auth`.
    pub async fn spawn(auth: &TestAuth) -> TestChat {
        TestChat::spawn_with(auth, |_| {}).await
    }

    pub async fn spawn_with(
        auth: &TestAuth,
        customize: impl FnOnce(&mut chat::config::Config),
    ) -> TestChat {
        TestChat::spawn_on(postgres::fresh_database().await, &auth.url(), customize).await
    }

    /// A replica on `database_url`, asking the auth service at `auth_url`.
    pub async fn spawn_on(
        database_url: String,
        auth_url: &str,
        customize: impl FnOnce(&mut chat::config::Config),
    ) -> TestChat {
        let mut config = chat_config(database_url.clone(), auth_url.to_owned());
        customize(&mut config);
        let tls = config.edge.tls.clone();
        let app = chat::startup::Application::build(config)
            .await
            .expect("building the chat service");
        TestChat(Spawned::serve(app, database_url, tls.as_ref()).await)
    }

    /// Stops the service and waits until it has.
    pub async fn stop(self) {
        self.0.stop().await;
    }

    pub fn chats(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel())
    }

    /// Creates a chat as `creator` with the other `members`; its id.
    pub async fn create_chat(&self, creator: &TestUser, members: &[&TestUser]) -> i64 {
        self.chats()
            .create(creator.request(chat_pb::CreateRequest {
                usernames: members.iter().map(|member| member.name.clone()).collect(),
                title: "a chat".into(),
            }))
            .await
            .unwrap_or_else(|status| panic!("creating a chat: {status:?}"))
            .into_inner()
            .id
    }

    /// Sends `text` to `chat_id` as `sender`; the stored message.
    pub async fn send(&self, sender: &TestUser, chat_id: i64, text: &str) -> chat_pb::Message {
        self.chats()
            .send_message(sender.request(chat_pb::SendMessageRequest {
                chat_id,
                text: text.into(),
                client_message_id: String::new(),
            }))
            .await
            .unwrap_or_else(|status| panic!("sending {text:?}: {status:?}"))
            .into_inner()
            .message
            .expect("the stored message")
    }
}

/// A user and the tokens of one login.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub name: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestUser {
    /// `message` with this user's access token in the metadata.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, &self.access_token)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .expect("a valid metadata value"),
    );
    request
}

/// Retries `check` until it holds, for at most five seconds; whether it did.
/// For effects that cross replicas through PostgreSQL notifications.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
