//! The application layer: one module per capability, each owning its
//! transactions, rules and revocations, on typed ids. The wire boundary
//! ([`crate::grpc`]) converts requests into the values these take, and
//! answers with what they return.

pub mod accounts;
pub mod email_verification;
pub mod password_reset;
pub mod proof;
pub mod session_control;
pub mod sessions;
pub mod two_factor;

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::access::AccessPolicy;
use crate::config::{DeviceConfig, TokenConfig};
use crate::lockout::Lockout;
use crate::mail::MailConfig;
use crate::mail::sender::MailQueued;
use crate::metrics::AuthMetrics;
use crate::passwords::PasswordHasher;
use crate::quotas::AddressQuotas;

/// What every capability works with.
pub struct App {
    pub pool: PgPool,
    pub passwords: PasswordHasher,
    pub policy: Arc<AccessPolicy>,
    pub tokens: TokenConfig,
    pub lockout: Lockout,
    pub devices: DeviceConfig,
    /// What one client address may ask how often.
    pub quotas: Arc<AddressQuotas>,
    pub metrics: AuthMetrics,
    /// Cancelled when the server starts shutting down: watches end.
    pub shutdown: CancellationToken,
    /// A policy older than this is not vouched for by watch heartbeats.
    pub policy_max_staleness: std::time::Duration,
    /// How mails are worded and how long their tokens work.
    pub mail: MailConfig,
    /// Wakes this replica's mail sender after a call queued mail.
    pub mail_queued: MailQueued,
}
