//! Builds the service from its [`Config`] and hands it to the service host.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use api::auth::v1::access_service_server::AccessServiceServer;
use api::auth::v1::auth_service_server::AuthServiceServer;
use api::auth::v1::user_service_server::UserServiceServer;
use host::metrics::GrpcMetrics;
use host::server::{Host, Hosted, Lifecycle, Service};
use prometheus::Registry;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

use crate::access::service::ServiceSecret;
use crate::access::{AccessPolicy, sync};
use crate::app::App;
use crate::config::Config;
use crate::grpc::access_service::AccessApi;
use crate::grpc::auth_service::AuthApi;
use crate::grpc::guard::Guarded;
use crate::grpc::user_service::UserApi;
use crate::lockout::Lockout;
use crate::mail::sender::MailQueued;
use crate::metrics::AuthMetrics;
use crate::passwords::PasswordHasher;
use crate::pruning::Pruning;
use crate::quotas::AddressQuotas;
use crate::tokens::access::AccessTokens;
use crate::{MIGRATOR, backfill, bootstrap, db, mail};

pub struct Application {
    host: Host,
    state: Arc<App>,
    /// The tasks keeping the access policy current and pruning; stopped
    /// with the server.
    background: Vec<JoinHandle<()>>,
}

impl Hosted for Application {
    fn host(&self) -> &Host {
        &self.host
    }
}

impl Application {
    /// Migrates the database, loads the access policy, creates the
    /// configured admin and binds the listener (port 0 picks a free port;
    /// [`Application::local_addr`] tells which, through [`Hosted`]).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let pool = db::connect(&config.database)?;
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the auth database")?;
        backfill::name_skeletons(&pool)
            .await
            .context("comparing existing names by their looks")?;

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
        let policy = Arc::new(
            AccessPolicy::new(
                AccessTokens::new(&config.tokens)?,
                config.policy_max_staleness,
            )
            .with_service_secret(config.service_secret.as_ref().map(|secret| {
                use secrecy::ExposeSecret as _;
                ServiceSecret::new(secret.expose_secret())
            }))
            .with_service_certificates(
                config
                    .edge
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.client_ca_file.is_some())
                    .then(|| config.service_client_names.clone()),
            ),
        );
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

        let mail_queued = MailQueued::default();
        background.push(
            mail::sender::Sender::new(
                pool.clone(),
                &config.mail,
                metrics.clone(),
                mail_queued.clone(),
            )?
            .start(),
        );

        let quotas = Arc::new(AddressQuotas::new(
            &config.quotas,
            config.edge.trusted_proxies.clone(),
            &registry,
        )?);
        let state = Arc::new(App {
            pool: pool.clone(),
            passwords,
            policy: policy.clone(),
            tokens: config.tokens.clone(),
            lockout: Lockout::new(pool.clone(), config.lockout.clone()),
            devices: config.devices.clone(),
            quotas: quotas.clone(),
            metrics,
            shutdown: CancellationToken::new(),
            policy_max_staleness: config.policy_max_staleness,
            mail: config.mail.clone(),
            mail_queued,
        });
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(Guarded::new(
                UserServiceServer::new(UserApi::new(state.clone())),
                policy.clone(),
                quotas.clone(),
            ))
            .add_service(Guarded::new(
                AuthServiceServer::new(AuthApi::new(state.clone())),
                policy,
                quotas,
            ))
            .add_service(AccessServiceServer::new(AccessApi::new(state.clone())));
        let host = Host::bind(
            &config.edge,
            Service {
                name: "auth",
                descriptor_set: api::auth::v1::FILE_DESCRIPTOR_SET,
                grpc_services: &[
                    "auth.v1.UserService",
                    "auth.v1.AuthService",
                    "auth.v1.AccessService",
                ],
                rest_services: &["auth.v1.UserService", "auth.v1.AuthService"],
                routes,
                registry,
                grpc_metrics,
            },
        )
        .await?;
        Ok(Application {
            host,
            state,
            background,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// Serves gRPC, the REST gateway and metrics until `shutdown`
    /// resolves, then reports NOT_SERVING, ends revocation watches, lets
    /// in-flight calls finish and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let state = self.state.clone();
        let lifecycle = Lifecycle {
            stopping: state.shutdown.clone(),
            essential: Vec::new(),
            background: self.background,
            on_stop: async {},
            pool: state.pool.clone(),
        };
        self.host.run(shutdown, lifecycle).await
    }
}
