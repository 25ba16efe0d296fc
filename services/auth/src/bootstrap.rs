//! The first admin: created from configuration at start-up, or by
//! `auth create-admin`.

use sqlx::PgPool;

use crate::config::BootstrapAdmin;
use crate::db;
use crate::domain::{Email, NewPassword, Role, UserName};
use crate::error::Result;
use crate::passwords::PasswordHasher;

/// Creates the admin unless its name or email is already taken; whether it did.
pub async fn ensure_admin(
    pool: &PgPool,
    passwords: &PasswordHasher,
    admin: &BootstrapAdmin,
) -> Result<bool> {
    use secrecy::ExposeSecret as _;
    let name = UserName::parse("name", admin.name.clone())?;
    let email = Email::parse("email", admin.email.clone())?;
    let password = admin.password.expose_secret().to_owned();
    let password = NewPassword::parse(("password", password.clone()), ("password", password))?;
    let hash = passwords.hash(password.as_password()).await?;
    db::users::insert_unless_taken(pool, &name, email.as_str(), &hash, Role::Admin.as_str()).await
}
