//! `users`: accounts, their credentials and their login failures.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::violated_constraint;
use crate::domain::UserName;
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
    /// When its owner showed the address to be theirs; `None` until then.
    pub email_verified_at: Option<OffsetDateTime>,
}

/// A user about to have a password checked.
#[derive(Debug)]
pub struct LoginCandidate {
    pub id: i64,
    pub token_version: i64,
    pub password_hash: String,
    /// Two-factor login is on: a right password is not enough.
    pub totp: bool,
}

/// Unique violations name the field that clashed.
fn taken(error: sqlx::Error) -> Error {
    match violated_constraint(&error) {
        Some("users_name_key" | "users_name_skeleton_key") => crate::error::taken("name"),
        Some("users_email_key") => crate::error::taken("email"),
        _ => error.into(),
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &UserName,
    email: &str,
    password_hash: &str,
    role: &str,
) -> Result<i64> {
    sqlx::query_scalar!(
        "insert into users (name, name_skeleton, email, password_hash, role)
         values ($1, $2, $3, $4, $5) returning id",
        name.as_str(),
        name.skeleton(),
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
    name: &UserName,
    email: &str,
    password_hash: &str,
    role: &str,
) -> Result<bool> {
    let inserted = sqlx::query!(
        "insert into users (name, name_skeleton, email, password_hash, role)
         values ($1, $2, $3, $4, $5) on conflict do nothing",
        name.as_str(),
        name.skeleton(),
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
        "select id, name, email, role, token_version, created_at, updated_at, email_verified_at from users where id = $1",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// The user, locked until the transaction ends: what is read is what the
/// transaction's update changes, with no concurrent change in between.
pub async fn get_for_update(db: impl PgExecutor<'_>, id: i64) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, name, email, role, token_version, created_at, updated_at, email_verified_at from users
         where id = $1 for update",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// Sets the fields given, leaves the others; `None` if there is no such user.
pub async fn update(
    db: impl PgExecutor<'_>,
    id: i64,
    name: Option<&UserName>,
    email: Option<&str>,
    role: Option<&str>,
) -> Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "update users set
            name = coalesce($2, name),
            name_skeleton = coalesce($5, name_skeleton),
            email = coalesce($3, email),
            email_verified_at = case when $3 is not null and $3 <> email
                                     then null else email_verified_at end,
            role = coalesce($4, role)
         where id = $1
         returning id, name, email, role, token_version, created_at, updated_at, email_verified_at",
        id,
        name.map(UserName::as_str),
        email,
        role,
        name.map(UserName::skeleton)
    )
    .fetch_optional(db)
    .await
    .map_err(taken)
}

/// Up to `batch` users whose names have no skeleton yet (made before
/// names had one): id and name.
pub async fn without_skeleton(db: impl PgExecutor<'_>, batch: i64) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query!(
        "select id, name from users where name_skeleton is null order by id limit $1",
        batch
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| (row.id, row.name))
    .collect())
}

/// Gives a user's name its skeleton; false if another name has it.
pub async fn set_skeleton(db: impl PgExecutor<'_>, id: i64, skeleton: &str) -> Result<bool> {
    match sqlx::query!(
        "update users set name_skeleton = $2 where id = $1 and name_skeleton is null",
        id,
        skeleton
    )
    .execute(db)
    .await
    {
        Ok(_) => Ok(true),
        Err(error) if violated_constraint(&error) == Some("users_name_skeleton_key") => Ok(false),
        Err(error) => Err(error.into()),
    }
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
        "select id, name, email, role, token_version, created_at, updated_at, email_verified_at
         from users where id > $1 order by id limit $2",
        after,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// A name looked up, and the user it names, if any.
pub struct NameMatch {
    pub requested: String,
    pub id: Option<i64>,
    pub name: Option<String>,
}

/// Each of `names` with the user it names, compared as the unique index
/// does (`lower`, PostgreSQL's folding, the only one used).
pub async fn match_names(db: impl PgExecutor<'_>, names: &[String]) -> Result<Vec<NameMatch>> {
    Ok(sqlx::query_as!(
        NameMatch,
        r#"select requested as "requested!", u.id as "id?", u.name as "name?"
         from unnest($1::text[]) as requested
         left join users u on lower(u.name) = lower(requested)"#,
        names
    )
    .fetch_all(db)
    .await?)
}

/// The current name of each of `ids` that is a user.
pub async fn names_by_id(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<(i64, String)>> {
    Ok(
        sqlx::query!("select id, name from users where id = any($1)", ids)
            .fetch_all(db)
            .await?
            .into_iter()
            .map(|row| (row.id, row.name))
            .collect(),
    )
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
        "update users set password_hash = $2, token_version = token_version + 1
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

/// The user a login names, compared as the unique index does (`lower`):
/// as typed, or in NFKC (`normalized`), as names are stored now. A name
/// made before names were normalised, typed exactly, wins.
pub async fn login_candidate(
    db: impl PgExecutor<'_>,
    typed: &str,
    normalized: &str,
) -> Result<Option<LoginCandidate>> {
    Ok(sqlx::query_as!(
        LoginCandidate,
        r#"select id, token_version, password_hash,
                  exists (select 1 from totp_credentials t
                          where t.user_id = users.id and t.confirmed_at is not null) as "totp!"
           from users
           where lower(name) in (lower($1), lower($2))
           order by lower(name) = lower($1) desc
           limit 1"#,
        typed,
        normalized
    )
    .fetch_optional(db)
    .await?)
}

/// Marks `email` verified for `user_id`, if it is still their address;
/// whether it was.
pub async fn mark_email_verified(
    db: impl PgExecutor<'_>,
    user_id: i64,
    email: &str,
) -> Result<bool> {
    let marked = sqlx::query!(
        "update users set email_verified_at = coalesce(email_verified_at, now())
         where id = $1 and lower(email) = lower($2)",
        user_id,
        email
    )
    .execute(db)
    .await?;
    Ok(marked.rows_affected() == 1)
}
