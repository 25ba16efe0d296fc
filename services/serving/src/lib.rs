//! What every service of this project shares at its edges.
//!
//! # Layout
//! - [`reflection`]: gRPC server reflection, v1 and v1alpha, over the
//!   generated descriptor sets and tonic-health's.
//! - [`invalid`]: turning validation failures into `INVALID_ARGUMENT`
//!   statuses that name the field.
//! - [`shutdown`]: the signal that starts a graceful shutdown.
//! - [`telemetry`]: log output.

pub mod invalid;
pub mod reflection;
pub mod shutdown;
pub mod telemetry;
