//! The auth service: users, sessions with rotating refresh tokens, and the
//! access check other services call before doing anything for a caller.
//!
//! # Layout
//! - [`cli`]: the command line `main` runs.
//! - [`config`]: settings, read from the environment.
//! - [`startup`]: [`startup::Application`] migrates the database, loads the
//!   access policy, binds the listener and serves until told to stop.
//! - `grpc`: the wire boundary, one module per proto service (each
//!   converts with `TryFrom` and delegates), and the guard that applies the
//!   access rules to them.
//! - `app`: the application layer: `accounts` and `sessions`, with
//!   their transactions, rules and revocations.
//! - `domain`: valid values (`UserName`, `Email`, `NewPassword`, `Role`).
//! - `access`: the access rules and token revocations, in memory, kept
//!   current across replicas by PostgreSQL notifications.
//! - `tokens`: access tokens (JWT) and refresh tokens (opaque, hashed).
//! - `passwords`: argon2id, off the async threads and bounded.
//! - `lockout`: brute-force protection per login name, known or not.
//! - `pruning`: deletes expired tokens, dead families, old revocations.
//! - `db`: the only place SQL lives, one module per table.
//! - `bootstrap`: the first admin.
//! - `metrics`: logins, rotations, reuse and checks, for Prometheus.
//! - `error`: the one error type and its gRPC statuses.

mod access;
mod app;
mod backfill;
mod bootstrap;
pub mod cli;
pub mod config;
mod db;
mod domain;
mod error;
mod grpc;
mod hash_queue;
mod lockout;
pub mod mail;
mod metrics;
mod passwords;
mod pruning;
mod quotas;
pub mod startup;
mod tokens;

/// The database migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/auth");
