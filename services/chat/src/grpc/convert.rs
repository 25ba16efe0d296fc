//! Conversion at the boundary: each request becomes the domain value its
//! capability takes (`TryFrom`, refusing bad input with `INVALID_ARGUMENT`
//! and the field's name), and what the capabilities return becomes the
//! wire's messages. Past this file the code holds only valid values.

use api::chat::v1 as pb;
use host::page_token::PageToken;
use tonic::Status;

use crate::app::Page;
use crate::app::chats::{ChatView, ChatsPage, NewChat, Rename};
use crate::app::membership::{NewMembers, Removal};
use crate::app::messages::{HistoryPage, Outgoing};
use crate::app::reading::{ReadState, ReadUpTo};
use crate::app::rules::Role;
use crate::app::streams::{StreamItem, StreamStart};
use crate::db::chats::Listed;
use crate::db::messages::MessageRow;
use crate::domain::{
    ChatId, ChatTitle, ClientMessageId, MessageId, MessageText, UserId, Usernames,
};
use crate::error::Error;

const DEFAULT_PAGE_SIZE: i64 = 50;

/// `ListMessages`'s page token: the oldest id of the page.
const MESSAGES_BEFORE: PageToken = PageToken::new("messages-before:");
/// `ListChats`'s page token: the last chat's activity (microseconds since
/// the epoch) and id.
const CHATS_AFTER: PageToken = PageToken::new("chats-after:");

fn page_size(requested: u32) -> i64 {
    match i64::from(requested) {
        0 => DEFAULT_PAGE_SIZE,
        size => size,
    }
}

fn bad_page_token() -> Error {
    Error::invalid("page_token", "is not a page token of this list")
}

impl TryFrom<pb::CreateRequest> for NewChat {
    type Error = Status;

    fn try_from(request: pb::CreateRequest) -> Result<NewChat, Status> {
        host::invalid::validate(&request)?;
        Ok(NewChat {
            title: ChatTitle::parse("title", request.title)?,
            usernames: Usernames::parse("usernames", request.usernames)?,
        })
    }
}

impl TryFrom<pb::DeleteRequest> for ChatId {
    type Error = Status;

    fn try_from(request: pb::DeleteRequest) -> Result<ChatId, Status> {
        host::invalid::validate(&request)?;
        Ok(ChatId::new(request.id))
    }
}

impl TryFrom<pb::GetChatRequest> for ChatId {
    type Error = Status;

    fn try_from(request: pb::GetChatRequest) -> Result<ChatId, Status> {
        host::invalid::validate(&request)?;
        Ok(ChatId::new(request.id))
    }
}

impl TryFrom<pb::SendMessageRequest> for Outgoing {
    type Error = Status;

    fn try_from(request: pb::SendMessageRequest) -> Result<Outgoing, Status> {
        host::invalid::validate(&request)?;
        Ok(Outgoing {
            text: MessageText::parse("text", request.text)?,
            client_message_id: ClientMessageId::parse(
                "client_message_id",
                request.client_message_id,
            )?,
            chat_id: ChatId::new(request.chat_id),
        })
    }
}

impl TryFrom<pb::ListMessagesRequest> for HistoryPage {
    type Error = Status;

    fn try_from(request: pb::ListMessagesRequest) -> Result<HistoryPage, Status> {
        host::invalid::validate(&request)?;
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(MessageId::new(
                MESSAGES_BEFORE.decode(token).ok_or_else(bad_page_token)?,
            )),
        };
        Ok(HistoryPage {
            chat_id: ChatId::new(request.chat_id),
            size: page_size(request.page_size),
            before,
        })
    }
}

impl TryFrom<pb::ListChatsRequest> for ChatsPage {
    type Error = Status;

    fn try_from(request: pb::ListChatsRequest) -> Result<ChatsPage, Status> {
        host::invalid::validate(&request)?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                let (micros, id) = CHATS_AFTER.decode_pair(token).ok_or_else(bad_page_token)?;
                let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
                    .map_err(|_| bad_page_token())?;
                Some((at, ChatId::new(id)))
            }
        };
        Ok(ChatsPage {
            size: page_size(request.page_size),
            after,
        })
    }
}

impl TryFrom<pb::AddMembersRequest> for NewMembers {
    type Error = Status;

    fn try_from(request: pb::AddMembersRequest) -> Result<NewMembers, Status> {
        host::invalid::validate(&request)?;
        Ok(NewMembers {
            usernames: Usernames::parse("usernames", request.usernames)?,
            chat_id: ChatId::new(request.chat_id),
        })
    }
}

impl TryFrom<pb::RemoveMemberRequest> for Removal {
    type Error = Status;

    fn try_from(request: pb::RemoveMemberRequest) -> Result<Removal, Status> {
        host::invalid::validate(&request)?;
        Ok(Removal {
            chat_id: ChatId::new(request.chat_id),
            user_id: UserId::new(request.user_id),
        })
    }
}

impl TryFrom<pb::UpdateChatRequest> for Rename {
    type Error = Status;

    fn try_from(request: pb::UpdateChatRequest) -> Result<Rename, Status> {
        host::invalid::validate(&request)?;
        Ok(Rename {
            title: ChatTitle::parse("title", request.title)?,
            chat_id: ChatId::new(request.id),
        })
    }
}

impl TryFrom<pb::ConnectChatRequest> for StreamStart {
    type Error = Status;

    fn try_from(request: pb::ConnectChatRequest) -> Result<StreamStart, Status> {
        host::invalid::validate(&request)?;
        Ok(StreamStart {
            chat_id: ChatId::new(request.chat_id),
            since: request.since_message_id.map(MessageId::new),
        })
    }
}

impl TryFrom<pb::MarkReadRequest> for ReadUpTo {
    type Error = Status;

    fn try_from(request: pb::MarkReadRequest) -> Result<ReadUpTo, Status> {
        host::invalid::validate(&request)?;
        Ok(ReadUpTo {
            chat_id: ChatId::new(request.chat_id),
            message_id: MessageId::new(request.message_id),
        })
    }
}

impl TryFrom<pb::SetTypingRequest> for ChatId {
    type Error = Status;

    fn try_from(request: pb::SetTypingRequest) -> Result<ChatId, Status> {
        host::invalid::validate(&request)?;
        Ok(ChatId::new(request.chat_id))
    }
}

pub(super) fn read_state(state: ReadState) -> pb::MarkReadResponse {
    pb::MarkReadResponse {
        read_message_id: state.read_message_id.get(),
        unread_count: state.unread,
    }
}

/// One event of a chat's stream.
pub(super) fn stream_item(chat_id: ChatId, item: &StreamItem) -> pb::ConnectChatResponse {
    match item {
        StreamItem::Message(row) => pb::ConnectChatResponse {
            message: Some(message(row)),
            ..Default::default()
        },
        StreamItem::Read {
            user_id,
            message_id,
        } => pb::ConnectChatResponse {
            read_marker: Some(pb::ReadMarker {
                chat_id: chat_id.get(),
                user_id: user_id.get(),
                message_id: message_id.get(),
            }),
            ..Default::default()
        },
        StreamItem::Typing { user_id, for_ms } => pb::ConnectChatResponse {
            typing: Some(pb::Typing {
                chat_id: chat_id.get(),
                user_id: user_id.get(),
                for_ms: *for_ms,
            }),
            ..Default::default()
        },
    }
}

pub(super) fn message(message: &MessageRow) -> pb::Message {
    pb::Message {
        id: message.id,
        chat_id: message.chat_id,
        from_user_id: message.from_user_id,
        from_username: message.from_username.clone(),
        text: message.text.clone(),
        created_at: Some(timestamp(message.created_at)),
    }
}

pub(super) fn role(role: Role) -> pb::ChatRole {
    match role {
        Role::Creator => pb::ChatRole::Creator,
        Role::Member => pb::ChatRole::Member,
        Role::None => pb::ChatRole::Unspecified,
    }
}

pub(super) fn chat(view: ChatView) -> (pb::Chat, pb::ChatRole) {
    let ChatView {
        chat,
        members,
        role: caller_role,
    } = view;
    let chat = pb::Chat {
        id: chat.id,
        title: chat.title,
        creator_id: chat.created_by,
        members: members
            .into_iter()
            .map(|(member, username)| pb::Member {
                user_id: member.user_id,
                username,
                joined_at: Some(timestamp(member.joined_at)),
                read_message_id: member.read_message_id,
            })
            .collect(),
        created_at: Some(timestamp(chat.created_at)),
    };
    (chat, role(caller_role))
}

/// A page of the caller's chats, and the token of the next.
pub(super) fn chats(page: Page<Listed>, caller: UserId) -> pb::ListChatsResponse {
    let next_page_token = match page.items.last() {
        Some(last) if page.more => {
            CHATS_AFTER.encode_pair(unix_micros(last.last_activity_at), last.id)
        }
        _ => String::new(),
    };
    pb::ListChatsResponse {
        chats: page
            .items
            .into_iter()
            .map(|row| summary(row, caller))
            .collect(),
        next_page_token,
    }
}

fn summary(row: Listed, caller: UserId) -> pb::ChatSummary {
    let last_message = match (
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
        ) => Some(message(&MessageRow {
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
    };
    // Every chat listed is one of the caller's.
    let caller_role = if UserId::new(row.created_by) == caller {
        Role::Creator
    } else {
        Role::Member
    };
    pb::ChatSummary {
        id: row.id,
        title: row.title,
        member_count: u32::try_from(row.member_count).unwrap_or(u32::MAX),
        last_message,
        role: role(caller_role) as i32,
        last_activity_at: Some(timestamp(row.last_activity_at)),
        unread_count: u64::try_from(row.unread).unwrap_or_default(),
        read_message_id: row.read_message_id,
    }
}

/// A page of a chat's history, and the token of the next.
pub(super) fn history(page: Page<MessageRow>) -> pb::ListMessagesResponse {
    let next_page_token = match page.items.last() {
        Some(oldest) if page.more => MESSAGES_BEFORE.encode(oldest.id),
        _ => String::new(),
    };
    pb::ListMessagesResponse {
        messages: page.items.iter().map(message).collect(),
        next_page_token,
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
