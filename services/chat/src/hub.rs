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
    chats: Mutex<HashMap<i64, broadcast::Sender<Event>>>,
    /// How many events a stream may fall behind before it is ended.
    buffer: usize,
}

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

    /// Events of `chat_id` from now on.
    pub fn subscribe(&self, chat_id: i64) -> broadcast::Receiver<Event> {
        let mut chats = self
            .chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chats
            .entry(chat_id)
            .or_insert_with(|| broadcast::channel(self.buffer).0)
            .subscribe()
    }

    /// Number of chats with open streams on this replica.
    pub fn chats_with_streams(&self) -> usize {
        let mut chats = self
            .chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chats.retain(|_, sender| sender.receiver_count() > 0);
        chats.len()
    }

    fn has_streams(&self, chat_id: i64) -> bool {
        let chats = self
            .chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chats
            .get(&chat_id)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    fn publish(&self, chat_id: i64, event: Event) {
        let mut chats = self
            .chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = chats.get(&chat_id)
            && sender.send(event).is_err()
        {
            // Nobody listens any more.
            chats.remove(&chat_id);
        }
    }

    fn publish_everywhere(&self, event: &Event) {
        let mut chats = self
            .chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chats.retain(|_, sender| sender.send(event.clone()).is_ok());
    }

    async fn listen(self: Arc<Self>, mut listener: PgListener, pool: PgPool) {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match parse(notification.payload()) {
                    Some(Notice::Message {
                        chat_id,
                        message_id,
                    }) => {
                        if !self.has_streams(chat_id) {
                            continue;
                        }
                        match db::messages::get(&pool, message_id).await {
                            Ok(Some(message)) => {
                                self.publish(chat_id, Event::Message(Arc::new(message)))
                            }
                            // Deleted with its chat meanwhile.
                            Ok(None) => {}
                            Err(error) => {
                                tracing::warn!(%error, chat_id, "reading a new message failed; streams will catch up");
                                self.publish(chat_id, Event::Resync);
                            }
                        }
                    }
                    Some(Notice::Deleted { chat_id }) => {
                        self.publish(chat_id, Event::Deleted);
                        let mut chats = self
                            .chats
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        chats.remove(&chat_id);
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
