//! Fan-out of chat events to this replica's streams. Every replica listens
//! on PostgreSQL's `chat_events` channel, which the database notifies on
//! each stored message and each deleted chat, whichever replica caused it;
//! the hub reads each new message once and broadcasts it to the streams of
//! its chat.
//!
//! Streams tell by sequence number whether they missed anything and then
//! read what they missed from the database, so notifications carry ids
//! only and may be lost. Listening is [`Notifications`]'s: after every
//! (re)start of listening the hub resyncs, after listening has resumed:
//! one query finds which watched chats were deleted meanwhile (their
//! streams end), and one query per chat reads what was committed since
//! its last broadcast.
//!
//! A chat's entry lives exactly as long as it has subscribers: the last
//! [`Subscription`] to go removes it, whichever way its stream ended.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use prometheus::IntGauge;
use serving::notifications::{Event as Notice, Freshness, Notifications};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::db;
use crate::db::messages::MessageRow;

const CHANNEL: &str = "chat_events";
/// Messages read at a time.
const BATCH: i64 = 500;
/// How long start-up waits to be listening.
const START_WITHIN: Duration = Duration::from_secs(30);

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
}

/// One chat's streams on this replica.
struct Feed {
    sender: broadcast::Sender<Event>,
    /// The sequence number and id of the last message broadcast (or, until
    /// one is, the chat's last when the first stream subscribed; id 0).
    /// Under load one read covers every message since, and the
    /// notifications of the messages it covered are skipped.
    last: Option<(i64, i64)>,
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
        });
        let task = tokio::spawn(hub.clone().listen(notifications, pool));
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
                (None, Some(message_id)) => db::messages::get(pool, message_id)
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
                feed.last = Some((message.seq, message.id));
                // No receiver: the last stream is just leaving.
                let _ = feed.sender.send(Event::Message(Arc::new(message)));
            }
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

    /// After listening (re)started: ends the streams of chats deleted
    /// meanwhile, and broadcasts what each watched chat received meanwhile.
    async fn resync(&self, pool: &PgPool) {
        let watched: Vec<i64> = self.chats().keys().copied().collect();
        if watched.is_empty() {
            return;
        }
        // Retried until it answers: a deletion missed meanwhile is only
        // learnt here.
        let existing: HashSet<i64> = loop {
            match db::chats::existing(pool, &watched).await {
                Ok(existing) => break existing.into_iter().collect(),
                Err(error) => {
                    tracing::warn!(%error, "resyncing chat streams failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        for chat_id in watched {
            if existing.contains(&chat_id) {
                self.publish_messages(pool, chat_id, None).await;
            } else {
                self.publish(chat_id, Event::Deleted);
            }
        }
        tracing::info!(chats = existing.len(), "chat streams resynced");
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
