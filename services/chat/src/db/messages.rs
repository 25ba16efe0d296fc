//! `messages`.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: i64,
    pub chat_id: i64,
    pub seq: i64,
    pub from_user_id: i64,
    pub from_username: String,
    pub text: String,
    pub created_at: OffsetDateTime,
}

pub struct NewMessage<'a> {
    pub chat_id: i64,
    pub seq: i64,
    pub from_user_id: i64,
    pub from_username: &'a str,
    pub text: &'a str,
    pub client_message_id: Option<&'a str>,
}

pub async fn insert(db: impl PgExecutor<'_>, message: NewMessage<'_>) -> Result<MessageRow> {
    Ok(sqlx::query_as!(
        MessageRow,
        "insert into messages (chat_id, seq, from_user_id, from_username, text, client_message_id)
         values ($1, $2, $3, $4, $5, $6)
         returning id, chat_id, seq, from_user_id, from_username, text, created_at",
        message.chat_id,
        message.seq,
        message.from_user_id,
        message.from_username,
        message.text,
        message.client_message_id
    )
    .fetch_one(db)
    .await?)
}

/// The message a sender already sent with this idempotency key.
pub async fn by_client_message_id(
    db: impl PgExecutor<'_>,
    chat_id: i64,
    from_user_id: i64,
    client_message_id: &str,
) -> Result<Option<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select id, chat_id, seq, from_user_id, from_username, text, created_at from messages
         where chat_id = $1 and from_user_id = $2 and client_message_id = $3",
        chat_id,
        from_user_id,
        client_message_id
    )
    .fetch_optional(db)
    .await?)
}

/// Message `id`, if it is in chat `chat_id`.
pub async fn get(db: impl PgExecutor<'_>, chat_id: i64, id: i64) -> Result<Option<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select id, chat_id, seq, from_user_id, from_username, text, created_at from messages
         where id = $1 and chat_id = $2",
        id,
        chat_id
    )
    .fetch_optional(db)
    .await?)
}

/// Up to `limit` messages older than `before_id`, newest first.
pub async fn page_before(
    db: impl PgExecutor<'_>,
    chat_id: i64,
    before_id: i64,
    limit: i64,
) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select id, chat_id, seq, from_user_id, from_username, text, created_at from messages
         where chat_id = $1 and id < $2 order by id desc limit $3",
        chat_id,
        before_id,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// Up to `limit` messages after sequence number `after_seq`, oldest first.
pub async fn after_seq(
    db: impl PgExecutor<'_>,
    chat_id: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select id, chat_id, seq, from_user_id, from_username, text, created_at from messages
         where chat_id = $1 and seq > $2 order by seq limit $3",
        chat_id,
        after_seq,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// The sequence number of the chat's last message with an id up to
/// `message_id` (0 if none): where a replay after that id starts.
pub async fn seq_at(db: impl PgExecutor<'_>, chat_id: i64, message_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select coalesce(max(seq), 0) as "seq!" from messages where chat_id = $1 and id <= $2"#,
        chat_id,
        message_id
    )
    .fetch_one(db)
    .await?)
}

/// Tells every replica that listens on `chat_events` of each chat's newest
/// message (`chat_ids[i]`, `message_ids[i]`), all in one transaction of its
/// own: never the sending one, so that no send waits for the database-wide
/// lock a transaction with notifications takes at commit.
pub async fn announce(
    db: impl PgExecutor<'_>,
    chat_ids: &[i64],
    message_ids: &[i64],
) -> Result<()> {
    sqlx::query!(
        r#"select count(pg_notify('chat_events', 'message:' || c || ':' || m)) as "announced!"
           from unnest($1::bigint[], $2::bigint[]) as t(c, m)"#,
        chat_ids,
        message_ids
    )
    .fetch_one(db)
    .await?;
    Ok(())
}
