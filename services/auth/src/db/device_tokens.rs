//! `device_tokens`: what logins hand out so that the next login from the
//! same device is throttled per device (see `crate::lockout`). Kept only
//! as SHA-256 digests.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

/// The user whose unexpired device token `digest` is, if a login names
/// them (as typed, or in NFKC; see `users::login_candidate`).
pub async fn is_bound_to(
    db: impl PgExecutor<'_>,
    digest: &[u8],
    typed: &str,
    normalized: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "select d.user_id from device_tokens d join users u on u.id = d.user_id
         where d.token_hash = $1 and d.expires_at > now()
           and lower(u.name) in (lower($2), lower($3))",
        digest,
        typed,
        normalized
    )
    .fetch_optional(db)
    .await?)
}

/// Stores a new device token for `user_id`, drops the one it replaces (if
/// that was the same user's), and keeps only the user's `per_user` newest.
pub async fn issue(
    db: impl PgExecutor<'_>,
    digest: &[u8],
    user_id: i64,
    expires_at: OffsetDateTime,
    replaces: Option<&[u8]>,
    per_user: u32,
) -> Result<()> {
    sqlx::query!(
        "with replaced as (
            delete from device_tokens where token_hash = $4 and user_id = $2
        ), issued as (
            insert into device_tokens (token_hash, user_id, expires_at) values ($1, $2, $3)
        )
        delete from device_tokens where token_hash in (
            select token_hash from device_tokens
            where user_id = $2 and token_hash is distinct from $4
            order by issued_at desc
            offset greatest($5::int4 - 1, 0)
        )",
        digest,
        user_id,
        expires_at,
        replaces,
        per_user as i32
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes up to `batch` expired device tokens.
pub async fn prune(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from device_tokens where token_hash in (
            select token_hash from device_tokens where expires_at <= now()
            limit $1 for update skip locked
        )",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
