//! What this replica has to tell the other replicas (and its own streams,
//! for markers and typing, which every replica hears back from the bus):
//! each chat's newest message committed here, chats deleted here, members
//! removed here, read markers moved here and who is typing.
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
/// Announcements follow one another at most this often. Under load the
/// loop would otherwise run back to back, a transaction each time; the
/// wait gathers whatever is committed meanwhile into the next one. An idle
/// replica's first announcement waits for nothing.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);
/// A member's read marker in a chat is announced at most this often: one
/// scrolling through history moves it with every message, and the last
/// move is all anyone needs.
pub(crate) const MARKERS_EVERY: Duration = Duration::from_millis(250);
/// Markers waiting for their announcement, and typing; past these, new
/// ones are dropped (a marker is stored, and GetChat shows it; typing
/// comes again in a few seconds).
const PENDING_MARKERS: usize = 100_000;
const PENDING_TYPING: usize = 10_000;

pub(super) struct Outbox {
    /// Emptied by every announcement.
    unannounced: Mutex<Unannounced>,
    wake: Notify,
    /// Markers that moved, each member's last in each chat, until the next
    /// [`MARKERS_EVERY`] tick hands them to the announcement.
    markers: Mutex<HashMap<(ChatId, UserId), (MessageId, i64)>>,
    markers_wake: Notify,
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
    /// Read markers that moved: each member's last, with its sequence
    /// number.
    markers: HashMap<(ChatId, UserId), (MessageId, i64)>,
    /// Who is typing, for how many milliseconds.
    typing: HashMap<(ChatId, UserId), u32>,
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
        let markers = self
            .markers
            .drain()
            .map(
                |((chat_id, user_id), (message_id, seq))| Announcement::Read {
                    chat_id: chat_id.get(),
                    user_id: user_id.get(),
                    message_id: message_id.get(),
                    seq,
                },
            );
        let typing = self
            .typing
            .drain()
            .map(|((chat_id, user_id), for_ms)| Announcement::Typing {
                chat_id: chat_id.get(),
                user_id: user_id.get(),
                for_ms,
            });
        // Typing ahead of messages: a message ends its sender's typing
        // wherever it is heard, so typing heard after it would show again.
        // Messages ahead of removals: a stream on another replica delivers
        // what was sent while its user was a member, and a message sent
        // after a removal carries the newer members version, which a
        // stream checks before passing it on.
        typing
            .chain(messages)
            .chain(removed)
            .chain(deleted)
            .chain(markers)
            .collect()
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
                Announcement::Read {
                    chat_id,
                    user_id,
                    message_id,
                    seq,
                } => merge_marker(
                    &mut self.markers,
                    (ChatId::new(chat_id), UserId::new(user_id)),
                    (MessageId::new(message_id), seq),
                ),
                // Typing that could not be announced is stale by the next
                // try; it is not kept.
                Announcement::Typing { .. } => {}
            }
        }
    }
}

/// Keeps the furthest marker of each member and chat, and at most
/// [`PENDING_MARKERS`] of them.
fn merge_marker(
    markers: &mut HashMap<(ChatId, UserId), (MessageId, i64)>,
    key: (ChatId, UserId),
    marker: (MessageId, i64),
) {
    if markers.len() >= PENDING_MARKERS && !markers.contains_key(&key) {
        return;
    }
    let known = markers.entry(key).or_insert(marker);
    if marker.1 > known.1 {
        *known = marker;
    }
}

impl Outbox {
    pub(super) fn new(announcer: Announcer) -> Outbox {
        Outbox {
            unannounced: Mutex::default(),
            wake: Notify::new(),
            markers: Mutex::default(),
            markers_wake: Notify::new(),
            announcer,
        }
    }

    fn markers(&self) -> std::sync::MutexGuard<'_, HashMap<(ChatId, UserId), (MessageId, i64)>> {
        self.markers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A member's read marker moved; announced with the next tick of
    /// [`MARKERS_EVERY`], merged with whatever moves it further meanwhile.
    pub(super) fn marker(&self, chat_id: ChatId, user_id: UserId, message_id: MessageId, seq: i64) {
        merge_marker(&mut self.markers(), (chat_id, user_id), (message_id, seq));
        self.markers_wake.notify_one();
    }

    /// A member is typing (or stopped: `for_ms` 0); announced at once.
    pub(super) fn typing(&self, chat_id: ChatId, user_id: UserId, for_ms: u32) {
        {
            let mut unannounced = self.unannounced();
            let key = (chat_id, user_id);
            if unannounced.typing.len() >= PENDING_TYPING && !unannounced.typing.contains_key(&key)
            {
                return;
            }
            unannounced.typing.insert(key, for_ms);
        }
        self.wake.notify_one();
    }

    /// Hands the markers gathered to the announcement, at most once every
    /// [`MARKERS_EVERY`]. Runs until dropped.
    pub(super) async fn run_markers(&self) {
        loop {
            self.markers_wake.notified().await;
            tokio::time::sleep(MARKERS_EVERY).await;
            self.gather_markers();
            self.wake.notify_one();
        }
    }

    /// Hands the markers gathered since the last tick to the announcement.
    fn gather_markers(&self) {
        let gathered = std::mem::take(&mut *self.markers());
        let mut unannounced = self.unannounced();
        for (key, marker) in gathered {
            merge_marker(&mut unannounced.markers, key, marker);
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
        let mut last = tokio::time::Instant::now() - ANNOUNCE_EVERY;
        loop {
            self.wake.notified().await;
            tokio::time::sleep_until(last + ANNOUNCE_EVERY).await;
            last = tokio::time::Instant::now();
            if let Err(error) = self.announce_pending().await {
                tracing::warn!(%error, "announcing new messages failed; retrying");
                tokio::time::sleep(ANNOUNCE_RETRY).await;
                self.wake.notify_one();
            }
        }
    }

    /// At shutdown: announces everything, markers still waiting for their
    /// tick included.
    pub(super) async fn announce_all(&self) -> anyhow::Result<()> {
        self.gather_markers();
        self.announce_pending().await
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
}
