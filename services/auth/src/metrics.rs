//! The auth service's domain metrics, beside the per-RPC ones.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct AuthMetrics {
    /// By result: `success`, `wrong_credentials`, `locked`.
    pub logins: IntCounterVec,
    pub refresh_tokens_rotated: IntCounter,
    /// Retired refresh tokens presented again (each revoked a family).
    pub refresh_token_reuse: IntCounter,
    /// `Check` answers by result: `allowed`, `unauthenticated`,
    /// `permission_denied`, `invalid_argument`, `unavailable` (the policy
    /// could not be confirmed current).
    pub access_checks: IntCounterVec,
    /// Mails by outcome: `sent`, `logged` (no SMTP server configured),
    /// `retried` (a try failed; it waits), `dropped` (refused for good, or
    /// not sent in time).
    pub mails: IntCounterVec,
}

impl AuthMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<AuthMetrics> {
        let metrics = AuthMetrics {
            logins: IntCounterVec::new(
                Opts::new("auth_logins_total", "Login attempts by result."),
                &["result"],
            )?,
            refresh_tokens_rotated: IntCounter::new(
                "auth_refresh_tokens_rotated_total",
                "Refresh tokens traded for their successors.",
            )?,
            refresh_token_reuse: IntCounter::new(
                "auth_refresh_token_reuse_total",
                "Retired refresh tokens presented again; each revoked its family.",
            )?,
            access_checks: IntCounterVec::new(
                Opts::new(
                    "auth_access_checks_total",
                    "AccessService/Check answers by result.",
                ),
                &["result"],
            )?,
            mails: IntCounterVec::new(
                Opts::new("auth_mails_total", "Mail deliveries by outcome."),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(metrics.logins.clone()))?;
        registry.register(Box::new(metrics.refresh_tokens_rotated.clone()))?;
        registry.register(Box::new(metrics.refresh_token_reuse.clone()))?;
        registry.register(Box::new(metrics.access_checks.clone()))?;
        registry.register(Box::new(metrics.mails.clone()))?;
        Ok(metrics)
    }
}
