//! `released_names`: names given up by a rename, held for their last
//! holder until every access token that carries them has expired.
//!
//! A claim is checked after the name is written, in the same transaction:
//! a write of a name another transaction is giving up waits on the unique
//! index until that one commits, so the check that follows sees its
//! release.

use std::time::Duration;

use sqlx::PgExecutor;

use crate::error::Result;

/// Holds `name` for `user_id` for `period`.
pub async fn release(
    db: impl PgExecutor<'_>,
    name: &str,
    user_id: i64,
    period: Duration,
) -> Result<()> {
    sqlx::query!(
        "insert into released_names (name, user_id, reserved_until)
         values (lower($1), $2, now() + make_interval(secs => $3::float8))
         on conflict (name) do update
         set user_id = excluded.user_id, reserved_until = excluded.reserved_until",
        name,
        user_id,
        period.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// `ALREADY_EXISTS` on `name` if someone other than `user_id` gave it up
/// too recently.
pub async fn ensure_claimable(db: impl PgExecutor<'_>, name: &str, user_id: i64) -> Result<()> {
    let held = sqlx::query_scalar!(
        r#"select exists (
             select 1 from released_names
             where name = lower($1) and user_id <> $2 and reserved_until > now()
           ) as "held!""#,
        name,
        user_id
    )
    .fetch_one(db)
    .await?;
    if held {
        return Err(crate::error::taken("name"));
    }
    Ok(())
}

/// Deletes up to `limit` reservations that have run out; how many went.
pub async fn prune(db: impl PgExecutor<'_>, limit: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from released_names where name in (
             select name from released_names where reserved_until < now() limit $1
         )",
        limit
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
