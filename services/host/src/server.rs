//! One service host: the edge both services share. A service hands it its
//! routes, its metrics and what to do around a shutdown; the host binds the
//! listeners, serves gRPC (with gRPC-Web, CORS, metrics, request ids and
//! HTTP/2 keepalive), the REST gateway and `/metrics`, reports health, and
//! shuts everything down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::client_address::TrustedProxies;
use crate::config::{Vars, incoming, optional_addr, var_or};
use crate::gateway::Gateway;
use crate::grpc_web::CorsOrigins;
use crate::metrics::{GrpcMetrics, GrpcMetricsLayer};
use crate::tls::{ServerTls, TlsListener, TlsSettings};

/// Where a service listens and how its connections are kept: the same
/// settings, under each service's prefix (`AUTH_`, `CHAT_`).
#[derive(Debug, Clone)]
pub struct Edge {
    /// Where the gRPC server listens (gRPC-Web included).
    pub grpc_addr: SocketAddr,
    /// Where the REST/JSON gateway listens; `None` turns it off.
    pub http_addr: Option<SocketAddr>,
    /// Where Prometheus scrapes `/metrics`; `None` turns it off.
    pub metrics_addr: Option<SocketAddr>,
    /// Origins whose pages may call the gRPC port with gRPC-Web.
    pub cors_origins: CorsOrigins,
    /// HTTP/2 pings on idle connections: every `interval`, and a connection
    /// whose ping is unanswered after `timeout` is closed, with its streams.
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer, an
    /// ingress); nobody's by default.
    pub trusted_proxies: TrustedProxies,
    /// TLS on the gRPC and REST listeners; off by default.
    pub tls: Option<TlsSettings>,
}

impl Edge {
    /// Every interface, on the service's usual ports; the web client's
    /// origin only.
    pub fn with_ports(grpc: u16, http: u16, metrics: u16) -> Edge {
        Edge {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], grpc)),
            http_addr: Some(SocketAddr::from(([0, 0, 0, 0], http))),
            metrics_addr: Some(SocketAddr::from(([0, 0, 0, 0], metrics))),
            cors_origins: CorsOrigins::web_client(),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
            tls: None,
        }
    }

    /// `<PREFIX>_GRPC_ADDR`, `_HTTP_ADDR`, `_METRICS_ADDR` (`off` turns the
    /// last two off), `_CORS_ORIGINS`, `_HTTP2_KEEPALIVE_INTERVAL_SECS` and
    /// `_HTTP2_KEEPALIVE_TIMEOUT_SECS`, `_TRUSTED_PROXIES` and the TLS
    /// settings of [`TlsSettings::from_vars`], over `defaults`.
    pub fn from_vars(var: &impl Vars, prefix: &str, defaults: Edge) -> anyhow::Result<Edge> {
        let name = |setting: &str| format!("{prefix}_{setting}");
        let seconds = |setting: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(Duration::from_secs(var_or(
                var,
                &name(setting),
                &default.as_secs().to_string(),
            )?))
        };
        Ok(Edge {
            grpc_addr: var_or(var, &name("GRPC_ADDR"), &defaults.grpc_addr.to_string())?,
            http_addr: optional_addr(var, &name("HTTP_ADDR"), defaults.http_addr)?,
            metrics_addr: optional_addr(var, &name("METRICS_ADDR"), defaults.metrics_addr)?,
            cors_origins: CorsOrigins::from_var(var, &name("CORS_ORIGINS"))?,
            http2_keepalive_interval: seconds(
                "HTTP2_KEEPALIVE_INTERVAL_SECS",
                defaults.http2_keepalive_interval,
            )?,
            http2_keepalive_timeout: seconds(
                "HTTP2_KEEPALIVE_TIMEOUT_SECS",
                defaults.http2_keepalive_timeout,
            )?,
            trusted_proxies: match var(&name("TRUSTED_PROXIES")) {
                Some(list) => {
                    TrustedProxies::parse(&list).with_context(|| name("TRUSTED_PROXIES"))?
                }
                None => defaults.trusted_proxies,
            },
            tls: match TlsSettings::from_vars(var, prefix)? {
                Some(tls) => Some(tls),
                None => defaults.tls,
            },
        })
    }
}

/// What a service hands the host.
pub struct Service {
    /// `auth`, `chat`: in log lines and listener errors.
    pub name: &'static str,
    /// The service's generated descriptors: reflection and the gateway.
    pub descriptor_set: &'static [u8],
    /// The proto services it serves, each reported in health.
    pub grpc_services: &'static [&'static str],
    /// Those of them the REST gateway transcodes.
    pub rest_services: &'static [&'static str],
    /// Its own routes; the host adds health and reflection.
    pub routes: RoutesBuilder,
    pub registry: Registry,
    pub grpc_metrics: GrpcMetrics,
}

/// What runs beside a service's routes, and how it stops.
pub struct Lifecycle<F> {
    /// Cancelled as soon as a shutdown starts: open streams end.
    pub stopping: CancellationToken,
    /// Tasks the service cannot serve without: should one end, the service
    /// shuts down and fails.
    pub essential: Vec<(&'static str, JoinHandle<()>)>,
    /// Tasks stopped with the server.
    pub background: Vec<JoinHandle<()>>,
    /// Runs once the servers have stopped, while the tasks still run:
    /// announcing what is left, say.
    pub on_stop: F,
    /// Closed last, once the tasks that use it have stopped.
    pub pool: sqlx::PgPool,
}

/// A service's edge, bound and ready to serve.
pub struct Host {
    name: &'static str,
    health_names: Vec<&'static str>,
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    routes: Routes,
    gateway: Option<Gateway>,
    registry: Registry,
    grpc_metrics: GrpcMetrics,
    health: HealthReporter,
    edge: Edge,
    tls: Option<ServerTls>,
}

impl Host {
    /// Adds health and reflection to the service's routes, builds its REST
    /// gateway and binds its listeners (port 0 picks a free port; the
    /// accessors tell which).
    pub async fn bind(edge: &Edge, service: Service) -> anyhow::Result<Host> {
        let Service {
            name,
            descriptor_set,
            grpc_services,
            rest_services,
            mut routes,
            registry,
            grpc_metrics,
        } = service;
        let (health, health_service) = tonic_health::server::health_reporter();
        routes.add_service(health_service);
        crate::reflection::add_reflection(&mut routes, &[descriptor_set])?;
        let routes = routes.routes();
        let gateway = match edge.http_addr {
            Some(_) => Some(Gateway::new(
                descriptor_set,
                rest_services,
                routes.clone(),
                name,
            )?),
            None => None,
        };
        let tls = match &edge.tls {
            Some(settings) => Some(settings.load().with_context(|| format!("{name} TLS"))?),
            None => None,
        };
        let listener = crate::config::bind(edge.grpc_addr, &format!("{name} gRPC")).await?;
        let http_listener = match edge.http_addr {
            Some(addr) => Some(crate::config::bind(addr, &format!("{name} REST gateway")).await?),
            None => None,
        };
        let metrics_listener = match edge.metrics_addr {
            Some(addr) => Some(crate::config::bind(addr, &format!("{name} metrics")).await?),
            None => None,
        };
        let mut health_names = vec![""];
        health_names.extend_from_slice(grpc_services);
        Ok(Host {
            name,
            health_names,
            listener,
            http_listener,
            metrics_listener,
            routes,
            gateway,
            registry,
            grpc_metrics,
            health,
            edge: edge.clone(),
            tls,
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

    /// Serves gRPC, the REST gateway and metrics until `shutdown` resolves
    /// (or an essential task ends), then reports NOT_SERVING, cancels
    /// `stopping`, lets in-flight calls finish within the grace period,
    /// runs `on_stop`, stops the tasks, closes the pool and returns. An essential
    /// task that ended is an error.
    pub async fn run<F>(
        self,
        shutdown: impl Future<Output = ()>,
        lifecycle: Lifecycle<F>,
    ) -> anyhow::Result<()>
    where
        F: Future<Output = ()>,
    {
        let Lifecycle {
            stopping: streams,
            mut essential,
            background,
            on_stop,
            pool,
        } = lifecycle;
        let name = self.name;
        let health = self.health.clone();
        crate::health::report(&health, &self.health_names, ServingStatus::Serving).await;
        let mut failed = None;
        let shutdown = async {
            tokio::select! {
                () = shutdown => {}
                ended = essential_ended(&mut essential) => {
                    tracing::error!(task = ended, "{ended} stopped; shutting down");
                    failed = Some(ended);
                }
            }
        };
        let stopping = CancellationToken::new();
        let signal = async {
            shutdown.await;
            crate::health::report(&health, &self.health_names, ServingStatus::NotServing).await;
            streams.cancel();
            stopping.cancel();
        };
        let grpc_addr = self.local_addr();
        let (tls, tls_task) = match self.tls {
            Some(tls) => {
                let (config, task) = tls.keep_current(stopping.clone());
                (Some(config), Some(task))
            }
            None => (None, None),
        };
        let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
        tracing::info!(addr = %grpc_addr, "{name} gRPC listening ({scheme})");
        let server = tonic::transport::Server::builder()
            // gRPC-Web comes over HTTP/1.1 too; it is translated first, so
            // every layer below sees gRPC.
            .accept_http1(true)
            .layer(crate::grpc_web::layers(&self.edge.cors_origins))
            .http2_keepalive_interval(Some(self.edge.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(self.edge.http2_keepalive_timeout))
            .layer(
                tower::ServiceBuilder::new()
                    .layer(GrpcMetricsLayer(self.grpc_metrics.clone()))
                    .layer(crate::decoding::DecodeErrorsAreInvalid),
            )
            .add_routes(self.routes.clone());
        let grpc: futures::future::BoxFuture<'_, Result<(), tonic::transport::Error>> = match &tls {
            Some(config) => {
                let accepted = crate::tls::accept(self.listener, config.clone(), stopping.clone());
                let incoming = tokio_stream::wrappers::ReceiverStream::new(accepted)
                    .map(|(connection, _)| Ok::<_, std::io::Error>(connection));
                Box::pin(
                    server
                        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned()),
                )
            }
            None => Box::pin(server.serve_with_incoming_shutdown(
                incoming(self.listener),
                stopping.clone().cancelled_owned(),
            )),
        };
        let grpc = crate::shutdown::within_grace(grpc, stopping.clone());
        let http = async {
            let (Some(listener), Some(gateway)) = (self.http_listener, self.gateway) else {
                return Ok(());
            };
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "{name} REST gateway listening ({scheme})");
            let router = gateway
                .into_router()
                .into_make_service_with_connect_info::<SocketAddr>();
            let done = stopping.clone().cancelled_owned();
            match &tls {
                Some(config) => {
                    let accepted = crate::tls::accept(listener, config.clone(), stopping.clone());
                    // `tap_io` gives the listener axum's connect info.
                    let listener =
                        axum::serve::ListenerExt::tap_io(TlsListener::new(accepted, addr), |_| {});
                    axum::serve(listener, router)
                        .with_graceful_shutdown(done)
                        .await
                }
                None => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(done)
                        .await
                }
            }
        };
        let metrics = crate::metrics::serve(
            self.metrics_listener,
            self.registry.clone(),
            stopping.clone().cancelled_owned(),
        );
        let ((), grpc, http, metrics) = tokio::join!(signal, grpc, http, metrics);
        on_stop.await;
        for task in essential
            .iter()
            .map(|(_, task)| task)
            .chain(&background)
            .chain(&tls_task)
        {
            task.abort();
        }
        pool.close().await;
        tracing::info!("{name} stopped");
        grpc?;
        http?;
        metrics?;
        match failed {
            Some(task) => anyhow::bail!("{task} stopped"),
            None => Ok(()),
        }
    }
}

/// The name of the first essential task to end; never, if there are none.
async fn essential_ended(tasks: &mut [(&'static str, JoinHandle<()>)]) -> &'static str {
    if tasks.is_empty() {
        return std::future::pending().await;
    }
    let names: Vec<&'static str> = tasks.iter().map(|(name, _)| *name).collect();
    let (_, index, _) = futures::future::select_all(tasks.iter_mut().map(|(_, task)| task)).await;
    names[index]
}

/// The caller a service's guard put on the request before any handler ran.
/// A handler that finds none was served without its guard: a bug, and so
/// `INTERNAL`.
pub fn guarded_caller<C, T>(request: &tonic::Request<T>) -> Result<C, tonic::Status>
where
    C: Clone + Send + Sync + 'static,
{
    request.extensions().get::<C>().cloned().ok_or_else(|| {
        tracing::error!(
            "a guarded handler ran without a caller: is the service wrapped in the guard?"
        );
        tonic::Status::internal("internal error")
    })
}

/// A service's application, served by a [`Host`]: where it listens.
pub trait Hosted {
    fn host(&self) -> &Host;

    /// The gRPC listener's address.
    fn local_addr(&self) -> SocketAddr {
        self.host().local_addr()
    }

    /// The REST gateway's address, when it is on.
    fn http_addr(&self) -> Option<SocketAddr> {
        self.host().http_addr()
    }

    /// The metrics endpoint's address, when it is on.
    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.host().metrics_addr()
    }
}
