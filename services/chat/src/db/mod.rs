//! The only place SQL lives. Every query is checked at compile time against
//! the chat schema (`migrations/chat`) alone, from the metadata in `.sqlx/`.

pub mod announcements;
pub mod chats;
pub mod members;
pub mod messages;
pub mod read_markers;

use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

/// How to reach the database.
pub fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = config.url.expose_secret().parse()?;
    Ok(options.application_name("chat"))
}

/// Connects lazily: the pool opens connections as queries need them.
pub fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(connect_options(config)?))
}
