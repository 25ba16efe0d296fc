//! Chats themselves: creating, listing, viewing, renaming and deleting.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::rules::{Role, lock_to_manage, role_of};
use super::{App, Forwarded, Page};
use crate::db;
use crate::db::chats::{ChatRow, Listed};
use crate::db::members::MemberRow;
use crate::domain::{Caller, ChatId, ChatTitle, UserId, Usernames};
use crate::error::{Error, Result};

/// A chat to create: its title and the names of its other members.
pub(crate) struct NewChat {
    pub(crate) title: ChatTitle,
    pub(crate) usernames: Usernames,
}

/// Which of the caller's chats to list: `size` of them, after a chat's
/// last activity and id, most recent first.
pub(crate) struct ChatsPage {
    pub(crate) size: i64,
    pub(crate) after: Option<(OffsetDateTime, ChatId)>,
}

/// A chat, renamed.
pub(crate) struct Rename {
    pub(crate) chat_id: ChatId,
    pub(crate) title: ChatTitle,
}

/// A chat as a member (or an admin) sees it: its members with their
/// current names, and the caller's role.
pub(crate) struct ChatView {
    pub(crate) chat: ChatRow,
    pub(crate) members: Vec<(MemberRow, String)>,
    pub(crate) role: Role,
}

impl App {
    /// Creates a chat of the caller and the users named; its id.
    pub(crate) async fn create_chat(
        &self,
        caller: &Caller,
        forwarded: &Forwarded,
        new: NewChat,
    ) -> Result<ChatId> {
        let caller_id = caller.user_id.get();
        // Charged for what was asked, before auth is: a refused call costs
        // nobody else anything.
        self.quotas
            .create_chat(caller.user_id, new.usernames.len())?;
        let mut members = self.user_ids(forwarded, new.usernames).await?;
        members.retain(|&id| id != caller_id);
        members.sort_unstable();
        members.dedup();
        // The creator joins first: should they leave, the next member to
        // have joined becomes the creator.
        members.insert(0, caller_id);

        let mut tx = self.pool.begin().await?;
        let id = db::chats::insert(&mut *tx, new.title.as_str(), caller_id).await?;
        db::members::add(&mut tx, id, &members[..1]).await?;
        db::members::add(&mut tx, id, &members[1..]).await?;
        tx.commit().await?;
        tracing::Span::current().record("chat_id", id);
        tracing::info!(members = members.len(), "chat created");
        Ok(ChatId::new(id))
    }

    /// Deletes a chat: its creator or an admin may.
    pub(crate) async fn delete_chat(&self, caller: &Caller, chat_id: ChatId) -> Result<()> {
        let chat = db::chats::for_user(&self.pool, chat_id.get(), caller.user_id.get())
            .await?
            .filter(|chat| chat.is_member || caller.is_admin)
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        if UserId::new(chat.created_by) != caller.user_id && !caller.is_admin {
            return Err(Error::PermissionDenied(
                "only the chat's creator or an admin may delete it".into(),
            ));
        }
        if !db::chats::delete(&self.pool, chat_id.get()).await? {
            return Err(crate::error::chat_not_found(chat_id));
        }
        self.hub.deleted(chat_id);
        tracing::info!("chat deleted");
        Ok(())
    }

    /// A page of the caller's chats, most recently active first.
    pub(crate) async fn list_chats(
        &self,
        caller: &Caller,
        page: ChatsPage,
    ) -> Result<Page<Listed>> {
        let rows = db::chats::list_for_user(
            &self.pool,
            caller.user_id.get(),
            page.after.map(|(at, id)| (at, id.get())),
            page.size + 1,
        )
        .await?;
        Ok(Page::of(rows, page.size))
    }

    /// A chat with its members' current names, as `caller` may see it
    /// (members and admins), and the caller's role in it.
    pub(crate) async fn view_chat(
        &self,
        caller: &Caller,
        forwarded: &Forwarded,
        chat_id: ChatId,
    ) -> Result<ChatView> {
        let chat = db::chats::get(&self.pool, chat_id.get())
            .await?
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        let members = db::members::list(&self.pool, chat_id.get()).await?;
        let is_member = members
            .iter()
            .any(|member| member.user_id == caller.user_id.get());
        if !is_member && !caller.is_admin {
            return Err(crate::error::chat_not_found(chat_id));
        }
        let ids: Vec<i64> = members.iter().map(|member| member.user_id).collect();
        let mut names: HashMap<i64, String> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.auth
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
        let role = role_of(UserId::new(chat.created_by), is_member, caller);
        let members = members
            .into_iter()
            .map(|member| {
                let name = names.remove(&member.user_id).unwrap_or_default();
                (member, name)
            })
            .collect();
        Ok(ChatView {
            chat,
            members,
            role,
        })
    }

    /// Renames a chat: its creator or an admin may. The chat as renamed.
    pub(crate) async fn rename_chat(
        &self,
        caller: &Caller,
        forwarded: &Forwarded,
        rename: Rename,
    ) -> Result<ChatView> {
        let chat_id = rename.chat_id;
        let mut tx = self.pool.begin().await?;
        lock_to_manage(&mut tx, chat_id, caller).await?;
        db::chats::rename(&mut *tx, chat_id.get(), rename.title.as_str()).await?;
        tx.commit().await?;
        tracing::info!("chat renamed");
        self.view_chat(caller, forwarded, chat_id).await
    }
}
