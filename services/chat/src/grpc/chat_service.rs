//! `chat.v1.ChatService`. Members only: to anyone else a chat does not
//! exist (`NOT_FOUND`), so chat ids cannot be probed.

use std::collections::HashMap;
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
use crate::domain::{Caller, ChatTitle, ClientMessageId, MessageText, check_usernames};
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
/// A chat has at most this many members: one `GetChat` resolves them all
/// in one call to auth.
const MAX_MEMBERS: i64 = 1000;

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
        let forwarded = Forwarded::from(&request);
        let request = request.into_inner();
        let title = ChatTitle::parse(request.title)?;
        check_usernames(&request.usernames)?;

        // Auth compares names as its unique index does; nothing here folds
        // case, so what auth finds is what the chat gets.
        let found = self
            .state
            .auth
            .lookup_usernames(
                forwarded.authorization.as_ref(),
                forwarded.request_id.as_ref(),
                request.usernames.clone(),
            )
            .await?;
        if let Some(missing) = found.missing_usernames.first() {
            return Err(Error::NotFound(format!("user {missing} not found")).into());
        }
        let mut members: Vec<i64> = found.users.iter().map(|user| user.id).collect();
        members.retain(|&id| id != caller.user_id);
        members.sort_unstable();
        members.dedup();
        // The creator joins first: should they leave, the next member to
        // have joined becomes the creator.
        members.insert(0, caller.user_id);

        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let id = db::chats::insert(&mut *tx, title.as_str(), caller.user_id).await?;
        db::members::add(&mut tx, id, &members[..1]).await?;
        db::members::add(&mut tx, id, &members[1..]).await?;
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

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_chats(
        &self,
        request: Request<pb::ListChatsRequest>,
    ) -> Result<Response<pb::ListChatsResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        let request = request.into_inner();
        serving::invalid::validate(&request)?;
        let page_size = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size => size,
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            let (micros, id) = CHATS_AFTER
                .decode_pair(&request.page_token)
                .ok_or_else(|| Error::invalid("page_token", "is not a page token of this list"))?;
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
                .map_err(|_| Error::invalid("page_token", "is not a page token of this list"))?;
            Some((at, id))
        };
        let mut rows =
            db::chats::list_for_user(&self.state.pool, caller.user_id, after, page_size + 1)
                .await?;
        let next_page_token = if rows.len() as i64 > page_size {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|last| CHATS_AFTER.encode_pair(unix_micros(last.last_activity_at), last.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let chats = rows
            .into_iter()
            .map(|row| pb::ChatSummary {
                id: row.id,
                title: row.title,
                member_count: u32::try_from(row.member_count).unwrap_or(u32::MAX),
                last_message: match (
                    row.message_id,
                    row.message_seq,
                    row.message_from_user_id,
                    row.message_from_username,
                    row.message_text,
                    row.message_created_at,
                ) {
                    (
                        Some(id),
                        Some(seq),
                        Some(from_user_id),
                        Some(from_username),
                        Some(text),
                        Some(created_at),
                    ) => Some(to_proto(&MessageRow {
                        id,
                        chat_id: row.id,
                        seq,
                        from_user_id,
                        from_username,
                        text,
                        created_at,
                        members_version: row.members_version,
                    })),
                    _ => None,
                },
                role: role_of(row.created_by, Some(caller.user_id), &caller) as i32,
                last_activity_at: Some(timestamp(row.last_activity_at)),
            })
            .collect();
        Ok(Response::new(pb::ListChatsResponse {
            chats,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().id))]
    async fn get_chat(
        &self,
        request: Request<pb::GetChatRequest>,
    ) -> Result<Response<pb::GetChatResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        serving::invalid::validate(request.get_ref())?;
        let forwarded = Forwarded::from(&request);
        let chat_id = request.get_ref().id;
        let (chat, role) = self.chat_view(chat_id, &caller, &forwarded).await?;
        Ok(Response::new(pb::GetChatResponse {
            chat: Some(chat),
            role: role as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        serving::invalid::validate(request.get_ref())?;
        let forwarded = Forwarded::from(&request);
        let request = request.into_inner();
        check_usernames(&request.usernames)?;
        let chat_id = request.chat_id;
        // Who may, before anything about the names is asked or told.
        self.may_manage(chat_id, &caller).await?;

        let found = self
            .state
            .auth
            .lookup_usernames(
                forwarded.authorization.as_ref(),
                forwarded.request_id.as_ref(),
                request.usernames,
            )
            .await?;
        if let Some(missing) = found.missing_usernames.first() {
            return Err(Error::NotFound(format!("user {missing} not found")).into());
        }
        let mut user_ids: Vec<i64> = found.users.iter().map(|user| user.id).collect();
        user_ids.sort_unstable();
        user_ids.dedup();

        // Asked again under the chat's lock: the chat may have gone, or the
        // caller lost the right, while auth was asked.
        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let chat = db::members::lock(&mut tx, chat_id, caller.user_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        check_manage(chat_id, chat.created_by, chat.caller_is_member, &caller)?;
        let added = db::members::add(&mut tx, chat_id, &user_ids).await?;
        if chat.member_count + added.len() as i64 > MAX_MEMBERS {
            return Err(Error::FailedPrecondition(format!(
                "a chat has at most {MAX_MEMBERS} members; chat {chat_id} has {}",
                chat.member_count
            ))
            .into());
        }
        tx.commit().await.map_err(Error::from)?;
        tracing::info!(added = added.len(), "members added");
        Ok(Response::new(pb::AddMembersResponse {
            added_user_ids: added,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id, member_id = request.get_ref().user_id))]
    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        serving::invalid::validate(request.get_ref())?;
        let pb::RemoveMemberRequest { chat_id, user_id } = request.into_inner();

        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let chat = db::members::lock(&mut tx, chat_id, caller.user_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        if !chat.caller_is_member && !caller.is_admin {
            return Err(Error::chat_not_found(chat_id).into());
        }
        if user_id != caller.user_id {
            check_manage(chat_id, chat.created_by, chat.caller_is_member, &caller).map_err(
                |_| {
                    Error::PermissionDenied(
                        "only the chat's creator or an admin may remove other members; \
                     members may remove themselves"
                            .into(),
                    )
                },
            )?;
        }
        let removed = db::members::remove(&mut tx, chat_id, user_id).await?;
        let mut chat_deleted = false;
        if removed.is_some() && chat.member_count <= 1 {
            chat_deleted = db::chats::delete(&mut *tx, chat_id).await?;
        } else if removed.is_some() && user_id == chat.created_by {
            match db::members::hand_over(&mut tx, chat_id).await? {
                Some(creator) => tracing::info!(
                    creator,
                    "the creator left; the longest-standing member is creator now"
                ),
                None => chat_deleted = db::chats::delete(&mut *tx, chat_id).await?,
            }
        }
        tx.commit().await.map_err(Error::from)?;
        match removed {
            Some(_) if chat_deleted => {
                self.state.hub.deleted(chat_id);
                tracing::info!("the last member left; chat deleted");
            }
            Some(version) => {
                self.state.hub.removed(chat_id, user_id, version);
                tracing::info!("member removed");
            }
            None => {}
        }
        Ok(Response::new(pb::RemoveMemberResponse {
            removed: removed.is_some(),
            chat_deleted,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().id))]
    async fn update_chat(
        &self,
        request: Request<pb::UpdateChatRequest>,
    ) -> Result<Response<pb::UpdateChatResponse>, Status> {
        let caller = caller(&request)?;
        tracing::Span::current().record("user_id", caller.user_id);
        serving::invalid::validate(request.get_ref())?;
        let forwarded = Forwarded::from(&request);
        let request = request.into_inner();
        let title = ChatTitle::parse(request.title)?;
        let chat_id = request.id;

        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let chat = db::members::lock(&mut tx, chat_id, caller.user_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        check_manage(chat_id, chat.created_by, chat.caller_is_member, &caller)?;
        db::chats::rename(&mut *tx, chat_id, title.as_str()).await?;
        tx.commit().await.map_err(Error::from)?;
        tracing::info!("chat renamed");
        let (chat, _) = self.chat_view(chat_id, &caller, &forwarded).await?;
        Ok(Response::new(pb::UpdateChatResponse { chat: Some(chat) }))
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

        // Subscribe first, then find where the stream starts: whatever is
        // stored after that point arrives as an event, or is read below. A
        // chat deleted, or a caller removed, before the subscription is not
        // found here; after it, an event ends the stream.
        let subscription = self.state.hub.subscribe(chat_id);
        let members_version = db::members::membership(pool, chat_id, caller.user_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
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
            user_id: caller.user_id,
            members_version,
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

impl ChatApi {
    /// A chat with its members' current names, as `caller` may see it
    /// (members and admins), and the caller's role in it.
    async fn chat_view(
        &self,
        chat_id: i64,
        caller: &Caller,
        forwarded: &Forwarded,
    ) -> Result<(pb::Chat, pb::ChatRole), Error> {
        let pool = &self.state.pool;
        let chat = db::chats::get(pool, chat_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        let members = db::members::list(pool, chat_id).await?;
        let is_member = members
            .iter()
            .any(|member| member.user_id == caller.user_id);
        if !is_member && !caller.is_admin {
            return Err(Error::chat_not_found(chat_id));
        }
        let ids: Vec<i64> = members.iter().map(|member| member.user_id).collect();
        let names: HashMap<i64, String> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.state
                .auth
                .lookup_user_ids(
                    forwarded.authorization.as_ref(),
                    forwarded.request_id.as_ref(),
                    ids,
                )
                .await?
                .users
                .into_iter()
                .map(|user| (user.id, user.name))
                .collect()
        };
        let role = role_of(chat.created_by, is_member.then_some(caller.user_id), caller);
        Ok((
            pb::Chat {
                id: chat.id,
                title: chat.title,
                creator_id: chat.created_by,
                members: members
                    .into_iter()
                    .map(|member| pb::Member {
                        user_id: member.user_id,
                        username: names.get(&member.user_id).cloned().unwrap_or_default(),
                        joined_at: Some(timestamp(member.joined_at)),
                    })
                    .collect(),
                created_at: Some(timestamp(chat.created_at)),
            },
            role,
        ))
    }

    /// Refuses a caller who may not manage the chat's members or title.
    async fn may_manage(&self, chat_id: i64, caller: &Caller) -> Result<(), Error> {
        let chat = db::chats::for_user(&self.state.pool, chat_id, caller.user_id)
            .await?
            .ok_or_else(|| Error::chat_not_found(chat_id))?;
        check_manage(chat_id, chat.created_by, chat.is_member, caller)
    }
}

/// Who may rename a chat and add or remove its members: its creator and
/// admins. To anyone else who is not a member the chat does not exist.
fn check_manage(
    chat_id: i64,
    created_by: i64,
    is_member: bool,
    caller: &Caller,
) -> Result<(), Error> {
    if !is_member && !caller.is_admin {
        return Err(Error::chat_not_found(chat_id));
    }
    if (created_by != caller.user_id || !is_member) && !caller.is_admin {
        return Err(Error::PermissionDenied(
            "only the chat's creator or an admin may change its title or members".into(),
        ));
    }
    Ok(())
}

/// The caller's role in a chat, given whether they are a member
/// (`member` is their id then).
fn role_of(created_by: i64, member: Option<i64>, caller: &Caller) -> pb::ChatRole {
    match member {
        Some(id) if id == caller.user_id && created_by == id => pb::ChatRole::Creator,
        Some(id) if id == caller.user_id => pb::ChatRole::Member,
        _ => pb::ChatRole::Unspecified,
    }
}

/// What a call to auth on the caller's behalf carries on: the caller's
/// authorization and the request id.
struct Forwarded {
    authorization: Option<http::HeaderValue>,
    request_id: Option<http::HeaderValue>,
}

impl<T> From<&Request<T>> for Forwarded {
    fn from(request: &Request<T>) -> Forwarded {
        let header = |name: &str| -> Option<http::HeaderValue> {
            request
                .metadata()
                .get(name)
                .and_then(|value| value.to_str().ok()?.parse().ok())
        };
        Forwarded {
            authorization: header("authorization"),
            request_id: header(serving::metrics::REQUEST_ID),
        }
    }
}

/// One client's stream of a chat. It sends each message once, in
/// sequence order: events that continue the sequence go straight out, and
/// any gap (a lost notification, a replay) is filled from the database.
struct ChatStream {
    chat_id: i64,
    user_id: i64,
    /// The chat's members version when the user was last known to be a
    /// member.
    members_version: i64,
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
                    // A late announcement of an earlier removal leaves a
                    // user who joined again since alone.
                    Ok(Event::Removed { user_id, version })
                        if user_id == self.user_id && version > self.members_version =>
                    {
                        return Err(self.not_a_member());
                    }
                    Ok(Event::Removed { .. }) => {}
                    Ok(Event::MembersChanged(version)) if version > self.members_version => {
                        self.still_a_member(version).await?
                    }
                    Ok(Event::MembersChanged(_)) => {}
                    // Events were dropped for this stream; the database has
                    // them, and knows whether the user is still a member.
                    // Only a client that stops reading is ended (in send).
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.check_membership().await?;
                        self.catch_up().await?
                    }
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

    /// Ends the stream if its user is not a member as of members version
    /// `version` (read once for all the chat's streams here).
    async fn still_a_member(&mut self, version: i64) -> Result<(), End> {
        let members = self
            .state
            .hub
            .members(&self.state.pool, self.chat_id, version)
            .await
            .map_err(|error| End::With(error.into()))?;
        match members {
            Some(members) if members.contains(self.user_id) => {
                self.members_version = members.version;
                Ok(())
            }
            _ => Err(self.not_a_member()),
        }
    }

    /// Ends the stream if its user is no longer a member, as the database
    /// says now (after events were lost, which may have said so).
    async fn check_membership(&mut self) -> Result<(), End> {
        match db::members::membership(&self.state.pool, self.chat_id, self.user_id).await {
            Ok(Some(version)) => {
                self.members_version = version;
                Ok(())
            }
            Ok(None) => Err(self.not_a_member()),
            Err(error) => Err(End::With(error.into())),
        }
    }

    /// What a removed member's stream ends with: what a non-member's
    /// request gets.
    fn not_a_member(&self) -> End {
        End::With(Error::chat_not_found(self.chat_id).into())
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
        // Stored after a removal this stream has not heard of yet (from
        // another replica, or announced late): the user may be gone.
        if message.members_version > self.members_version {
            self.still_a_member(message.members_version).await?;
        }
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
        created_at: Some(timestamp(message.created_at)),
    }
}

fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

fn unix_micros(at: time::OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1000) as i64
}

/// `ListMessages`'s page token: the oldest id of the page.
const MESSAGES_BEFORE: PageToken = PageToken::new("messages-before:");
/// `ListChats`'s page token: the last chat's activity (microseconds since
/// the epoch) and id.
const CHATS_AFTER: PageToken = PageToken::new("chats-after:");
