//! What the revocation feed has said that no round of departures has
//! looked into yet (see [`super`]): the users it named, or that a sweep of
//! every member is due. Bounded: past [`MAX_PENDING`] users, a sweep is due
//! instead.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Users heard of and not yet looked into; past this, a sweep is due
/// instead.
const MAX_PENDING: usize = 10_000;

/// What the revocation feed has said and no round has looked into yet.
#[derive(Default)]
pub(crate) struct Departures {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) users: HashSet<i64>,
    pub(super) sweep: bool,
}

impl Departures {
    /// Users whose tokens were revoked: some may have been deleted.
    pub(crate) fn heard(&self, users: impl IntoIterator<Item = i64>) {
        let mut pending = self.pending();
        for user in users {
            if pending.users.len() >= MAX_PENDING {
                pending.users.clear();
                pending.sweep = true;
                break;
            }
            pending.users.insert(user);
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// The feed resynced: anything may have been missed.
    pub(crate) fn sweep(&self) {
        self.pending().sweep = true;
        self.wake.notify_one();
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }

    /// Puts back what a failed round took, for the next.
    pub(super) fn restore(&self, round: Pending) {
        let mut pending = self.pending();
        pending.sweep |= round.sweep;
        if pending.sweep {
            pending.users.clear();
        } else {
            pending.users.extend(round.users);
        }
    }

    /// Waits until something was heard (or put back) since the last round.
    pub(super) async fn heard_of(&self) {
        self.wake.notified().await;
    }

    /// Wakes the next round.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}
