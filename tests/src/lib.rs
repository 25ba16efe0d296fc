//! Helpers for the integration tests in `tests/api`: a real PostgreSQL
//! for each test binary with a fresh database for each test, and the
//! services started in-process on port 0.
//!
//! # Layout
//! - [`postgres`]: where the PostgreSQL server comes from (testcontainers,
//!   the machine's own binaries, or a server named in the environment) and
//!   fresh databases on it.
//! - [`services`]: the services started in-process, with typed clients and
//!   helpers that make users and tokens.
//! - [`http`]: a minimal HTTP/1.1 client for the REST gateway and metrics.
//! - [`grpc_web`]: typed clients that call the services as a browser does,
//!   with gRPC-Web over HTTP/1.1.
//! - [`outage`]: a TCP relay that can be cut, frozen or made to lose
//!   answers, for outages of PostgreSQL and of the services.
//! - [`process`]: the services as real processes, for `kill -9`.
//! - [`nats`]: a real NATS server, for chat's fan-out over NATS.
//! - [`snapshot`]: wire values as JSON for insta snapshots.
//! - [`sweep`]: the hostile-input sweep's generator, codec and tally.
//! - [`fixtures`]: arrangements many tests start from (`two_members()`).

pub mod certificates;
pub mod fixtures;
pub mod grpc_web;
pub mod http;
pub mod mail;
pub mod nats;
pub mod otlp;
pub mod outage;
pub mod postgres;
pub mod process;
pub mod services;
pub mod snapshot;
pub mod sweep;
pub mod totp;
