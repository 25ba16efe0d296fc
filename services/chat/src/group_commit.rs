//! Group commit: sends share transactions. Each replica's writers (each
//! chat's sends always going to the same one) take whatever sends have
//! queued while the last batch was committing, up to
//! [`GroupCommitConfig::max_batch`], and store them in one transaction with
//! one commit (and so one flush to disk); there is no timer, so a lone
//! send waits for nothing. Under load, batches grow by themselves.
//!
//! A batch waits for no chat: a chat whose row another transaction holds
//! (a deletion going through many messages, say) is left out of it, and
//! its sends wait alone, each in the single statement of
//! [`db::messages::send`] and a task of its own, so that a busy chat holds
//! up only its own sends, never a writer.
//!
//! What each send comes to is its own: a sender who is not a member, or
//! an idempotency key used before, refuses or answers that send only. A
//! batch the database refuses as a whole for any reason but an outage
//! (a deadlock with a membership change, say) is sent again one by one,
//! so that a batch-mate's trouble never becomes another send's error; in
//! an outage every send of the batch is `UNAVAILABLE`, and retrying with
//! its key stores it once. A send runs to its end once a writer took it,
//! whether its caller is still waiting or not; one whose caller left
//! while it was queued is dropped unsent (it was never acknowledged). The
//! hub hears of stored messages in each chat's order before any sender
//! is answered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use host::database::{Failure, classify};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::GroupCommitConfig;
use crate::db;
use crate::db::messages::{Batched, BatchedMessage, NewMessage, Sent};
use crate::error::Result;
use crate::hub::Hub;
use crate::metrics::ChatMetrics;

/// Sends waiting for the writers, per replica, before a sender waits for
/// room (shared out among the writers' queues).
const QUEUED: usize = 4096;

struct Pending {
    message: BatchedMessage,
    reply: oneshot::Sender<Result<Option<Sent>>>,
    /// The send's span: a lone send is stored under it, a batch under its
    /// first send's, so that a trace shows where its time went.
    span: tracing::Span,
}

/// Where sends go to be stored: one queue per writer, each chat's sends
/// always to the same one.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queues: Arc<Vec<mpsc::Sender<Pending>>>,
}

/// What stores sends and answers them: a writer's, and a busy chat's
/// lone sends'.
struct Store {
    pool: sqlx::PgPool,
    hub: Arc<Hub>,
    metrics: ChatMetrics,
}

struct Writer {
    store: Arc<Store>,
    max_batch: usize,
    queue: mpsc::Receiver<Pending>,
}

impl GroupCommit {
    /// The writers, running until the queue's last sender is dropped.
    pub(crate) fn start(
        pool: sqlx::PgPool,
        hub: Arc<Hub>,
        metrics: ChatMetrics,
        config: GroupCommitConfig,
    ) -> (GroupCommit, Vec<JoinHandle<()>>) {
        let writers = config.writers.max(1);
        let store = Arc::new(Store { pool, hub, metrics });
        let mut queues = Vec::with_capacity(writers);
        let mut tasks = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (queue, received) = mpsc::channel(QUEUED / writers);
            queues.push(queue);
            let writer = Writer {
                store: store.clone(),
                max_batch: config.max_batch.max(1),
                queue: received,
            };
            tasks.push(tokio::spawn(writer.run()));
        }
        (
            GroupCommit {
                queues: Arc::new(queues),
            },
            tasks,
        )
    }

    /// Stores `message` with whatever sends it is batched with; what it
    /// came to (`None`: no such chat, or the sender is not a member).
    pub(crate) async fn send(&self, message: BatchedMessage) -> Result<Option<Sent>> {
        let (reply, answer) = oneshot::channel();
        // A chat's sends go to one writer: two writers never take turns at
        // one chat's row (one would skip it, and its sends go alone), and
        // the hub hears each chat's messages from one writer, in order.
        let writer = message.chat_id.rem_euclid(self.queues.len() as i64) as usize;
        self.queues[writer]
            .send(Pending {
                message,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| {
            crate::error::Error::Internal(anyhow::anyhow!(
                "the send's batch failed before it was answered"
            ))
        })?
    }
}

fn stopping() -> crate::error::Error {
    crate::error::Error::Unavailable("the service is stopping; try again".into())
}

impl Writer {
    async fn run(mut self) {
        loop {
            let Some(first) = self.queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // Never acknowledged: their callers left while they waited.
            let batch: Vec<Pending> = batch
                .into_iter()
                .filter(|pending| !pending.reply.is_closed())
                .collect();
            if batch.is_empty() {
                continue;
            }
            let span = batch[0].span.clone();
            // A batch that panics (a bug) drops its senders' replies, and
            // they hear INTERNAL; the writer goes on with the next.
            if AssertUnwindSafe(self.write(batch).instrument(span))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("storing a batch of sends panicked");
            }
        }
    }

    async fn write(&self, batch: Vec<Pending>) {
        self.store
            .metrics
            .send_batch_size
            .observe(batch.len() as f64);
        // Sends whose chat another transaction holds: each waits alone.
        let mut busy = Vec::new();
        let mut answered: Vec<(Pending, Result<Option<Sent>>)> = Vec::with_capacity(batch.len());
        {
            let messages: Vec<BatchedMessage> = batch
                .iter()
                .map(|pending| pending.message.clone())
                .collect();
            match db::messages::send_batch(&self.store.pool, &messages).await {
                Ok(outcomes) => {
                    self.store.metrics.send_commits.inc();
                    for (pending, outcome) in batch.into_iter().zip(outcomes) {
                        match outcome {
                            Batched::Done(sent) => answered.push((pending, Ok(sent))),
                            Batched::Skipped => busy.push(pending),
                        }
                    }
                }
                Err(error) if matches!(classify(&error), Failure::Unavailable) => {
                    let error = crate::error::Error::from(error);
                    answered.extend(
                        batch
                            .into_iter()
                            .map(|pending| (pending, Err(error_again(&error)))),
                    );
                }
                Err(error) => {
                    self.store.metrics.send_batches_split.inc();
                    tracing::warn!(
                        %error,
                        batch = batch.len(),
                        "a batch of sends was refused as a whole; sending them one by one"
                    );
                    for pending in batch {
                        let outcome = self.store.alone(&pending.message).await;
                        answered.push((pending, outcome));
                    }
                }
            }
        }
        self.store.answer(answered);
        for pending in busy {
            let store = self.store.clone();
            let span = pending.span.clone();
            tokio::spawn(
                async move {
                    let outcome = store.alone(&pending.message).await;
                    store.answer(vec![(pending, outcome)]);
                }
                .instrument(span),
            );
        }
    }
}

impl Store {
    /// Tells the hub of what was stored, in each chat's order, then the
    /// senders.
    fn answer(&self, answered: Vec<(Pending, Result<Option<Sent>>)>) {
        let mut stored: Vec<_> = answered
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Ok(Some(Sent::Stored(message))) => Some(message),
                _ => None,
            })
            .collect();
        stored.sort_by_key(|message| (message.chat_id, message.seq));
        self.metrics.messages_sent.inc_by(stored.len() as u64);
        for message in stored {
            self.hub.committed(Arc::new(message.clone()));
        }
        for (pending, outcome) in answered {
            // A caller that left meanwhile hears nothing; its send stands.
            let _ = pending.reply.send(outcome);
        }
    }

    /// One send in the single statement that stores it.
    async fn alone(&self, message: &BatchedMessage) -> Result<Option<Sent>> {
        let sent = db::messages::send(
            &self.pool,
            NewMessage {
                chat_id: message.chat_id,
                from_user_id: message.from_user_id,
                from_username: &message.from_username,
                text: &message.text,
                client_message_id: message.client_message_id.as_deref(),
            },
        )
        .await;
        if sent.is_ok() {
            self.metrics.send_commits.inc();
        }
        sent
    }
}

/// The same outage, for each send of a batch.
fn error_again(error: &crate::error::Error) -> crate::error::Error {
    match error {
        crate::error::Error::Unavailable(message) => {
            crate::error::Error::Unavailable(message.clone())
        }
        other => crate::error::Error::Unavailable(other.to_string()),
    }
}
