//! `mail_outbox`: mail waiting to be sent.

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;
use crate::mail::Mail;

/// A mail a sender has claimed.
pub struct Claimed {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Tries so far, this one included.
    pub attempts: i32,
    pub deliver_by: OffsetDateTime,
}

/// Queues `mail`, to be dropped if not sent by `deliver_by`. A mail about
/// a user's token replaces the user's unsent mail of its kind.
pub async fn enqueue(
    db: impl PgExecutor<'_>,
    user_id: Option<i64>,
    mail: &Mail,
    replaces: bool,
    deliver_by: OffsetDateTime,
) -> Result<()> {
    sqlx::query!(
        "with replaced as (
             delete from mail_outbox
             where $6 and user_id = $1 and kind = $2
         )
         insert into mail_outbox (user_id, kind, recipient, subject, body, deliver_by)
         values ($1, $2, $3, $4, $5, $7)",
        user_id,
        mail.kind,
        mail.recipient,
        mail.subject,
        mail.body,
        replaces,
        deliver_by
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Claims up to `batch` due mails for `lease`: no other sender takes them
/// until it ends, and if this one stops before settling them, they are
/// tried again then.
pub async fn claim(db: impl PgExecutor<'_>, batch: i64, lease: Duration) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as!(
        Claimed,
        "update mail_outbox set
             next_attempt_at = now() + make_interval(secs => $2),
             attempts = attempts + 1
         where id in (
             select id from mail_outbox where next_attempt_at <= now() and deliver_by > now()
             order by next_attempt_at, id limit $1
             for update skip locked
         )
         returning id, kind, recipient, subject, body, attempts, deliver_by",
        batch,
        lease.as_secs_f64()
    )
    .fetch_all(db)
    .await?)
}

/// A mail sent (or given up): gone, unless another sender has claimed it
/// since (its claim ran out), which settles it then.
pub async fn settle(db: impl PgExecutor<'_>, id: i64, attempts: i32) -> Result<()> {
    sqlx::query!(
        "delete from mail_outbox where id = $1 and attempts = $2",
        id,
        attempts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A mail that could not be sent: tried again after `wait`.
pub async fn retry_later(
    db: impl PgExecutor<'_>,
    id: i64,
    attempts: i32,
    wait: Duration,
    error: &str,
) -> Result<()> {
    sqlx::query!(
        "update mail_outbox set next_attempt_at = now() + make_interval(secs => $2),
             last_error = $3
         where id = $1 and attempts = $4",
        id,
        wait.as_secs_f64(),
        error,
        attempts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Drops up to `batch` mails not sent in time; how many.
pub async fn prune(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from mail_outbox where id in
             (select id from mail_outbox where deliver_by <= now() limit $1)",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
