//! One chat's streams on this replica: the broadcast they share, what was
//! last broadcast, messages held until the sequence reaches them, and the
//! members' markers and typing.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::Hub;
use super::members::MemberCache;
use super::presence::{self, Change, Presence};
use crate::db::messages::MessageRow;
use crate::domain::{ChatId, UserId};

/// Messages committed here that reached [`Hub::committed`] before an
/// earlier message of their chat did, held until it does (or until a read
/// of the database covers them); past this, they are left to that read.
pub(super) const HELD_PER_CHAT: usize = 256;

#[derive(Debug, Clone)]
pub(crate) enum Event {
    Message(Arc<MessageRow>),
    /// The chat is gone; its streams end.
    Deleted,
    /// The user is no longer a member as of this members version; their
    /// streams of the chat opened before it end.
    Removed {
        user_id: UserId,
        version: i64,
    },
    /// The chat's members version, as the poll found it: a stream that
    /// read an older one asks the database whether its user is still a
    /// member (the announcement of a removal may have been lost).
    MembersChanged(i64),
    /// Notifications may have been lost: read the database to catch up.
    Resync,
}

/// One chat's streams on this replica.
pub(super) struct Feed {
    pub(super) sender: broadcast::Sender<Event>,
    /// The sequence number and id of the last message broadcast (or, until
    /// one is, the chat's last when the first stream subscribed; id 0).
    /// Under load one read covers every message since, and the
    /// notifications of the messages it covered are skipped.
    pub(super) last: Option<(i64, i64)>,
    /// Committed here ahead of an earlier message of the chat, by sequence
    /// number (see [`HELD_PER_CHAT`]).
    pub(super) held: BTreeMap<i64, Arc<MessageRow>>,
    /// The chat's members version the poll last found.
    pub(super) members_version: Option<i64>,
    /// The members as last read for a stream.
    pub(super) members: MemberCache,
    /// The members' read markers and typing, apart from the broadcast.
    pub(super) presence: presence::Shared,
}

impl Feed {
    pub(super) fn new(buffer: usize) -> Feed {
        Feed {
            sender: broadcast::channel(buffer).0,
            last: None,
            held: BTreeMap::new(),
            members_version: None,
            members: MemberCache::default(),
            presence: Presence::shared(),
        }
    }

    pub(super) fn presence(&self) -> std::sync::MutexGuard<'_, Presence> {
        presence::lock(&self.presence)
    }

    pub(super) fn broadcast(&mut self, message: Arc<MessageRow>) {
        self.last = Some((message.seq, message.id));
        let (seq, from) = (message.seq, UserId::new(message.from_user_id));
        // No receiver: the last stream is just leaving.
        let _ = self.sender.send(Event::Message(message));
        // After the message: a stream woken by these finds it already
        // in its receiver.
        let mut presence = self.presence();
        presence.caught_up(seq);
        presence.sent(from);
    }

    /// Broadcasts the held messages that now continue the sequence, and
    /// forgets those already broadcast.
    pub(super) fn release_held(&mut self) {
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
pub(crate) struct Subscription {
    pub(super) events: Option<broadcast::Receiver<Event>>,
    /// Raised whenever the chat's markers or typing change.
    pub(super) presence: watch::Receiver<u64>,
    /// The chat's markers and typing, read without the hub's lock.
    pub(super) shared: presence::Shared,
    /// Its version when the subscription began: what changed after it is
    /// news to the stream.
    pub(crate) presence_from: u64,
    pub(super) chat_id: ChatId,
    pub(super) hub: Arc<Hub>,
}

impl Subscription {
    /// The chat's events, and the version of its markers and typing, to
    /// wait on together.
    pub(crate) fn parts(&mut self) -> (&mut broadcast::Receiver<Event>, &mut watch::Receiver<u64>) {
        let events = self
            .events
            .as_mut()
            .unwrap_or_else(|| unreachable!("a live subscription has its receiver"));
        (events, &mut self.presence)
    }

    /// The chat's markers and typing that changed after version `seen`,
    /// and the version they are as of.
    pub(crate) fn presence_since(&self, seen: u64) -> (Vec<Change>, u64) {
        presence::lock(&self.shared).since(seen)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.events.take());
        self.hub.leave(self.chat_id);
    }
}
