//! Valid values only, parsed once at the wire boundary, the ids that name
//! things, and the caller auth vouched for.

mod ids;
mod values;

pub(crate) use ids::{ChatId, MessageId, UserId};
pub(crate) use values::{ChatTitle, ClientMessageId, MessageText, Usernames};

/// Who is calling, as auth's `Check` answered. Handlers trust this, never
/// a user id or name from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) user_id: UserId,
    pub(crate) username: String,
    pub(crate) is_admin: bool,
    /// When the caller's access token expires; a stream ends then.
    pub(crate) expires_at: Option<std::time::SystemTime>,
    /// The token's version: a revocation of the user above it ends the
    /// caller's streams.
    pub(crate) token_version: i64,
    /// The session (login) the token belongs to, if it names one: its
    /// ending ends the caller's streams.
    pub(crate) session: Option<String>,
}
