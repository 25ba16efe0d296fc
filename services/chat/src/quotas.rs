//! What one user may do how often: sends, chats created, members added
//! (each added member counts one), read markers moved, typing passed on,
//! and streams open at once. Per replica
//! (see [`host::quota`]): with N replicas, a user may get up to N times
//! each limit.

use std::sync::Arc;
use std::time::Duration;

use host::quota::{Quota, QuotaMetrics, Rate, Slot, Slots};
use prometheus::Registry;

use crate::domain::UserId;
use crate::error::Result;

/// The limits, each configurable and each `None` for none.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    pub sends: Option<Rate>,
    pub chats_created: Option<Rate>,
    pub members_added: Option<Rate>,
    pub open_streams: Option<u32>,
    pub read_marks: Option<Rate>,
    pub typing: Option<Rate>,
}

impl Default for QuotaConfig {
    /// A person types a message every few seconds at most; a bot may
    /// burst 50, then send 5 a second. Thirty chats at once, then one
    /// every 5 s. A full chat's worth of members at once (1,000), then 2 a
    /// second. Twenty streams: tabs and devices enough. Read markers: a
    /// client that marks as messages show, 200 at once (a long scroll),
    /// then 20 a second. Typing passed on: once per chat every 2 s at most
    /// anyway; 30 at once, then one a second, is several chats at a time.
    fn default() -> QuotaConfig {
        QuotaConfig {
            sends: Some(Rate::new(50, 5.0)),
            chats_created: Some(Rate::new(30, 0.2)),
            members_added: Some(Rate::new(1_000, 2.0)),
            open_streams: Some(20),
            read_marks: Some(Rate::new(200, 20.0)),
            typing: Some(Rate::new(30, 1.0)),
        }
    }
}

/// How long a caller refused a stream is told to wait: one closes, or not.
const STREAM_RETRY: Duration = Duration::from_secs(5);

pub(crate) struct Quotas {
    sends: Arc<Quota<UserId>>,
    chats_created: Arc<Quota<UserId>>,
    members_added: Arc<Quota<UserId>>,
    read_marks: Arc<Quota<UserId>>,
    typing: Arc<Quota<UserId>>,
    streams: Arc<Slots<UserId>>,
}

impl Quotas {
    pub(crate) fn new(config: &QuotaConfig, registry: &Registry) -> anyhow::Result<Quotas> {
        let metrics = QuotaMetrics::register(registry, "chat")?;
        Ok(Quotas {
            sends: Quota::new("sends", "messages sent", config.sends, &metrics),
            chats_created: Quota::new(
                "chats_created",
                "chats created",
                config.chats_created,
                &metrics,
            ),
            members_added: Quota::new(
                "members_added",
                "members added",
                config.members_added,
                &metrics,
            ),
            read_marks: Quota::new(
                "read_marks",
                "read markers moved",
                config.read_marks,
                &metrics,
            ),
            typing: Quota::new("typing", "typing passed on", config.typing, &metrics),
            streams: Slots::new("open_streams", config.open_streams, &metrics, STREAM_RETRY),
        })
    }

    pub(crate) fn send(&self, user: UserId) -> Result<()> {
        self.sends.take(&user, 1)
    }

    /// A new chat with `members` besides its creator.
    pub(crate) fn create_chat(&self, user: UserId, members: usize) -> Result<()> {
        self.chats_created.take(&user, 1)?;
        self.add_members(user, members)
    }

    pub(crate) fn add_members(&self, user: UserId, members: usize) -> Result<()> {
        match u32::try_from(members) {
            Ok(0) => Ok(()),
            Ok(count) => self.members_added.take(&user, count),
            Err(_) => self.members_added.take(&user, u32::MAX),
        }
    }

    pub(crate) fn mark_read(&self, user: UserId) -> Result<()> {
        self.read_marks.take(&user, 1)
    }

    pub(crate) fn typing(&self, user: UserId) -> Result<()> {
        self.typing.take(&user, 1)
    }

    /// A stream's place among the user's open streams, held until dropped.
    pub(crate) fn open_stream(&self, user: UserId) -> Result<Slot<UserId>> {
        self.streams.open(&user)
    }
}
