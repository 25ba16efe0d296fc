//! Announcements on PostgreSQL's bus: notifications on `chat_events`, for
//! every replica that listens there.

use sqlx::PgExecutor;

use crate::error::Result;

/// Sends each payload on `chat_events`, in order, in one statement and so
/// one transaction of its own: never a sending one, so that no send waits
/// for the database-wide lock a transaction with notifications takes at
/// commit.
pub async fn notify(db: impl PgExecutor<'_>, payloads: &[String]) -> Result<()> {
    sqlx::query!(
        r#"select count(pg_notify('chat_events', p)) as "announced!",
                  -- Committed without waiting for the flush: an
                  -- announcement is at most once anyway, and the poll finds
                  -- what any announcement missed.
                  (select set_config('synchronous_commit', 'off', true)) as "asynchronous!"
           from unnest($1::text[]) as t(p)"#,
        payloads
    )
    .fetch_one(db)
    .await?;
    Ok(())
}
