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
//! poll interval (`CHAT_FANOUT_POLL_MS`, [`POLL_EVERY`] by default), one
//! query compares each watched chat's last sequence number with the last
//! one broadcast, so a lost announcement delays a message by about that
//! much (with the database answering promptly), even in a chat where
//! nothing follows it. The same query compares each chat's members
//! version, which every removal raises, so that a removed member's
//! stream ends even when the removal's announcement is lost. After every
//! (re)connection of the bus the hub does the same comparison at once.
//!
//! A chat's entry lives exactly as long as it has subscribers: the last
//! [`Subscription`] to go removes it, whichever way its stream ended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::bus::{self, Announcement, Announcer, Heard, Listener};
use crate::config::Config;
use crate::db;
use crate::db::messages::MessageRow;
use crate::metrics::ChatMetrics;

/// Messages read at a time.
const BATCH: i64 = 500;
/// How long start-up waits for PostgreSQL's bus to listen.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How often watched chats are compared with the database, by default.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Messages committed here that reached [`Hub::committed`] before an
/// earlier message of their chat did, held until it does (or until a read
/// of the database covers them); past this, they are left to that read.
const HELD_PER_CHAT: usize = 256;
/// Removals kept to announce while the bus refuses; past this many, the
/// other replicas' polls find them by the chats' members versions.
const UNANNOUNCED_REMOVALS: usize = 10_000;
/// The wait before announcing again after the database refused.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub enum Event {
    Message(Arc<MessageRow>),
    /// The chat is gone; its streams end.
    Deleted,
    /// The user is no longer a member as of this members version; their
    /// streams of the chat opened before it end.
    Removed {
        user_id: i64,
        version: i64,
    },
    /// The chat's members version, as the poll found it: a stream that
    /// read an older one asks the database whether its user is still a
    /// member (the announcement of a removal may have been lost).
    MembersChanged(i64),
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
    /// What this replica has to tell the others; emptied by every
    /// announcement.
    unannounced: Mutex<Unannounced>,
    announce: Notify,
    announcer: Announcer,
    poll_every: Duration,
    membership_reads: IntCounter,
}

/// At most one entry per chat.
#[derive(Default)]
struct Unannounced {
    /// Each chat's newest message committed here.
    messages: HashMap<i64, i64>,
    /// Chats deleted here, when the bus needs telling.
    deleted: HashSet<i64>,
    /// Members removed here, as (chat, user), with the members version the
    /// removal made; at most [`UNANNOUNCED_REMOVALS`] (the poll finds the
    /// rest).
    removed: HashMap<(i64, i64), i64>,
}

impl Unannounced {
    fn message(&mut self, chat_id: i64, message_id: i64) {
        let id = self.messages.entry(chat_id).or_insert(message_id);
        *id = (*id).max(message_id);
    }

    fn removal(&mut self, chat_id: i64, user_id: i64, version: i64) {
        let key = (chat_id, user_id);
        if self.removed.len() < UNANNOUNCED_REMOVALS || self.removed.contains_key(&key) {
            let known = self.removed.entry(key).or_insert(version);
            *known = (*known).max(version);
        }
    }

    fn take(&mut self) -> Vec<Announcement> {
        let messages = self
            .messages
            .drain()
            .map(|(chat_id, message_id)| Announcement::Message {
                chat_id,
                message_id,
            });
        let deleted = self
            .deleted
            .drain()
            .map(|chat_id| Announcement::Deleted { chat_id });
        let removed =
            self.removed
                .drain()
                .map(|((chat_id, user_id), version)| Announcement::Removed {
                    chat_id,
                    user_id,
                    version,
                });
        messages.chain(deleted).chain(removed).collect()
    }

    fn put_back(&mut self, announcements: Vec<Announcement>) {
        for announcement in announcements {
            match announcement {
                Announcement::Message {
                    chat_id,
                    message_id,
                } => self.message(chat_id, message_id),
                Announcement::Deleted { chat_id } => {
                    self.deleted.insert(chat_id);
                }
                Announcement::Removed {
                    chat_id,
                    user_id,
                    version,
                } => self.removal(chat_id, user_id, version),
            }
        }
    }
}

/// A chat's members as of a members version.
pub struct Members {
    pub version: i64,
    ids: HashSet<i64>,
}

impl Members {
    pub fn contains(&self, user_id: i64) -> bool {
        self.ids.contains(&user_id)
    }
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
    /// The chat's members version the poll last found.
    members_version: Option<i64>,
    /// The members as last read for a stream: read once per change, with
    /// the lock held, for every stream of the chat that asks.
    members: Arc<tokio::sync::Mutex<Option<Arc<Members>>>>,
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
    /// Opens the bus `config` names before returning: with PostgreSQL's,
    /// no event is missed by streams opened from then on; with NATS, what
    /// comes before it connects is found by the poll. The task runs until
    /// aborted, and ends by itself only on a bug: the service must stop
    /// then, as cross-replica delivery would have stopped.
    pub async fn start(
        pool: PgPool,
        connect: PgConnectOptions,
        config: &Config,
        metrics: &ChatMetrics,
    ) -> anyhow::Result<(Arc<Hub>, JoinHandle<()>)> {
        let (announcer, listener) = bus::open(
            &config.fanout,
            pool.clone(),
            connect,
            START_WITHIN,
            metrics.fanout_connected.clone(),
        )
        .await?;
        let hub = Arc::new(Hub {
            chats: Mutex::default(),
            buffer: config.stream_buffer.max(1),
            feeds: metrics.watched_chats.clone(),
            unannounced: Mutex::default(),
            announce: Notify::new(),
            announcer,
            poll_every: config.fanout_poll,
            membership_reads: metrics.membership_reads.clone(),
        });
        let task = tokio::spawn({
            let hub = hub.clone();
            async move {
                tokio::select! {
                    () = hub.clone().listen(listener, pool.clone()) => {}
                    () = hub.clone().announce() => {}
                    () = hub.poll(pool) => {}
                }
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
                    members_version: None,
                    members: Arc::default(),
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
        self.unannounced().message(message.chat_id, message.id);
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

    /// A chat this replica just deleted: its streams here end now, and the
    /// other replicas are told.
    pub fn deleted(&self, chat_id: i64) {
        self.publish(chat_id, Event::Deleted);
        if self.announcer.announces_deletions() {
            self.unannounced().deleted.insert(chat_id);
            self.announce.notify_one();
        }
    }

    /// The chat's members as of `at_least` or later; `None` if the chat is
    /// gone. Streams that must learn whether their user is still a member
    /// share one read per change of members, however many they are.
    pub async fn members(
        &self,
        pool: &PgPool,
        chat_id: i64,
        at_least: i64,
    ) -> crate::error::Result<Option<Arc<Members>>> {
        let cached = self
            .chats()
            .get(&chat_id)
            .map(|feed| feed.members.clone())
            .unwrap_or_default();
        let mut cached = cached.lock().await;
        if let Some(members) = cached
            .as_ref()
            .filter(|members| members.version >= at_least)
        {
            return Ok(Some(members.clone()));
        }
        self.membership_reads.inc();
        let read = db::members::as_of_now(pool, chat_id)
            .await?
            .map(|(version, ids)| {
                Arc::new(Members {
                    version,
                    ids: ids.into_iter().collect(),
                })
            });
        cached.clone_from(&read);
        Ok(read)
    }

    /// A member this replica just removed: their streams of the chat here
    /// end now, and the other replicas are told.
    pub fn removed(&self, chat_id: i64, user_id: i64, version: i64) {
        self.publish(chat_id, Event::Removed { user_id, version });
        self.unannounced().removal(chat_id, user_id, version);
        self.announce.notify_one();
    }

    fn unannounced(&self) -> std::sync::MutexGuard<'_, Unannounced> {
        self.unannounced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Announces, at once, each chat's newest message committed since the
    /// last announcement (and the chats deleted); on failure, tries again
    /// with whatever has been added meanwhile.
    async fn announce(self: Arc<Self>) {
        loop {
            self.announce.notified().await;
            if let Err(error) = self.announce_pending().await {
                tracing::warn!(%error, "announcing new messages failed; retrying");
                tokio::time::sleep(ANNOUNCE_RETRY).await;
                self.announce.notify_one();
            }
        }
    }

    /// Announces what is unannounced now; on failure, keeps it (merged
    /// with whatever was added meanwhile) for the next try.
    async fn announce_pending(&self) -> anyhow::Result<()> {
        let batch = self.unannounced().take();
        if batch.is_empty() {
            return Ok(());
        }
        let announced = self.announcer.announce(&batch).await;
        if announced.is_err() {
            self.unannounced().put_back(batch);
        }
        announced
    }

    /// At shutdown, once no send is in flight: announces what is left, so
    /// that other replicas need not wait for their poll to learn of it.
    pub async fn flush(&self) {
        if let Err(error) = self.announce_pending().await {
            tracing::warn!(%error, "announcing the last messages failed; other replicas' polls will find them");
        }
    }

    /// Every poll interval, catches up on what announcements missed.
    async fn poll(self: Arc<Self>, pool: PgPool) {
        let mut every = tokio::time::interval(self.poll_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(error) = self.compare(&pool, false).await {
                tracing::warn!(%error, "comparing chat streams with the database failed");
            }
        }
    }

    /// One query for every watched chat: the streams of chats deleted
    /// meanwhile end, streams are told of each new members version, and
    /// what a chat received beyond its last broadcast is read and
    /// broadcast. After listening (re)started, chats whose
    /// streams have not yet noted where they start are told to resync.
    async fn compare(&self, pool: &PgPool, listening_again: bool) -> crate::error::Result<usize> {
        let watched: Vec<i64> = self.chats().keys().copied().collect();
        if watched.is_empty() {
            return Ok(0);
        }
        let current: HashMap<i64, db::chats::Standing> = db::chats::standings(pool, &watched)
            .await?
            .into_iter()
            .collect();
        for chat_id in watched {
            let Some(&standing) = current.get(&chat_id) else {
                self.publish(chat_id, Event::Deleted);
                continue;
            };
            let seq = standing.last_seq;
            let last = match self.chats().get_mut(&chat_id) {
                Some(feed) => {
                    if feed.members_version != Some(standing.members_version) {
                        feed.members_version = Some(standing.members_version);
                        let _ = feed
                            .sender
                            .send(Event::MembersChanged(standing.members_version));
                    }
                    feed.last
                }
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

    async fn listen(self: Arc<Self>, mut listener: Listener, pool: PgPool) {
        while let Some(heard) = listener.next().await {
            match heard {
                Heard::Ready => self.resync(&pool).await,
                Heard::Announcement(Announcement::Message {
                    chat_id,
                    message_id,
                }) => {
                    self.publish_messages(&pool, chat_id, Some(message_id))
                        .await;
                }
                Heard::Announcement(Announcement::Deleted { chat_id }) => {
                    self.publish(chat_id, Event::Deleted);
                }
                Heard::Announcement(Announcement::Removed {
                    chat_id,
                    user_id,
                    version,
                }) => {
                    self.publish(chat_id, Event::Removed { user_id, version });
                }
            }
        }
        tracing::error!("the chat event bus closed");
    }
}
