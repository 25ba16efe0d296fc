//! The signal that starts a graceful shutdown.

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, whichever comes first.
pub async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// How long in-flight calls may take to finish once a shutdown starts.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `server` to its end, but no longer than [`GRACE`] after `stopping`
/// is cancelled: a call that never ends by itself (a health watch, say)
/// must not keep the process alive.
pub async fn within_grace<T>(
    server: impl std::future::Future<Output = Result<(), T>>,
    stopping: tokio_util::sync::CancellationToken,
) -> Result<(), T> {
    tokio::select! {
        served = server => served,
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(GRACE).await;
        } => {
            tracing::warn!(grace = ?GRACE, "calls still in flight after the grace period are cut off");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_ends_is_cut_off_a_grace_period_after_the_shutdown() {
        let stopping = CancellationToken::new();
        stopping.cancel();
        let started = tokio::time::Instant::now();
        let served: Result<(), ()> = within_grace(std::future::pending(), stopping).await;
        assert!(served.is_ok());
        assert_eq!(started.elapsed(), GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_shutdown_nothing_is_cut_off() {
        let running = within_grace::<()>(std::future::pending(), CancellationToken::new());
        assert!(tokio::time::timeout(GRACE * 3, running).await.is_err());
    }
}
