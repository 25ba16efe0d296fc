//! Turns at hashing: at most `permits` argon2id hashes at once, and two
//! queues for the rest. Password checks (logins, and the current password
//! of `ChangePassword`) are always served before new hashes
//! (registrations, new passwords), so a registration flood cannot starve
//! logins. Both queues are bounded: past its bound, a new hash is refused
//! at once with a retry delay rather than queued; a check waits, up to its
//! own bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Error, Limit, Result};

/// Which queue a hash waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Checking a password someone presents: served first.
    Check,
    /// Hashing a new password: served when no check waits.
    NewHash,
}

/// How long a refused caller is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct HashQueue(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    /// The most waiting checks, and the most waiting new hashes.
    check_bound: usize,
    new_hash_bound: usize,
}

struct State {
    free: usize,
    checks: VecDeque<oneshot::Sender<Turn>>,
    new_hashes: VecDeque<oneshot::Sender<Turn>>,
}

/// One hash's turn: the next waiter gets it when this is dropped.
pub struct Turn(Option<HashQueue>);

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            queue.pass_on();
        }
    }
}

impl HashQueue {
    pub fn new(permits: usize, check_bound: usize, new_hash_bound: usize) -> HashQueue {
        HashQueue(Arc::new(Inner {
            state: Mutex::new(State {
                free: permits.max(1),
                checks: VecDeque::new(),
                new_hashes: VecDeque::new(),
            }),
            check_bound,
            new_hash_bound,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a turn at hashing; refused at once when the queue is full.
    pub async fn turn(&self, priority: Priority) -> Result<Turn> {
        let waiting = {
            let mut state = self.state();
            state.checks.retain(|waiter| !waiter.is_closed());
            state.new_hashes.retain(|waiter| !waiter.is_closed());
            // Turns are handed straight to waiters, so a free one means
            // nobody waits.
            if state.free > 0 {
                state.free -= 1;
                return Ok(Turn(Some(self.clone())));
            }
            let (queue, bound) = match priority {
                Priority::Check => (&mut state.checks, self.0.check_bound),
                Priority::NewHash => (&mut state.new_hashes, self.0.new_hash_bound),
            };
            if queue.len() >= bound {
                return Err(refused(priority));
            }
            let (sender, receiver) = oneshot::channel();
            queue.push_back(sender);
            receiver
        };
        waiting
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the hash queue dropped a waiter")))
    }

    /// Hands a finished turn to the first live waiter, checks first.
    fn pass_on(&self) {
        let mut state = self.state();
        loop {
            let next = match state.checks.pop_front() {
                Some(waiter) => waiter,
                None => match state.new_hashes.pop_front() {
                    Some(waiter) => waiter,
                    None => {
                        state.free += 1;
                        return;
                    }
                },
            };
            // A waiter that went away hands the turn back: the next one.
            match next.send(Turn(Some(self.clone()))) {
                Ok(()) => return,
                Err(mut unwanted) => {
                    // Not passed on again from its own drop.
                    unwanted.0 = None;
                }
            }
        }
    }

    /// Waiting checks and new hashes.
    #[cfg(test)]
    fn waiting(&self) -> (usize, usize) {
        let state = self.state();
        (state.checks.len(), state.new_hashes.len())
    }
}

fn refused(priority: Priority) -> Error {
    let what = match priority {
        Priority::Check => "password checks",
        Priority::NewHash => "new passwords",
    };
    Error::ResourceExhausted {
        limit: Limit::Busy,
        message: format!(
            "too many {what} are waiting to be hashed: try again in {} s",
            RETRY_AFTER.as_secs()
        ),
        retry_after: Some(RETRY_AFTER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_are_served_before_new_hashes_that_waited_longer() {
        let queue = HashQueue::new(1, 8, 8);
        let running = queue.turn(Priority::NewHash).await.expect("a free turn");
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for (name, priority) in [
            ("new 1", Priority::NewHash),
            ("new 2", Priority::NewHash),
            ("check", Priority::Check),
        ] {
            let (waiter, order_tx) = (queue.clone(), order_tx.clone());
            waiters.push(tokio::spawn(async move {
                let _turn = waiter.turn(priority).await.expect("a turn");
                order_tx.send(name).expect("sent");
            }));
            // Queued in this order.
            while queue.waiting().0 + queue.waiting().1 < waiters.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(running);
        for waiter in waiters {
            waiter.await.expect("a waiter");
        }
        let mut served = Vec::new();
        while let Ok(name) = order.try_recv() {
            served.push(name);
        }
        assert_eq!(served, ["check", "new 1", "new 2"]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_new_hashes_at_once_with_a_delay() {
        let queue = HashQueue::new(1, 8, 1);
        let _running = queue.turn(Priority::NewHash).await.expect("a free turn");
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.turn(Priority::NewHash).await.map(drop) })
        };
        while queue.waiting().1 < 1 {
            tokio::task::yield_now().await;
        }
        match queue.turn(Priority::NewHash).await {
            Err(Error::ResourceExhausted {
                retry_after: Some(_),
                ..
            }) => {}
            Err(other) => panic!("refused otherwise: {other:?}"),
            Ok(_) => panic!("a full queue took one more"),
        }
        waiting.abort();
    }

    #[tokio::test]
    async fn waiters_that_left_neither_hold_a_turn_nor_a_place() {
        let queue = HashQueue::new(1, 1, 1);
        let running = queue.turn(Priority::Check).await.expect("a free turn");
        let gone = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.turn(Priority::Check).await.map(drop) })
        };
        while queue.waiting().0 < 1 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(running);
        // The turn went back to the pool, and the place is free again.
        let first = queue.turn(Priority::Check).await.expect("the freed turn");
        drop(first);
        assert_eq!(queue.waiting(), (0, 0));
    }
}
