//! `login_throttle`: failed and pending password checks per throttle key
//! (a name, known or not, a device, a session, a client address; see
//! `crate::lockout` and `migrations/auth`). Keys are folded to lower case.

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::config::LockoutConfig;
use crate::error::Result;

/// Reserves a slot for one password check against `key`, in one
/// statement: unless the name is locked, or its failures and pending checks
/// already fill the limit (past a lock, one check at a time). Whether a
/// slot was reserved.
///
/// Its commit does not wait for the flush to disk. A crash can lose only
/// the last moments' reservations: a slot lost is a pending check
/// forgotten, which only makes room, as a stale one does after a minute,
/// and failures are never counted here. A login that succeeds commits its
/// session afterwards, with a flush, which writes the reservation too.
pub async fn reserve(db: impl PgExecutor<'_>, key: &str, config: &LockoutConfig) -> Result<bool> {
    let reserved = sqlx::query!(
        r#"insert into login_throttle as t (throttle_key, pending, pending_since)
        select lower($1), 1, now()
        -- Committed without waiting for the flush (see above).
        from (select set_config('synchronous_commit', 'off', true)) as asynchronous
        on conflict (throttle_key) do update set
            failures = case when t.last_failed_at < now() - make_interval(secs => $3::float8)
                            then 0 else t.failures end,
            pending = case when t.pending_since < now() - interval '1 minute'
                           then 1 else t.pending + 1 end,
            pending_since = now()
        where (t.locked_until is null or t.locked_until <= now())
          and (case when t.pending_since < now() - interval '1 minute' then 0 else t.pending end)
              < greatest($2::int4 - case when t.last_failed_at < now() - make_interval(secs => $3::float8)
                                        then 0 else t.failures end, 1)"#,
        key,
        config.max_failures as i32,
        config.failure_reset.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(reserved.rows_affected() == 1)
}

/// Until when `key` is locked, if it is.
pub async fn locked_until(db: impl PgExecutor<'_>, key: &str) -> Result<Option<OffsetDateTime>> {
    Ok(sqlx::query_scalar!(
        "select locked_until from login_throttle where throttle_key = lower($1) and locked_until > now()",
        key
    )
    .fetch_optional(db)
    .await?
    .flatten())
}

/// Settles a reserved check that found the wrong password: one more
/// failure, and a lock once they reach the limit, longer with each further
/// failure.
pub async fn settle_wrong(
    db: impl PgExecutor<'_>,
    key: &str,
    config: &LockoutConfig,
) -> Result<()> {
    sqlx::query!(
        "update login_throttle set
            pending = greatest(pending - 1, 0),
            failures = failures + 1,
            last_failed_at = now(),
            locked_until = case when failures + 1 >= $2::int4
                then now() + least(make_interval(secs => $4::float8),
                                   make_interval(secs => $3::float8 * (failures + 2 - $2::int4)))
                else locked_until end
         where throttle_key = lower($1)",
        key,
        config.max_failures as i32,
        config.wait_increment.as_secs_f64(),
        config.max_wait.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Counts a failure against a client address, which holds no slots:
/// across names, so one client cannot guess at many. Locked as a name is,
/// against the address limit; failures are forgotten after the address's
/// quiet time.
pub async fn count_address_failure(
    db: impl PgExecutor<'_>,
    key: &str,
    config: &LockoutConfig,
) -> Result<()> {
    sqlx::query!(
        "insert into login_throttle as t (throttle_key, failures, last_failed_at, locked_until)
         values (lower($1), 1, now(), case when $2::int4 <= 1
                 then now() + make_interval(secs => $3::float8) end)
         on conflict (throttle_key) do update set
            failures = case when t.last_failed_at < now() - make_interval(secs => $5::float8)
                            then 1 else t.failures + 1 end,
            last_failed_at = now(),
            locked_until = case
                when t.last_failed_at >= now() - make_interval(secs => $5::float8)
                     and t.failures + 1 >= $2::int4
                then now() + least(make_interval(secs => $4::float8),
                                   make_interval(secs => $3::float8 * (t.failures + 2 - $2::int4)))
                else t.locked_until end",
        key,
        config.address_max_failures as i32,
        config.wait_increment.as_secs_f64(),
        config.max_wait.as_secs_f64(),
        config.address_failure_reset.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Settles a reserved check that found the right password: failures and
/// any lock are forgotten. Without waiting for the flush, as a reservation:
/// a crash can only keep failures this would have forgotten, which is the
/// stricter side; the session the login then starts flushes it anyway.
pub async fn settle_right(db: impl PgExecutor<'_>, key: &str) -> Result<()> {
    sqlx::query!(
        "update login_throttle set pending = greatest(pending - 1, 0), failures = 0,
            last_failed_at = null, locked_until = null
         where throttle_key = lower($1)
           and (select set_config('synchronous_commit', 'off', true)) is not null",
        key
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Gives a reserved slot back without a verdict (the check itself failed).
pub async fn release(db: impl PgExecutor<'_>, key: &str) -> Result<()> {
    sqlx::query!(
        "update login_throttle set pending = greatest(pending - 1, 0) where throttle_key = lower($1)",
        key
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes up to `batch` rows that hold nothing any more: no pending check,
/// no lock, and no failure younger than `failure_reset`.
pub async fn prune(db: impl PgExecutor<'_>, failure_reset: Duration, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from login_throttle where throttle_key in (
            select throttle_key from login_throttle
            where (pending = 0 or pending_since < now() - interval '1 minute')
              and (locked_until is null or locked_until <= now())
              and (last_failed_at is null
                   or last_failed_at < now() - make_interval(secs => $1::float8))
            limit $2 for update skip locked
        )
          and (pending = 0 or pending_since < now() - interval '1 minute')
          and (locked_until is null or locked_until <= now())
          and (last_failed_at is null
               or last_failed_at < now() - make_interval(secs => $1::float8))",
        failure_reset.as_secs_f64(),
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
