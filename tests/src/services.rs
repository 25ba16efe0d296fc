//! The services, started in-process on port 0 against fresh databases.

use std::net::SocketAddr;

use secrecy::SecretString;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::postgres;

/// An auth service running in this process; stops when dropped.
pub struct TestAuth {
    pub addr: SocketAddr,
    /// The service's own database, for checking what it stored.
    pub db: sqlx::PgPool,
    stop: Option<oneshot::Sender<()>>,
}

impl TestAuth {
    pub async fn spawn() -> TestAuth {
        let database_url = postgres::fresh_database().await;
        let config = auth::config::Config {
            grpc_addr: "127.0.0.1:0".parse().expect("a socket address"),
            database: auth::config::DatabaseConfig {
                url: SecretString::from(database_url),
                max_connections: 5,
            },
        };
        let app = auth::startup::Application::build(config)
            .await
            .expect("building the auth service");
        let addr = app.local_addr();
        let db = app.pool().clone();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        TestAuth {
            addr,
            db,
            stop: Some(stop),
        }
    }

    /// A channel to the service, connected on first use.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect_lazy()
    }
}

impl Drop for TestAuth {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
