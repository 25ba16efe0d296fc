//! The auth service: users, sessions with rotating refresh tokens, and the
//! access check other services call before doing anything for a caller.
//!
//! # Layout
//! - [`config`]: settings, read from the environment.
//! - [`startup`]: [`startup::Application`] binds the listener, migrates the
//!   database and serves until told to stop.
//! - [`db`]: the only place SQL lives, one module per table.

pub mod config;
pub mod db;
pub mod startup;

/// The database migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/auth");
