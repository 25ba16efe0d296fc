//! Read state: each member's read marker in a chat, which only moves
//! forward, and what is unread after it. The marker is stored; its moves
//! reach the chat's streams on every replica, coalesced.

use super::App;
use crate::db;
use crate::db::read_markers::Marking;
use crate::domain::{Caller, ChatId, MessageId};
use crate::error::{Error, Result};

/// Read up to a message of a chat.
pub(crate) struct ReadUpTo {
    pub(crate) chat_id: ChatId,
    pub(crate) message_id: MessageId,
}

/// The caller's read state in a chat after a call.
pub(crate) struct ReadState {
    pub(crate) read_message_id: MessageId,
    pub(crate) unread: u64,
}

impl App {
    /// Moves the caller's marker forward to the message, a member's only.
    pub(crate) async fn mark_read(&self, caller: &Caller, read: ReadUpTo) -> Result<ReadState> {
        self.quotas.mark_read(caller.user_id)?;
        let ReadUpTo {
            chat_id,
            message_id,
        } = read;
        let marking = db::read_markers::mark(
            &self.pool,
            chat_id.get(),
            caller.user_id.get(),
            message_id.get(),
        )
        .await?;
        match marking {
            Marking::NotAMember => Err(crate::error::chat_not_found(chat_id)),
            Marking::NoSuchMessage => Err(Error::NotFound(format!(
                "message {message_id} not found in chat {chat_id}"
            ))),
            Marking::Marked {
                moved_to,
                read_message_id,
                unread,
            } => {
                if let Some(seq) = moved_to {
                    self.hub.read(chat_id, caller.user_id, message_id, seq);
                }
                Ok(ReadState {
                    read_message_id: MessageId::new(read_message_id),
                    unread: u64::try_from(unread).unwrap_or_default(),
                })
            }
        }
    }
}
