//! A stream's outbound queue: the messages a client has yet to read, how
//! far the client has read, and the status the stream ends with.
//!
//! The server side pushes into a bounded queue; tonic takes from it as
//! HTTP/2 flow control lets it, that is as fast as the client reads. Two
//! counts, pushed and taken, tell a client that stopped reading even in a
//! quiet chat, where no push would ever block: messages wait, and the
//! taken count stands still. The end status goes into a slot of its own,
//! ahead of whatever is queued, so ending a stream never waits on the
//! client that caused it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

/// What tonic is handed: the queue, read from the client's side.
pub(crate) struct Outbound<T> {
    receiver: mpsc::Receiver<Result<T, Status>>,
    shared: Arc<Shared>,
    ended: bool,
}

/// The server's end of the queue.
pub(crate) struct Queue<T> {
    sender: mpsc::Sender<Result<T, Status>>,
    shared: Arc<Shared>,
    /// Items pushed so far.
    pushed: u64,
    /// The taken count when it last moved, and when that was seen.
    progress: (u64, Instant),
}

struct Shared {
    /// Items tonic has taken from the queue.
    taken: AtomicU64,
    /// The status to end with, sent before anything still queued.
    end: Mutex<Option<Status>>,
}

/// A queue of `capacity` items, and the stream tonic reads it from.
pub(crate) fn queue<T>(capacity: usize) -> (Queue<T>, Outbound<T>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let shared = Arc::new(Shared {
        taken: AtomicU64::new(0),
        end: Mutex::new(None),
    });
    (
        Queue {
            sender,
            shared: shared.clone(),
            pushed: 0,
            progress: (0, Instant::now()),
        },
        Outbound {
            receiver,
            shared,
            ended: false,
        },
    )
}

impl<T> Queue<T> {
    /// Queues `item`, waiting while the queue is full; `Err` once the
    /// client has gone.
    pub(crate) async fn push(&mut self, item: T) -> Result<(), ()> {
        self.sender.send(Ok(item)).await.map_err(|_| ())?;
        self.pushed += 1;
        Ok(())
    }

    /// Resolves when the client has gone.
    pub(crate) async fn closed(&self) {
        self.sender.closed().await;
    }

    /// Whether the client has left messages unread for `limit`: some are
    /// queued, and none was taken for that long. Meant to be asked
    /// periodically.
    pub(crate) fn stalled_for(&mut self, limit: Duration) -> bool {
        let taken = self.shared.taken.load(Ordering::Acquire);
        let now = Instant::now();
        if taken != self.progress.0 || taken >= self.pushed {
            self.progress = (taken, now);
            return false;
        }
        now.duration_since(self.progress.1) >= limit
    }

    /// Ends the stream with `status`, ahead of anything still queued.
    pub(crate) fn end(self, status: Status) {
        *self
            .shared
            .end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
        // Dropping the sender wakes the reader, which finds the status.
        drop(self.sender);
    }
}

impl<T> Outbound<T> {
    fn take_end(&mut self) -> Option<Status> {
        self.shared
            .end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl<T> Stream for Outbound<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(status) = self.take_end() {
            self.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                self.shared.taken.fetch_add(1, Ordering::AcqRel);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(self.take_end().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_stalled_once_the_limit_passes_and_not_before() {
        let (mut queue, mut outbound) = queue::<u32>(4);
        let limit = Duration::from_secs(1);
        queue.push(1).await.expect("queued");
        assert_eq!(outbound.next().await.map(Result::ok), Some(Some(1)));
        assert!(!queue.stalled_for(limit), "nothing waits");
        queue.push(2).await.expect("queued");
        assert!(!queue.stalled_for(limit), "just queued");
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!queue.stalled_for(limit), "not yet");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(
            queue.stalled_for(limit),
            "one message unread past the limit"
        );
        // Reading again is progress.
        assert_eq!(outbound.next().await.map(Result::ok), Some(Some(2)));
        assert!(!queue.stalled_for(limit));
    }

    #[tokio::test]
    async fn the_end_status_goes_ahead_of_what_is_queued() {
        let (mut queue, mut outbound) = queue::<u32>(4);
        queue.push(1).await.expect("queued");
        queue.push(2).await.expect("queued");
        queue.end(Status::resource_exhausted("stalled"));
        let first = outbound.next().await.expect("an item");
        assert_eq!(
            first.expect_err("the status").code(),
            tonic::Code::ResourceExhausted
        );
        assert!(outbound.next().await.is_none(), "nothing after the status");
    }

    #[tokio::test]
    async fn a_stream_dropped_without_a_status_just_ends() {
        let (mut queue, mut outbound) = queue::<u32>(4);
        queue.push(1).await.expect("queued");
        drop(queue);
        assert_eq!(outbound.next().await.map(Result::ok), Some(Some(1)));
        assert!(outbound.next().await.is_none());
    }
}
