//! Keeping the feeds true to the database: what other replicas announce is
//! read and broadcast, and every poll interval (and after every
//! (re)connection of the bus) one query compares each watched chat with
//! the database, which finds whatever announcements were lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::{BATCH, Event, Hub};
use crate::bus::{Announcement, Heard, Listener};
use crate::db;
use crate::domain::{ChatId, MessageId, UserId};

impl Hub {
    /// Every poll interval, catches up on what announcements missed.
    pub(super) async fn poll(self: Arc<Self>, pool: PgPool) {
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
        let watched: Vec<ChatId> = self.chats().keys().copied().collect();
        if watched.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = watched.iter().map(|id| id.get()).collect();
        let current: HashMap<i64, db::chats::Standing> = db::chats::standings(pool, &ids)
            .await?
            .into_iter()
            .collect();
        for chat_id in watched {
            let Some(&standing) = current.get(&chat_id.get()) else {
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

    /// Broadcasts the chat's messages up to `message_id`, unless already
    /// done or nobody listens.
    async fn publish_messages(
        &self,
        pool: &PgPool,
        chat_id: ChatId,
        message_id: Option<MessageId>,
    ) {
        loop {
            let last = match self.chats().get(&chat_id) {
                Some(feed) => feed.last,
                None => return,
            };
            let read = match (last, message_id.map(MessageId::get)) {
                (Some((_, last_id)), Some(message_id)) if last_id >= message_id => return,
                (Some((last_seq, _)), _) => {
                    db::messages::after_seq(pool, chat_id.get(), last_seq, BATCH).await
                }
                (None, Some(message_id)) => db::messages::get(pool, chat_id.get(), message_id)
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
                    tracing::warn!(%error, chat_id = chat_id.get(), "reading new messages failed; streams will catch up");
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

    /// What the other replicas announce, until the bus closes (a bug).
    pub(super) async fn listen(self: Arc<Self>, mut listener: Listener, pool: PgPool) {
        while let Some(heard) = listener.next().await {
            match heard {
                Heard::Ready => self.resync(&pool).await,
                Heard::Announcement(Announcement::Message {
                    chat_id,
                    message_id,
                }) => {
                    self.publish_messages(
                        &pool,
                        ChatId::new(chat_id),
                        Some(MessageId::new(message_id)),
                    )
                    .await;
                }
                Heard::Announcement(Announcement::Deleted { chat_id }) => {
                    self.confirm_deletion(&pool, ChatId::new(chat_id)).await;
                }
                Heard::Announcement(Announcement::Removed {
                    chat_id,
                    user_id,
                    version,
                }) => {
                    self.confirm_removal(
                        &pool,
                        ChatId::new(chat_id),
                        UserId::new(user_id),
                        version,
                    )
                    .await;
                }
                Heard::Announcement(Announcement::Read {
                    chat_id,
                    user_id,
                    message_id,
                    seq,
                }) => {
                    // Before the chat's place is known here, every
                    // marker waits for it.
                    if let Some(feed) = self.chats().get_mut(&ChatId::new(chat_id)) {
                        let broadcast = feed.last.map_or(0, |(seq, _)| seq);
                        feed.presence().read(
                            UserId::new(user_id),
                            MessageId::new(message_id),
                            seq,
                            broadcast,
                        );
                    }
                }
                Heard::Announcement(Announcement::Typing {
                    chat_id,
                    user_id,
                    for_ms,
                }) => {
                    if let Some(feed) = self.chats().get_mut(&ChatId::new(chat_id)) {
                        feed.presence().typing(UserId::new(user_id), for_ms);
                    }
                }
            }
        }
        tracing::error!("the chat event bus closed");
    }

    /// The bus is a hint, never an authority: whoever can publish on it
    /// could otherwise end any chat's streams. A deletion heard ends the
    /// chat's streams here only once the database has no such chat; if the
    /// database cannot be asked, the poll finds a real deletion later.
    /// Whether an unconfirmed announcement may be logged now: at most one
    /// every 10 s.
    fn log_unconfirmed(&self) -> bool {
        let mut last = self
            .unconfirmed_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < std::time::Duration::from_secs(10)) {
            return false;
        }
        *last = Some(now);
        true
    }

    async fn confirm_deletion(&self, pool: &PgPool, chat_id: ChatId) {
        if !self.chats().contains_key(&chat_id) {
            return;
        }
        match db::chats::last_seq(pool, chat_id.get()).await {
            Ok(None) => self.publish(chat_id, Event::Deleted),
            Ok(Some(_)) => {
                self.unconfirmed.inc();
                if self.log_unconfirmed() {
                    tracing::warn!(
                        chat_id = chat_id.get(),
                        "a deletion announced on the bus is not in the database; ignored (logged at most every 10 s; chat_unconfirmed_announcements_total counts them)"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, chat_id = chat_id.get(), "confirming an announced deletion failed; the poll will find it");
            }
        }
    }

    /// A removal heard ends the user's streams of the chat here only once
    /// the database says they are no longer a member; a member who was
    /// added again since keeps their streams.
    async fn confirm_removal(&self, pool: &PgPool, chat_id: ChatId, user_id: UserId, version: i64) {
        if !self.chats().contains_key(&chat_id) {
            return;
        }
        match db::members::membership(pool, chat_id.get(), user_id.get()).await {
            Ok(None) => self.publish(chat_id, Event::Removed { user_id, version }),
            Ok(Some(_)) => {
                self.unconfirmed.inc();
                if self.log_unconfirmed() {
                    tracing::warn!(
                        chat_id = chat_id.get(),
                        user_id = user_id.get(),
                        "a removal announced on the bus is not in the database; ignored (logged at most every 10 s; chat_unconfirmed_announcements_total counts them)"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, chat_id = chat_id.get(), "confirming an announced removal failed; the poll will find it");
            }
        }
    }
}
