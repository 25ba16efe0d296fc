//! `chats` and `chat_members`.

use sqlx::PgExecutor;

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

pub async fn add_members(db: impl PgExecutor<'_>, chat_id: i64, user_ids: &[i64]) -> Result<()> {
    sqlx::query!(
        "insert into chat_members (chat_id, user_id) select $1, unnest($2::bigint[]) on conflict do nothing",
        chat_id,
        user_ids
    )
    .execute(db)
    .await?;
    Ok(())
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

/// The last sequence number of each of `chat_ids` that still exists.
pub async fn last_seqs(db: impl PgExecutor<'_>, chat_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query!(
        "select id, last_seq from chats where id = any($1)",
        chat_ids
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| (row.id, row.last_seq))
    .collect())
}
