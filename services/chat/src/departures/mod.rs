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

pub(crate) mod pending;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::App;
use crate::db;
use crate::domain::UserId;
use crate::error::Result;

use pending::Departures;

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

/// Looks into what `departures` heard, round after round, until aborted.
pub(crate) fn start(departures: Arc<Departures>, app: Arc<App>) -> Vec<JoinHandle<()>> {
    let timer = {
        let departures = departures.clone();
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
            departures.heard_of().await;
            let round = departures.take();
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
                    departures.restore(round);
                    tokio::time::sleep(backoff).await;
                    departures.wake();
                }
            }
        }
    });
    vec![timer, rounds]
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
