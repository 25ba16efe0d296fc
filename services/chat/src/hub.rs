//! Fan-out of chat events to this replica's streams. Every replica listens
//! on PostgreSQL's `chat_events` channel, which the database notifies on
//! each stored message and each deleted chat, whichever replica caused it;
//! the hub reads each new message once and broadcasts it to the streams of
//! its chat.
//!
//! Streams tell by sequence number whether they missed anything (a lost
//! connection, a full buffer) and then read what they missed from the
//! database, so notifications carry ids only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::db;
use crate::db::messages::MessageRow;

const CHANNEL: &str = "chat_events";

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
    /// How many events a stream may fall behind before it is ended.
    buffer: usize,
}

/// One chat's streams on this replica.
struct Feed {
    sender: broadcast::Sender<Event>,
    /// The sequence number and id of the last message broadcast. Under load
    /// one read covers every message since, and the notifications of the
    /// messages it covered are skipped.
    last: Option<(i64, i64)>,
}

/// Messages read at a time.
const BATCH: i64 = 500;

impl Hub {
    /// Listens before returning, so that no event is missed by streams
    /// opened from then on. The task runs until aborted.
    pub async fn start(pool: PgPool, buffer: usize) -> anyhow::Result<(Arc<Hub>, JoinHandle<()>)> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let hub = Arc::new(Hub {
            chats: Mutex::default(),
            buffer: buffer.max(1),
        });
        let task = tokio::spawn(hub.clone().listen(listener, pool));
        Ok((hub, task))
    }

    fn chats(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Feed>> {
        self.chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events of `chat_id` from now on.
    pub fn subscribe(&self, chat_id: i64) -> broadcast::Receiver<Event> {
        self.chats()
            .entry(chat_id)
            .and_modify(|feed| {
                // Nobody listened meanwhile: what was broadcast last is stale.
                if feed.sender.receiver_count() == 0 {
                    feed.last = None;
                }
            })
            .or_insert_with(|| Feed {
                sender: broadcast::channel(self.buffer).0,
                last: None,
            })
            .sender
            .subscribe()
    }

    /// Broadcasts the chat's messages up to `message_id`, unless already
    /// done or nobody listens.
    async fn publish_messages(&self, pool: &PgPool, chat_id: i64, message_id: i64) {
        loop {
            let last = match self.chats().get(&chat_id) {
                Some(feed) if feed.sender.receiver_count() > 0 => feed.last,
                _ => return,
            };
            let read = match last {
                Some((_, last_id)) if last_id >= message_id => return,
                Some((last_seq, _)) => {
                    db::messages::after_seq(pool, chat_id, last_seq, BATCH).await
                }
                None => db::messages::get(pool, message_id)
                    .await
                    .map(|found| found.into_iter().collect()),
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
                if feed.sender.send(Event::Message(Arc::new(message))).is_err() {
                    // Nobody listens any more.
                    chats.remove(&chat_id);
                    return;
                }
            }
            if read_all {
                return;
            }
        }
    }

    fn publish(&self, chat_id: i64, event: Event) {
        let mut chats = self.chats();
        if let Some(feed) = chats.get(&chat_id)
            && feed.sender.send(event).is_err()
        {
            chats.remove(&chat_id);
        }
    }

    fn publish_everywhere(&self, event: &Event) {
        self.chats()
            .retain(|_, feed| feed.sender.send(event.clone()).is_ok());
    }

    async fn listen(self: Arc<Self>, mut listener: PgListener, pool: PgPool) {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match parse(notification.payload()) {
                    Some(Notice::Message {
                        chat_id,
                        message_id,
                    }) => {
                        self.publish_messages(&pool, chat_id, message_id).await;
                    }
                    Some(Notice::Deleted { chat_id }) => {
                        self.publish(chat_id, Event::Deleted);
                        self.chats().remove(&chat_id);
                    }
                    None => {
                        tracing::warn!(payload = notification.payload(), "unreadable chat event")
                    }
                },
                // The connection was lost; the next call reconnects. Streams
                // read what they may have missed.
                Ok(None) => {
                    tracing::warn!(
                        "lost the chat event connection; streams catch up from the database"
                    );
                    self.publish_everywhere(&Event::Resync);
                }
                Err(error) => {
                    tracing::warn!(%error, "listening for chat events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.publish_everywhere(&Event::Resync);
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Notice {
    Message { chat_id: i64, message_id: i64 },
    Deleted { chat_id: i64 },
}

/// `message:<chat_id>:<message_id>` or `deleted:<chat_id>`, as the
/// trigger writes them.
fn parse(payload: &str) -> Option<Notice> {
    let mut parts = payload.split(':');
    let notice = match (parts.next()?, parts.next()?.parse().ok()?, parts.next()) {
        ("message", chat_id, Some(message_id)) => Notice::Message {
            chat_id,
            message_id: message_id.parse().ok()?,
        },
        ("deleted", chat_id, None) => Notice::Deleted { chat_id },
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
            Some(Notice::Message {
                chat_id: 3,
                message_id: 42
            })
        );
        assert_eq!(parse("deleted:3"), Some(Notice::Deleted { chat_id: 3 }));
        for junk in ["", "message:3", "deleted:x", "message:3:4:5", "other:1"] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
    }
}
