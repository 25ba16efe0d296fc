//! The wire boundary: one module per proto service, and the guard that
//! applies the access rules to them. Requests are checked here (the proto's
//! rules, then the domain's) and turned into domain values before anything
//! else happens.

pub mod access_service;
pub mod auth_service;
pub mod guard;
pub mod user_service;

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::access::{AccessPolicy, Caller};
use crate::config::TokenConfig;
use crate::lockout::Lockout;
use crate::metrics::AuthMetrics;
use crate::passwords::PasswordHasher;

/// What the handlers share.
pub struct State {
    pub pool: PgPool,
    pub passwords: PasswordHasher,
    pub policy: Arc<AccessPolicy>,
    pub tokens: TokenConfig,
    pub lockout: Lockout,
    pub metrics: AuthMetrics,
    /// Cancelled when the server starts shutting down: watches end.
    pub shutdown: CancellationToken,
    /// The SHA-256 of what services present to watch revocations, if any.
    pub watch_secret: Option<[u8; 32]>,
    /// A policy older than this is not vouched for by watch heartbeats.
    pub policy_max_staleness: std::time::Duration,
}

/// The caller the guard let through.
fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    host::server::guarded_caller(request)
}
