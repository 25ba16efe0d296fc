//! Builds the service from its [`Config`] and serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use api::auth::v1::access_service_server::AccessServiceServer;
use api::auth::v1::auth_service_server::AuthServiceServer;
use api::auth::v1::user_service_server::UserServiceServer;
use prometheus::Registry;
use serving::config::incoming;
use serving::gateway::Gateway;
use serving::metrics::{GrpcMetrics, GrpcMetricsLayer};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::server::HealthReporter;

use crate::access::{AccessPolicy, sync};
use crate::config::Config;
use crate::grpc::State;
use crate::grpc::access_service::AccessApi;
use crate::grpc::auth_service::AuthApi;
use crate::grpc::guard::Guarded;
use crate::grpc::user_service::UserApi;
use crate::lockout::Lockout;
use crate::metrics::AuthMetrics;
use crate::passwords::PasswordHasher;
use crate::pruning::Pruning;
use crate::tokens::access::AccessTokens;
use crate::{MIGRATOR, bootstrap, db};

const SERVICES: [&str; 4] = [
    "",
    "auth.v1.UserService",
    "auth.v1.AuthService",
    "auth.v1.AccessService",
];

pub struct Application {
    listener: TcpListener,
    /// Who may call with gRPC-Web from a browser.
    cors_origins: serving::grpc_web::CorsOrigins,
    /// The REST gateway's, when it is on.
    http_listener: Option<TcpListener>,
    /// The metrics endpoint's, when it is on.
    metrics_listener: Option<TcpListener>,
    state: Arc<State>,
    routes: Routes,
    gateway: Option<Gateway>,
    registry: Registry,
    grpc_metrics: GrpcMetrics,
    health: HealthReporter,
    /// The tasks keeping the access policy current and pruning; stopped
    /// with the server.
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Migrates the database, loads the access policy, creates the
    /// configured admin and binds the listener (port 0 picks a free port;
    /// [`Application::local_addr`] tells which).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let pool = db::connect(&config.database)?;
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the auth database")?;

        let registry = Registry::new();
        let grpc_metrics = GrpcMetrics::new(
            &registry,
            api::auth::v1::FILE_DESCRIPTOR_SET,
            // One per guarded call of another service, which logs that call.
            &["/auth.v1.AccessService/Check"],
        )?;
        let metrics = AuthMetrics::new(&registry)?;
        let passwords = PasswordHasher::new(&config.passwords)?;
        registry.register(Box::new(passwords.in_flight().clone()))?;
        let policy = Arc::new(AccessPolicy::new(
            AccessTokens::new(&config.tokens)?,
            config.policy_max_staleness,
        ));
        let mut background = sync::start(
            pool.clone(),
            db::connect_options(&config.database)?,
            policy.clone(),
        )
        .await
        .context("loading the access policy")?;
        background.push(
            Pruning {
                pool: pool.clone(),
                revocation_lifetime: policy.revocation_lifetime(),
                failure_reset: config.lockout.failure_reset,
            }
            .start(config.prune_interval),
        );
        if let Some(admin) = &config.bootstrap_admin
            && bootstrap::ensure_admin(&pool, &passwords, admin).await?
        {
            tracing::info!(name = admin.name, "bootstrap admin created");
        }

        let state = Arc::new(State {
            pool: pool.clone(),
            passwords,
            policy: policy.clone(),
            tokens: config.tokens.clone(),
            lockout: Lockout::new(pool.clone(), config.lockout.clone()),
            metrics,
            shutdown: CancellationToken::new(),
            watch_secret: config.watch_secret.as_ref().map(|secret| {
                use secrecy::ExposeSecret as _;
                use sha2::Digest as _;
                sha2::Sha256::digest(secret.expose_secret().as_bytes()).into()
            }),
            policy_max_staleness: config.policy_max_staleness,
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
        let routes = routes.routes();
        let gateway = match config.http_addr {
            Some(_) => Some(Gateway::new(
                api::auth::v1::FILE_DESCRIPTOR_SET,
                &["auth.v1.UserService", "auth.v1.AuthService"],
                routes.clone(),
                "auth",
            )?),
            None => None,
        };

        let listener = serving::config::bind(config.grpc_addr, "auth gRPC").await?;
        let http_listener = match config.http_addr {
            Some(addr) => Some(serving::config::bind(addr, "auth REST gateway").await?),
            None => None,
        };
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(serving::config::bind(addr, "auth metrics").await?),
            None => None,
        };
        Ok(Application {
            listener,
            cors_origins: config.cors_origins.clone(),
            http_listener,
            metrics_listener,
            state,
            routes,
            gateway,
            registry,
            grpc_metrics,
            health,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The REST gateway's address, when it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The metrics endpoint's address, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Serves gRPC, the REST gateway and metrics until `shutdown`
    /// resolves, then reports NOT_SERVING, lets in-flight calls finish and
    /// returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let health = self.health.clone();
        serving::health::report(&health, &SERVICES, tonic_health::ServingStatus::Serving).await;
        tracing::info!(addr = %self.local_addr(), "auth gRPC listening");
        let stopping = CancellationToken::new();
        let signal = async {
            shutdown.await;
            serving::health::report(&health, &SERVICES, tonic_health::ServingStatus::NotServing)
                .await;
            self.state.shutdown.cancel();
            stopping.cancel();
        };
        let grpc = tonic::transport::Server::builder()
            // gRPC-Web comes over HTTP/1.1 too; it is translated first, so
            // every layer below sees gRPC.
            .accept_http1(true)
            .layer(serving::grpc_web::layers(&self.cors_origins))
            .layer(
                tower::ServiceBuilder::new()
                    .layer(GrpcMetricsLayer(self.grpc_metrics.clone()))
                    .layer(serving::decoding::DecodeErrorsAreInvalid),
            )
            .add_routes(self.routes.clone())
            .serve_with_incoming_shutdown(
                incoming(self.listener),
                stopping.clone().cancelled_owned(),
            );
        let grpc = serving::shutdown::within_grace(grpc, stopping.clone());
        let http = async {
            match (self.http_listener, self.gateway) {
                (Some(listener), Some(gateway)) => {
                    tracing::info!(addr = %listener.local_addr()?, "auth REST gateway listening");
                    axum::serve(listener, gateway.into_router())
                        .with_graceful_shutdown(stopping.clone().cancelled_owned())
                        .await
                }
                _ => Ok(()),
            }
        };
        let metrics = serving::metrics::serve(
            self.metrics_listener,
            self.registry.clone(),
            stopping.clone().cancelled_owned(),
        );
        let ((), grpc, http, metrics) = tokio::join!(signal, grpc, http, metrics);
        for task in self.background {
            task.abort();
        }
        self.state.pool.close().await;
        tracing::info!("auth stopped");
        grpc?;
        http?;
        metrics?;
        Ok(())
    }
}
