//! The wire boundary: one module per proto service, and the guard that
//! applies the access rules to them. Requests are checked here (the proto's
//! rules, then the domain's) and turned into domain values (`TryFrom`, in
//! `convert`) before the application layer is handed them.

pub mod access_service;
pub mod auth_service;
mod convert;
pub mod guard;
pub mod user_service;

use tonic::Status;

use crate::access::Caller;

/// The caller the guard let through.
fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    host::server::guarded_caller(request)
}
