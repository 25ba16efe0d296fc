//! Live streams of a chat's messages (`ConnectChat`), with its members'
//! read markers and typing: where a stream starts, what holds it open,
//! and the actor that feeds it.

mod actor;
pub(crate) mod outbound;

use std::sync::Arc;
use std::time::Duration;

use self::actor::ChatStream;
use self::outbound::Outbound;
use super::App;
use crate::access_watch::Epoch;
use crate::db;
use crate::db::messages::MessageRow;
use crate::domain::{Caller, ChatId, MessageId, UserId};
use crate::error::Result;

/// Messages queued for a client before the stream waits for it.
const STREAM_QUEUE: usize = 16;
/// No stream outlives this, whatever its token says (a timer must fit).
const MAX_STREAM_LIFE: Duration = Duration::from_secs(24 * 60 * 60);

/// What a stream passes to its client.
#[derive(Debug, Clone)]
pub(crate) enum StreamItem {
    /// The chat's next message.
    Message(Arc<MessageRow>),
    /// A member's read marker moved.
    Read {
        user_id: UserId,
        message_id: MessageId,
    },
    /// A member is typing for `for_ms` milliseconds (0: stopped).
    Typing { user_id: UserId, for_ms: u32 },
}

/// A stream to open: the chat, and the last message the client has, to
/// resume after it.
pub(crate) struct StreamStart {
    pub(crate) chat_id: ChatId,
    pub(crate) since: Option<MessageId>,
}

/// The checked call a stream is opened on.
pub(crate) struct Opener {
    pub(crate) caller: Caller,
    /// The caller's authorization, to re-check when access may have
    /// changed.
    pub(crate) authorization: Option<http::HeaderValue>,
    /// Where the revocation feed was when the call was checked.
    pub(crate) checked_at: Epoch,
}

impl App {
    /// Opens a stream of the chat's messages for one of its members: those
    /// after `since` first, if given, then each new one as it is stored.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        opener: Opener,
        start: StreamStart,
    ) -> Result<Outbound<StreamItem>> {
        let Opener {
            caller,
            authorization,
            checked_at,
        } = opener;
        let chat_id = start.chat_id;
        let pool = &self.pool;
        let slot = self.quotas.open_stream(caller.user_id)?;

        // Subscribe first, then find where the stream starts: whatever is
        // stored after that point arrives as an event, or is read below. A
        // chat deleted, or a caller removed, before the subscription is not
        // found here; after it, an event ends the stream.
        let subscription = self.hub.subscribe(chat_id);
        let members_version = db::members::membership(pool, chat_id.get(), caller.user_id.get())
            .await?
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        let last = db::chats::last_seq(pool, chat_id.get())
            .await?
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        self.hub.note_last_seq(chat_id, last);
        let start_seq = match start.since {
            Some(since) => db::messages::seq_at(pool, chat_id.get(), since.get()).await?,
            None => last,
        };
        // Held from here on: a revocation ends the stream, and so does
        // the token's expiry.
        let access = self.access.hold(
            caller.user_id.get(),
            caller.token_version,
            caller.session.clone(),
            authorization,
            checked_at,
        );
        let (queue, outbound) = outbound::queue(STREAM_QUEUE);
        let stream = ChatStream {
            _slot: slot,
            chat_id,
            user_id: caller.user_id,
            members_version,
            last_seq: start_seq,
            app: self.clone(),
            queue,
            markers: std::collections::HashMap::new(),
            ahead: std::collections::HashMap::new(),
            presence_seen: subscription.presence_from,
            presence_due: tokio::time::Instant::now(),
            access,
            expires_at: caller.expires_at.map(|at| {
                let left = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                tokio::time::Instant::now() + left.min(MAX_STREAM_LIFE)
            }),
        };
        tokio::spawn(stream.run(subscription, start.since.is_some()));
        tracing::info!("stream opened");
        Ok(outbound)
    }
}
