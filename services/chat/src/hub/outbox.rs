//! What this replica has to tell the other replicas: each chat's newest
//! message committed here, chats deleted here and members removed here.
//! Announcements are batched, one for whatever was committed meanwhile,
//! outside any send's transaction, and kept for the next try when the bus
//! refuses.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::bus::{Announcement, Announcer};
use crate::domain::{ChatId, MessageId, UserId};

/// Removals kept to announce while the bus refuses; past this many, the
/// other replicas' polls find them by the chats' members versions.
const UNANNOUNCED_REMOVALS: usize = 10_000;
/// The wait before announcing again after the database refused.
const ANNOUNCE_RETRY: Duration = Duration::from_millis(250);

pub(super) struct Outbox {
    /// Emptied by every announcement.
    unannounced: Mutex<Unannounced>,
    wake: Notify,
    announcer: Announcer,
}

/// At most one entry per chat (per member, for removals).
#[derive(Default)]
struct Unannounced {
    /// Each chat's newest message committed here.
    messages: HashMap<ChatId, MessageId>,
    /// Chats deleted here, when the bus needs telling.
    deleted: HashSet<ChatId>,
    /// Members removed here, with the members version the removal made; at
    /// most [`UNANNOUNCED_REMOVALS`] (the poll finds the rest).
    removed: HashMap<(ChatId, UserId), i64>,
}

impl Unannounced {
    fn message(&mut self, chat_id: ChatId, message_id: MessageId) {
        let id = self.messages.entry(chat_id).or_insert(message_id);
        *id = (*id).max(message_id);
    }

    fn removal(&mut self, chat_id: ChatId, user_id: UserId, version: i64) {
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
                chat_id: chat_id.get(),
                message_id: message_id.get(),
            });
        let deleted = self.deleted.drain().map(|chat_id| Announcement::Deleted {
            chat_id: chat_id.get(),
        });
        let removed =
            self.removed
                .drain()
                .map(|((chat_id, user_id), version)| Announcement::Removed {
                    chat_id: chat_id.get(),
                    user_id: user_id.get(),
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
                } => self.message(ChatId::new(chat_id), MessageId::new(message_id)),
                Announcement::Deleted { chat_id } => {
                    self.deleted.insert(ChatId::new(chat_id));
                }
                Announcement::Removed {
                    chat_id,
                    user_id,
                    version,
                } => self.removal(ChatId::new(chat_id), UserId::new(user_id), version),
            }
        }
    }
}

impl Outbox {
    pub(super) fn new(announcer: Announcer) -> Outbox {
        Outbox {
            unannounced: Mutex::default(),
            wake: Notify::new(),
            announcer,
        }
    }

    fn unannounced(&self) -> std::sync::MutexGuard<'_, Unannounced> {
        self.unannounced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn message(&self, chat_id: ChatId, message_id: MessageId) {
        self.unannounced().message(chat_id, message_id);
        self.wake.notify_one();
    }

    /// Only where the bus needs telling: PostgreSQL's announces deletions
    /// by itself.
    pub(super) fn deleted(&self, chat_id: ChatId) {
        if self.announcer.announces_deletions() {
            self.unannounced().deleted.insert(chat_id);
            self.wake.notify_one();
        }
    }

    pub(super) fn removed(&self, chat_id: ChatId, user_id: UserId, version: i64) {
        self.unannounced().removal(chat_id, user_id, version);
        self.wake.notify_one();
    }

    /// Announces, at once, whatever is unannounced; on failure, tries again
    /// with whatever has been added meanwhile. Runs until dropped.
    pub(super) async fn run(&self) {
        loop {
            self.wake.notified().await;
            if let Err(error) = self.announce_pending().await {
                tracing::warn!(%error, "announcing new messages failed; retrying");
                tokio::time::sleep(ANNOUNCE_RETRY).await;
                self.wake.notify_one();
            }
        }
    }

    /// Announces what is unannounced now; on failure, keeps it (merged
    /// with whatever was added meanwhile) for the next try.
    pub(super) async fn announce_pending(&self) -> anyhow::Result<()> {
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
}
