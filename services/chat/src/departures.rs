//! Accounts that auth deleted leave their chats. Auth's revocation feed
//! names every user whose tokens it revokes, a deletion among them: each
//! such user who is a member anywhere is looked up in auth, and one auth
//! no longer knows leaves every chat, as leaving does (the creator role
//! passes on; a chat left empty is deleted). A resync of the feed (every
//! reconnect, so deletions missed while it was down are caught up on) and
//! an hourly timer sweep every member instead.
//!
//! Every replica does this; a second replica to take a user out finds them
//! gone and does nothing. Lookups are made with the service secret.
//!
//! A sweep asks about every member first and acts only after: if auth
//! knows fewer than half of them (of 10 or more), it is not believed, and
//! nobody leaves. Should chat be pointed at the wrong auth (an empty one),
//! a sweep would otherwise empty every chat. Deletions the feed names one
//! by one are always acted on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::db;
use crate::domain::UserId;
use crate::error::Result;

/// Users heard of and not yet looked into; past this, a sweep is due
/// instead.
const MAX_PENDING: usize = 10_000;
/// Users looked up in one call to auth (its limit).
const LOOKUP_BATCH: usize = 1000;
/// How often every member is swept, besides each resync of the feed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The longest wait before a failed round is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A sweep acts on nobody when more than this share of all the members it
/// asked about are unknown to auth, once it asked about at least
/// [`IMPLAUSIBLE_AFTER`].
const IMPLAUSIBLE_SHARE: f64 = 0.5;
const IMPLAUSIBLE_AFTER: usize = 10;
/// Unknown members one sweep remembers before acting; past it, the rest
/// are left for the next sweep.
const MAX_UNKNOWN: usize = 100_000;

/// What the revocation feed has said and no round has looked into yet.
#[derive(Default)]
pub(crate) struct Departures {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    users: HashSet<i64>,
    sweep: bool,
}

impl Departures {
    /// Users whose tokens were revoked: some may have been deleted.
    pub(crate) fn heard(&self, users: impl IntoIterator<Item = i64>) {
        let mut pending = self.pending();
        for user in users {
            if pending.users.len() >= MAX_PENDING {
                pending.users.clear();
                pending.sweep = true;
                break;
            }
            pending.users.insert(user);
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// The feed resynced: anything may have been missed.
    pub(crate) fn sweep(&self) {
        self.pending().sweep = true;
        self.wake.notify_one();
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }

    /// Puts back what a failed round took, for the next.
    fn restore(&self, round: Pending) {
        let mut pending = self.pending();
        pending.sweep |= round.sweep;
        if pending.sweep {
            pending.users.clear();
        } else {
            pending.users.extend(round.users);
        }
    }

    /// Looks into what was heard, round after round, until aborted.
    pub(crate) fn start(self: Arc<Self>, app: Arc<App>) -> Vec<JoinHandle<()>> {
        let timer = {
            let departures = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_INTERVAL);
                every.tick().await;
                loop {
                    every.tick().await;
                    departures.sweep();
                }
            })
        };
        let rounds = tokio::spawn(async move {
            let mut backoff = Duration::ZERO;
            loop {
                self.wake.notified().await;
                let round = self.take();
                let outcome = if round.sweep {
                    sweep(&app).await
                } else {
                    let users: Vec<i64> = round.users.iter().copied().collect();
                    depart_unknown(&app, &users).await
                };
                match outcome {
                    Ok(_) => backoff = Duration::ZERO,
                    Err(error) => {
                        backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                        tracing::warn!(%error, retry_in = ?backoff, "departed accounts could not be looked into");
                        self.restore(round);
                        tokio::time::sleep(backoff).await;
                        self.wake.notify_one();
                    }
                }
            }
        });
        vec![timer, rounds]
    }
}

/// Looks every member up in auth, in order of id, then takes out those
/// auth no longer knows, if auth is believed; how many left.
async fn sweep(app: &App) -> Result<usize> {
    let mut after = 0;
    let mut asked = 0;
    let mut unknown = Vec::new();
    loop {
        let batch = db::members::members_after(&app.pool, after, LOOKUP_BATCH as i64).await?;
        let Some(&last) = batch.last() else {
            break;
        };
        asked += batch.len();
        let missing = app
            .auth
            .lookup_user_ids(None, None, batch)
            .await?
            .missing_ids;
        let room = MAX_UNKNOWN.saturating_sub(unknown.len());
        unknown.extend(missing.into_iter().take(room));
        after = last;
    }
    if asked >= IMPLAUSIBLE_AFTER && unknown.len() as f64 > asked as f64 * IMPLAUSIBLE_SHARE {
        tracing::error!(
            asked,
            unknown = unknown.len(),
            "auth knows few of chat's members: none leave; is CHAT_AUTH_URL this chat's auth?"
        );
        app.metrics
            .member_sweeps
            .with_label_values(&["implausible"])
            .inc();
        return Ok(0);
    }
    for user in &unknown {
        app.depart(UserId::new(*user)).await?;
        app.metrics.departed_accounts.inc();
    }
    app.metrics.member_sweeps.with_label_values(&["done"]).inc();
    tracing::debug!(
        asked,
        left = unknown.len(),
        "every member looked up in auth"
    );
    Ok(unknown.len())
}

/// Of `users`, named by the feed, those who are members anywhere and whom
/// auth no longer knows leave their chats; how many did.
async fn depart_unknown(app: &App, users: &[i64]) -> Result<usize> {
    let mut left = 0;
    for batch in users.chunks(LOOKUP_BATCH) {
        let members = db::members::any_members(&app.pool, batch).await?;
        if members.is_empty() {
            continue;
        }
        let missing = app
            .auth
            .lookup_user_ids(None, None, members)
            .await?
            .missing_ids;
        for user in missing {
            app.depart(UserId::new(user)).await?;
            app.metrics.departed_accounts.inc();
            left += 1;
        }
    }
    Ok(left)
}
