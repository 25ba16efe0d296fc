//! Who is in a chat: adding members, and removing them (or oneself). A
//! chat's creator role passes on when its creator leaves, and a chat whose
//! last member left is deleted.

use super::rules::{check_manage, lock_to_manage};
use super::{App, Forwarded};
use crate::db;
use crate::domain::{Caller, ChatId, UserId, Usernames};
use crate::error::{Error, Result};

/// A chat has at most this many members: one `GetChat` resolves them all
/// in one call to auth.
const MAX_MEMBERS: i64 = 1000;

/// Users to add to a chat, by name.
pub(crate) struct NewMembers {
    pub(crate) chat_id: ChatId,
    pub(crate) usernames: Usernames,
}

/// A member to remove from a chat.
pub(crate) struct Removal {
    pub(crate) chat_id: ChatId,
    pub(crate) user_id: UserId,
}

/// What a removal did.
pub(crate) struct Removed {
    pub(crate) removed: bool,
    pub(crate) chat_deleted: bool,
}

impl App {
    /// Adds the users named who are not members yet; their ids.
    pub(crate) async fn add_members(
        &self,
        caller: &Caller,
        forwarded: &Forwarded,
        new: NewMembers,
    ) -> Result<Vec<UserId>> {
        let chat_id = new.chat_id;
        // Who may, before anything about the names is asked or told.
        self.may_manage(chat_id, caller).await?;
        self.quotas
            .add_members(caller.user_id, new.usernames.len())?;

        let mut user_ids = self.user_ids(forwarded, new.usernames).await?;
        user_ids.sort_unstable();
        user_ids.dedup();

        // Asked again under the chat's lock: the chat may have gone, or the
        // caller lost the right, while auth was asked.
        let mut tx = self.pool.begin().await?;
        let chat = lock_to_manage(&mut tx, chat_id, caller).await?;
        let added = db::members::add(&mut tx, chat_id.get(), &user_ids).await?;
        if chat.member_count + added.len() as i64 > MAX_MEMBERS {
            return Err(Error::FailedPrecondition(format!(
                "a chat has at most {MAX_MEMBERS} members; chat {chat_id} has {}",
                chat.member_count
            )));
        }
        tx.commit().await?;
        tracing::info!(added = added.len(), "members added");
        Ok(added.into_iter().map(UserId::new).collect())
    }

    /// Removes a member: the chat's creator or an admin may remove anyone,
    /// and every member may remove themselves.
    pub(crate) async fn remove_member(&self, caller: &Caller, removal: Removal) -> Result<Removed> {
        let Removal { chat_id, user_id } = removal;
        let mut tx = self.pool.begin().await?;
        let chat = db::members::lock(&mut tx, chat_id.get(), caller.user_id.get())
            .await?
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        if !chat.caller_is_member && !caller.is_admin {
            return Err(crate::error::chat_not_found(chat_id));
        }
        let created_by = UserId::new(chat.created_by);
        if user_id != caller.user_id {
            check_manage(chat_id, created_by, chat.caller_is_member, caller).map_err(|_| {
                Error::PermissionDenied(
                    "only the chat's creator or an admin may remove other members; \
                     members may remove themselves"
                        .into(),
                )
            })?;
        }
        let removed = take_out(&mut tx, chat_id, user_id, &chat).await?;
        tx.commit().await?;
        self.announce(chat_id, user_id, removed);
        Ok(Removed {
            removed: removed.is_some(),
            chat_deleted: removed == Some(TakenOut::ChatDeleted),
        })
    }

    /// Takes a departed user (an account auth deleted) out of every chat
    /// they are in, each as if they had left it; how many chats they left.
    pub(crate) async fn depart(&self, user_id: UserId) -> Result<usize> {
        let mut left = 0;
        for chat_id in db::members::chats_of(&self.pool, user_id.get()).await? {
            let chat_id = ChatId::new(chat_id);
            let mut tx = self.pool.begin().await?;
            let Some(chat) = db::members::lock(&mut tx, chat_id.get(), user_id.get()).await? else {
                continue;
            };
            let removed = take_out(&mut tx, chat_id, user_id, &chat).await?;
            tx.commit().await?;
            self.announce(chat_id, user_id, removed);
            left += usize::from(removed.is_some());
        }
        if left > 0 {
            tracing::info!(
                user_id = user_id.get(),
                chats = left,
                "a deleted account left its chats"
            );
        }
        Ok(left)
    }

    /// Tells the streams, here and on other replicas, of a committed
    /// removal.
    fn announce(&self, chat_id: ChatId, user_id: UserId, removed: Option<TakenOut>) {
        match removed {
            Some(TakenOut::ChatDeleted) => {
                self.hub.deleted(chat_id);
                tracing::info!("the last member left; chat deleted");
            }
            Some(TakenOut::Removed { version }) => {
                self.hub.removed(chat_id, user_id, version);
                tracing::info!("member removed");
            }
            None => {}
        }
    }

    /// Refuses a caller who may not manage the chat's members or title.
    async fn may_manage(&self, chat_id: ChatId, caller: &Caller) -> Result<()> {
        let chat = db::chats::for_user(&self.pool, chat_id.get(), caller.user_id.get())
            .await?
            .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
        check_manage(
            chat_id,
            UserId::new(chat.created_by),
            chat.is_member,
            caller,
        )
    }
}

/// What taking a member out of a chat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakenOut {
    /// They were removed, raising the chat's members version to this.
    Removed { version: i64 },
    /// They were its last member: the chat is gone.
    ChatDeleted,
}

/// Takes `user_id` out of the chat `chat` locked, as leaving does: the
/// creator role passes to the longest-standing member, and a chat left
/// empty is deleted. `None` if they were no member.
async fn take_out(
    tx: &mut sqlx::PgConnection,
    chat_id: ChatId,
    user_id: UserId,
    chat: &db::members::Locked,
) -> Result<Option<TakenOut>> {
    let Some(version) = db::members::remove(&mut *tx, chat_id.get(), user_id.get()).await? else {
        return Ok(None);
    };
    if chat.member_count <= 1 {
        db::chats::delete(&mut *tx, chat_id.get()).await?;
        return Ok(Some(TakenOut::ChatDeleted));
    }
    if user_id.get() == chat.created_by {
        match db::members::hand_over(&mut *tx, chat_id.get()).await? {
            Some(creator) => tracing::info!(
                creator,
                "the creator left; the longest-standing member is creator now"
            ),
            None => {
                db::chats::delete(&mut *tx, chat_id.get()).await?;
                return Ok(Some(TakenOut::ChatDeleted));
            }
        }
    }
    Ok(Some(TakenOut::Removed { version }))
}
