//! `chat.v1.ChatService`: each handler converts its request at the
//! boundary, delegates to the application layer and converts the answer.
//! Members only: to anyone else a chat does not exist (`NOT_FOUND`).

use std::pin::Pin;
use std::sync::Arc;

use api::chat::v1 as pb;
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::{Accepted, accept, convert};
use crate::app::App;
use crate::app::chats::{ChatsPage, NewChat, Rename};
use crate::app::membership::{NewMembers, Removal};
use crate::app::messages::{HistoryPage, Outgoing};
use crate::app::reading::ReadUpTo;
use crate::app::streams::{Opener, StreamStart};
use crate::domain::ChatId;

pub(crate) struct ChatApi {
    app: Arc<App>,
}

impl ChatApi {
    pub(crate) fn new(app: Arc<App>) -> ChatApi {
        ChatApi { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    #[tracing::instrument(skip_all, fields(user_id, chat_id))]
    async fn create(&self, request: Request<pb::CreateRequest>) -> Reply<pb::CreateResponse> {
        let Accepted {
            caller,
            forwarded,
            request,
            ..
        } = accept::<_, NewChat>(request)?;
        let id = self.app.create_chat(&caller, &forwarded, request).await?;
        Ok(Response::new(pb::CreateResponse { id: id.get() }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().id))]
    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Reply<pb::DeleteResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, ChatId>(request)?;
        self.app.delete_chat(&caller, request).await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id, message_id))]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Reply<pb::SendMessageResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, Outgoing>(request)?;
        let message = self.app.send_message(&caller, request).await?;
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(convert::message(&message)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Reply<pb::ListMessagesResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, HistoryPage>(request)?;
        let page = self.app.history(&caller, request).await?;
        Ok(Response::new(convert::history(page)))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_chats(
        &self,
        request: Request<pb::ListChatsRequest>,
    ) -> Reply<pb::ListChatsResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, ChatsPage>(request)?;
        let page = self.app.list_chats(&caller, request).await?;
        Ok(Response::new(convert::chats(page, caller.user_id)))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().id))]
    async fn get_chat(&self, request: Request<pb::GetChatRequest>) -> Reply<pb::GetChatResponse> {
        let Accepted {
            caller,
            forwarded,
            request,
            ..
        } = accept::<_, ChatId>(request)?;
        let view = self.app.view_chat(&caller, &forwarded, request).await?;
        let (chat, role) = convert::chat(view);
        Ok(Response::new(pb::GetChatResponse {
            chat: Some(chat),
            role: role as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Reply<pb::AddMembersResponse> {
        let Accepted {
            caller,
            forwarded,
            request,
            ..
        } = accept::<_, NewMembers>(request)?;
        let added = self.app.add_members(&caller, &forwarded, request).await?;
        Ok(Response::new(pb::AddMembersResponse {
            added_user_ids: added.into_iter().map(|id| id.get()).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id, member_id = request.get_ref().user_id))]
    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::RemoveMemberResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, Removal>(request)?;
        let removed = self.app.remove_member(&caller, request).await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            removed: removed.removed,
            chat_deleted: removed.chat_deleted,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().id))]
    async fn update_chat(
        &self,
        request: Request<pb::UpdateChatRequest>,
    ) -> Reply<pb::UpdateChatResponse> {
        let Accepted {
            caller,
            forwarded,
            request,
            ..
        } = accept::<_, Rename>(request)?;
        let view = self.app.rename_chat(&caller, &forwarded, request).await?;
        let (chat, _) = convert::chat(view);
        Ok(Response::new(pb::UpdateChatResponse { chat: Some(chat) }))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Reply<pb::MarkReadResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, ReadUpTo>(request)?;
        let state = self.app.mark_read(&caller, request).await?;
        Ok(Response::new(convert::read_state(state)))
    }

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Reply<pb::SetTypingResponse> {
        let Accepted {
            caller, request, ..
        } = accept::<_, ChatId>(request)?;
        self.app.set_typing(&caller, request).await?;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    type ConnectChatStream =
        Pin<Box<dyn Stream<Item = Result<pb::ConnectChatResponse, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(user_id, chat_id = request.get_ref().chat_id))]
    async fn connect_chat(
        &self,
        request: Request<pb::ConnectChatRequest>,
    ) -> Reply<Self::ConnectChatStream> {
        let accepted = accept::<_, StreamStart>(request)?;
        let Accepted {
            caller,
            forwarded,
            checked_at,
            request,
        } = accepted;
        let checked_at = checked_at.ok_or_else(|| {
            tracing::error!("a stream was opened without the epoch of its check");
            Status::internal("internal error")
        })?;
        let opener = Opener {
            caller,
            authorization: forwarded.authorization,
            checked_at,
        };
        let chat_id = request.chat_id;
        let outbound = self.app.open_stream(opener, request).await?;
        let messages =
            outbound.map(move |item| item.map(|item| convert::stream_item(chat_id, &item)));
        Ok(Response::new(Box::pin(messages)))
    }
}
