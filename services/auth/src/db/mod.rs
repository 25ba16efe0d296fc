//! The only place SQL lives. Every query is checked at compile time against
//! the auth schema (`migrations/auth`), from the metadata in `.sqlx/`.

pub mod access_rules;
pub mod device_tokens;
pub mod email_tokens;
pub mod login_challenges;
pub mod login_throttle;
pub mod mail_outbox;
pub mod refresh_families;
pub mod refresh_tokens;
pub mod released_names;
pub mod revocations;
pub mod totp;
pub mod users;

use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

/// How to reach the database.
pub fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = config.url.expose_secret().parse()?;
    Ok(options.application_name("auth"))
}

/// Connects lazily: the pool opens connections as queries need them.
pub fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(connect_options(config)?))
}

/// The unique constraint a failed statement broke, if that is why it failed.
pub fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(error) if error.is_unique_violation() => error.constraint(),
        _ => None,
    }
}
