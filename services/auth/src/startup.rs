//! Builds the service from its [`Config`] and serves it.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::RoutesBuilder;
use tonic_health::server::HealthReporter;

use crate::config::Config;
use crate::{MIGRATOR, db};

pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    routes: RoutesBuilder,
    health: HealthReporter,
}

impl Application {
    /// Migrates the database and binds the listener (port 0 picks a free
    /// port; [`Application::local_addr`] tells which).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config.database)?;
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the auth database")?;
        let rules = db::access_rules::all(&pool).await?;
        tracing::info!(rules = rules.len(), "access rules loaded");

        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        serving::reflection::add_reflection(&mut routes, &[api::auth::v1::FILE_DESCRIPTOR_SET])?;

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        Ok(Application {
            listener,
            pool,
            routes,
            health,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, lets
    /// in-flight calls finish and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let health = self.health.clone();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tracing::info!(addr = %self.local_addr(), "auth gRPC listening");
        tonic::transport::Server::builder()
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), async move {
                shutdown.await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            })
            .await?;
        self.pool.close().await;
        tracing::info!("auth stopped");
        Ok(())
    }
}
