//! Ends open streams when their caller's access ends. A stream is checked
//! by the guard once, when it opens; after that, auth's
//! `AccessService/WatchRevocations` tells which users' tokens were
//! revoked (deleted, role or password changed), on every auth replica,
//! and below which version, and which sessions ended (a logout, a session
//! revoked by its owner). A held stream whose token is older, or of an
//! ended session, ends with
//! `UNAUTHENTICATED` at once, decided here: asking `Check` again could
//! reach an auth replica that has not heard of the revocation yet. On a
//! resync (every reconnect) the feed repeats every revocation it holds,
//! and every held stream is also checked again with the token it was
//! opened with; auth's `UNAUTHENTICATED` or `PERMISSION_DENIED` ends it
//! with that status.
//!
//! Fail closed: the feed sends at least a heartbeat a second; when it has
//! been silent for [`FEED_LOSS_BOUND`] every held stream ends with
//! `UNAVAILABLE` (clients resume with `since_message_id`), and so does each
//! new one until the feed is back, which starts with a resync: every held
//! stream is checked again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use http::HeaderValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;

use crate::access_cache::{self, AccessCache, Generation};
use crate::auth_client::AuthClient;
use crate::departures::pending::Departures;
use crate::domain::Caller;

/// How long the feed may be silent before held streams end.
pub const FEED_LOSS_BOUND: Duration = Duration::from_secs(5);
/// The endpoint a held stream is checked against again.
const CONNECT_CHAT: &str = "/chat.v1.ChatService/ConnectChat";
/// Checks run at once during a resync.
const CONCURRENT_CHECKS: usize = 32;
/// The longest wait between two attempts to watch again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a revocation heard on the feed is remembered: a stream checked
/// before it but held after it (its handler's queries in between) is
/// ended by it too.
const REVOCATION_MEMORY: Duration = Duration::from_secs(5 * 60);

pub(crate) struct AccessWatch {
    auth: AuthClient,
    held: Mutex<HashMap<u64, Held>>,
    next_id: AtomicU64,
    /// When the feed last said anything (or the service started).
    fed_at: Mutex<Instant>,
    /// Counts the feed's messages that named anyone (or said resync): a
    /// stream whose guard check came before the count moved is checked
    /// again once held, so a revocation between the two is not missed.
    epoch: AtomicU64,
    /// Revocations heard in the last [`REVOCATION_MEMORY`], by user: the
    /// lowest token version still valid, and when it was heard.
    revoked: Mutex<HashMap<i64, (i64, Instant)>>,
    /// Sessions heard ended in the last [`REVOCATION_MEMORY`], and when.
    ended_sessions: Mutex<HashMap<String, Instant>>,
    /// Told of every user the feed names, and of every resync: deleted
    /// accounts leave their chats.
    departures: Arc<Departures>,
    /// Auth's answers, kept while the feed vouches for them.
    cache: AccessCache,
    /// The feed is followed and has resynced since it was (re)opened.
    feed_up: AtomicBool,
    /// The feed has resynced at least once.
    resynced: AtomicBool,
}

/// Where the feed was when a call was checked (see [`AccessWatch::epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

/// A stream held open, and how to end it.
#[derive(Clone)]
struct Held {
    user_id: i64,
    /// The version of the token the stream was opened with.
    token_version: i64,
    /// The session of that token, if it names one.
    session: Option<String>,
    authorization: Option<HeaderValue>,
    end: mpsc::Sender<Status>,
}

/// A stream's registration; dropping it ends the watch over that stream.
pub(crate) struct Hold {
    id: u64,
    watch: Arc<AccessWatch>,
    /// Receives the status to end the stream with.
    pub(crate) ended: mpsc::Receiver<Status>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.watch.held().remove(&self.id);
    }
}

impl AccessWatch {
    /// Starts watching auth's feed; the tasks run until aborted.
    pub(crate) fn start(
        auth: AuthClient,
        departures: Arc<Departures>,
        cache_ttl: Duration,
    ) -> (Arc<AccessWatch>, Vec<JoinHandle<()>>) {
        let watch = Arc::new(AccessWatch {
            auth,
            held: Mutex::default(),
            next_id: AtomicU64::new(1),
            fed_at: Mutex::new(Instant::now()),
            epoch: AtomicU64::new(0),
            revoked: Mutex::default(),
            ended_sessions: Mutex::default(),
            departures,
            cache: AccessCache::new(cache_ttl),
            feed_up: AtomicBool::new(false),
            resynced: AtomicBool::new(false),
        });
        let feeding = tokio::spawn(watch.clone().follow());
        let guarding = tokio::spawn(watch.clone().fail_closed());
        (watch, vec![feeding, guarding])
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn revoked(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (i64, Instant)>> {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ended_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.ended_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `revocations` and `ended` sessions, and ends every held
    /// stream whose token they refuse.
    fn apply(
        &self,
        revocations: &[api::auth::v1::Revocation],
        ended: &[api::auth::v1::EndedSession],
    ) {
        let now = Instant::now();
        let mut revoked = self.revoked();
        revoked.retain(|_, (_, heard)| now.duration_since(*heard) < REVOCATION_MEMORY);
        for revocation in revocations {
            let entry = revoked
                .entry(revocation.user_id)
                .or_insert((revocation.min_token_version, now));
            *entry = (entry.0.max(revocation.min_token_version), now);
        }
        let mut sessions = self.ended_sessions();
        sessions.retain(|_, heard| now.duration_since(*heard) < REVOCATION_MEMORY);
        for session in ended {
            sessions.insert(session.session_id.clone(), now);
        }
        let ended: Vec<Held> = self
            .held()
            .values()
            .filter(|held| {
                revoked
                    .get(&held.user_id)
                    .is_some_and(|(below, _)| held.token_version < *below)
                    || held
                        .session
                        .as_ref()
                        .is_some_and(|session| sessions.contains_key(session))
            })
            .cloned()
            .collect();
        drop(sessions);
        drop(revoked);
        for held in ended {
            tracing::info!(user_id = held.user_id, "a held stream's token was revoked");
            let _ = held.end.try_send(revoked_status());
        }
    }

    fn feed_age(&self) -> Duration {
        self.fed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }

    fn fed(&self) {
        *self
            .fed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// Whether the feed is followed, since its resync, and spoke recently
    /// enough for the cache to answer.
    fn feed_live(&self) -> bool {
        self.feed_up.load(Ordering::Acquire) && self.feed_age() <= access_cache::FEED_BOUND
    }

    /// Auth's answer for this token and endpoint, if kept.
    pub(crate) fn cached(
        &self,
        authorization: Option<&HeaderValue>,
        endpoint: &str,
    ) -> Option<Caller> {
        self.cache.get(authorization, endpoint, self.feed_live())
    }

    /// Where the cache is; taken before asking `Check`.
    pub(crate) fn cache_generation(&self) -> Generation {
        self.cache.generation()
    }

    /// Keeps auth's answer, asked for at `asked_at`, if it may be.
    pub(crate) fn remember(
        &self,
        asked_at: Generation,
        authorization: Option<&HeaderValue>,
        endpoint: &str,
        caller: &Caller,
    ) {
        self.cache
            .put(asked_at, authorization, endpoint, caller, self.feed_live());
    }

    /// The feed's position now; taken before a call is checked.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Holds a stream of `user_id`, opened with `authorization` (a token
    /// of `token_version`, of `session`), which was checked when the feed
    /// was at `checked_at`: if revocations arrived since, the stream is
    /// checked again at once.
    pub(crate) fn hold(
        self: &Arc<Self>,
        user_id: i64,
        token_version: i64,
        session: Option<String>,
        authorization: Option<HeaderValue>,
        checked_at: Epoch,
    ) -> Hold {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (end, ended) = mpsc::channel(1);
        let held = Held {
            user_id,
            token_version,
            session,
            authorization,
            end,
        };
        self.held().insert(id, held.clone());
        // Read once held: an ending applied from here on sees the stream.
        let session_ended = held
            .session
            .as_ref()
            .is_some_and(|session| self.ended_sessions().contains_key(session));
        let revoked_below = self.revoked().get(&user_id).map(|(version, _)| *version);
        if session_ended || revoked_below.is_some_and(|below| token_version < below) {
            let _ = held.end.try_send(revoked_status());
        } else if self.epoch() != checked_at {
            let watch = self.clone();
            tokio::spawn(async move { watch.check_one(held).await });
        }
        Hold {
            id,
            watch: self.clone(),
            ended,
        }
    }

    /// Follows the feed, reconnecting whenever it is lost.
    async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::ZERO;
        loop {
            // Lost, or not followed yet: nothing kept is vouched for until
            // the next resync.
            self.feed_up.store(false, Ordering::Release);
            self.cache.clear(false);
            tokio::time::sleep(backoff).await;
            let mut feed = match self.auth.watch_revocations().await {
                Ok(feed) => feed,
                Err(status) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                    tracing::warn!(code = ?status.code(), message = status.message(), "cannot watch revocations");
                    continue;
                }
            };
            backoff = Duration::ZERO;
            loop {
                let message = match tokio::time::timeout(FEED_LOSS_BOUND, feed.message()).await {
                    Ok(Ok(Some(message))) => message,
                    Ok(Ok(None)) => break,
                    Ok(Err(status)) => {
                        tracing::warn!(code = ?status.code(), "the revocation feed failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("the revocation feed went silent");
                        break;
                    }
                };
                if message.resync {
                    // From here on the feed vouches for what is kept.
                    self.feed_up.store(true, Ordering::Release);
                }
                self.fed();
                // Before the epoch moves: a call that reads the new epoch
                // finds nothing kept from before this message.
                if message.resync {
                    // After the first, a resync says something changed that
                    // not every auth replica may have heard yet.
                    let again = self.resynced.swap(true, Ordering::AcqRel);
                    self.cache.clear(again);
                }
                let revoked: HashSet<i64> = message.revocations.iter().map(|r| r.user_id).collect();
                let ended: HashSet<i64> =
                    message.ended_sessions.iter().map(|s| s.user_id).collect();
                // Users named without a version or a session (an auth that
                // sends none, or a rename): their held streams are checked
                // again.
                let unversioned: HashSet<i64> = message
                    .user_ids
                    .iter()
                    .copied()
                    .filter(|user| !revoked.contains(user) && !ended.contains(user))
                    .collect();
                let named: HashSet<i64> = unversioned
                    .iter()
                    .chain(&revoked)
                    .chain(&ended)
                    .copied()
                    .collect();
                if !named.is_empty() {
                    self.cache.forget_users(named);
                }
                // Ended sessions are kept in memory and read once a stream
                // is held: they need no second check of streams opening.
                if message.resync || !unversioned.is_empty() || !revoked.is_empty() {
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                }
                self.apply(&message.revocations, &message.ended_sessions);
                // A user named only for a session that ended is still
                // there: no departure to look into.
                self.departures
                    .heard(unversioned.iter().chain(&revoked).copied());
                if message.resync {
                    self.departures.sweep();
                    self.check_again(|_| true).await;
                } else if !unversioned.is_empty() {
                    self.check_again(|held| unversioned.contains(&held.user_id))
                        .await;
                }
            }
        }
    }

    /// Ends every held stream with UNAVAILABLE while the feed is lost.
    async fn fail_closed(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            if self.feed_age() <= FEED_LOSS_BOUND {
                continue;
            }
            let held: Vec<Held> = self.held().values().cloned().collect();
            if !held.is_empty() {
                tracing::warn!(
                    streams = held.len(),
                    "revocations cannot be watched; ending the streams held"
                );
            }
            for held in held {
                let _ = held.end.try_send(Status::unavailable(
                    "access can no longer be confirmed; reconnect with since_message_id set to the last message received",
                ));
            }
        }
    }

    /// Checks again the held streams that `which` picks, and ends those
    /// whose access ended.
    async fn check_again(&self, which: impl Fn(&Held) -> bool) {
        let picked: Vec<Held> = self
            .held()
            .values()
            .filter(|held| which(held))
            .cloned()
            .collect();
        futures::stream::iter(picked)
            .for_each_concurrent(CONCURRENT_CHECKS, |held| self.check_one(held))
            .await;
    }

    /// Checks one held stream again, and ends it if its access ended.
    async fn check_one(&self, held: Held) {
        let auth = &self.auth;
        let checked = auth
            .check(
                held.authorization.as_ref(),
                None,
                CONNECT_CHAT,
                auth.check_timeout(),
            )
            .await;
        let status = match checked {
            Ok(_) => return,
            Err(error) => Status::from(error),
        };
        tracing::info!(user_id = held.user_id, code = ?status.code(), "a held stream's access ended");
        let _ = held.end.try_send(status);
    }
}

fn revoked_status() -> Status {
    Status::unauthenticated(
        "access token has been revoked; log in again, then reconnect with since_message_id set to the last message received",
    )
}
