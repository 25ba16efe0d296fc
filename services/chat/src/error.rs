//! The service's errors: the host's one error type, and the failures only
//! chat names.

pub use host::error::{Error, Result};

use crate::domain::ChatId;

/// What a caller who is not a member learns of a chat: nothing, not even
/// that it exists.
pub(crate) fn chat_not_found(chat_id: ChatId) -> Error {
    Error::NotFound(format!("chat {chat_id} not found"))
}
