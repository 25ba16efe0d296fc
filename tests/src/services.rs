//! The services, started in-process on port 0 against fresh databases,
//! and helpers that make users and tokens through their public API.

use std::net::SocketAddr;
use std::time::Duration;

use api::auth::v1 as pb;
use api::auth::v1::access_service_client::AccessServiceClient;
use api::auth::v1::auth_service_client::AuthServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use auth::config::{BootstrapAdmin, Config, SigningKey};
use secrecy::SecretString;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::postgres;

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
    config.grpc_addr = "127.0.0.1:0".parse().expect("a socket address");
    config.database.max_connections = 8;
    config.passwords.memory_kib = 1024;
    config.passwords.iterations = 1;
    config.bootstrap_admin = Some(BootstrapAdmin {
        name: ADMIN_NAME.into(),
        email: "root@example.com".into(),
        password: ADMIN_PASSWORD.to_owned().into(),
    });
    config
}

/// An auth service running in this process; stops when dropped.
pub struct TestAuth {
    pub addr: SocketAddr,
    pub database_url: String,
    /// The service's own database, for checking what it stored.
    pub db: sqlx::PgPool,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
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
        let app = auth::startup::Application::build(config)
            .await
            .expect("building the auth service");
        let addr = app.local_addr();
        let db = app.pool().clone();
        let (stop, stop_received) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = stop_received.await;
                })
                .await;
            let _ = stopped_tx.send(());
        });
        TestAuth {
            addr,
            database_url,
            db,
            stop: Some(stop),
            stopped: Some(stopped),
        }
    }

    /// Stops the service and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }

    /// A channel to the service, connected on first use.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect_lazy()
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

    pub async fn login(&self, id: i64, name: &str, password: &str) -> TestUser {
        let tokens = self
            .sessions()
            .login(pb::LoginRequest {
                username: name.into(),
                password: password.into(),
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

impl Drop for TestAuth {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
