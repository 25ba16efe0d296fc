//! Fan-out of chat events to this replica's streams.
//!
//! A message stored on this replica goes to its own streams at once
//! ([`Hub::committed`]), and is then announced to the other replicas on
//! PostgreSQL's `chat_events` channel, outside the send's transaction:
//! announcements are batched, one notifying transaction for whatever was
//! committed meanwhile, so that sends never queue for the database-wide
//! lock that a transaction with notifications takes at commit. Every
//! replica listens on that channel, which also carries deleted chats (from
//! the delete's own transaction); the hub reads each announced message
//! once and broadcasts it to the streams of its chat.
//!
//! Announcements carry ids only and may be lost (a replica can die between
//! its commit and its announcement): the database stays the source of
//! truth. Streams tell by sequence number whether they missed anything and
//! then read what they missed from the database; and every
//! [`POLL_EVERY`], one query compares each watched chat's last sequence
//! number with the last one broadcast, so a lost announcement delays a
//! message by about that much (with the database answering promptly),
//! even in a chat where nothing follows it.
//! Listening is [`Notifications`]'s: after every (re)start of listening
//! the hub does the same comparison at once.
//!
//! A chat's entry lives exactly as long as it has subscribers: the last
//! [`Subscription`] to go removes it, whichever way its stream ended.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use prometheus::IntGauge;
use serving::notifications::{Event as Notice, Freshness, Notifications};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::db;
use crate::db::messages::MessageRow;

const CHANNEL: &str = "chat_events";
/// Messages read at a time.
const BATCH: i64 = 500;
/// How long start-up waits to be listening.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How often watched chats are compared with the database.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Messages committed here that reached [`Hub::committed`] before an
/// earlier message of their chat did, held until it does (or until a read
/// of the database covers them); past this, they are left to that read.
const HELD_PER_CHAT: usize = 256;
/// The wait before announcing again after the database refused.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub enum Event {
    Message(Arc<MessageRow>),
    /// The chat is gone; its streams end.
    Deleted,
    /// Notifications may have been lost: read the database to catch up.
    Resync,
}

pub struct Hub {
    chats: Mutex<HashMap<i64, Feed>>,
    /// How many events a stream's receiver holds before it lags (and then
    /// catches up from the database).
    buffer: usize,
    /// Chats with subscribers on this replica.
    feeds: IntGauge,
    /// Each chat's newest message committed here and not yet announced to
    /// the other replicas; at most one entry per chat, emptied by every
    /// announcement.
    unannounced: Mutex<HashMap<i64, i64>>,
    announce: Notify,
}

/// One chat's streams on this replica.
struct Feed {
    sender: broadcast::Sender<Event>,
    /// The sequence number and id of the last message broadcast (or, until
    /// one is, the chat's last when the first stream subscribed; id 0).
    /// Under load one read covers every message since, and the
    /// notifications of the messages it covered are skipped.
    last: Option<(i64, i64)>,
    /// Committed here ahead of an earlier message of the chat, by sequence
    /// number (see [`HELD_PER_CHAT`]).
    held: BTreeMap<i64, Arc<MessageRow>>,
}

impl Feed {
    fn broadcast(&mut self, message: Arc<MessageRow>) {
        self.last = Some((message.seq, message.id));
        // No receiver: the last stream is just leaving.
        let _ = self.sender.send(Event::Message(message));
    }

    /// Broadcasts the held messages that now continue the sequence, and
    /// forgets those already broadcast.
    fn release_held(&mut self) {
        while let (Some((last, _)), Some((&seq, _))) = (self.last, self.held.first_key_value()) {
            if seq > last + 1 {
                return;
            }
            if let Some((_, message)) = self.held.pop_first()
                && seq == last + 1
            {
                self.broadcast(message);
            }
        }
    }
}

/// A stream's place in a chat's fan-out; leaving it (dropping) removes the
/// chat's entry when it was the last.
pub struct Subscription {
    events: Option<broadcast::Receiver<Event>>,
    chat_id: i64,
    hub: Arc<Hub>,
}

impl Subscription {
    pub fn events(&mut self) -> &mut broadcast::Receiver<Event> {
        self.events
            .as_mut()
            .unwrap_or_else(|| unreachable!("a live subscription has its receiver"))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.events.take());
        self.hub.leave(self.chat_id);
    }
}

impl Hub {
    /// Listens before returning, so that no event is missed by streams
    /// opened from then on. The task runs until aborted.
    pub async fn start(
        pool: PgPool,
        connect: PgConnectOptions,
        buffer: usize,
        feeds: IntGauge,
    ) -> anyhow::Result<(Arc<Hub>, JoinHandle<()>)> {
        let mut notifications = Notifications::new(connect, &[CHANNEL], Freshness::new());
        tokio::time::timeout(START_WITHIN, async {
            while !matches!(notifications.next().await, Notice::Listening { .. }) {}
        })
        .await
        .context("listening for chat events")?;
        let hub = Arc::new(Hub {
            chats: Mutex::default(),
            buffer: buffer.max(1),
            feeds,
            unannounced: Mutex::default(),
            announce: Notify::new(),
        });
        let task = tokio::spawn({
            let hub = hub.clone();
            async move {
                tokio::join!(
                    hub.clone().listen(notifications, pool.clone()),
                    hub.clone().announce(pool.clone()),
                    hub.poll(pool),
                );
            }
        });
        Ok((hub, task))
    }

    fn chats(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Feed>> {
        self.chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events of `chat_id` from now on.
    pub fn subscribe(self: &Arc<Self>, chat_id: i64) -> Subscription {
        let events = self
            .chats()
            .entry(chat_id)
            .or_insert_with(|| {
                self.feeds.inc();
                Feed {
                    sender: broadcast::channel(self.buffer).0,
                    last: None,
                    held: BTreeMap::new(),
                }
            })
            .sender
            .subscribe();
        Subscription {
            events: Some(events),
            chat_id,
            hub: self.clone(),
        }
    }

    /// A stream found the chat's last sequence number to be `seq` after
    /// subscribing: until a message is broadcast, new ones are read from
    /// the lowest such point, so that no stream's next message is skipped.
    pub fn note_last_seq(&self, chat_id: i64, seq: i64) {
        if let Some(feed) = self.chats().get_mut(&chat_id) {
            match feed.last {
                None => feed.last = Some((seq, 0)),
                Some((noted, 0)) if seq < noted => feed.last = Some((seq, 0)),
                Some(_) => {}
            }
        }
    }

    /// A message this replica just committed: its streams here get it now,
    /// and the other replicas are told with the next announcement.
    pub fn committed(&self, message: Arc<MessageRow>) {
        self.unannounced()
            .entry(message.chat_id)
            .and_modify(|id| *id = (*id).max(message.id))
            .or_insert(message.id);
        self.announce.notify_one();

        let mut chats = self.chats();
        let Some(feed) = chats.get_mut(&message.chat_id) else {
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

    fn unannounced(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.unannounced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Announces, in one transaction, each chat's newest message committed
    /// since the last announcement; on failure, tries again with whatever
    /// has been added meanwhile.
    async fn announce(self: Arc<Self>, pool: PgPool) {
        loop {
            self.announce.notified().await;
            if let Err(error) = self.announce_pending(&pool).await {
                tracing::warn!(%error, "announcing new messages failed; retrying");
                tokio::time::sleep(ANNOUNCE_RETRY).await;
                self.announce.notify_one();
            }
        }
    }

    /// Announces what is unannounced now; on failure, keeps it (merged
    /// with whatever was added meanwhile) for the next try.
    async fn announce_pending(&self, pool: &PgPool) -> crate::error::Result<()> {
        let batch: Vec<(i64, i64)> = self.unannounced().drain().collect();
        if batch.is_empty() {
            return Ok(());
        }
        let (chat_ids, message_ids): (Vec<i64>, Vec<i64>) = batch.iter().copied().unzip();
        let announced = db::messages::announce(pool, &chat_ids, &message_ids).await;
        if announced.is_err() {
            let mut unannounced = self.unannounced();
            for (chat_id, message_id) in batch {
                let id = unannounced.entry(chat_id).or_insert(message_id);
                *id = (*id).max(message_id);
            }
        }
        announced
    }

    /// At shutdown, once no send is in flight: announces what is left, so
    /// that other replicas need not wait for their poll to learn of it.
    pub async fn flush(&self, pool: &PgPool) {
        if let Err(error) = self.announce_pending(pool).await {
            tracing::warn!(%error, "announcing the last messages failed; other replicas' polls will find them");
        }
    }

    /// Every [`POLL_EVERY`], catches up on what announcements missed.
    async fn poll(self: Arc<Self>, pool: PgPool) {
        let mut every = tokio::time::interval(POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(error) = self.compare(&pool, false).await {
                tracing::warn!(%error, "comparing chat streams with the database failed");
            }
        }
    }

    /// One query for every watched chat: the streams of chats deleted
    /// meanwhile end, and what a chat received beyond its last broadcast
    /// is read and broadcast. After listening (re)started, chats whose
    /// streams have not yet noted where they start are told to resync.
    async fn compare(&self, pool: &PgPool, listening_again: bool) -> crate::error::Result<usize> {
        let watched: Vec<i64> = self.chats().keys().copied().collect();
        if watched.is_empty() {
            return Ok(0);
        }
        let current: HashMap<i64, i64> = db::chats::last_seqs(pool, &watched)
            .await?
            .into_iter()
            .collect();
        for chat_id in watched {
            let Some(&seq) = current.get(&chat_id) else {
                self.publish(chat_id, Event::Deleted);
                continue;
            };
            let last = match self.chats().get(&chat_id) {
                Some(feed) => feed.last,
                None => continue,
            };
            match last {
                Some((last, _)) if last < seq => {
                    self.publish_messages(pool, chat_id, None).await;
                }
                None if listening_again => self.publish(chat_id, Event::Resync),
                _ => {}
            }
        }
        Ok(current.len())
    }

    fn leave(&self, chat_id: i64) {
        let mut chats = self.chats();
        if chats
            .get(&chat_id)
            .is_some_and(|feed| feed.sender.receiver_count() == 0)
        {
            chats.remove(&chat_id);
            self.feeds.dec();
        }
    }

    /// Broadcasts the chat's messages up to `message_id`, unless already
    /// done or nobody listens.
    async fn publish_messages(&self, pool: &PgPool, chat_id: i64, message_id: Option<i64>) {
        loop {
            let last = match self.chats().get(&chat_id) {
                Some(feed) => feed.last,
                None => return,
            };
            let read = match (last, message_id) {
                (Some((_, last_id)), Some(message_id)) if last_id >= message_id => return,
                (Some((last_seq, _)), _) => {
                    db::messages::after_seq(pool, chat_id, last_seq, BATCH).await
                }
                (None, Some(message_id)) => db::messages::get(pool, chat_id, message_id)
                    .await
                    .map(|found| found.into_iter().collect()),
                (None, None) => {
                    self.publish(chat_id, Event::Resync);
                    return;
                }
            };
            let messages = match read {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, chat_id, "reading new messages failed; streams will catch up");
                    self.publish(chat_id, Event::Resync);
                    return;
                }
            };
            let read_all = (messages.len() as i64) < BATCH;
            let mut chats = self.chats();
            let Some(feed) = chats.get_mut(&chat_id) else {
                return;
            };
            for message in messages {
                if feed.last.is_some_and(|(seq, _)| message.seq <= seq) {
                    continue;
                }
                feed.broadcast(Arc::new(message));
            }
            feed.release_held();
            if read_all {
                return;
            }
        }
    }

    fn publish(&self, chat_id: i64, event: Event) {
        if let Some(feed) = self.chats().get(&chat_id) {
            let _ = feed.sender.send(event);
        }
    }

    /// After listening (re)started: retried until it answers, as a
    /// deletion missed meanwhile is only learnt here.
    async fn resync(&self, pool: &PgPool) {
        loop {
            match self.compare(pool, true).await {
                Ok(0) => return,
                Ok(chats) => {
                    tracing::info!(chats, "chat streams resynced");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "resyncing chat streams failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn listen(self: Arc<Self>, mut notifications: Notifications, pool: PgPool) {
        loop {
            match notifications.next().await {
                Notice::Listening { .. } => self.resync(&pool).await,
                Notice::Notification(notification) => match parse(notification.payload()) {
                    Some(ChatNotice::Message {
                        chat_id,
                        message_id,
                    }) => {
                        self.publish_messages(&pool, chat_id, Some(message_id))
                            .await;
                    }
                    Some(ChatNotice::Deleted { chat_id }) => {
                        self.publish(chat_id, Event::Deleted);
                    }
                    None => {
                        tracing::warn!(payload = notification.payload(), "unreadable chat event")
                    }
                },
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ChatNotice {
    Message { chat_id: i64, message_id: i64 },
    Deleted { chat_id: i64 },
}

/// `message:<chat_id>:<message_id>` or `deleted:<chat_id>`, as the
/// trigger writes them.
fn parse(payload: &str) -> Option<ChatNotice> {
    let mut parts = payload.split(':');
    let notice = match (parts.next()?, parts.next()?.parse().ok()?, parts.next()) {
        ("message", chat_id, Some(message_id)) => ChatNotice::Message {
            chat_id,
            message_id: message_id.parse().ok()?,
        },
        ("deleted", chat_id, None) => ChatNotice::Deleted { chat_id },
        _ => return None,
    };
    parts.next().is_none().then_some(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse() {
        assert_eq!(
            parse("message:3:42"),
            Some(ChatNotice::Message {
                chat_id: 3,
                message_id: 42
            })
        );
        assert_eq!(parse("deleted:3"), Some(ChatNotice::Deleted { chat_id: 3 }));
        for junk in ["", "message:3", "deleted:x", "message:3:4:5", "other:1"] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
    }
}
