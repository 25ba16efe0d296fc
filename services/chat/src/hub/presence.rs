//! Read markers and typing in one chat, as this replica last heard them,
//! for the chat's streams here.
//!
//! They are kept apart from the broadcast of messages. In a chat that V
//! people watch, each marking every message read, markers are V times as
//! many as messages; in the broadcast they would crowd the messages out of
//! every stream's buffer, and a stream that lags reads the database to
//! catch up. Here each member has one entry of each kind, replaced by
//! every move, and a stream that wakes reads only the entries that changed
//! since it last looked: however many moves came meanwhile, it passes on
//! one per member.
//!
//! The bus is a hint, never an authority: a marker is taken only at a
//! message this replica has broadcast (one heard ahead of its message
//! waits for it, replaced by whatever is heard for that member next), so
//! that an announcement naming a sequence number the chat never reached
//! cannot hold a member's marker there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::domain::{MessageId, UserId};

/// Entries kept per chat; past this, the one that changed longest ago is
/// forgotten (its streams have long passed it on).
const ENTRIES_PER_CHAT: usize = 10_000;
/// Markers heard ahead of the messages broadcast here; past this, the
/// furthest ahead gives way to a nearer one.
const EARLY_PER_CHAT: usize = 256;
/// How far ahead of the broadcast a real marker can be: its announcement
/// overtook its message, a few messages at most. A waiting marker further
/// ahead than this gives way to any nearer one of its member.
const EARLY_SPAN: i64 = 1_000;

/// One member's read marker or typing, as a stream passes it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Read {
        user_id: UserId,
        message_id: MessageId,
        seq: i64,
    },
    /// Typing for `for_ms` milliseconds from `at` (0: stopped).
    Typing {
        user_id: UserId,
        for_ms: u32,
        at: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Read(UserId),
    Typing(UserId),
}

/// A chat's markers and typing, shared by its feed, which writes them, and
/// its streams, which read them: under a lock of their own, so that
/// streams reading them never wait on, nor hold up, the other chats.
pub(super) type Shared = Arc<Mutex<Presence>>;

pub(super) fn lock(presence: &Shared) -> MutexGuard<'_, Presence> {
    presence.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A chat's markers and typing on this replica.
pub(super) struct Presence {
    /// Raised by every change; streams watch it.
    version: watch::Sender<u64>,
    entries: HashMap<Key, (Change, u64)>,
    /// Which entry each version changed, for the streams to read what
    /// changed after the version they saw.
    changed: BTreeMap<u64, Key>,
    /// Markers heard ahead of the messages broadcast here, each member's
    /// last.
    early: HashMap<UserId, (MessageId, i64)>,
}

impl Presence {
    pub(super) fn new() -> Presence {
        Presence {
            version: watch::Sender::new(0),
            entries: HashMap::new(),
            changed: BTreeMap::new(),
            early: HashMap::new(),
        }
    }

    pub(super) fn shared() -> Shared {
        Arc::new(Mutex::new(Presence::new()))
    }

    /// Wakes whenever something changes.
    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A member's marker moved to `message_id` (sequence number `seq`),
    /// with messages broadcast here up to sequence number `broadcast`.
    pub(super) fn read(
        &mut self,
        user_id: UserId,
        message_id: MessageId,
        seq: i64,
        broadcast: i64,
    ) {
        if seq > broadcast {
            self.wait(user_id, message_id, seq, broadcast);
            return;
        }
        // One heard earlier may be further (markers from two replicas
        // arrive in either order): it keeps waiting.
        if self
            .early
            .get(&user_id)
            .is_some_and(|&(_, ahead)| ahead <= seq)
        {
            self.early.remove(&user_id);
        }
        let key = Key::Read(user_id);
        if let Some((Change::Read { seq: known, .. }, _)) = self.entries.get(&key)
            && *known >= seq
        {
            return;
        }
        self.put(
            key,
            Change::Read {
                user_id,
                message_id,
                seq,
            },
        );
    }

    /// Keeps a marker heard ahead of the broadcast, each member's furthest.
    /// When full, the furthest ahead of all gives way to a nearer one: a
    /// flood of forged markers far ahead cannot crowd out real ones.
    fn wait(&mut self, user_id: UserId, message_id: MessageId, seq: i64, broadcast: i64) {
        if let Some(&(_, known)) = self.early.get(&user_id) {
            if seq > known || known.saturating_sub(broadcast) > EARLY_SPAN {
                self.early.insert(user_id, (message_id, seq));
            }
            return;
        }
        if self.early.len() >= EARLY_PER_CHAT {
            let furthest = self
                .early
                .iter()
                .max_by_key(|(_, (_, ahead))| *ahead)
                .map(|(&user_id, &(_, ahead))| (user_id, ahead));
            match furthest {
                Some((furthest, ahead)) if ahead > seq => {
                    self.early.remove(&furthest);
                }
                _ => return,
            }
        }
        self.early.insert(user_id, (message_id, seq));
    }

    /// A member's typing ended with a message from them: streams that
    /// showed it stop showing it, after the message.
    pub(super) fn sent(&mut self, user_id: UserId) {
        if let Some((Change::Typing { for_ms, at, .. }, _)) =
            self.entries.get(&Key::Typing(user_id))
            && *for_ms > 0
            && at.elapsed().as_millis() < u128::from(*for_ms)
        {
            self.typing(user_id, 0);
        }
    }

    /// Messages are broadcast here up to sequence number `broadcast`:
    /// markers heard ahead of them are taken now.
    pub(super) fn caught_up(&mut self, broadcast: i64) {
        let due: Vec<_> = self
            .early
            .extract_if(|_, &mut (_, seq)| seq <= broadcast)
            .collect();
        for (user_id, (message_id, seq)) in due {
            self.read(user_id, message_id, seq, broadcast);
        }
    }

    /// A member is typing for `for_ms` milliseconds (0: stopped).
    pub(super) fn typing(&mut self, user_id: UserId, for_ms: u32) {
        self.put(
            Key::Typing(user_id),
            Change::Typing {
                user_id,
                for_ms,
                at: Instant::now(),
            },
        );
    }

    fn put(&mut self, key: Key, change: Change) {
        let version = *self.version.borrow() + 1;
        if let Some((_, was)) = self.entries.insert(key, (change, version)) {
            self.changed.remove(&was);
        } else if self.entries.len() > ENTRIES_PER_CHAT
            && let Some((_, oldest)) = self.changed.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.changed.insert(version, key);
        self.version.send_replace(version);
    }

    /// What changed after version `seen`, each entry once, and the version
    /// it is all as of.
    pub(super) fn since(&self, seen: u64) -> (Vec<Change>, u64) {
        let changes = self
            .changed
            .range(seen + 1..)
            .filter_map(|(_, key)| self.entries.get(key).map(|(change, _)| *change))
            .collect();
        (changes, *self.version.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id)
    }

    fn reads(changes: &[Change]) -> Vec<(i64, i64)> {
        changes
            .iter()
            .filter_map(|change| match *change {
                Change::Read { user_id, seq, .. } => Some((user_id.get(), seq)),
                Change::Typing { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_stream_reads_each_member_once_however_often_they_moved() {
        let mut presence = Presence::new();
        for seq in 1..=50 {
            presence.read(user(1), MessageId::new(seq), seq, 100);
            presence.read(user(2), MessageId::new(seq), seq, 100);
        }
        let (changes, version) = presence.since(0);
        assert_eq!(reads(&changes), vec![(1, 50), (2, 50)]);
        assert_eq!(version, 100);
        presence.read(user(2), MessageId::new(51), 51, 100);
        assert_eq!(reads(&presence.since(version).0), vec![(2, 51)]);
    }

    #[test]
    fn a_marker_never_moves_back() {
        let mut presence = Presence::new();
        presence.read(user(1), MessageId::new(9), 9, 10);
        let (_, version) = presence.since(0);
        presence.read(user(1), MessageId::new(4), 4, 10);
        assert!(presence.since(version).0.is_empty());
    }

    #[test]
    fn a_marker_ahead_of_the_broadcast_waits_for_it_and_a_forged_one_holds_nothing() {
        let mut presence = Presence::new();
        // Ahead of what was broadcast: not passed on yet.
        presence.read(user(1), MessageId::new(12), 12, 10);
        assert!(presence.since(0).0.is_empty());
        presence.caught_up(12);
        assert_eq!(reads(&presence.since(0).0), vec![(1, 12)]);

        // A sequence number the chat never reaches waits forever, and the
        // member's real moves pass it by.
        presence.read(user(2), MessageId::new(1), i64::MAX, 12);
        presence.read(user(2), MessageId::new(11), 11, 12);
        let (changes, _) = presence.since(0);
        assert_eq!(reads(&changes), vec![(1, 12), (2, 11)]);
        presence.caught_up(1_000);
        assert_eq!(reads(&presence.since(0).0), vec![(1, 12), (2, 11)]);

        // Nor does it hold back the member's next marker that overtakes
        // its message.
        presence.read(user(2), MessageId::new(1_001), 1_001, 1_000);
        presence.caught_up(1_001);
        assert_eq!(reads(&presence.since(0).0), vec![(1, 12), (2, 1_001)]);
    }

    #[test]
    fn entries_are_bounded_by_forgetting_the_oldest() {
        let mut presence = Presence::new();
        for id in 0..ENTRIES_PER_CHAT as i64 + 10 {
            presence.typing(user(id), 1000);
        }
        assert_eq!(presence.entries.len(), ENTRIES_PER_CHAT);
        assert_eq!(presence.changed.len(), ENTRIES_PER_CHAT);
        let (changes, _) = presence.since(0);
        assert!(
            !changes.iter().any(
                |change| matches!(change, Change::Typing { user_id, .. } if *user_id == user(0))
            )
        );
        for id in 0..EARLY_PER_CHAT as i64 + 10 {
            presence.read(user(id), MessageId::new(1), 99, 0);
        }
        assert_eq!(presence.early.len(), EARLY_PER_CHAT);
    }

    #[test]
    fn markers_heard_out_of_order_end_at_the_furthest() {
        let mut presence = Presence::new();
        // Both ahead of the broadcast, the further one heard first.
        presence.read(user(1), MessageId::new(15), 15, 10);
        presence.read(user(1), MessageId::new(14), 14, 10);
        presence.caught_up(15);
        assert_eq!(reads(&presence.since(0).0), vec![(1, 15)]);

        // The further one waiting, the nearer one already broadcast.
        presence.read(user(2), MessageId::new(20), 20, 15);
        presence.read(user(2), MessageId::new(14), 14, 15);
        presence.caught_up(20);
        let (changes, _) = presence.since(0);
        assert_eq!(reads(&changes), vec![(1, 15), (2, 20)]);
    }

    #[test]
    fn forged_markers_far_ahead_give_way_to_real_ones() {
        let mut presence = Presence::new();
        for id in 0..EARLY_PER_CHAT as i64 {
            presence.read(user(1_000 + id), MessageId::new(1), i64::MAX - id, 10);
        }
        presence.read(user(1), MessageId::new(11), 11, 10);
        assert_eq!(presence.early.len(), EARLY_PER_CHAT);
        presence.caught_up(11);
        assert_eq!(reads(&presence.since(0).0), vec![(1, 11)]);
    }

    #[test]
    fn a_message_ends_its_senders_typing_once() {
        let mut presence = Presence::new();
        presence.typing(user(1), 5_000);
        let (_, version) = presence.since(0);
        presence.sent(user(1));
        let (changes, version) = presence.since(version);
        assert!(
            matches!(changes[..], [Change::Typing { for_ms: 0, .. }]),
            "{changes:?}"
        );
        // Not typing (any more): nothing to end.
        presence.sent(user(1));
        presence.sent(user(2));
        assert!(presence.since(version).0.is_empty());
    }
}
