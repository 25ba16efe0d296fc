//! `email_tokens`: the single-use tokens mails carry, as digests.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }
}

/// Whose a token was, and the address it was sent to.
pub struct Taken {
    pub user_id: i64,
    pub email: String,
}

/// Stores a token for `user_id`'s `email`, replacing any earlier one of
/// that purpose.
pub async fn issue(
    db: impl PgExecutor<'_>,
    digest: &[u8],
    user_id: i64,
    purpose: Purpose,
    email: &str,
    expires_at: OffsetDateTime,
) -> Result<()> {
    sqlx::query!(
        "insert into email_tokens (digest, user_id, purpose, email, expires_at)
         values ($1, $2, $3, $4, $5)
         on conflict (user_id, purpose) do update set
             digest = excluded.digest, email = excluded.email,
             created_at = now(), expires_at = excluded.expires_at",
        digest,
        user_id,
        purpose.as_str(),
        email,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Uses a token up: whose it was, if it was unexpired.
pub async fn take(
    db: impl PgExecutor<'_>,
    digest: &[u8],
    purpose: Purpose,
) -> Result<Option<Taken>> {
    Ok(sqlx::query_as!(
        Taken,
        "delete from email_tokens
         where digest = $1 and purpose = $2 and expires_at > now()
         returning user_id, email",
        digest,
        purpose.as_str()
    )
    .fetch_optional(db)
    .await?)
}

/// Whose a live token is, without using it.
pub async fn owner(
    db: impl PgExecutor<'_>,
    digest: &[u8],
    purpose: Purpose,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "select user_id from email_tokens
         where digest = $1 and purpose = $2 and expires_at > now()",
        digest,
        purpose.as_str()
    )
    .fetch_optional(db)
    .await?)
}

/// The transaction's commit answers without waiting for its flush to disk.
pub async fn without_flush_wait(db: impl PgExecutor<'_>) -> Result<()> {
    sqlx::query!("set local synchronous_commit = off")
        .execute(db)
        .await?;
    Ok(())
}

/// Ends the user's live tokens of this purpose (a new password ends the
/// reset tokens asked for before it).
pub async fn end(db: impl PgExecutor<'_>, user_id: i64, purpose: Purpose) -> Result<()> {
    sqlx::query!(
        "delete from email_tokens where user_id = $1 and purpose = $2",
        user_id,
        purpose.as_str()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// When the user's live token of this purpose was issued, if they have one.
pub async fn issued_at(
    db: impl PgExecutor<'_>,
    user_id: i64,
    purpose: Purpose,
) -> Result<Option<OffsetDateTime>> {
    Ok(sqlx::query_scalar!(
        "select created_at from email_tokens
         where user_id = $1 and purpose = $2 and expires_at > now()",
        user_id,
        purpose.as_str()
    )
    .fetch_optional(db)
    .await?)
}

/// For a password reset asked for by address: if a user has `email`, and
/// has verified it, stores the token and queues its mail (made by `mail`
/// from the user's address as stored), all in one statement, so that an
/// address with an account and one without take the same round trip.
/// Whether a mail was queued.
#[allow(clippy::too_many_arguments)]
pub async fn issue_reset_by_address(
    db: impl PgExecutor<'_>,
    email: &str,
    digest: &[u8],
    expires_at: OffsetDateTime,
    kind: &str,
    subject: &str,
    body: &str,
) -> Result<bool> {
    let queued = sqlx::query_scalar!(
        r#"with target as (
               select id, email from users
               where lower(email) = lower($1) and email_verified_at is not null
           ), token as (
               insert into email_tokens (digest, user_id, purpose, email, expires_at)
               select $2, id, 'reset_password', email, $3 from target
               on conflict (user_id, purpose) do update set
                   digest = excluded.digest, email = excluded.email,
                   created_at = now(), expires_at = excluded.expires_at
               returning user_id, email
           ), replaced as (
               delete from mail_outbox
               where kind = $4 and user_id in (select user_id from token)
           ), queued as (
               insert into mail_outbox (user_id, kind, recipient, subject, body, deliver_by)
               select user_id, $4, email, $5, $6, $3 from token
               returning id
           )
           select count(*) as "queued!" from queued"#,
        email,
        digest,
        expires_at,
        kind,
        subject,
        body
    )
    .fetch_one(db)
    .await?;
    Ok(queued > 0)
}

/// Drops up to `batch` expired tokens; how many.
pub async fn prune(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from email_tokens where digest in
             (select digest from email_tokens where expires_at <= now() limit $1)",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
