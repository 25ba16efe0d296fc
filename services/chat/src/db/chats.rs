//! `chats` and `chat_members`.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

pub async fn insert(db: impl PgExecutor<'_>, title: &str, created_by: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        "insert into chats (title, created_by) values ($1, $2) returning id",
        title,
        created_by
    )
    .fetch_one(db)
    .await?)
}

/// A chat as one user sees it.
pub struct ChatForUser {
    pub created_by: i64,
    pub is_member: bool,
}

pub async fn for_user(
    db: impl PgExecutor<'_>,
    chat_id: i64,
    user_id: i64,
) -> Result<Option<ChatForUser>> {
    Ok(sqlx::query_as!(
        ChatForUser,
        r#"select created_by,
                exists(select 1 from chat_members m where m.chat_id = c.id and m.user_id = $2) as "is_member!"
         from chats c where id = $1"#,
        chat_id,
        user_id
    )
    .fetch_optional(db)
    .await?)
}

pub async fn is_member(db: impl PgExecutor<'_>, chat_id: i64, user_id: i64) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"select exists(select 1 from chat_members where chat_id = $1 and user_id = $2) as "member!""#,
        chat_id,
        user_id
    )
    .fetch_one(db)
    .await?)
}

/// The sequence number of the chat's latest committed message.
pub async fn last_seq(db: impl PgExecutor<'_>, chat_id: i64) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar!("select last_seq from chats where id = $1", chat_id)
            .fetch_optional(db)
            .await?,
    )
}

/// Whether there was such a chat. Its members and messages go with it.
pub async fn delete(db: impl PgExecutor<'_>, chat_id: i64) -> Result<bool> {
    let deleted = sqlx::query!("delete from chats where id = $1", chat_id)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Where a chat stands, as the hub's poll compares it.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub last_seq: i64,
    pub members_version: i64,
}

/// The standing of each of `chat_ids` that still exists.
pub async fn standings(db: impl PgExecutor<'_>, chat_ids: &[i64]) -> Result<Vec<(i64, Standing)>> {
    Ok(sqlx::query!(
        "select id, last_seq, members_version from chats where id = any($1)",
        chat_ids
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| {
        (
            row.id,
            Standing {
                last_seq: row.last_seq,
                members_version: row.members_version,
            },
        )
    })
    .collect())
}

pub struct ChatRow {
    pub id: i64,
    pub title: String,
    pub created_by: i64,
    pub created_at: OffsetDateTime,
}

pub async fn get(db: impl PgExecutor<'_>, chat_id: i64) -> Result<Option<ChatRow>> {
    Ok(sqlx::query_as!(
        ChatRow,
        "select id, title, created_by, created_at from chats where id = $1",
        chat_id
    )
    .fetch_optional(db)
    .await?)
}

/// Whether there was such a chat.
pub async fn rename(db: impl PgExecutor<'_>, chat_id: i64, title: &str) -> Result<bool> {
    let renamed = sqlx::query!("update chats set title = $2 where id = $1", chat_id, title)
        .execute(db)
        .await?;
    Ok(renamed.rows_affected() == 1)
}

/// One of a user's chats, with its newest message if it has one.
pub struct Listed {
    pub id: i64,
    pub title: String,
    pub created_by: i64,
    pub last_activity_at: OffsetDateTime,
    pub member_count: i64,
    pub message_id: Option<i64>,
    pub message_seq: Option<i64>,
    pub message_from_user_id: Option<i64>,
    pub message_from_username: Option<String>,
    pub message_text: Option<String>,
    pub message_created_at: Option<OffsetDateTime>,
    pub members_version: i64,
    /// The user's read marker.
    pub read_message_id: i64,
    /// Messages after it: the chat's last sequence number less the
    /// marker's, so constant work per chat.
    pub unread: i64,
}

/// Up to `limit` of the user's chats, most recent activity first, after
/// the chat `after` names (its last activity and id), if given.
pub async fn list_for_user(
    db: impl PgExecutor<'_>,
    user_id: i64,
    after: Option<(OffsetDateTime, i64)>,
    limit: i64,
) -> Result<Vec<Listed>> {
    let (after_at, after_id) = after.unzip();
    Ok(sqlx::query_as!(
        Listed,
        r#"select c.id, c.title, c.created_by, c.last_activity_at,
                  (select count(*) from chat_members n where n.chat_id = c.id) as "member_count!",
                  m.id as "message_id?", m.seq as "message_seq?",
                  m.from_user_id as "message_from_user_id?",
                  m.from_username as "message_from_username?",
                  m.text as "message_text?", m.created_at as "message_created_at?",
                  c.members_version, me.read_message_id,
                  greatest(c.last_seq - me.read_seq, 0) as "unread!"
           from chat_members me
           join chats c on c.id = me.chat_id
           left join messages m on m.chat_id = c.id and m.seq = c.last_seq
           where me.user_id = $1
             and ($2::timestamptz is null or (c.last_activity_at, c.id) < ($2, $3))
           order by c.last_activity_at desc, c.id desc
           limit $4"#,
        user_id,
        after_at,
        after_id,
        limit
    )
    .fetch_all(db)
    .await?)
}
