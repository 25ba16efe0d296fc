//! The actor behind one client's stream of a chat. It sends each message
//! once, in sequence order: events that continue the sequence go straight
//! out, and any gap (a lost notification, a replay) is filled from the
//! database. It ends the stream when the client leaves or stops reading,
//! when the caller's access ends or their token expires, when they are no
//! longer a member, when the chat is deleted, and at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use host::error::Limit;
use host::quota::Slot;
use tokio::sync::broadcast;
use tonic::Status;

use super::StreamItem;
use super::outbound::Queue;
use crate::access_watch::Hold;
use crate::app::App;
use crate::db;
use crate::db::messages::MessageRow;
use crate::domain::{ChatId, MessageId, UserId};
use crate::error::Error;
use crate::hub::{Change, Event, Subscription};
use crate::metrics::OpenStream;

/// Messages read from the database at a time when a stream catches up.
const CATCH_UP_BATCH: i64 = 100;
/// Members whose markers a stream remembers, to pass each move on once.
const MARKERS_KNOWN: usize = 10_000;
/// A stream passes on markers and typing at most this often: whatever
/// moved meanwhile goes out together, one per member.
const PRESENCE_EVERY: Duration = Duration::from_millis(250);

pub(super) struct ChatStream {
    /// The stream's place among its user's open streams.
    pub(super) _slot: Slot<UserId>,
    pub(super) chat_id: ChatId,
    pub(super) user_id: UserId,
    /// The chat's members version when the user was last known to be a
    /// member.
    pub(super) members_version: i64,
    /// The sequence number of the last message sent.
    pub(super) last_seq: i64,
    pub(super) app: Arc<App>,
    pub(super) queue: Queue<StreamItem>,
    /// The furthest read marker passed on, per member: a marker heard late,
    /// or twice, is not passed on again.
    pub(super) markers: HashMap<UserId, i64>,
    /// Markers naming messages this stream has yet to pass on, per
    /// member: they follow their messages.
    pub(super) ahead: HashMap<UserId, (MessageId, i64)>,
    /// The version of the chat's markers and typing passed on.
    pub(super) presence_seen: u64,
    /// When markers and typing may next be passed on.
    pub(super) presence_due: tokio::time::Instant,
    /// Ends the stream when its caller's access ends.
    pub(super) access: Hold,
    /// When the caller's access token expires.
    pub(super) expires_at: Option<tokio::time::Instant>,
}

/// Why a stream ended.
enum End {
    /// The client left; nobody to tell.
    ClientGone,
    /// The caller's access ended, as the access watch says.
    Access(Status),
    /// Tell the client, then end.
    With(Error),
}

impl From<Error> for End {
    fn from(error: Error) -> End {
        End::With(error)
    }
}

impl ChatStream {
    pub(super) async fn run(mut self, mut subscription: Subscription, replay: bool) {
        let _open = OpenStream::new(&self.app.metrics.open_streams);
        let stall_timeout = self.app.stream_stall_timeout;
        let mut stall_check = tokio::time::interval(
            (stall_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        let end = async {
            if replay {
                self.catch_up().await?;
            }
            loop {
                let expiry = self.expires_at;
                let presence_due = self.presence_due;
                let (events, presence) = subscription.parts();
                let event = tokio::select! {
                    () = self.queue.closed() => return Err(End::ClientGone),
                    () = self.app.shutdown.cancelled() => return Err(shutting_down()),
                    Some(status) = self.access.ended.recv() => return Err(End::Access(status)),
                    () = until(expiry) => return Err(expired()),
                    // In a quiet chat no send blocks: a client that left
                    // messages unread is found here.
                    _ = stall_check.tick() => {
                        if self.queue.stalled_for(stall_timeout) {
                            return Err(stalled(stall_timeout));
                        }
                        continue;
                    }
                    event = events.recv() => event,
                    changed = async {
                        tokio::time::sleep_until(presence_due).await;
                        presence.changed().await
                    } => {
                        // The feed outlives its subscriptions.
                        changed.map_err(|_| shutting_down())?;
                        let (changes, version) = subscription.presence_since(self.presence_seen);
                        self.pass_presence(changes, version).await?;
                        continue;
                    }
                };
                match event {
                    Ok(Event::Message(message)) if message.seq <= self.last_seq => {}
                    Ok(Event::Message(message)) if message.seq == self.last_seq + 1 => {
                        self.send(message).await?
                    }
                    Ok(Event::Message(_) | Event::Resync) => self.catch_up().await?,
                    Ok(Event::Deleted) => {
                        return Err(End::With(Error::NotFound(format!(
                            "chat {} was deleted",
                            self.chat_id
                        ))));
                    }
                    // A late announcement of an earlier removal leaves a
                    // user who joined again since alone.
                    Ok(Event::Removed { user_id, version })
                        if user_id == self.user_id && version > self.members_version =>
                    {
                        return Err(self.not_a_member());
                    }
                    Ok(Event::Removed { .. }) => {}
                    Ok(Event::MembersChanged(version)) if version > self.members_version => {
                        self.still_a_member(version).await?
                    }
                    Ok(Event::MembersChanged(_)) => {}
                    // Events were dropped for this stream; the database has
                    // them, and knows whether the user is still a member.
                    // Only a client that stops reading is ended (in send).
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.check_membership().await?;
                        self.catch_up().await?
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(shutting_down()),
                }
            }
        }
        .await;
        let status = match end {
            Err(End::With(error)) => Status::from(error),
            Err(End::Access(status)) => status,
            Err(End::ClientGone) | Ok(()) => {
                tracing::info!(chat_id = self.chat_id.get(), "stream closed by the client");
                return;
            }
        };
        tracing::info!(chat_id = self.chat_id.get(), code = ?status.code(), "stream ended");
        // Ahead of anything queued: ending never waits on the client.
        self.queue.end(status);
    }

    /// Ends the stream if its user is not a member as of members version
    /// `version` (read once for all the chat's streams here).
    async fn still_a_member(&mut self, version: i64) -> Result<(), End> {
        let members = self
            .app
            .hub
            .members(&self.app.pool, self.chat_id, version)
            .await?;
        match members {
            Some(members) if members.contains(self.user_id) => {
                self.members_version = members.version;
                Ok(())
            }
            _ => Err(self.not_a_member()),
        }
    }

    /// Ends the stream if its user is no longer a member, as the database
    /// says now (after events were lost, which may have said so).
    async fn check_membership(&mut self) -> Result<(), End> {
        let membership =
            db::members::membership(&self.app.pool, self.chat_id.get(), self.user_id.get()).await?;
        match membership {
            Some(version) => {
                self.members_version = version;
                Ok(())
            }
            None => Err(self.not_a_member()),
        }
    }

    /// What a removed member's stream ends with: what a non-member's
    /// request gets.
    fn not_a_member(&self) -> End {
        End::With(crate::error::chat_not_found(self.chat_id))
    }

    /// Sends every stored message after the last one sent.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let batch = db::messages::after_seq(
                &self.app.pool,
                self.chat_id.get(),
                self.last_seq,
                CATCH_UP_BATCH,
            )
            .await?;
            let read_all = (batch.len() as i64) < CATCH_UP_BATCH;
            for message in batch {
                self.send(Arc::new(message)).await?;
            }
            if read_all {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, message: Arc<MessageRow>) -> Result<(), End> {
        // Stored after a removal this stream has not heard of yet (from
        // another replica, or announced late): the user may be gone.
        if message.members_version > self.members_version {
            self.still_a_member(message.members_version).await?;
        }
        let seq = message.seq;
        // A message moves its sender's marker: no marker event for it, or
        // before it, follows.
        self.note_marker(UserId::new(message.from_user_id), seq);
        self.push(StreamItem::Message(message)).await?;
        self.last_seq = seq;
        self.pass_markers_due().await
    }

    /// Passes on the markers held back for messages this stream had yet
    /// to pass on, now that it has.
    async fn pass_markers_due(&mut self) -> Result<(), End> {
        let last_seq = self.last_seq;
        let due: Vec<_> = self
            .ahead
            .extract_if(|_, &mut (_, seq)| seq <= last_seq)
            .collect();
        for (user_id, (message_id, seq)) in due {
            self.marker(user_id, message_id, seq).await?;
        }
        Ok(())
    }

    /// Passes on the markers and typing that changed since the last pass.
    async fn pass_presence(&mut self, changes: Vec<Change>, version: u64) -> Result<(), End> {
        self.presence_due = tokio::time::Instant::now() + PRESENCE_EVERY;
        self.presence_seen = version;
        for change in changes {
            match change {
                Change::Read {
                    user_id,
                    message_id,
                    seq,
                } => self.marker(user_id, message_id, seq).await?,
                // Nobody is told of their own typing.
                Change::Typing { user_id, .. } if user_id == self.user_id => {}
                Change::Typing {
                    user_id,
                    for_ms,
                    at,
                } => {
                    let for_ms = for_ms.min(super::super::typing::TYPING_FOR_MS);
                    let left = u128::from(for_ms).saturating_sub(at.elapsed().as_millis());
                    // Stopped, or typing for what is left; over already:
                    // nothing to say.
                    if for_ms == 0 {
                        self.push(StreamItem::Typing { user_id, for_ms: 0 }).await?;
                    } else if let Ok(left @ 1..) = u32::try_from(left) {
                        self.push(StreamItem::Typing {
                            user_id,
                            for_ms: left,
                        })
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Passes a member's marker on if it is further than the last passed
    /// on for them.
    async fn marker(
        &mut self,
        user_id: UserId,
        message_id: MessageId,
        seq: i64,
    ) -> Result<(), End> {
        if seq > self.last_seq {
            // Its message is still on its way to this stream (or a catch-up
            // brings it): the marker follows it. The furthest is kept.
            if self
                .ahead
                .get(&user_id)
                .is_none_or(|&(_, ahead)| ahead < seq)
                && (self.ahead.len() < MARKERS_KNOWN || self.ahead.contains_key(&user_id))
            {
                self.ahead.insert(user_id, (message_id, seq));
            }
            return Ok(());
        }
        if self.note_marker(user_id, seq) {
            self.push(StreamItem::Read {
                user_id,
                message_id,
            })
            .await?;
        }
        Ok(())
    }

    /// Whether `seq` moves the member's marker as this stream knows it.
    fn note_marker(&mut self, user_id: UserId, seq: i64) -> bool {
        if self.markers.len() >= MARKERS_KNOWN && !self.markers.contains_key(&user_id) {
            // A chat this large: forget, and pass on what comes.
            self.markers.clear();
        }
        let known = self.markers.entry(user_id).or_insert(0);
        if seq <= *known {
            return false;
        }
        *known = seq;
        true
    }

    async fn push(&mut self, item: StreamItem) -> Result<(), End> {
        // A long catch-up ends as soon as access does, like a live stream.
        let expiry = self.expires_at;
        let stall_timeout = self.app.stream_stall_timeout;
        tokio::select! {
            Some(status) = self.access.ended.recv() => Err(End::Access(status)),
            () = until(expiry) => Err(expired()),
            sent = tokio::time::timeout(stall_timeout, self.queue.push(item)) => match sent {
                Ok(sent) => sent.map_err(|()| End::ClientGone),
                Err(_) => Err(stalled(stall_timeout)),
            },
            () = self.app.shutdown.cancelled() => Err(shutting_down()),
        }
    }
}

/// Waits until `at`, or forever.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn stalled(timeout: Duration) -> End {
    End::With(Error::ResourceExhausted {
        limit: Limit::StalledReader,
        message: format!(
            "the client read nothing for {} ms; reconnect with since_message_id set to the last message received",
            timeout.as_millis()
        ),
        retry_after: None,
    })
}

fn expired() -> End {
    End::With(Error::TokenExpired(
        "the access token expired; reconnect with a fresh token and since_message_id set to the last message received".into(),
    ))
}

fn shutting_down() -> End {
    End::With(Error::Unavailable(
        "the server is shutting down; reconnect with since_message_id set to the last message received".into(),
    ))
}
