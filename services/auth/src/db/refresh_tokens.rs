//! `refresh_tokens`: token families, stored by digest.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

pub async fn insert(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    family_id: Uuid,
    user_id: i64,
    expires_at: OffsetDateTime,
) -> Result<()> {
    sqlx::query!(
        "insert into refresh_tokens (token_hash, family_id, user_id, expires_at) values ($1, $2, $3, $4)",
        token_hash,
        family_id,
        user_id,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

pub struct Retired {
    pub family_id: Uuid,
    pub user_id: i64,
}

/// Retires the token if it is active (not retired, revoked or expired), in
/// one statement: of two concurrent calls with one token, one retires it
/// and the other finds it already retired.
pub async fn retire_if_active(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Retired>> {
    Ok(sqlx::query_as!(
        Retired,
        "update refresh_tokens set retired_at = now()
         where token_hash = $1 and retired_at is null and revoked_at is null and expires_at > now()
         returning family_id, user_id",
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// The owner of an active token, as of now.
pub struct ActiveOwner {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub token_version: i64,
}

pub async fn active_owner(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<ActiveOwner>> {
    Ok(sqlx::query_as!(
        ActiveOwner,
        "select u.id as user_id, u.name, u.role, u.token_version
         from refresh_tokens t join users u on u.id = t.user_id
         where t.token_hash = $1 and t.retired_at is null and t.revoked_at is null and t.expires_at > now()",
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// What became of a token that is not active.
pub struct TokenState {
    pub family_id: Uuid,
    pub user_id: i64,
    pub retired: bool,
    pub revoked: bool,
}

pub async fn state(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<TokenState>> {
    Ok(sqlx::query_as!(
        TokenState,
        r#"select family_id, user_id,
                retired_at is not null as "retired!",
                revoked_at is not null as "revoked!"
         from refresh_tokens where token_hash = $1"#,
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// Revokes every token of the family; how many were still unrevoked.
pub async fn revoke_family(db: impl PgExecutor<'_>, family_id: Uuid) -> Result<u64> {
    let revoked = sqlx::query!(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
        family_id
    )
    .execute(db)
    .await?;
    Ok(revoked.rows_affected())
}

pub async fn revoke_all_of_user(db: impl PgExecutor<'_>, user_id: i64) -> Result<u64> {
    let revoked = sqlx::query!(
        "update refresh_tokens set revoked_at = now() where user_id = $1 and revoked_at is null",
        user_id
    )
    .execute(db)
    .await?;
    Ok(revoked.rows_affected())
}
