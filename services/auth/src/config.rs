//! Settings, read from `AUTH_*` environment variables (see the README for
//! the full list and defaults).

use std::net::SocketAddr;

use anyhow::Context as _;
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    pub database: DatabaseConfig,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Config {
            grpc_addr: var_or("AUTH_GRPC_ADDR", "0.0.0.0:50051")?,
            database: DatabaseConfig {
                url: std::env::var("AUTH_DATABASE_URL")
                    .context("AUTH_DATABASE_URL is not set (postgres://user:password@host:port/database)")?
                    .into(),
                max_connections: var_or("AUTH_DATABASE_MAX_CONNECTIONS", "10")?,
            },
        })
    }
}

/// Parses `name` from the environment, or `default` when it is unset.
pub(crate) fn var_or<T>(name: &str, default: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    value
        .parse()
        .map_err(|error| anyhow::anyhow!("{name}={value:?} is not valid: {error}"))
}
