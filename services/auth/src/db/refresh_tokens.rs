//! `refresh_tokens`: the tokens of each family, stored by digest. Whether
//! a token may be used is decided with its family and its user, in the
//! statement that uses it (see `migrations/auth`).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// Adds a token to the family, expiring at `expires_at` or with the
/// family, whichever comes first.
pub async fn insert(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    family_id: Uuid,
    expires_at: OffsetDateTime,
) -> Result<()> {
    sqlx::query!(
        "insert into refresh_tokens (token_hash, family_id, expires_at)
         select $1, id, least($3, expires_at) from refresh_families where id = $2",
        token_hash,
        family_id,
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

/// Retires the token if it may be used (it is not retired or expired, and
/// its family is live at the user's current token version), in one
/// statement: of two concurrent calls with one token, one retires it and
/// the other finds it retired.
pub async fn retire_if_usable(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Retired>> {
    Ok(sqlx::query_as!(
        Retired,
        "update refresh_tokens t set retired_at = now()
         from refresh_families f join users u on u.id = f.user_id
         where t.token_hash = $1 and t.retired_at is null and t.expires_at > now()
           and f.id = t.family_id and f.revoked_at is null and f.expires_at > now()
           and f.token_version = u.token_version
         returning t.family_id, f.user_id",
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// The owner of a usable token, as of now.
pub struct Owner {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub token_version: i64,
    pub family_id: Uuid,
}

pub async fn usable_owner(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<Owner>> {
    Ok(sqlx::query_as!(
        Owner,
        "select u.id as user_id, u.name, u.role, u.token_version, f.id as family_id
         from refresh_tokens t
         join refresh_families f on f.id = t.family_id
         join users u on u.id = f.user_id
         where t.token_hash = $1 and t.retired_at is null and t.expires_at > now()
           and f.revoked_at is null and f.expires_at > now()
           and f.token_version = u.token_version",
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// What became of a token, usable or not.
pub struct TokenState {
    pub family_id: Uuid,
    pub user_id: i64,
    pub retired: bool,
    /// Its family was revoked, or its user's tokens were.
    pub revoked: bool,
}

pub async fn state(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<TokenState>> {
    Ok(sqlx::query_as!(
        TokenState,
        r#"select t.family_id, f.user_id,
                t.retired_at is not null as "retired!",
                (f.revoked_at is not null or f.token_version <> u.token_version) as "revoked!"
         from refresh_tokens t
         join refresh_families f on f.id = t.family_id
         join users u on u.id = f.user_id
         where t.token_hash = $1"#,
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// Deletes up to `batch` expired tokens; how many went.
pub async fn prune_expired(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from refresh_tokens where id in (
            select id from refresh_tokens where expires_at <= now() limit $1
        )",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
