//! `refresh_families`: one per login; revoking one ends all its tokens.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// Who a family was started for, as the users table says at that moment.
pub struct Started {
    pub name: String,
    pub role: String,
    /// The user's families revoked to keep them under the limit.
    pub evicted: Vec<Uuid>,
}

/// Where a session is used from, as its owner is shown it.
pub struct Origin<'a> {
    /// The client's user agent, already cut to length.
    pub client: &'a str,
    /// The client's address, or empty.
    pub address: &'a str,
}

/// Starts a family for `user_id`, unless the user's token version is no
/// longer `token_version` (their password, role or existence changed since
/// it was read): `None` then, and nothing is stored. The user keeps at most
/// `keep` live families: the least recently used past it are revoked, and
/// named in the answer.
pub async fn start(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user_id: i64,
    token_version: i64,
    expires_at: OffsetDateTime,
    origin: Origin<'_>,
    keep: i64,
) -> Result<Option<Started>> {
    Ok(sqlx::query_as!(
        Started,
        r#"with owner as (
            select id, name, role from users where id = $2 and token_version = $3 for share
        ), family as (
            insert into refresh_families (id, user_id, token_version, expires_at, client, address)
            select $1, owner.id, $3, $4, $5, $6 from owner
            returning id
        ), evicted as (
            update refresh_families f set revoked_at = now()
            where f.id in (
                select id from refresh_families
                where user_id = $2 and revoked_at is null and expires_at > now()
                order by last_used_at desc, id
                offset $7::bigint - 1
            )
            and exists (select 1 from family)
            returning f.id
        )
        select owner.name as "name!", owner.role as "role!",
               array(select id from evicted) as "evicted!"
        from owner, family"#,
        id,
        user_id,
        token_version,
        expires_at,
        origin.client,
        origin.address,
        keep
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

/// Notes that the family was used now, from `address` (empty if
/// unknown), unless that was noted less than a minute ago: a session's
/// last use is shown to the minute, and most uses write nothing.
pub async fn touch(db: impl PgExecutor<'_>, family_id: Uuid, address: &str) -> Result<()> {
    sqlx::query!(
        "update refresh_families
         set last_used_at = now(), address = case when $2 = '' then address else $2 end
         where id = $1 and (last_used_at < now() - interval '1 minute' or (address <> $2 and $2 <> ''))",
        family_id,
        address
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A session as its owner is shown it.
pub struct Listed {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub client: String,
    pub address: String,
}

/// The user's families that can still be used (not revoked, not expired,
/// at the user's token version, with an unexpired token), most recently
/// used first, at most `limit`.
pub async fn usable_of(db: impl PgExecutor<'_>, user_id: i64, limit: i64) -> Result<Vec<Listed>> {
    Ok(sqlx::query_as!(
        Listed,
        "select f.id, f.created_at, f.last_used_at, f.expires_at, f.client, f.address
         from refresh_families f join users u on u.id = f.user_id
         where f.user_id = $1 and f.revoked_at is null and f.expires_at > now()
           and f.token_version = u.token_version
           and exists (select 1 from refresh_tokens t
                       where t.family_id = f.id and t.retired_at is null and t.expires_at > now())
         order by f.last_used_at desc, f.id
         limit $2",
        user_id,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// Revokes the family if it is `user_id`'s: `None` if it is not theirs (or
/// does not exist), else whether it was not revoked already.
pub async fn revoke_owned(
    db: impl PgExecutor<'_>,
    family_id: Uuid,
    user_id: i64,
) -> Result<Option<bool>> {
    Ok(sqlx::query_scalar!(
        r#"with target as (
            select id, revoked_at is null as live from refresh_families
            where id = $1 and user_id = $2 for update
        ), revoked as (
            update refresh_families f set revoked_at = now()
            from target where f.id = target.id and target.live
            returning f.id
        )
        select (select count(*) from revoked) > 0 as "revoked!" from target"#,
        family_id,
        user_id
    )
    .fetch_optional(db)
    .await?)
}

/// A family [`revoke_all_but`] revoked.
pub struct Revoked {
    pub id: Uuid,
    /// It was one [`usable_of`] lists (it had a usable refresh token).
    pub usable: bool,
}

/// Revokes every live family of `user_id` but `keep`; the ones revoked.
pub async fn revoke_all_but(
    db: impl PgExecutor<'_>,
    user_id: i64,
    keep: Uuid,
) -> Result<Vec<Revoked>> {
    Ok(sqlx::query_as!(
        Revoked,
        r#"update refresh_families f set revoked_at = now()
         from users u
         where u.id = f.user_id and f.user_id = $1 and f.id <> $2
           and f.revoked_at is null and f.expires_at > now() and f.token_version = u.token_version
         returning f.id,
             exists (select 1 from refresh_tokens t
                     where t.family_id = f.id and t.retired_at is null and t.expires_at > now())
             as "usable!""#,
        user_id,
        keep
    )
    .fetch_all(db)
    .await?)
}

/// A family ended, whose access tokens are refused.
pub struct Ended {
    pub id: Uuid,
    pub user_id: i64,
    pub revoked_at: OffsetDateTime,
}

/// The families revoked within `age`: their access tokens may not have
/// expired yet.
pub async fn ended_within(db: impl PgExecutor<'_>, age: std::time::Duration) -> Result<Vec<Ended>> {
    Ok(sqlx::query_as!(
        Ended,
        r#"select id, user_id, revoked_at as "revoked_at!" from refresh_families
         where revoked_at > now() - make_interval(secs => $1::float8)"#,
        age.as_secs_f64()
    )
    .fetch_all(db)
    .await?)
}

/// Deletes families no token of which can be used again: past their
/// lifetime, revoked a day ago or more, started at an older token version
/// than the user's, or with no unexpired token left; but never one revoked
/// less than a day ago, whose ending every replica must still load for
/// the access tokens it refuses. Their tokens go with them. How many went.
pub async fn prune(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from refresh_families f using users u
         where u.id = f.user_id
           and f.id in (
               select f.id from refresh_families f join users u on u.id = f.user_id
               where (f.expires_at <= now()
                      or f.revoked_at <= now() - interval '1 day'
                      or f.token_version <> u.token_version
                      or not exists (select 1 from refresh_tokens t
                                     where t.family_id = f.id and t.expires_at > now()))
                 and not coalesce(f.revoked_at > now() - interval '1 day', false)
               limit $1 for update of f skip locked
           )
           and (f.expires_at <= now()
                or f.revoked_at <= now() - interval '1 day'
                or f.token_version <> u.token_version
                or not exists (select 1 from refresh_tokens t
                               where t.family_id = f.id and t.expires_at > now()))
           and not coalesce(f.revoked_at > now() - interval '1 day', false)",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
