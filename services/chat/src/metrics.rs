//! The chat service's domain metrics, beside the per-RPC ones.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub(crate) struct ChatMetrics {
    /// Messages stored (retried sends are not counted twice), counted by
    /// the writer that committed them.
    pub(crate) messages_sent: IntCounter,
    /// `ConnectChat` streams open on this replica.
    pub(crate) open_streams: IntGauge,
    /// Chats with open streams on this replica (the hub's entries).
    pub(crate) watched_chats: IntGauge,
    /// 1 while the fan-out bus is connected.
    pub(crate) fanout_connected: IntGauge,
    /// Reads of a chat's members by the hub, for streams that must learn
    /// whether their user is still one: one per chat and change, not one
    /// per stream.
    pub(crate) membership_reads: IntCounter,
    /// Deletions and removals heard on the bus that the database did not
    /// confirm: forged, or a bug.
    pub(crate) unconfirmed_announcements: IntCounter,
    /// Payloads on the bus that are no announcement, or name another chat
    /// than their subject.
    pub(crate) malformed_announcements: IntCounter,
    /// Deleted accounts this replica took out of their chats.
    pub(crate) departed_accounts: IntCounter,
    /// Sweeps of every member through auth, by outcome: `done`, or
    /// `implausible` where auth knew too few of them to be believed.
    pub(crate) member_sweeps: IntCounterVec,
    /// Sends per batch the writers stored together.
    pub(crate) send_batch_size: Histogram,
    /// Transactions that stored sends, counted once committed: commits per
    /// 1,000 sends is this
    /// over `chat_messages_sent_total`, times 1,000.
    pub(crate) send_commits: IntCounter,
    /// Batches the database refused as a whole, sent again one by one.
    pub(crate) send_batches_split: IntCounter,
}

impl ChatMetrics {
    pub(crate) fn new(registry: &Registry) -> anyhow::Result<ChatMetrics> {
        let metrics = ChatMetrics {
            messages_sent: IntCounter::new("chat_messages_sent_total", "Messages stored.")?,
            open_streams: IntGauge::new(
                "chat_open_streams",
                "ConnectChat streams open on this replica.",
            )?,
            watched_chats: IntGauge::new(
                "chat_watched_chats",
                "Chats with open streams on this replica.",
            )?,
            fanout_connected: IntGauge::new(
                "chat_fanout_connected",
                "1 while the fan-out to other replicas (PostgreSQL or NATS) is connected.",
            )?,
            membership_reads: IntCounter::new(
                "chat_membership_reads_total",
                "Reads of a chat's members after they changed, shared by its streams.",
            )?,
            unconfirmed_announcements: IntCounter::new(
                "chat_unconfirmed_announcements_total",
                "Deletions and removals heard on the fan-out bus that the database did not confirm, and so ignored.",
            )?,
            malformed_announcements: IntCounter::new(
                "chat_malformed_announcements_total",
                "Payloads heard on the fan-out bus that are no announcement, or whose chat is not their subject's.",
            )?,
            departed_accounts: IntCounter::new(
                "chat_departed_accounts_total",
                "Accounts deleted in auth that this replica took out of their chats.",
            )?,
            member_sweeps: IntCounterVec::new(
                Opts::new(
                    "chat_member_sweeps_total",
                    "Sweeps of every chat member through auth, by outcome (done; implausible: auth knew too few of them, and none left).",
                ),
                &["outcome"],
            )?,
            send_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "chat_send_batch_size",
                    "Sends stored together in one transaction.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            send_commits: IntCounter::new(
                "chat_send_commits_total",
                "Transactions that stored sends (a batch, or one send alone).",
            )?,
            send_batches_split: IntCounter::new(
                "chat_send_batches_split_total",
                "Batches of sends refused as a whole (not by an outage) and sent again one by one.",
            )?,
        };
        registry.register(Box::new(metrics.send_batches_split.clone()))?;
        registry.register(Box::new(metrics.send_batch_size.clone()))?;
        registry.register(Box::new(metrics.send_commits.clone()))?;
        registry.register(Box::new(metrics.departed_accounts.clone()))?;
        registry.register(Box::new(metrics.member_sweeps.clone()))?;
        registry.register(Box::new(metrics.messages_sent.clone()))?;
        registry.register(Box::new(metrics.fanout_connected.clone()))?;
        registry.register(Box::new(metrics.open_streams.clone()))?;
        registry.register(Box::new(metrics.watched_chats.clone()))?;
        registry.register(Box::new(metrics.membership_reads.clone()))?;
        registry.register(Box::new(metrics.unconfirmed_announcements.clone()))?;
        registry.register(Box::new(metrics.malformed_announcements.clone()))?;
        Ok(metrics)
    }
}

/// Counts one open stream for as long as it lives.
pub(crate) struct OpenStream(IntGauge);

impl OpenStream {
    pub(crate) fn new(gauge: &IntGauge) -> OpenStream {
        gauge.inc();
        OpenStream(gauge.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
