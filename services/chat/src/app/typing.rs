//! Typing: "X is typing" for a few seconds, to the chat's other members'
//! streams on every replica. Never stored, not resumable, and throttled:
//! a member's calls in one chat pass on at most once every
//! [`PASS_ON_EVERY`]; the calls between succeed and change nothing, as
//! the typing already passed on still shows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::App;
use crate::db;
use crate::domain::{Caller, ChatId, UserId};
use crate::error::{Error, Result};

/// How long typing shows after a call, in milliseconds.
pub(crate) const TYPING_FOR_MS: u32 = 6_000;
/// A member's typing in a chat is passed on at most this often.
const PASS_ON_EVERY: Duration = Duration::from_secs(2);
/// Members typing somewhere, per replica; past this, entries that no
/// longer show are pruned, and if none is, the call is refused.
const TYPISTS: usize = 50_000;

/// Who typed where last, and when it was passed on.
#[derive(Default)]
pub(crate) struct Typists {
    passed_on: Mutex<HashMap<(ChatId, UserId), Instant>>,
}

impl Typists {
    fn passed_on(&self) -> std::sync::MutexGuard<'_, HashMap<(ChatId, UserId), Instant>> {
        self.passed_on
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the member's typing was passed on within the throttle.
    fn recently(&self, key: (ChatId, UserId), now: Instant) -> bool {
        self.passed_on()
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < PASS_ON_EVERY)
    }

    /// Records a typing passed on now; `false` if the table is full of
    /// typing that still shows.
    fn record(&self, key: (ChatId, UserId), now: Instant) -> bool {
        let mut passed_on = self.passed_on();
        if passed_on.len() >= TYPISTS && !passed_on.contains_key(&key) {
            let shows = Duration::from_millis(u64::from(TYPING_FOR_MS));
            passed_on.retain(|_, at| now.duration_since(*at) < shows);
            if passed_on.len() >= TYPISTS {
                return false;
            }
        }
        passed_on.insert(key, now);
        true
    }

    /// Forgets the member's typing; whether it still showed.
    fn stop(&self, key: (ChatId, UserId)) -> bool {
        let shows = Duration::from_millis(u64::from(TYPING_FOR_MS));
        self.passed_on()
            .remove(&key)
            .is_some_and(|at| at.elapsed() < shows)
    }
}

impl App {
    /// The caller is typing in the chat, a member's only.
    pub(crate) async fn set_typing(&self, caller: &Caller, chat_id: ChatId) -> Result<()> {
        let key = (chat_id, caller.user_id);
        let now = Instant::now();
        // Only members are ever recorded: a recent entry is proof enough.
        if self.typists.recently(key, now) {
            return Ok(());
        }
        self.quotas.typing(caller.user_id)?;
        if !db::chats::is_member(&self.pool, chat_id.get(), caller.user_id.get()).await? {
            return Err(crate::error::chat_not_found(chat_id));
        }
        if !self.typists.record(key, now) {
            return Err(Error::Unavailable(
                "too many members are typing on this server; try again in a few seconds".into(),
            ));
        }
        self.hub.typing(chat_id, caller.user_id, TYPING_FOR_MS);
        Ok(())
    }

    /// The member sent a message: their typing, if it still shows, stops.
    pub(super) fn stop_typing(&self, chat_id: ChatId, user_id: UserId) {
        if self.typists.stop((chat_id, user_id)) {
            self.hub.typing(chat_id, user_id, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_passes_on_once_per_interval_and_stops_only_while_it_shows() {
        let typists = Typists::default();
        let key = (ChatId::new(1), UserId::new(2));
        let now = Instant::now();
        assert!(!typists.recently(key, now));
        assert!(typists.record(key, now));
        assert!(typists.recently(key, now + Duration::from_millis(1_999)));
        assert!(!typists.recently(key, now + PASS_ON_EVERY));
        assert!(typists.stop(key), "typing shows for a while");
        assert!(!typists.stop(key), "and stops once");
    }

    #[test]
    fn a_full_table_prunes_typing_that_no_longer_shows() {
        let typists = Typists::default();
        let long_ago = Instant::now();
        let later = long_ago + Duration::from_secs(60);
        for user in 0..TYPISTS as i64 {
            assert!(typists.record((ChatId::new(1), UserId::new(user)), long_ago));
        }
        assert!(typists.record((ChatId::new(2), UserId::new(1)), later));
        assert_eq!(typists.passed_on().len(), 1, "the stale ones went");
        for user in 0..TYPISTS as i64 - 1 {
            assert!(typists.record((ChatId::new(3), UserId::new(user)), later));
        }
        assert!(
            !typists.record((ChatId::new(4), UserId::new(1)), later),
            "a table full of live typing refuses"
        );
    }
}
