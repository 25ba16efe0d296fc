//! `chat_members`: who is in a chat, and changes to it. Every change of
//! who is a member takes the chat's row lock first, so changes to one
//! chat (and its sends) are ordered, and a member count read under the
//! lock stays true until the commit. Moving a read marker
//! ([`super::read_markers`]) changes one member's own row only, and takes
//! no chat lock.

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::error::Result;

/// A chat as a change to its members finds it, locked.
pub struct Locked {
    pub created_by: i64,
    pub member_count: i64,
    /// Whether the user making the change is a member.
    pub caller_is_member: bool,
}

/// Locks the chat's row until the transaction ends; `None` if there is no
/// such chat. The members are counted (and `caller` looked for among
/// them) by a statement of their own, after the lock is held: one
/// statement reads as of when it started, which, for a statement that
/// waited for the lock, is before the change it waited for.
pub async fn lock(db: &mut PgConnection, chat_id: i64, caller: i64) -> Result<Option<Locked>> {
    let Some(created_by) = sqlx::query_scalar!(
        "select created_by from chats where id = $1 for update",
        chat_id
    )
    .fetch_optional(&mut *db)
    .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query!(
        r#"select count(*) as "count!", coalesce(bool_or(user_id = $2), false) as "caller!"
           from chat_members where chat_id = $1"#,
        chat_id,
        caller
    )
    .fetch_one(db)
    .await?;
    Ok(Some(Locked {
        created_by,
        member_count: members.count,
        caller_is_member: members.caller,
    }))
}

/// Adds the users who are not members yet; returns those added. A new
/// member starts with the chat's history read: their read marker is at its
/// last message (the chat's row is locked, so it stays the last).
pub async fn add(db: &mut PgConnection, chat_id: i64, user_ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        "insert into chat_members (chat_id, user_id, read_seq, read_message_id)
         select $1, u, c.last_seq,
                coalesce((select id from messages s where s.chat_id = $1 and s.seq = c.last_seq), 0)
         from unnest($2::bigint[]) as u, chats c
         where c.id = $1
         on conflict do nothing returning user_id",
        chat_id,
        user_ids
    )
    .fetch_all(db)
    .await?)
}

/// The chat's new members version if the user was a member. A removal
/// raises it: replicas compare it to end the removed member's streams,
/// and a send that waited for the chat's lock meanwhile stores nothing.
pub async fn remove(db: &mut PgConnection, chat_id: i64, user_id: i64) -> Result<Option<i64>> {
    let removed = sqlx::query!(
        "delete from chat_members where chat_id = $1 and user_id = $2",
        chat_id,
        user_id
    )
    .execute(&mut *db)
    .await?
    .rows_affected()
        == 1;
    if !removed {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_scalar!(
            "update chats set members_version = members_version + 1 where id = $1
             returning members_version",
            chat_id
        )
        .fetch_one(db)
        .await?,
    ))
}

/// Makes the longest-standing member the chat's creator; `None` if the chat
/// has no member left.
pub async fn hand_over(db: &mut PgConnection, chat_id: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        r#"update chats c set created_by = m.user_id
           from (select user_id from chat_members where chat_id = $1
                 order by joined_at, user_id limit 1) m
           where c.id = $1
           returning c.created_by"#,
        chat_id
    )
    .fetch_optional(db)
    .await?)
}

pub struct MemberRow {
    pub user_id: i64,
    pub joined_at: OffsetDateTime,
    /// The last message the member has read; 0 if none.
    pub read_message_id: i64,
}

/// The chat's members in the order they joined.
pub async fn list(db: impl sqlx::PgExecutor<'_>, chat_id: i64) -> Result<Vec<MemberRow>> {
    Ok(sqlx::query_as!(
        MemberRow,
        "select user_id, joined_at, read_message_id from chat_members
         where chat_id = $1 order by joined_at, user_id",
        chat_id
    )
    .fetch_all(db)
    .await?)
}

/// The chat's members version and its members as of that version, read
/// together; `None` if there is no such chat.
pub async fn as_of_now(
    db: impl sqlx::PgExecutor<'_>,
    chat_id: i64,
) -> Result<Option<(i64, Vec<i64>)>> {
    Ok(sqlx::query!(
        r#"select c.members_version,
                  coalesce(array_agg(m.user_id) filter (where m.user_id is not null), '{}') as "members!"
           from chats c left join chat_members m on m.chat_id = c.id
           where c.id = $1
           group by c.members_version"#,
        chat_id
    )
    .fetch_optional(db)
    .await?
    .map(|row| (row.members_version, row.members)))
}

/// The chat's members version, if the user is a member.
pub async fn membership(
    db: impl sqlx::PgExecutor<'_>,
    chat_id: i64,
    user_id: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "select c.members_version from chats c
         join chat_members m on m.chat_id = c.id and m.user_id = $2
         where c.id = $1",
        chat_id,
        user_id
    )
    .fetch_optional(db)
    .await?)
}

/// The chats the user is a member of.
pub async fn chats_of(db: impl sqlx::PgExecutor<'_>, user_id: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        "select chat_id from chat_members where user_id = $1 order by chat_id",
        user_id
    )
    .fetch_all(db)
    .await?)
}

/// Of `user_ids`, those who are a member of any chat.
pub async fn any_members(db: impl sqlx::PgExecutor<'_>, user_ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"select distinct user_id as "user_id!" from chat_members where user_id = any($1)
           order by 1"#,
        user_ids
    )
    .fetch_all(db)
    .await?)
}

/// Up to `limit` users who are a member of any chat, in order of id, after
/// `after`.
pub async fn members_after(
    db: impl sqlx::PgExecutor<'_>,
    after: i64,
    limit: i64,
) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"select distinct user_id as "user_id!" from chat_members where user_id > $1
           order by 1 limit $2"#,
        after,
        limit
    )
    .fetch_all(db)
    .await?)
}
