//! The wire boundary: `chat.v1.ChatService`, and the guard that asks auth
//! about every call before it reaches a handler.

pub mod chat_service;
pub mod guard;
pub mod outbound;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::access_watch::AccessWatch;
use crate::auth_client::AuthClient;
use crate::domain::Caller;
use crate::hub::Hub;
use crate::metrics::ChatMetrics;

/// What the handlers share.
pub struct State {
    pub pool: PgPool,
    pub auth: AuthClient,
    pub access: Arc<AccessWatch>,
    pub hub: Arc<Hub>,
    /// Cancelled when the server starts shutting down: open streams end.
    pub shutdown: CancellationToken,
    pub metrics: ChatMetrics,
    /// A stream whose client reads nothing for this long is ended.
    pub stream_stall_timeout: Duration,
}

/// The caller auth vouched for.
fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!(
                "a guarded handler ran without a caller: is the service wrapped in the guard?"
            );
            Status::internal("internal error")
        })
}
