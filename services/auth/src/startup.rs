//! Builds the service from its [`Config`] and serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use api::auth::v1::access_service_server::AccessServiceServer;
use api::auth::v1::auth_service_server::AuthServiceServer;
use api::auth::v1::user_service_server::UserServiceServer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::RoutesBuilder;
use tonic_health::server::HealthReporter;

use crate::access::{AccessPolicy, sync};
use crate::config::Config;
use crate::grpc::State;
use crate::grpc::access_service::AccessApi;
use crate::grpc::auth_service::AuthApi;
use crate::grpc::guard::Guarded;
use crate::grpc::user_service::UserApi;
use crate::passwords::PasswordHasher;
use crate::tokens::access::AccessTokens;
use crate::{MIGRATOR, bootstrap, db};

pub struct Application {
    listener: TcpListener,
    state: Arc<State>,
    routes: RoutesBuilder,
    health: HealthReporter,
    /// The tasks keeping the access policy current; stopped with the server.
    policy_sync: Vec<JoinHandle<()>>,
}

impl Application {
    /// Migrates the database, loads the access policy, creates the
    /// configured admin and binds the listener (port 0 picks a free port;
    /// [`Application::local_addr`] tells which).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config.database)?;
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the auth database")?;

        let passwords = PasswordHasher::new(&config.passwords)?;
        let policy = Arc::new(AccessPolicy::new(AccessTokens::new(&config.tokens)?));
        let policy_sync = sync::start(pool.clone(), policy.clone())
            .await
            .context("loading the access policy")?;
        if let Some(admin) = &config.bootstrap_admin
            && bootstrap::ensure_admin(&pool, &passwords, admin).await?
        {
            tracing::info!(name = admin.name, "bootstrap admin created");
        }

        let state = Arc::new(State {
            pool,
            passwords,
            policy: policy.clone(),
            tokens: config.tokens.clone(),
            lockout: config.lockout.clone(),
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health_service)
            .add_service(Guarded::new(
                UserServiceServer::new(UserApi::new(state.clone())),
                policy.clone(),
            ))
            .add_service(Guarded::new(
                AuthServiceServer::new(AuthApi::new(state.clone())),
                policy,
            ))
            .add_service(AccessServiceServer::new(AccessApi::new(state.clone())));
        serving::reflection::add_reflection(&mut routes, &[api::auth::v1::FILE_DESCRIPTOR_SET])?;

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        Ok(Application {
            listener,
            state,
            routes,
            health,
            policy_sync,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, lets
    /// in-flight calls finish and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let health = self.health.clone();
        for service in [
            "",
            "auth.v1.UserService",
            "auth.v1.AuthService",
            "auth.v1.AccessService",
        ] {
            health
                .set_service_status(service, tonic_health::ServingStatus::Serving)
                .await;
        }
        tracing::info!(addr = %self.local_addr(), "auth gRPC listening");
        let served = tonic::transport::Server::builder()
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), async move {
                shutdown.await;
                for service in [
                    "",
                    "auth.v1.UserService",
                    "auth.v1.AuthService",
                    "auth.v1.AccessService",
                ] {
                    health
                        .set_service_status(service, tonic_health::ServingStatus::NotServing)
                        .await;
                }
            })
            .await;
        for task in self.policy_sync {
            task.abort();
        }
        self.state.pool.close().await;
        tracing::info!("auth stopped");
        Ok(served?)
    }
}
