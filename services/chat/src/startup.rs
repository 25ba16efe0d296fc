//! Builds the service from its [`Config`] and hands it to the service host.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use api::chat::v1::chat_service_server::ChatServiceServer;
use host::metrics::GrpcMetrics;
use host::server::{Host, Hosted, Lifecycle, Service};
use prometheus::Registry;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

use crate::access_watch::AccessWatch;
use crate::app::App;
use crate::auth_client::AuthClient;
use crate::config::Config;
use crate::departures::pending::Departures;
use crate::group_commit::GroupCommit;
use crate::grpc::chat_service::ChatApi;
use crate::grpc::guard::Guarded;
use crate::hub::Hub;
use crate::metrics::ChatMetrics;
use crate::quotas::Quotas;
use crate::{MIGRATOR, db};

pub struct Application {
    host: Host,
    app: Arc<App>,
    /// The hub's fan-out: should it end (a bug), the service stops and
    /// fails, as streams would no longer hear other replicas' messages.
    hub_task: JoinHandle<()>,
    /// The watch over open streams' access; stopped with the server.
    access_tasks: Vec<JoinHandle<()>>,
}

impl Hosted for Application {
    fn host(&self) -> &Host {
        &self.host
    }
}

impl Application {
    /// Migrates the database, starts the message hub and binds the
    /// listeners (port 0 picks a free port; [`Application::local_addr`]
    /// tells which, through [`Hosted`]). Auth is connected on first use.
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
        let departures = Arc::new(Departures::default());
        let (access, mut access_tasks) = AccessWatch::start(
            auth.clone(),
            departures.clone(),
            config.auth.access_cache_ttl,
        );
        // The writers end once the last sender is gone: after the last
        // call that could send has finished.
        let (writes, _writers) = GroupCommit::start(
            pool.clone(),
            hub.clone(),
            metrics.clone(),
            config.group_commit,
        );
        let app = Arc::new(App {
            pool,
            auth: auth.clone(),
            access,
            hub,
            shutdown: CancellationToken::new(),
            metrics,
            stream_stall_timeout: config.stream_stall_timeout,
            quotas: Quotas::new(&config.quotas, &registry)?,
            typists: crate::app::typing::Typists::default(),
            writes,
        });
        access_tasks.extend(crate::departures::start(departures, app.clone()));
        let mut routes = RoutesBuilder::default();
        routes.add_service(Guarded::new(
            ChatServiceServer::new(ChatApi::new(app.clone())),
            auth,
            app.access.clone(),
        ));
        let host = Host::bind(
            &config.edge,
            Service {
                name: "chat",
                descriptor_set: api::chat::v1::FILE_DESCRIPTOR_SET,
                grpc_services: &["chat.v1.ChatService"],
                rest_services: &["chat.v1.ChatService"],
                routes,
                registry,
                grpc_metrics,
            },
        )
        .await?;
        Ok(Application {
            host,
            app,
            hub_task,
            access_tasks,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.app.pool
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, ends the
    /// open streams (UNAVAILABLE, with where to resume), lets in-flight
    /// calls finish, announces what is left and returns. Should the hub's
    /// fan-out end (a bug), it shuts down the same way and fails.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let app = self.app.clone();
        let lifecycle = Lifecycle {
            stopping: app.shutdown.clone(),
            essential: vec![("the fan-out of chat events", self.hub_task)],
            background: self.access_tasks,
            on_stop: async move { app.hub.flush().await },
            pool: self.app.pool.clone(),
        };
        self.host.run(shutdown, lifecycle).await
    }
}
