//! `totp_credentials` and `recovery_codes`: a user's second factor.

use sqlx::PgExecutor;

use crate::error::Result;

/// Stores `secret` as the user's pending secret, replacing any pending
/// one, unless two-factor login is on already: whether it was stored.
pub async fn enroll(db: impl PgExecutor<'_>, user_id: i64, secret: &[u8]) -> Result<bool> {
    let stored = sqlx::query!(
        "insert into totp_credentials (user_id, secret) values ($1, $2)
         on conflict (user_id) do update
         set secret = excluded.secret, last_step = 0, created_at = now()
         where totp_credentials.confirmed_at is null",
        user_id,
        secret
    )
    .execute(db)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// A user's secret, and whether it is confirmed (two-factor login on).
pub struct Credential {
    pub secret: Vec<u8>,
    pub confirmed: bool,
    pub last_step: i64,
}

pub async fn credential(db: impl PgExecutor<'_>, user_id: i64) -> Result<Option<Credential>> {
    Ok(sqlx::query_as!(
        Credential,
        r#"select secret, confirmed_at is not null as "confirmed!", last_step
           from totp_credentials where user_id = $1"#,
        user_id
    )
    .fetch_optional(db)
    .await?)
}

/// Takes `step` as the user's last used, if it is later than the last:
/// whether it was (a code is accepted once, by whoever takes its step
/// first).
pub async fn use_step(db: impl PgExecutor<'_>, user_id: i64, step: i64) -> Result<bool> {
    let used = sqlx::query!(
        "update totp_credentials set last_step = $2 where user_id = $1 and last_step < $2",
        user_id,
        step
    )
    .execute(db)
    .await?;
    Ok(used.rows_affected() == 1)
}

/// Turns two-factor login on with `codes` (digests) as the recovery
/// codes, replacing any earlier ones; whether the pending secret was still
/// `secret`, unconfirmed, to confirm.
pub async fn confirm(
    db: &mut sqlx::PgConnection,
    user_id: i64,
    secret: &[u8],
    step: i64,
    codes: &[Vec<u8>],
) -> Result<bool> {
    // The secret the code was checked against, not one enrolled since.
    let confirmed = sqlx::query!(
        "update totp_credentials set confirmed_at = now(), last_step = $2
         where user_id = $1 and confirmed_at is null and last_step < $2 and secret = $3",
        user_id,
        step,
        secret
    )
    .execute(&mut *db)
    .await?;
    if confirmed.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query!("delete from recovery_codes where user_id = $1", user_id)
        .execute(&mut *db)
        .await?;
    sqlx::query!(
        "insert into recovery_codes (user_id, code_hash) select $1, unnest($2::bytea[])",
        user_id,
        codes
    )
    .execute(&mut *db)
    .await?;
    Ok(true)
}

/// Uses one of the user's recovery codes (its digest): whether it was
/// theirs and unused.
pub async fn use_recovery_code(
    db: impl PgExecutor<'_>,
    user_id: i64,
    digest: &[u8],
) -> Result<bool> {
    let used = sqlx::query!(
        "update recovery_codes set used_at = now()
         where user_id = $1 and code_hash = $2 and used_at is null",
        user_id,
        digest
    )
    .execute(db)
    .await?;
    Ok(used.rows_affected() == 1)
}

/// Turns two-factor login off: the secret and recovery codes go.
pub async fn remove(db: &mut sqlx::PgConnection, user_id: i64) -> Result<()> {
    sqlx::query!("delete from totp_credentials where user_id = $1", user_id)
        .execute(&mut *db)
        .await?;
    sqlx::query!("delete from recovery_codes where user_id = $1", user_id)
        .execute(&mut *db)
        .await?;
    Ok(())
}
