//! The service's errors: the host's one error type, and the failures only
//! auth names.

use std::time::Duration;

pub use host::error::{Error, Limit, Result};

/// A unique field (`name`, `email`) already belongs to another user.
pub fn taken(field: &'static str) -> Error {
    Error::AlreadyExists(format!("{field} is already taken"))
}

/// Too many failed logins; the account is locked for `retry_after`.
pub fn locked(retry_after: Duration) -> Error {
    Error::ResourceExhausted {
        limit: Limit::Lockout,
        message: format!(
            "too many failed logins: try again in {} s",
            retry_after.as_secs().max(1)
        ),
        retry_after: Some(retry_after),
    }
}

/// So many checks of one name's password are under way that this one
/// could not get a turn; nothing is counted against the name.
pub fn busy(retry_after: Duration) -> Error {
    Error::ResourceExhausted {
        limit: Limit::Busy,
        message: format!(
            "other password checks for this name are under way: try again in {} s",
            retry_after.as_secs().max(1)
        ),
        retry_after: Some(retry_after),
    }
}

/// Too many failed logins from the caller's address, across names.
pub fn address_locked(retry_after: Duration) -> Error {
    Error::ResourceExhausted {
        limit: Limit::Lockout,
        message: format!(
            "too many failed logins from this address: try again in {} s",
            retry_after.as_secs().max(1)
        ),
        retry_after: Some(retry_after),
    }
}
