//! Who may do what to a chat. Members only: to anyone else a chat does not
//! exist (`NOT_FOUND`), so chat ids cannot be probed.

use sqlx::PgConnection;

use crate::db;
use crate::db::members::Locked;
use crate::domain::{Caller, ChatId, UserId};
use crate::error::Error;

/// The caller's standing in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Creator,
    Member,
    /// Not a member (an admin looking in).
    None,
}

/// Who may rename a chat and add or remove its members: its creator and
/// admins. To anyone else who is not a member the chat does not exist.
pub(crate) fn check_manage(
    chat_id: ChatId,
    created_by: UserId,
    is_member: bool,
    caller: &Caller,
) -> Result<(), Error> {
    if !is_member && !caller.is_admin {
        return Err(crate::error::chat_not_found(chat_id));
    }
    if (created_by != caller.user_id || !is_member) && !caller.is_admin {
        return Err(Error::PermissionDenied(
            "only the chat's creator or an admin may change its title or members".into(),
        ));
    }
    Ok(())
}

/// Locks the chat's row for a change of its title or members, and refuses
/// a caller who may not make one; the chat as the lock found it.
pub(crate) async fn lock_to_manage(
    tx: &mut PgConnection,
    chat_id: ChatId,
    caller: &Caller,
) -> Result<Locked, Error> {
    let chat = db::members::lock(tx, chat_id.get(), caller.user_id.get())
        .await?
        .ok_or_else(|| crate::error::chat_not_found(chat_id))?;
    check_manage(
        chat_id,
        UserId::new(chat.created_by),
        chat.caller_is_member,
        caller,
    )?;
    Ok(chat)
}

/// The caller's role in a chat, given whether they are a member.
pub(crate) fn role_of(created_by: UserId, is_member: bool, caller: &Caller) -> Role {
    match is_member {
        true if created_by == caller.user_id => Role::Creator,
        true => Role::Member,
        false => Role::None,
    }
}
