//! Typing is never stored: the database only carries its announcements
//! to the other replicas, when PostgreSQL is the fan-out bus.

use sqlx::PgExecutor;

use crate::error::Result;

/// Tells every replica that listens on `chat_events` who is typing where,
/// for how long: `typing:<chat_id>:<user_id>:<for_ms>`.
pub async fn announce_typing(
    db: impl PgExecutor<'_>,
    chat_ids: &[i64],
    user_ids: &[i64],
    for_ms: &[i64],
) -> Result<()> {
    sqlx::query!(
        r#"select count(pg_notify('chat_events', 'typing:' || c || ':' || u || ':' || f)) as "announced!"
           from unnest($1::bigint[], $2::bigint[], $3::bigint[]) as t(c, u, f)"#,
        chat_ids,
        user_ids,
        for_ms
    )
    .fetch_one(db)
    .await?;
    Ok(())
}
