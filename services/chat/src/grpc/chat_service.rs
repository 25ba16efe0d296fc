//! `chat.v1.ChatService`. Members only: to anyone else a chat does not
//! exist (`NOT_FOUND`), so chat ids cannot be probed.

use std::sync::Arc;
use std::time::Duration;

use api::chat::v1 as pb;
use serving::page_token::PageToken;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use super::outbound::{self, Outbound, Queue};
use super::{State, caller};
use crate::access_watch::{Epoch, Hold};
use crate::db;
use crate::db::messages::{MessageRow, NewMessage, Sent};
use crate::domain::{ChatTitle, ClientMessageId, MessageText, check_usernames};
use crate::error::{Error, Result};
use crate::hub::{Event, Subscription};
use crate::metrics::OpenStream;

const DEFAULT_PAGE_SIZE: i64 = 50;
/// Messages read from the database at a time when a stream catches up.
const CATCH_UP_BATCH: i64 = 100;
/// Messages queued for a client before the stream waits for it.
const STREAM_QUEUE: usize = 16;
/// No stream outlives this, whatever its token says (a timer must fit).
const MAX_STREAM_LIFE: Duration = Duration::from_secs(24 * 60 * 60);

pub struct ChatApi {
    state: Arc<State>,
}

impl ChatApi {
    pub fn new(state: Arc<State>) -> ChatApi {
        ChatApi { state }
    }
}

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    #[tracing::instrument(skip_all, fields(user_id, chat_id))]
    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        serving::invalid::validate(request.get_ref())?;
        let header = |name: &str| -> Option<http::HeaderValue> {
            request
                .metadata()
                .get(name)
                .and_then(|value| value.to_str().ok()?.parse().ok())
        };
        let (authorization, request_id) = (
            header("authorization"),
            header(serving::metrics::REQUEST_ID),
        );
        let request = request.into_inner();
        let title = ChatTitle::parse(request.title)?;
        check_usernames(&request.usernames)?;

        // Auth compares names as its unique index does; nothing here folds
        // case, so what auth finds is what the chat gets.
        let found = self
            .state
            .auth
            .lookup_usernames(
                authorization.as_ref(),
                request_id.as_ref(),
                request.usernames.clone(),
            )
            .await?;
        if let Some(missing) = found.missing_usernames.first() {
            return Err(Error::NotFound(format!("user {missing} not found")).into());
        }
        let mut members: Vec<i64> = found.users.iter().map(|user| user.id).collect();
        members.push(caller.user_id);
        members.sort_unstable();
        members.dedup();

        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let id = db::chats::insert(&mut *tx, title.as_str(), caller.user_id).await?;
        db::chats::add_members(&mut *tx, id, &members).await?;
        tx.commit().await.map_err(Error::from)?;
        tracing::Span::current().record("chat_id", id);
        tracing::info!(members = members.len(), "chat created");
        Ok(Response::new(pb::CreateResponse { id }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().id))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        serving::invalid::validate(request.get_ref())?;
        let chat_id = request.get_ref().id;

        let chat = db::chats::for_user(&self.state.pool, chat_id, caller.user_id)
            .await?
            .filter(|chat| chat.is_member || caller.is_admin)
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        if chat.created_by != caller.user_id && !caller.is_admin {
            return Err(Error::PermissionDenied(
                "only the chat's creator or an admin may delete it".into(),
            )
            .into());
        }
        if !db::chats::delete(&self.state.pool, chat_id).await? {
            return Err(Error::chat_not_found(chat_id).into());
        }
        self.state.hub.deleted(chat_id);
        tracing::info!("chat deleted");
        Ok(Response::new(pb::DeleteResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id, message_id))]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        let request = request.into_inner();
        serving::invalid::validate(&request)?;
        let text = MessageText::parse(request.text)?;
        let client_message_id = ClientMessageId::parse(request.client_message_id)?;
        let client_message_id = client_message_id.as_ref().map(ClientMessageId::as_str);
        let chat_id = request.chat_id;

        let sent = db::messages::send(
            &self.state.pool,
            NewMessage {
                chat_id,
                from_user_id: caller.user_id,
                from_username: &caller.username,
                text: text.as_str(),
                client_message_id,
            },
        )
        .await?
        .ok_or_else(|| Error::chat_not_found(chat_id))?;
        // Acknowledged only once stored for good: the statement committed.
        let message = match sent {
            Sent::Stored(message) => message,
            // A retry: the first send's message, and nothing new stored. A
            // key reused for other content is refused, not silently
            // answered with the first message.
            Sent::Earlier(first) if first.text != text.as_str() => {
                return Err(Error::AlreadyExists(format!(
                    "client_message_id {:?} was already used for another message in this chat; \
                     a new message needs a new key",
                    client_message_id.unwrap_or_default()
                ))
                .into());
            }
            Sent::Earlier(first) => {
                return Ok(Response::new(pb::SendMessageResponse {
                    message: Some(to_proto(&first)),
                }));
            }
        };
        self.state.metrics.messages_sent.inc();
        tracing::Span::current().record("message_id", message.id);
        let reply = to_proto(&message);
        self.state.hub.committed(Arc::new(message));
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(reply),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        let request = request.into_inner();
        serving::invalid::validate(&request)?;
        let chat_id = request.chat_id;
        let page_size = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size => size,
        };
        let before = if request.page_token.is_empty() {
            i64::MAX
        } else {
            MESSAGES_BEFORE
                .decode(&request.page_token)
                .ok_or_else(|| Error::invalid("page_token", "is not a page token of this list"))?
        };
        if !db::chats::is_member(&self.state.pool, chat_id, caller.user_id).await? {
            return Err(Error::chat_not_found(chat_id).into());
        }

        let mut rows =
            db::messages::page_before(&self.state.pool, chat_id, before, page_size + 1).await?;
        let next_page_token = if rows.len() as i64 > page_size {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|oldest| MESSAGES_BEFORE.encode(oldest.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListMessagesResponse {
            messages: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    type ConnectChatStream = Outbound<pb::ConnectChatResponse>;

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn connect_chat(
        &self,
        request: Request<pb::ConnectChatRequest>,
    ) -> Result<Response<Self::ConnectChatStream>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        let checked_at = request
            .extensions()
            .get::<Epoch>()
            .copied()
            .ok_or_else(|| Status::internal("internal error"))?;
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok()?.parse::<http::HeaderValue>().ok());
        let request = request.into_inner();
        serving::invalid::validate(&request)?;
        let chat_id = request.chat_id;
        let pool = &self.state.pool;
        if !db::chats::is_member(pool, chat_id, caller.user_id).await? {
            return Err(Error::chat_not_found(chat_id).into());
        }

        // Subscribe first, then find where the stream starts: whatever is
        // stored after that point arrives as an event, or is read below. A
        // chat deleted before the subscription is not found here; one
        // deleted after it ends the stream by event.
        let subscription = self.state.hub.subscribe(chat_id);
        let last = db::chats::last_seq(pool, chat_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        self.state.hub.note_last_seq(chat_id, last);
        let start = match request.since_message_id {
            Some(since) => db::messages::seq_at(pool, chat_id, since).await?,
            None => last,
        };
        // Held from here on: a revocation ends the stream, and so does
        // the token's expiry.
        let access = self.state.access.hold(
            caller.user_id,
            caller.token_version,
            authorization,
            checked_at,
        );
        let (queue, outbound) = outbound::queue(STREAM_QUEUE);
        let stream = ChatStream {
            chat_id,
            last_seq: start,
            state: self.state.clone(),
            queue,
            access,
            expires_at: caller.expires_at.map(|at| {
                let left = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                tokio::time::Instant::now() + left.min(MAX_STREAM_LIFE)
            }),
        };
        tokio::spawn(stream.run(subscription, request.since_message_id.is_some()));
        tracing::info!("stream opened");
        Ok(Response::new(outbound))
    }
}

/// One client's stream of a chat. It sends each message once, in
/// sequence order: events that continue the sequence go straight out, and
/// any gap (a lost notification, a replay) is filled from the database.
struct ChatStream {
    chat_id: i64,
    /// The sequence number of the last message sent.
    last_seq: i64,
    state: Arc<State>,
    queue: Queue<pb::ConnectChatResponse>,
    /// Ends the stream when its caller's access ends.
    access: Hold,
    /// When the caller's access token expires.
    expires_at: Option<tokio::time::Instant>,
}

/// Why a stream ended.
enum End {
    /// The client left; nobody to tell.
    ClientGone,
    /// Tell the client, then end.
    With(Status),
}

impl ChatStream {
    async fn run(mut self, mut subscription: Subscription, replay: bool) {
        let _open = OpenStream::new(&self.state.metrics.open_streams);
        let stall_timeout = self.state.stream_stall_timeout;
        let mut stall_check = tokio::time::interval(
            (stall_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        let end = async {
            if replay {
                self.catch_up().await?;
            }
            loop {
                let expiry = self.expires_at;
                let event = tokio::select! {
                    () = self.queue.closed() => return Err(End::ClientGone),
                    () = self.state.shutdown.cancelled() => return Err(shutting_down()),
                    Some(status) = self.access.ended.recv() => return Err(End::With(status)),
                    () = until(expiry) => return Err(expired()),
                    // In a quiet chat no send blocks: a client that left
                    // messages unread is found here.
                    _ = stall_check.tick() => {
                        if self.queue.stalled_for(stall_timeout) {
                            return Err(stalled(stall_timeout));
                        }
                        continue;
                    }
                    event = subscription.events().recv() => event,
                };
                match event {
                    Ok(Event::Message(message)) if message.seq <= self.last_seq => {}
                    Ok(Event::Message(message)) if message.seq == self.last_seq + 1 => {
                        self.send(&message).await?
                    }
                    Ok(Event::Message(_) | Event::Resync) => self.catch_up().await?,
                    Ok(Event::Deleted) => {
                        return Err(End::With(Status::not_found(format!(
                            "chat {} was deleted",
                            self.chat_id
                        ))));
                    }
                    // Events were dropped for this stream; the database has
                    // them. Only a client that stops reading is ended (in
                    // send).
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                    Err(broadcast::error::RecvError::Closed) => return Err(shutting_down()),
                }
            }
        }
        .await;
        match end {
            Err(End::With(status)) => {
                tracing::info!(chat_id = self.chat_id, code = ?status.code(), "stream ended");
                // Ahead of anything queued: ending never waits on the
                // client.
                self.queue.end(status);
            }
            Err(End::ClientGone) | Ok(()) => {
                tracing::info!(chat_id = self.chat_id, "stream closed by the client")
            }
        }
    }

    /// Sends every stored message after the last one sent.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let batch = db::messages::after_seq(
                &self.state.pool,
                self.chat_id,
                self.last_seq,
                CATCH_UP_BATCH,
            )
            .await
            .map_err(|error| End::With(error.into()))?;
            for message in &batch {
                self.send(message).await?;
            }
            if (batch.len() as i64) < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, message: &MessageRow) -> Result<(), End> {
        let item = pb::ConnectChatResponse {
            message: Some(to_proto(message)),
        };
        // A long catch-up ends as soon as access does, like a live stream.
        let expiry = self.expires_at;
        tokio::select! {
            Some(status) = self.access.ended.recv() => return Err(End::With(status)),
            () = until(expiry) => return Err(expired()),
            sent = tokio::time::timeout(self.state.stream_stall_timeout, self.queue.push(item)) => match sent {
                Ok(sent) => sent.map_err(|()| End::ClientGone)?,
                Err(_) => return Err(stalled(self.state.stream_stall_timeout)),
            },
            () = self.state.shutdown.cancelled() => return Err(shutting_down()),
        }
        self.last_seq = message.seq;
        Ok(())
    }
}

/// Waits until `at`, or forever.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn stalled(timeout: Duration) -> End {
    End::With(Status::resource_exhausted(format!(
        "the client read nothing for {} ms; reconnect with since_message_id set to the last message received",
        timeout.as_millis()
    )))
}

fn expired() -> End {
    End::With(Status::unauthenticated(
        "the access token expired; reconnect with a fresh token and since_message_id set to the last message received",
    ))
}

fn shutting_down() -> End {
    End::With(Status::unavailable(
        "the server is shutting down; reconnect with since_message_id set to the last message received",
    ))
}

fn to_proto(message: &MessageRow) -> pb::Message {
    pb::Message {
        id: message.id,
        chat_id: message.chat_id,
        from_user_id: message.from_user_id,
        from_username: message.from_username.clone(),
        text: message.text.clone(),
        created_at: Some(prost_types::Timestamp {
            seconds: message.created_at.unix_timestamp(),
            nanos: message.created_at.nanosecond() as i32,
        }),
    }
}

/// `ListMessages`'s page token: the oldest id of the page.
const MESSAGES_BEFORE: PageToken = PageToken::new("messages-before:");
