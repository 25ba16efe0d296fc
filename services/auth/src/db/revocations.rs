//! `token_revocations`: the lowest access token version still valid, per user.

use sqlx::PgExecutor;

use crate::error::Result;

pub struct RevocationRow {
    pub user_id: i64,
    pub min_token_version: i64,
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

pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<RevocationRow>> {
    Ok(sqlx::query_as!(
        RevocationRow,
        "select user_id, min_token_version from token_revocations"
    )
    .fetch_all(db)
    .await?)
}
