//! Brute-force protection: every password check (logins, and the current
//! password of `ChangePassword`) is one attempt against its login name's
//! limit, whether or not a user has that name, so that neither the answer
//! nor the lock tells which names exist.
//!
//! An attempt reserves a slot before the password is checked and settles
//! it after, in a task of its own, so that a caller who goes away mid-check
//! cannot leave its slot taken. Failures plus pending checks never exceed
//! the limit, so concurrent wrong guesses cannot overshoot it; an attempt
//! that finds every slot taken waits for one (at most [`SLOT_WAIT_LIMIT`])
//! instead of being refused, so concurrent right ones all get through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::LockoutConfig;
use crate::db;
use crate::error::{Error, Result};

/// The longest an attempt waits for a free slot.
pub const SLOT_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// How often a waiting attempt looks again at first, when no attempt on
/// this replica settles meanwhile; the wait doubles up to a second.
const SLOT_POLL: Duration = Duration::from_millis(50);
/// The longest a reserved check may take, hashing queue included; well
/// under the minute after which pending slots are taken for lost.
pub const CHECK_LIMIT: Duration = Duration::from_secs(20);

/// What a password check found.
pub enum Verdict<T> {
    Right(T),
    Wrong,
}

#[derive(Clone)]
pub struct Lockout {
    pool: PgPool,
    config: LockoutConfig,
    /// Woken whenever an attempt on this replica settles.
    settled: Arc<Notify>,
}

impl Lockout {
    pub fn new(pool: PgPool, config: LockoutConfig) -> Lockout {
        Lockout {
            pool,
            config,
            settled: Arc::default(),
        }
    }

    /// Runs `check` as one attempt against `name`'s limit: a lockout error
    /// while the name is locked, else the check's verdict, counted.
    pub async fn attempt<T, F>(&self, name: &str, check: F) -> Result<Verdict<T>>
    where
        T: Send + 'static,
        F: Future<Output = Result<Verdict<T>>> + Send + 'static,
    {
        let lockout = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move { lockout.run(&name, check).await })
            .await
            .context("a login attempt panicked")?
    }

    async fn run<T>(
        &self,
        name: &str,
        check: impl Future<Output = Result<Verdict<T>>>,
    ) -> Result<Verdict<T>> {
        self.reserve(name).await?;
        let verdict = match tokio::time::timeout(CHECK_LIMIT, check).await {
            Ok(verdict) => verdict,
            Err(_) => Err(Error::Unavailable(
                "too many password checks are waiting; try again".into(),
            )),
        };
        let settled = match &verdict {
            Ok(Verdict::Right(_)) => db::login_throttle::settle_right(&self.pool, name).await,
            Ok(Verdict::Wrong) => {
                db::login_throttle::settle_wrong(&self.pool, name, &self.config).await
            }
            Err(_) => db::login_throttle::release(&self.pool, name).await,
        };
        self.settled.notify_waiters();
        if let Err(error) = settled {
            // The slot stays taken until it goes stale (a minute).
            tracing::warn!(%error, "settling a login attempt failed");
        }
        verdict
    }

    /// Waits for a slot; a lockout error if the name is locked, a busy one
    /// if no slot came free in time.
    async fn reserve(&self, name: &str) -> Result<()> {
        let give_up = tokio::time::Instant::now() + SLOT_WAIT_LIMIT;
        let mut poll = SLOT_POLL;
        loop {
            let settled = self.settled.notified();
            if db::login_throttle::reserve(&self.pool, name, &self.config).await? {
                return Ok(());
            }
            if let Some(until) = db::login_throttle::locked_until(&self.pool, name).await? {
                let retry_after = (until - OffsetDateTime::now_utc()).max(time::Duration::SECOND);
                return Err(crate::error::locked(
                    retry_after.try_into().unwrap_or(Duration::from_secs(1)),
                ));
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(crate::error::busy(Duration::from_secs(1)));
            }
            let _ = tokio::time::timeout(poll, settled).await;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
    }
}
