//! The service host: what every service of this project shares at its
//! edges. A service hands [`server::Host`] its routes, its background tasks
//! and what to do on stop; the host does the rest.
//!
//! # Layout
//! - [`server`]: the host itself: listeners, the gRPC server with the
//!   shared layers, the REST gateway, `/metrics`, health and shutdown.
//! - [`cli`]: the commands every service has, and the runtime of `main`.
//! - [`error`]: the statuses both services answer with, built once.
//! - [`reflection`]: gRPC server reflection, v1 and v1alpha, over the
//!   generated descriptor sets and tonic-health's.
//! - [`config`]: reading settings, and binding listeners with clear errors.
//! - [`database`]: what a failed database call means for the client.
//! - [`decoding`]: a request body that does not decode is the client's
//!   mistake (`INVALID_ARGUMENT`), not the server's.
//! - [`gateway`]: REST/JSON routes transcoded in-process from the protos'
//!   `google.api.http` annotations, and their OpenAPI document.
//! - [`grpc_web`]: gRPC-Web and CORS on the gRPC port, for browsers.
//! - [`health`]: the probe behind the binaries' `healthcheck` command.
//! - [`invalid`]: turning validation failures into `INVALID_ARGUMENT`
//!   statuses that name the field.
//! - [`metrics`]: Prometheus metrics for every RPC, and `/metrics`.
//! - [`notifications`]: PostgreSQL `LISTEN` that reconnects, tells its
//!   consumer when to reload, and knows how current it is.
//! - [`page_token`]: opaque keyset pagination tokens.
//! - [`shutdown`]: the signal that starts a graceful shutdown.
//! - [`telemetry`]: log output.
//! - [`text`]: characters a name or title may not hide, and bidi controls
//!   a message may not leave open.

pub mod cli;
pub mod client_address;
pub mod config;
pub mod database;
pub mod decoding;
pub mod error;
pub mod gateway;
pub mod grpc_web;
pub mod health;
pub mod invalid;
pub mod metrics;
pub mod notifications;
pub mod page_token;
pub mod quota;
pub mod reflection;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod trace_context;
