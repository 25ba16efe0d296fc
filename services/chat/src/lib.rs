//! The chat service: chats, membership, messages and live message streams.
//! Every call is first checked by the auth service's `AccessService/Check`.
//!
//! # Layout
//! - [`cli`]: the command line `main` runs.
//! - [`config`]: settings, read from the environment.
//! - [`startup`]: [`startup::Application`] migrates the database, starts
//!   the message hub, and hands its routes to the service host.
//! - `grpc`: the wire boundary: `ChatService` converts each request
//!   (`TryFrom`) and delegates, and the guard asks auth about every call
//!   before it reaches a handler.
//! - `app`: the application layer, one module per capability (chats,
//!   membership, messages, streams) and the rules of who may do what.
//! - `domain`: typed ids (`ChatId`, `UserId`, `MessageId`), valid values,
//!   and the `Caller` auth vouched for.
//! - `hub`: fan-out of new messages and deleted chats to this replica's
//!   streams, fed by its own commits and by every other replica's.
//! - `bus`: how replicas tell each other: PostgreSQL's `NOTIFY`, or NATS.
//! - `auth_client`: the one shared, lazily connected channel to auth.
//! - [`access_watch`]: ends open streams when their caller's access ends.
//! - [`access_cache`]: auth's answers, kept while the revocation feed
//!   vouches for them.
//! - [`db`]: the only place SQL lives.
//! - `metrics`: messages sent and open streams, for Prometheus.
//! - `quotas`: what one user may do how often, per replica.
//! - [`error`]: the one error type and its gRPC statuses.

pub mod access_cache;
pub mod access_watch;
mod app;
mod auth_client;
mod bus;
pub mod cli;
pub mod config;
pub mod db;
mod departures;
mod domain;
pub mod error;
pub mod group_commit;
mod grpc;
mod hub;
mod metrics;
mod quotas;
pub mod startup;

/// The database migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/chat");
