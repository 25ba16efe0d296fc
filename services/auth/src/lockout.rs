//! Brute-force protection: every password check (logins, and the current
//! password of `ChangePassword`) is one attempt against the limit of its
//! [`Scope`], so that nobody can aim a lock at someone else:
//!
//! - a login presenting a valid device token for the user it names counts
//!   against that device alone (OWASP's device cookies): its owner gets in
//!   from a device they used before while strangers lock the name;
//! - any other login counts against its name, whether or not a user has
//!   it, so that neither the answer nor the lock tells which names exist,
//!   and against its client address across every name (credential
//!   stuffing);
//! - `ChangePassword` counts against the caller's session, so a stolen
//!   access token cannot lock its owner out of logging in.
//!
//! An attempt reserves a slot before the password is checked and settles
//! it after, in a task of its own, so that a caller who goes away mid-check
//! cannot leave its slot taken. Failures plus pending checks never exceed
//! the limit, so concurrent wrong guesses cannot overshoot it; an attempt
//! that finds every slot taken waits for one (at most [`SLOT_WAIT_LIMIT`])
//! instead of being refused, so concurrent right ones all get through.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use host::client_address;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

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

/// Whom an attempt counts against.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A login from a client the name's owner never logged in from.
    Name(String),
    /// A login presenting a valid device token (its digest) for its user.
    Device(Vec<u8>),
    /// A session checking its user's current password.
    Session(Uuid),
    /// A token without a session: the user's own password changes.
    User(i64),
    /// A scope by its key, as a login waiting for its second factor kept
    /// it: its codes count where its password did.
    Kept(String),
}

impl Scope {
    /// How the scope's attempts are counted.
    pub fn key(&self) -> String {
        match self {
            Scope::Kept(key) => key.clone(),
            Scope::Name(name) => format!("name:{name}"),
            Scope::Device(digest) => format!("device:{}", hex(digest)),
            Scope::Session(family) => format!("session:{family}"),
            Scope::User(id) => format!("user:{id}"),
        }
    }
}

/// One password check: whom it counts against, and from where. Only
/// attempts with an address count toward that address's limit.
pub struct Attempt {
    pub scope: Scope,
    pub address: Option<IpAddr>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What a password check found.
pub enum Verdict<T> {
    Right(T),
    Wrong,
    /// Right, but a second factor is still due: nothing is counted or
    /// cleared until it is checked (in an attempt of its own).
    Halfway(T),
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

    /// Runs `check` as one attempt against its scope's limit, and its
    /// address's: a lockout error while either is locked, else the check's
    /// verdict, counted.
    pub async fn attempt<T, F>(&self, attempt: Attempt, check: F) -> Result<Verdict<T>>
    where
        T: Send + 'static,
        F: Future<Output = Result<Verdict<T>>> + Send + 'static,
    {
        let lockout = self.clone();
        tokio::spawn(async move { lockout.run(attempt, check).await })
            .await
            .context("a login attempt panicked")?
    }

    async fn run<T>(
        &self,
        attempt: Attempt,
        check: impl Future<Output = Result<Verdict<T>>>,
    ) -> Result<Verdict<T>> {
        let address = attempt
            .address
            .map(|address| format!("address:{}", client_address::counted_as(address)));
        if let Some(address) = &address
            && let Some(until) = db::login_throttle::locked_until(&self.pool, address).await?
        {
            return Err(crate::error::address_locked(retry_after(until)));
        }
        let name = &attempt.scope.key();
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
                let counted = match &address {
                    Some(address) => {
                        db::login_throttle::count_address_failure(&self.pool, address, &self.config)
                            .await
                    }
                    None => Ok(()),
                };
                let settled =
                    db::login_throttle::settle_wrong(&self.pool, name, &self.config).await;
                counted.and(settled)
            }
            Ok(Verdict::Halfway(_)) | Err(_) => db::login_throttle::release(&self.pool, name).await,
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
                return Err(crate::error::locked(retry_after(until)));
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(crate::error::busy(Duration::from_secs(1)));
            }
            let _ = tokio::time::timeout(poll, settled).await;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
    }
}

/// How long until `until`, at least a second.
fn retry_after(until: OffsetDateTime) -> Duration {
    (until - OffsetDateTime::now_utc())
        .max(time::Duration::SECOND)
        .try_into()
        .unwrap_or(Duration::from_secs(1))
}
