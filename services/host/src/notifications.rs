//! PostgreSQL notifications that cannot go missing unnoticed.
//!
//! A `LISTEN` connection can die loudly (a terminated backend, a restart)
//! or silently (a half-open socket), and notifications sent while nobody
//! listened are gone. [`Notifications`] owns its connection, apart from the
//! service's pool, and:
//! - reports [`Event::Listening`] each time it (re)starts listening, after
//!   the `LISTEN` has taken effect, so that the consumer reloads whatever
//!   it keeps in memory: everything committed before is in that reload,
//!   everything after arrives as a notification;
//! - sends itself a heartbeat through the pool every [`HEARTBEAT_EVERY`],
//!   on a channel of its own, and takes a connection that has carried
//!   nothing for [`SILENCE_LIMIT`] for dead, reconnecting at once;
//! - keeps a [`Freshness`]: the send time of the last heartbeat received.
//!   PostgreSQL delivers notifications in commit order, so when a
//!   heartbeat arrives, every change committed before it was sent has
//!   been seen. Consumers refuse to answer from state older than their
//!   bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use tokio::task::JoinHandle;

/// How often a heartbeat is sent.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// How long a connection may carry nothing, heartbeats included, before it
/// is taken for dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(2);
/// The stalest state a replica may be configured to answer from. Whoever
/// keeps another service's answers counts on it: chat keeps none for a user
/// auth's revocation feed named within a second more than this.
pub const MAX_STALENESS: Duration = Duration::from_secs(9);
/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How current the consumer's state is: the moment up to which every
/// committed change is known to have been seen.
#[derive(Clone, Debug)]
pub struct Freshness {
    base: Instant,
    /// Milliseconds after `base`; 0 is never.
    confirmed_ms: Arc<AtomicU64>,
}

/// A moment, as [`Freshness`] counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Default for Freshness {
    fn default() -> Freshness {
        Freshness::new()
    }
}

impl Freshness {
    /// Nothing confirmed yet.
    pub fn new() -> Freshness {
        Freshness {
            base: Instant::now(),
            confirmed_ms: Arc::default(),
        }
    }

    /// Now, as a stamp.
    pub fn now(&self) -> Stamp {
        Stamp(
            u64::try_from(self.base.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        )
    }

    /// Every change committed before `stamp` has been seen.
    pub fn confirm(&self, stamp: Stamp) {
        self.confirmed_ms.fetch_max(stamp.0, Ordering::AcqRel);
    }

    /// How long ago the last confirmed moment was; `None` before the first.
    pub fn age(&self) -> Option<Duration> {
        match self.confirmed_ms.load(Ordering::Acquire) {
            0 => None,
            confirmed => Some(Duration::from_millis(
                self.now().0.saturating_sub(confirmed),
            )),
        }
    }

    /// Whether the state is at most `bound` old.
    pub fn within(&self, bound: Duration) -> bool {
        self.age().is_some_and(|age| age <= bound)
    }
}

/// What [`Notifications::next`] yields.
#[derive(Debug)]
pub enum Event {
    /// Listening started, or started again after a loss: notifications may
    /// have been missed. Reload, then [`Freshness::confirm`] `since`.
    Listening {
        since: Stamp,
    },
    Notification(PgNotification),
}

pub struct Notifications {
    connect: PgConnectOptions,
    channels: Vec<String>,
    heartbeat_channel: String,
    listener: Option<PgListener>,
    freshness: Freshness,
    backoff: Duration,
    heartbeats: JoinHandle<()>,
}

impl Notifications {
    /// Listens on `channels` over a connection of its own made with
    /// `connect`; heartbeats go through another of its own (so that a busy
    /// pool cannot make the state look stale) and confirm `freshness`.
    /// Nothing is listened to before the first [`Notifications::next`],
    /// which yields [`Event::Listening`] once it is.
    pub fn new(
        connect: PgConnectOptions,
        channels: &[&str],
        freshness: Freshness,
    ) -> Notifications {
        let heartbeat_channel = format!("heartbeat_{}", uuid::Uuid::new_v4().simple());
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(SILENCE_LIMIT)
            .connect_lazy_with(connect.clone());
        let heartbeats = tokio::spawn(send_heartbeats(
            pool,
            heartbeat_channel.clone(),
            freshness.clone(),
        ));
        Notifications {
            connect,
            channels: channels.iter().map(|&channel| channel.to_owned()).collect(),
            heartbeat_channel,
            listener: None,
            freshness,
            backoff: Duration::ZERO,
            heartbeats,
        }
    }

    /// The next event; waits as long as it takes, reconnecting as needed.
    pub async fn next(&mut self) -> Event {
        loop {
            let Some(listener) = self.listener.as_mut() else {
                tokio::time::sleep(self.backoff).await;
                match self.listen().await {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        self.backoff = Duration::ZERO;
                        return Event::Listening {
                            since: self.freshness.now(),
                        };
                    }
                    Err(error) => {
                        self.backoff =
                            (self.backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                        tracing::warn!(%error, retry_in = ?self.backoff, "cannot listen for notifications");
                        continue;
                    }
                }
            };
            match tokio::time::timeout(SILENCE_LIMIT, listener.try_recv()).await {
                Ok(Ok(Some(notification))) if notification.channel() == self.heartbeat_channel => {
                    if let Ok(sent) = notification.payload().parse() {
                        self.freshness.confirm(Stamp(sent));
                    }
                }
                Ok(Ok(Some(notification))) => return Event::Notification(notification),
                Ok(Ok(None)) => {
                    tracing::warn!("lost the notification connection; listening again");
                    self.listener = None;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the notification connection failed; listening again");
                    self.listener = None;
                }
                Err(_) => {
                    tracing::warn!(
                        silence = ?SILENCE_LIMIT,
                        "no notification, not even a heartbeat, came through; listening again"
                    );
                    self.listener = None;
                }
            }
        }
    }

    /// A fresh connection, listening. A pool of one of its own, made anew
    /// each time, so that a dead connection is never handed back.
    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(self.connect.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        let mut channels: Vec<&str> = self.channels.iter().map(String::as_str).collect();
        channels.push(&self.heartbeat_channel);
        listener.listen_all(channels).await?;
        Ok(listener)
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

/// Sends `channel` the time, every [`HEARTBEAT_EVERY`].
async fn send_heartbeats(pool: PgPool, channel: String, freshness: Freshness) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let sent = freshness.now();
        // Not a query of any service's schema, so not a checked one.
        let notify = sqlx::query("select pg_notify($1, $2)")
            .bind(&channel)
            .bind(sent.0.to_string())
            .execute(&pool);
        match tokio::time::timeout(SILENCE_LIMIT, notify).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "sending a heartbeat failed"),
            Err(_) => tracing::debug!("sending a heartbeat timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_unknown_until_confirmed_and_never_moves_back() {
        let freshness = Freshness::new();
        assert_eq!(freshness.age(), None);
        assert!(!freshness.within(Duration::from_secs(60)));
        let early = freshness.now();
        std::thread::sleep(Duration::from_millis(20));
        let late = freshness.now();
        freshness.confirm(late);
        freshness.confirm(early);
        assert!(freshness.within(Duration::from_millis(15)));
    }
}
