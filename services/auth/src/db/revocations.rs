//! `token_revocations`: per user, the lowest access token version still
//! valid, and the name access tokens issued before a rename must answer to.

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

pub struct RevocationRow {
    pub user_id: i64,
    pub min_token_version: i64,
    pub current_name: Option<String>,
    /// Orders renames: the higher number is the later name.
    pub name_version: i64,
    pub revoked_at: OffsetDateTime,
}

/// Raises the user's minimum version (never lowers it); the trigger
/// notifies every replica.
pub async fn raise(db: impl PgExecutor<'_>, user_id: i64, min_token_version: i64) -> Result<()> {
    sqlx::query!(
        "insert into token_revocations (user_id, min_token_version) values ($1, $2)
         on conflict (user_id) do update
         set min_token_version = greatest(token_revocations.min_token_version, excluded.min_token_version),
             revoked_at = now()",
        user_id,
        min_token_version
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that the user is now called `name`, for the access tokens that
/// still carry an older one; the trigger notifies every replica. The
/// rename's number, later than every earlier rename's.
pub async fn rename(db: impl PgExecutor<'_>, user_id: i64, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        "insert into token_revocations (user_id, min_token_version, current_name, name_version)
         values ($1, 0, $2, nextval('name_versions'))
         on conflict (user_id) do update
         set current_name = excluded.current_name, name_version = excluded.name_version, revoked_at = now()
         returning name_version",
        user_id,
        name
    )
    .fetch_one(db)
    .await?)
}

pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<RevocationRow>> {
    Ok(sqlx::query_as!(
        RevocationRow,
        "select user_id, min_token_version, current_name, name_version, revoked_at from token_revocations"
    )
    .fetch_all(db)
    .await?)
}

/// Deletes the entries older than `age`: every token issued before them
/// has expired. How many went.
pub async fn prune(db: impl PgExecutor<'_>, age: Duration) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from token_revocations where revoked_at < now() - make_interval(secs => $1::float8)",
        age.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
