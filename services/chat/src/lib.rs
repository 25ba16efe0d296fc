//! The chat service: chats, membership, messages and live message streams.
//! Every call is first checked by the auth service's `AccessService/Check`.
//!
//! # Layout
//! - [`cli`]: the command line `main` runs.
//! - [`config`]: settings, read from the environment.
//! - [`startup`]: [`startup::Application`] migrates the database, starts
//!   the message hub, binds the listener and serves until told to stop.
//! - [`grpc`]: the wire boundary: `ChatService`, and the guard that asks
//!   auth about every call before it reaches a handler.
//! - [`auth_client`]: the one shared, lazily connected channel to auth.
//! - [`access_watch`]: ends open streams when their caller's access ends.
//! - [`hub`]: fan-out of new messages and deleted chats to this replica's
//!   streams, fed by its own commits and by every other replica's.
//! - [`bus`]: how replicas tell each other: PostgreSQL's `NOTIFY`, or NATS.
//! - [`domain`]: valid values, and the [`domain::Caller`] auth vouched for.
//! - [`db`]: the only place SQL lives.
//! - [`metrics`]: messages sent and open streams, for Prometheus.
//! - [`error`]: the one error type and its gRPC statuses.

pub mod access_watch;
pub mod auth_client;
pub mod bus;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod hub;
pub mod metrics;
pub mod startup;

/// The database migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/chat");
