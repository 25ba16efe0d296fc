//! Fan-out of chat events to this replica's streams.
//!
//! A message stored on this replica goes to its own streams at once
//! ([`Hub::committed`]), and is then announced to the other replicas on the
//! [`bus`](crate::bus), outside the send's transaction: announcements are
//! batched, one for whatever was committed meanwhile, so that sends never
//! queue for the database-wide lock that a transaction with notifications
//! takes at commit. The hub reads each announced message once and
//! broadcasts it to the streams of its chat; deleted chats end theirs, and
//! removed members' streams end.
//!
//! Announcements carry ids only and may be lost: the database stays the
//! source of truth. Streams tell by sequence number whether they missed
//! anything and then read what they missed from the database; and every
//! poll interval (`CHAT_FANOUT_POLL_MS`, one second by default), one
//! query compares each watched chat's last sequence number with the last
//! one broadcast, so a lost announcement delays a message by about that
//! much (with the database answering promptly), even in a chat where
//! nothing follows it. The same query compares each chat's members
//! version, which every removal raises, so that a removed member's
//! stream ends even when the removal's announcement is lost. After every
//! (re)connection of the bus the hub does the same comparison at once.
//!
//! Read markers and typing are not messages: they are not sequenced, and
//! a stream that resumes does not get those it missed. They go out only on
//! the bus, and every replica, this one included, keeps what it hears for
//! its streams (each member's latest, apart from the messages' broadcast:
//! see [`presence`]), so that each is heard once, wherever it came from.
//!
//! A chat's entry lives exactly as long as it has subscribers: the last
//! [`Subscription`] to go removes it, whichever way its stream ended.
//!
//! # Layout
//! - [`feed`]: one chat's streams here, and what was last broadcast to them.
//! - [`outbox`]: what this replica has yet to announce to the others.
//! - [`members`]: a chat's members, read once per change for its streams.
//! - [`presence`]: a chat's read markers and typing, for its streams.
//! - [`reconcile`]: what other replicas announce, and the poll that finds
//!   what announcements lost.

mod feed;
mod members;
mod outbox;
mod presence;
mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::task::JoinHandle;

pub(crate) use self::feed::{Event, Subscription};
use self::feed::{Feed, HELD_PER_CHAT};
use self::outbox::Outbox;
pub(crate) use self::presence::Change;
use crate::bus;
use crate::config::Config;
use crate::db::messages::MessageRow;
use crate::domain::{ChatId, MessageId, UserId};
use crate::metrics::ChatMetrics;

/// Messages read at a time.
const BATCH: i64 = 500;
/// How long start-up waits for PostgreSQL's bus to listen.
const START_WITHIN: Duration = Duration::from_secs(30);

pub(crate) struct Hub {
    chats: Mutex<HashMap<ChatId, Feed>>,
    /// How many events a stream's receiver holds before it lags (and then
    /// catches up from the database).
    buffer: usize,
    /// Chats with subscribers on this replica.
    feeds: IntGauge,
    outbox: Outbox,
    poll_every: Duration,
    membership_reads: IntCounter,
    /// Deletions and removals heard on the bus that the database did not
    /// confirm.
    unconfirmed: IntCounter,
    /// When an unconfirmed announcement was last logged: a flood of forged
    /// ones is counted, and logged at most once per interval.
    unconfirmed_logged: Mutex<Option<std::time::Instant>>,
}

impl Hub {
    /// Opens the bus `config` names before returning: with PostgreSQL's,
    /// no event is missed by streams opened from then on; with NATS, what
    /// comes before it connects is found by the poll. The task runs until
    /// aborted, and ends by itself only on a bug: the service must stop
    /// then, as cross-replica delivery would have stopped.
    pub(crate) async fn start(
        pool: PgPool,
        connect: PgConnectOptions,
        config: &Config,
        metrics: &ChatMetrics,
    ) -> anyhow::Result<(Arc<Hub>, JoinHandle<()>)> {
        let (announcer, listener) = bus::open(
            &config.fanout,
            &config.fanout_auth,
            pool.clone(),
            connect,
            START_WITHIN,
            metrics.fanout_connected.clone(),
            metrics.malformed_announcements.clone(),
        )
        .await?;
        let hub = Arc::new(Hub {
            chats: Mutex::default(),
            buffer: config.stream_buffer.max(1),
            feeds: metrics.watched_chats.clone(),
            outbox: Outbox::new(announcer),
            poll_every: config.fanout_poll,
            membership_reads: metrics.membership_reads.clone(),
            unconfirmed: metrics.unconfirmed_announcements.clone(),
            unconfirmed_logged: Mutex::default(),
        });
        let task = tokio::spawn({
            let hub = hub.clone();
            async move {
                tokio::select! {
                    () = hub.clone().listen(listener, pool.clone()) => {}
                    () = hub.outbox.run() => {}
                    () = hub.outbox.run_markers() => {}
                    () = hub.clone().poll(pool) => {}
                }
            }
        });
        Ok((hub, task))
    }

    fn chats(&self) -> std::sync::MutexGuard<'_, HashMap<ChatId, Feed>> {
        self.chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events of `chat_id` from now on.
    pub(crate) fn subscribe(self: &Arc<Self>, chat_id: ChatId) -> Subscription {
        let mut chats = self.chats();
        let feed = chats.entry(chat_id).or_insert_with(|| {
            self.feeds.inc();
            Feed::new(self.buffer)
        });
        let (events, presence, shared) = (
            feed.sender.subscribe(),
            feed.presence().watch(),
            feed.presence.clone(),
        );
        // Read under the lock: a change made after it is news to the
        // stream, and one made before is not.
        let presence_from = *presence.borrow();
        drop(chats);
        Subscription {
            events: Some(events),
            presence_from,
            presence,
            shared,
            chat_id,
            hub: self.clone(),
        }
    }

    /// A stream found the chat's last sequence number to be `seq` after
    /// subscribing: until a message is broadcast, new ones are read from
    /// the lowest such point, so that no stream's next message is skipped.
    pub(crate) fn note_last_seq(&self, chat_id: ChatId, seq: i64) {
        if let Some(feed) = self.chats().get_mut(&chat_id) {
            match feed.last {
                None => {
                    feed.last = Some((seq, 0));
                    // Markers heard before the chat's place was known.
                    feed.presence().caught_up(seq);
                }
                Some((noted, 0)) if seq < noted => feed.last = Some((seq, 0)),
                Some(_) => {}
            }
        }
    }

    /// A message this replica just committed: its streams here get it now,
    /// and the other replicas are told with the next announcement.
    pub(crate) fn committed(&self, message: Arc<MessageRow>) {
        let chat_id = ChatId::new(message.chat_id);
        self.outbox.message(chat_id, MessageId::new(message.id));

        let mut chats = self.chats();
        let Some(feed) = chats.get_mut(&chat_id) else {
            return;
        };
        match feed.last {
            Some((last, _)) if message.seq <= last => {}
            Some((last, _)) if message.seq > last + 1 => {
                if feed.held.len() < HELD_PER_CHAT {
                    feed.held.insert(message.seq, message);
                }
            }
            _ => {
                feed.broadcast(message);
                feed.release_held();
            }
        }
    }

    /// A chat this replica just deleted: its streams here end now, and the
    /// other replicas are told.
    pub(crate) fn deleted(&self, chat_id: ChatId) {
        self.publish(chat_id, Event::Deleted);
        self.outbox.deleted(chat_id);
    }

    /// A member this replica just removed: their streams of the chat here
    /// end now, and the other replicas are told.
    pub(crate) fn removed(&self, chat_id: ChatId, user_id: UserId, version: i64) {
        self.publish(chat_id, Event::Removed { user_id, version });
        self.outbox.removed(chat_id, user_id, version);
    }

    /// A member's read marker moved: the chat's streams on every replica
    /// hear of it from the bus, coalesced (see [`outbox::MARKERS_EVERY`]).
    pub(crate) fn read(&self, chat_id: ChatId, user_id: UserId, message_id: MessageId, seq: i64) {
        self.outbox.marker(chat_id, user_id, message_id, seq);
    }

    /// A member is typing for `for_ms` milliseconds (0: stopped): the
    /// chat's streams on every replica hear of it from the bus.
    pub(crate) fn typing(&self, chat_id: ChatId, user_id: UserId, for_ms: u32) {
        self.outbox.typing(chat_id, user_id, for_ms);
    }

    /// At shutdown, once no send is in flight: announces what is left, so
    /// that other replicas need not wait for their poll to learn of it.
    pub(crate) async fn flush(&self) {
        if let Err(error) = self.outbox.announce_all().await {
            tracing::warn!(%error, "announcing the last messages failed; other replicas' polls will find them");
        }
    }

    fn leave(&self, chat_id: ChatId) {
        let mut chats = self.chats();
        if chats
            .get(&chat_id)
            .is_some_and(|feed| feed.sender.receiver_count() == 0)
        {
            chats.remove(&chat_id);
            self.feeds.dec();
        }
    }

    fn publish(&self, chat_id: ChatId, event: Event) {
        if let Some(feed) = self.chats().get(&chat_id) {
            let _ = feed.sender.send(event);
        }
    }
}
