//! Builds the service from its [`Config`] and serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use api::chat::v1::chat_service_server::ChatServiceServer;
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

use crate::access_watch::AccessWatch;
use crate::app::App;
use crate::auth_client::AuthClient;
use crate::config::Config;
use crate::grpc::chat_service::ChatApi;
use crate::grpc::guard::Guarded;
use crate::hub::Hub;
use crate::metrics::ChatMetrics;
use crate::{MIGRATOR, db};

const SERVICES: [&str; 2] = ["", "chat.v1.ChatService"];

pub struct Application {
    listener: TcpListener,
    /// Who may call with gRPC-Web from a browser.
    cors_origins: serving::grpc_web::CorsOrigins,
    /// The REST gateway's, when it is on.
    http_listener: Option<TcpListener>,
    /// Transcodes REST calls into calls of the same guarded routes.
    gateway: Option<Gateway>,
    /// The metrics endpoint's, when it is on.
    metrics_listener: Option<TcpListener>,
    state: Arc<App>,
    routes: Routes,
    registry: Registry,
    grpc_metrics: GrpcMetrics,
    health: HealthReporter,
    /// The hub's fan-out; stopped with the server, and stops it if it ends.
    hub_task: JoinHandle<()>,
    /// The watch over open streams' access; stopped with the server.
    access_tasks: Vec<JoinHandle<()>>,
    /// HTTP/2 keepalive interval and timeout.
    keepalive: (std::time::Duration, std::time::Duration),
}

impl Application {
    /// Migrates the database, starts the message hub and binds the
    /// listener (port 0 picks a free port; [`Application::local_addr`]
    /// tells which). Auth is connected on first use.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let grpc_metrics = GrpcMetrics::new(&registry, api::chat::v1::FILE_DESCRIPTOR_SET, &[])?;
        let metrics = ChatMetrics::new(&registry)?;
        let pool = db::connect(&config.database)?;
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the chat database")?;
        let (hub, hub_task) = Hub::start(
            pool.clone(),
            db::connect_options(&config.database)?,
            &config,
            &metrics,
        )
        .await
        .context("starting the fan-out of chat events")?;
        let auth = AuthClient::connect_lazy(&config.auth).context("the auth service's address")?;
        let (access, access_tasks) = AccessWatch::start(auth.clone());
        let state = Arc::new(App {
            pool,
            auth: auth.clone(),
            access,
            hub,
            shutdown: CancellationToken::new(),
            metrics,
            stream_stall_timeout: config.stream_stall_timeout,
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service).add_service(Guarded::new(
            ChatServiceServer::new(ChatApi::new(state.clone())),
            auth,
            state.access.clone(),
        ));
        serving::reflection::add_reflection(&mut routes, &[api::chat::v1::FILE_DESCRIPTOR_SET])?;
        let routes = routes.routes();
        let gateway = match config.http_addr {
            Some(_) => Some(Gateway::new(
                api::chat::v1::FILE_DESCRIPTOR_SET,
                &["chat.v1.ChatService"],
                routes.clone(),
                "chat",
            )?),
            None => None,
        };

        let listener = serving::config::bind(config.grpc_addr, "chat gRPC").await?;
        let http_listener = match config.http_addr {
            Some(addr) => Some(serving::config::bind(addr, "chat REST gateway").await?),
            None => None,
        };
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(serving::config::bind(addr, "chat metrics").await?),
            None => None,
        };
        Ok(Application {
            listener,
            cors_origins: config.cors_origins.clone(),
            http_listener,
            gateway,
            metrics_listener,
            state,
            routes,
            registry,
            grpc_metrics,
            health,
            hub_task,
            access_tasks,
            keepalive: (
                config.http2_keepalive_interval,
                config.http2_keepalive_timeout,
            ),
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

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, ends the
    /// open streams (UNAVAILABLE, with where to resume), lets in-flight
    /// calls finish and returns. Should the hub's fan-out end (a bug), it
    /// shuts down the same way and fails: streams would otherwise stop
    /// hearing other replicas' messages.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let health = self.health.clone();
        serving::health::report(&health, &SERVICES, tonic_health::ServingStatus::Serving).await;
        tracing::info!(addr = %self.local_addr(), "chat gRPC listening");
        let mut hub_task = self.hub_task;
        let mut hub_failed = false;
        let shutdown = async {
            tokio::select! {
                () = shutdown => {}
                ended = &mut hub_task => {
                    tracing::error!(?ended, "the fan-out of chat events stopped; shutting down");
                    hub_failed = true;
                }
            }
        };
        let stopping = CancellationToken::new();
        let streams = self.state.shutdown.clone();
        let signal = async {
            shutdown.await;
            serving::health::report(&health, &SERVICES, tonic_health::ServingStatus::NotServing)
                .await;
            streams.cancel();
            stopping.cancel();
        };
        let grpc = tonic::transport::Server::builder()
            // gRPC-Web comes over HTTP/1.1 too; it is translated first, so
            // every layer below sees gRPC.
            .accept_http1(true)
            .layer(serving::grpc_web::layers(&self.cors_origins))
            .http2_keepalive_interval(Some(self.keepalive.0))
            .http2_keepalive_timeout(Some(self.keepalive.1))
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
                    tracing::info!(addr = %listener.local_addr()?, "chat REST gateway listening");
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
        self.state.hub.flush().await;
        hub_task.abort();
        for task in &self.access_tasks {
            task.abort();
        }
        self.state.pool.close().await;
        tracing::info!("chat stopped");
        grpc?;
        http?;
        metrics?;
        anyhow::ensure!(!hub_failed, "the fan-out of chat events stopped");
        Ok(())
    }
}
