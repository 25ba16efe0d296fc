//! Deletes what no longer matters, so that no table grows with use alone:
//! expired refresh tokens, families that can never be used again,
//! revocations older than every access token they refuse, and login
//! throttles with nothing to remember, names held after a rename once the
//! hold ends, expired device tokens, login challenges and mailed tokens, and
//! mail not sent in time. Every replica
//! prunes; the deletes are idempotent.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::db;
use crate::error::Result;

/// Rows deleted per statement, so that no delete holds locks for long.
const BATCH: i64 = 5_000;

/// What one round deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub refresh_tokens: u64,
    pub refresh_families: u64,
    pub revocations: u64,
    pub login_throttles: u64,
    pub released_names: u64,
    pub device_tokens: u64,
    pub login_challenges: u64,
    pub email_tokens: u64,
    /// Mails not sent by their deliver-by time.
    pub mails: u64,
}

pub struct Pruning {
    pub pool: PgPool,
    /// Revocations older than this refuse no unexpired token.
    pub revocation_lifetime: Duration,
    /// Failures older than this are forgotten.
    pub failure_reset: Duration,
}

impl Pruning {
    /// Prunes every `interval` until the task is aborted.
    pub fn start(self, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match self.prune().await {
                    Ok(pruned) => tracing::debug!(?pruned, "pruned"),
                    Err(error) => tracing::warn!(%error, "pruning failed"),
                }
            }
        })
    }

    /// One round.
    pub async fn prune(&self) -> Result<Pruned> {
        let pool = &self.pool;
        let mut pruned = Pruned {
            revocations: db::revocations::prune(pool, self.revocation_lifetime).await?,
            ..Pruned::default()
        };
        loop {
            let done = db::refresh_tokens::prune_expired(pool, BATCH).await?;
            pruned.refresh_tokens += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::refresh_families::prune(pool, BATCH).await?;
            pruned.refresh_families += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::login_throttle::prune(pool, self.failure_reset, BATCH).await?;
            pruned.login_throttles += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::released_names::prune(pool, BATCH).await?;
            pruned.released_names += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::device_tokens::prune(pool, BATCH).await?;
            pruned.device_tokens += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::login_challenges::prune(pool, BATCH).await?;
            pruned.login_challenges += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::email_tokens::prune(pool, BATCH).await?;
            pruned.email_tokens += done;
            if done < BATCH as u64 {
                break;
            }
        }
        loop {
            let done = db::mail_outbox::prune(pool, BATCH).await?;
            pruned.mails += done;
            if done < BATCH as u64 {
                break;
            }
        }
        if pruned.mails > 0 {
            tracing::error!(mails = pruned.mails, "mail dropped: not sent in time");
        }
        Ok(pruned)
    }
}
