//! `users`: accounts, their credentials and their login failures.

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::violated_constraint;
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub role: String,
    pub token_version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A user about to have a password checked.
#[derive(Debug)]
pub struct LoginCandidate {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub token_version: i64,
    pub password_hash: String,
}

/// Unique violations name the field that clashed.
fn taken(error: sqlx::Error) -> Error {
    match violated_constraint(&error) {
        Some("users_name_key") => Error::AlreadyExists { field: "name" },
        Some("users_email_key") => Error::AlreadyExists { field: "email" },
        _ => error.into(),
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    email: &str,
    password_hash: &str,
    role: &str,
) -> Result<i64> {
    sqlx::query_scalar!(
        "insert into users (name, email, password_hash, role) values ($1, $2, $3, $4) returning id",
        name,
        email,
        password_hash,
        role
    )
    .fetch_one(db)
    .await
    .map_err(taken)
}

/// Inserts unless the name or email is taken; whether it did.
pub async fn insert_unless_taken(
    db: impl PgExecutor<'_>,
    name: &str,
    email: &str,
    password_hash: &str,
    role: &str,
) -> Result<bool> {
    let inserted = sqlx::query!(
        "insert into users (name, email, password_hash, role) values ($1, $2, $3, $4) on conflict do nothing",
        name,
        email,
        password_hash,
        role
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, name, email, role, token_version, created_at, updated_at from users where id = $1",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// Sets the fields given, leaves the others; `None` if there is no such user.
pub async fn update(
    db: impl PgExecutor<'_>,
    id: i64,
    name: Option<&str>,
    email: Option<&str>,
    role: Option<&str>,
) -> Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "update users set
            name = coalesce($2, name),
            email = coalesce($3, email),
            role = coalesce($4, role)
         where id = $1
         returning id, name, email, role, token_version, created_at, updated_at",
        id,
        name,
        email,
        role
    )
    .fetch_optional(db)
    .await
    .map_err(taken)
}

/// Whether there was such a user.
pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> Result<bool> {
    let deleted = sqlx::query!("delete from users where id = $1", id)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Up to `limit` users with ids above `after`, in id order.
pub async fn list_after(db: impl PgExecutor<'_>, after: i64, limit: i64) -> Result<Vec<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, name, email, role, token_version, created_at, updated_at
         from users where id > $1 order by id limit $2",
        after,
        limit
    )
    .fetch_all(db)
    .await?)
}

pub struct NameRow {
    pub id: i64,
    pub name: String,
}

/// The users whose names match `names`, regardless of case.
pub async fn find_by_names(db: impl PgExecutor<'_>, names: &[String]) -> Result<Vec<NameRow>> {
    let lowered: Vec<String> = names.iter().map(|name| name.to_lowercase()).collect();
    Ok(sqlx::query_as!(
        NameRow,
        "select id, name from users where lower(name) = any($1)",
        &lowered
    )
    .fetch_all(db)
    .await?)
}

pub async fn password_hash(db: impl PgExecutor<'_>, id: i64) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar!("select password_hash from users where id = $1", id)
            .fetch_optional(db)
            .await?,
    )
}

/// Sets a new password hash and bumps the token version; the new version,
/// or `None` if there is no such user.
pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: i64,
    password_hash: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "update users set password_hash = $2, token_version = token_version + 1,
            failed_logins = 0, last_failed_login_at = null, locked_until = null
         where id = $1 returning token_version",
        id,
        password_hash
    )
    .fetch_optional(db)
    .await?)
}

/// Bumps the token version; the new one, or `None` if there is no such user.
pub async fn bump_token_version(db: impl PgExecutor<'_>, id: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "update users set token_version = token_version + 1 where id = $1 returning token_version",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// Counts a login attempt against the account named `name` before its
/// password is checked, in one statement: unless the account is locked,
/// its failure count goes up (restarting after `failure_reset`), and the
/// attempt that reaches `max_failures` locks it at once. Concurrent
/// attempts queue on the row, so no more than `max_failures` of them can
/// ever be checking a password. A right password then clears the count
/// ([`clear_failed_logins`]).
///
/// `None` when no unlocked account has that name.
pub async fn reserve_login_attempt(
    db: impl PgExecutor<'_>,
    name: &str,
    max_failures: u32,
    wait_increment: Duration,
    max_wait: Duration,
    failure_reset: Duration,
) -> Result<Option<LoginCandidate>> {
    Ok(sqlx::query_as!(
        LoginCandidate,
        r#"with attempt as (
            select id,
                case when last_failed_login_at is null
                          or last_failed_login_at < now() - make_interval(secs => $5::float8)
                     then 1 else failed_logins + 1 end as failures
            from users
            where lower(name) = lower($1) and (locked_until is null or locked_until <= now())
            for update
        )
        update users set
            failed_logins = attempt.failures,
            last_failed_login_at = now(),
            locked_until = case when attempt.failures >= $2::int4
                then now() + least(make_interval(secs => $4::float8), make_interval(secs => $3::float8 * (attempt.failures - $2::int4 + 1)))
                else null end
        from attempt
        where users.id = attempt.id
        returning users.id, users.name, users.role, users.token_version, users.password_hash"#,
        name,
        max_failures as i32,
        wait_increment.as_secs_f64(),
        max_wait.as_secs_f64(),
        failure_reset.as_secs_f64()
    )
    .fetch_optional(db)
    .await?)
}

/// Until when the account named `name` is locked: `None` for no such
/// account, `Some(None)` for an account that is not locked.
pub async fn locked_until(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<Option<OffsetDateTime>>> {
    Ok(sqlx::query_scalar!(
        "select case when locked_until > now() then locked_until end from users where lower(name) = lower($1)",
        name
    )
    .fetch_optional(db)
    .await?)
}

pub async fn clear_failed_logins(db: impl PgExecutor<'_>, id: i64) -> Result<()> {
    sqlx::query!(
        "update users set failed_logins = 0, last_failed_login_at = null, locked_until = null where id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}
