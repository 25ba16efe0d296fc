//! The application layer: one module per capability, each owning its
//! transactions, its rules and the fan-out that follows a change, on typed
//! ids. The wire boundary ([`crate::grpc`]) converts requests into the
//! values these take, and answers with what they return.

pub(crate) mod chats;
pub(crate) mod membership;
pub(crate) mod messages;
pub(crate) mod reading;
pub(crate) mod rules;
pub(crate) mod streams;
pub(crate) mod typing;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::access_watch::AccessWatch;
use crate::auth_client::AuthClient;
use crate::group_commit::GroupCommit;
use crate::hub::Hub;
use crate::metrics::ChatMetrics;
use crate::quotas::Quotas;

/// What every capability works with.
pub(crate) struct App {
    pub(crate) pool: PgPool,
    pub(crate) auth: AuthClient,
    pub(crate) access: Arc<AccessWatch>,
    pub(crate) hub: Arc<Hub>,
    /// Cancelled when the server starts shutting down: open streams end.
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: ChatMetrics,
    /// A stream whose client reads nothing for this long is ended.
    pub(crate) stream_stall_timeout: Duration,
    pub(crate) quotas: Quotas,
    /// Who is typing where, as passed on from this replica.
    pub(crate) typists: typing::Typists,
    /// Where sends are stored, batched with concurrent ones.
    pub(crate) writes: GroupCommit,
}

/// What a call to auth on the caller's behalf carries on: the caller's
/// authorization and the request id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Forwarded {
    pub(crate) authorization: Option<http::HeaderValue>,
    pub(crate) request_id: Option<http::HeaderValue>,
}

impl App {
    /// The ids of the users `usernames` names, as auth finds them;
    /// `NOT_FOUND` naming the first that names nobody.
    async fn user_ids(
        &self,
        forwarded: &Forwarded,
        usernames: crate::domain::Usernames,
    ) -> crate::error::Result<Vec<i64>> {
        // Auth compares names as its unique index does; nothing here folds
        // case, so what auth finds is what the chat gets.
        let found = self
            .auth
            .lookup_usernames(
                forwarded.authorization.as_ref(),
                forwarded.request_id.as_ref(),
                usernames.into_vec(),
            )
            .await?;
        if let Some(missing) = found.missing_usernames.first() {
            return Err(crate::error::Error::NotFound(format!(
                "user {missing} not found"
            )));
        }
        Ok(found.users.iter().map(|user| user.id).collect())
    }
}

/// A page of a list, and whether more follow it.
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) more: bool,
}

impl<T> Page<T> {
    /// From rows read with a limit one past `size`: the extra row, if it
    /// came, only says that more follow.
    fn of(mut rows: Vec<T>, size: i64) -> Page<T> {
        let more = rows.len() as i64 > size;
        rows.truncate(size.max(0) as usize);
        Page { items: rows, more }
    }
}
