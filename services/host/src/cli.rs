//! What both services' command lines share: the commands every service
//! has, and the runtime their `main` runs on.

use std::future::Future;

/// The commands of every service.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Common {
    /// Serve gRPC, REST and metrics (the default).
    Serve,
    /// Exit 0 if this service's gRPC server (at its _GRPC_ADDR) reports
    /// SERVING (for container health checks).
    Healthcheck,
}

/// A service's `main`: a multi-threaded runtime, logs and traces (as
/// `service`), and `run` on it to its end.
pub fn main<F>(service: &str, run: impl FnOnce() -> F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _logs = {
        let _entered = runtime.enter();
        crate::telemetry::init(service)
    };
    runtime.block_on(run())
}

/// The `healthcheck` command: asks the server at `<prefix>_GRPC_ADDR` (or
/// at `default_addr` when unset) whether it is serving, over TLS when
/// `<prefix>_TLS_CERT_FILE` is set.
pub async fn healthcheck(prefix: &str, default_addr: &str) -> anyhow::Result<()> {
    let addr =
        std::env::var(format!("{prefix}_GRPC_ADDR")).unwrap_or_else(|_| default_addr.to_owned());
    let tls =
        std::env::var_os(format!("{prefix}_TLS_CERT_FILE")).is_some_and(|path| !path.is_empty());
    crate::health::probe(addr.parse()?, tls).await
}
