//! A chat's members, read once per change of members for all of the
//! chat's streams here that must learn whether their user is still one.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;

use super::Hub;
use crate::db;
use crate::domain::{ChatId, UserId};

/// A chat's members as of a members version.
pub(crate) struct Members {
    pub(crate) version: i64,
    ids: HashSet<i64>,
}

impl Members {
    pub(crate) fn contains(&self, user_id: UserId) -> bool {
        self.ids.contains(&user_id.get())
    }
}

/// The members as last read for a stream of the chat: read once per
/// change, with the lock held, for every stream that asks. It lives with
/// the chat's feed, and so only while the chat has streams here.
pub(super) type MemberCache = Arc<tokio::sync::Mutex<Option<Arc<Members>>>>;

impl Hub {
    /// The chat's members as of `at_least` or later; `None` if the chat is
    /// gone. Streams that must learn whether their user is still a member
    /// share one read per change of members, however many they are.
    pub(crate) async fn members(
        &self,
        pool: &PgPool,
        chat_id: ChatId,
        at_least: i64,
    ) -> crate::error::Result<Option<Arc<Members>>> {
        let cached = self
            .chats()
            .get(&chat_id)
            .map(|feed| feed.members.clone())
            .unwrap_or_default();
        let mut cached = cached.lock().await;
        if let Some(members) = cached
            .as_ref()
            .filter(|members| members.version >= at_least)
        {
            return Ok(Some(members.clone()));
        }
        self.membership_reads.inc();
        let read = db::members::as_of_now(pool, chat_id.get())
            .await?
            .map(|(version, ids)| {
                Arc::new(Members {
                    version,
                    ids: ids.into_iter().collect(),
                })
            });
        cached.clone_from(&read);
        Ok(read)
    }
}
