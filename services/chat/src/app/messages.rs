//! Messages: sending, with an idempotency key (stored through
//! [`crate::group_commit`]), and reading history.

use std::sync::Arc;

use super::{App, Page};
use crate::db;
use crate::db::messages::{BatchedMessage, MessageRow, Sent};
use crate::domain::{Caller, ChatId, ClientMessageId, MessageId, MessageText};
use crate::error::{Error, Result};

/// A message to send.
pub(crate) struct Outgoing {
    pub(crate) chat_id: ChatId,
    pub(crate) text: MessageText,
    /// The sender's idempotency key, if they gave one.
    pub(crate) client_message_id: Option<ClientMessageId>,
}

/// Which of a chat's messages to read: `size` of them, older than a
/// message (or the newest), newest first.
pub(crate) struct HistoryPage {
    pub(crate) chat_id: ChatId,
    pub(crate) size: i64,
    pub(crate) before: Option<MessageId>,
}

impl App {
    /// Stores the message as its chat's next and hands it to the chat's
    /// streams; acknowledged only once stored for good. A retry with the
    /// same key answers with the first send's message and stores nothing.
    pub(crate) async fn send_message(
        &self,
        caller: &Caller,
        outgoing: Outgoing,
    ) -> Result<Arc<MessageRow>> {
        self.quotas.send(caller.user_id)?;
        let chat_id = outgoing.chat_id;
        let key = outgoing
            .client_message_id
            .as_ref()
            .map(ClientMessageId::as_str);
        let sent = self
            .writes
            .send(BatchedMessage {
                chat_id: chat_id.get(),
                from_user_id: caller.user_id.get(),
                from_username: caller.username.clone(),
                text: outgoing.text.as_str().to_owned(),
                client_message_id: key.map(str::to_owned),
            })
            .await?
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        let message = match sent {
            Sent::Stored(message) => message,
            // A key reused for other content is refused, not silently
            // answered with the first message.
            Sent::Earlier(first) if first.text != outgoing.text.as_str() => {
                return Err(Error::AlreadyExists(format!(
                    "client_message_id {:?} was already used for another message in this chat; \
                     a new message needs a new key",
                    key.unwrap_or_default()
                )));
            }
            Sent::Earlier(first) => return Ok(Arc::new(first)),
        };
        tracing::Span::current().record("message_id", message.id);
        // The hub heard of it from the writer, in the chat's order.
        let message = Arc::new(message);
        self.stop_typing(chat_id, caller.user_id);
        Ok(message)
    }

    /// A page of a chat's history, for its members.
    pub(crate) async fn history(
        &self,
        caller: &Caller,
        page: HistoryPage,
    ) -> Result<Page<MessageRow>> {
        let chat_id = page.chat_id;
        if !db::chats::is_member(&self.pool, chat_id.get(), caller.user_id.get()).await? {
            return Err(crate::error::chat_not_found(chat_id));
        }
        let before = page.before.map_or(i64::MAX, MessageId::get);
        let rows =
            db::messages::page_before(&self.pool, chat_id.get(), before, page.size + 1).await?;
        Ok(Page::of(rows, page.size))
    }
}
