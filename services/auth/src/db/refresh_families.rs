//! `refresh_families`: one per login; revoking one ends all its tokens.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// Who a family was started for, as the users table says at that moment.
pub struct Started {
    pub name: String,
    pub role: String,
}

/// Starts a family for `user_id`, unless the user's token version is no
/// longer `token_version` (their password, role or existence changed since
/// it was read): `None` then, and nothing is stored.
pub async fn start(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user_id: i64,
    token_version: i64,
    expires_at: OffsetDateTime,
) -> Result<Option<Started>> {
    Ok(sqlx::query_as!(
        Started,
        r#"with owner as (
            select id, name, role from users where id = $2 and token_version = $3 for share
        ), family as (
            insert into refresh_families (id, user_id, token_version, expires_at)
            select $1, owner.id, $3, $4 from owner
            returning id
        )
        select owner.name as "name!", owner.role as "role!" from owner, family"#,
        id,
        user_id,
        token_version,
        expires_at
    )
    .fetch_optional(db)
    .await?)
}

/// Revokes the family; whether it was not revoked already.
pub async fn revoke(db: impl PgExecutor<'_>, family_id: Uuid) -> Result<bool> {
    let revoked = sqlx::query!(
        "update refresh_families set revoked_at = now() where id = $1 and revoked_at is null",
        family_id
    )
    .execute(db)
    .await?;
    Ok(revoked.rows_affected() == 1)
}

/// Deletes families no token of which can be used again: past their
/// lifetime, revoked a day ago or more, started at an older token version
/// than the user's, or with no unexpired token left. Their tokens go with
/// them. How many went.
pub async fn prune(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from refresh_families f using users u
         where u.id = f.user_id
           and f.id in (
               select f.id from refresh_families f join users u on u.id = f.user_id
               where f.expires_at <= now()
                  or f.revoked_at <= now() - interval '1 day'
                  or f.token_version <> u.token_version
                  or not exists (select 1 from refresh_tokens t
                                 where t.family_id = f.id and t.expires_at > now())
               limit $1 for update of f skip locked
           )
           and (f.expires_at <= now()
                or f.revoked_at <= now() - interval '1 day'
                or f.token_version <> u.token_version
                or not exists (select 1 from refresh_tokens t
                               where t.family_id = f.id and t.expires_at > now()))",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
