//! The service's one error type, and what clients see of it.

use std::borrow::Cow;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        field: Cow<'static, str>,
        description: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// A unique field (`name`, `email`) already belongs to another user.
    #[error("{field} is already taken")]
    AlreadyExists { field: &'static str },
    /// Another unique value clashed; the constraint is named.
    #[error("{0}")]
    Duplicate(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A precondition the request relies on no longer holds (a row changed
    /// or went away underneath it).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A transaction lost a race (deadlock, serialization); retrying may
    /// succeed.
    #[error("{0}")]
    Aborted(String),
    /// The database, or the state kept from it, cannot be relied on now.
    #[error("{0}")]
    Unavailable(String),
    /// Too many failed logins; the account is locked for `retry_after`.
    #[error("too many failed logins: try again in {} s", retry_after.as_secs().max(1))]
    Locked { retry_after: Duration },
    /// So many checks of one name's password are under way that this one
    /// could not get a turn; nothing is counted against the name.
    #[error("other password checks for this name are under way: try again in {} s", retry_after.as_secs().max(1))]
    Busy { retry_after: Duration },
    /// Anything the client cannot act on; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: Cow::Borrowed(field),
            description: description.into(),
        }
    }

    /// For fields named at run time (`usernames[2]`).
    pub fn invalid_owned(field: String, description: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: Cow::Owned(field),
            description: description.into(),
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::Unauthenticated(message.into())
    }

    pub fn permission_denied(message: impl Into<String>) -> Error {
        Error::PermissionDenied(message.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        use serving::database::Failure;
        let failure = serving::database::classify(&error);
        let message = failure.message();
        match failure {
            Failure::Unavailable => Error::Unavailable(message),
            Failure::Aborted => Error::Aborted(message),
            Failure::Gone | Failure::RowNotFound => Error::NotFound(message),
            Failure::UniqueViolation(_) => Error::Duplicate(message),
            Failure::Other => Error::Internal(error.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument { field, description } => {
                serving::invalid::invalid_argument(&field, description)
            }
            Error::NotFound(message) => Status::not_found(message),
            Error::AlreadyExists { .. } => Status::already_exists(error.to_string()),
            Error::Duplicate(message) => Status::already_exists(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Aborted(message) => Status::aborted(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Locked { retry_after } | Error::Busy { retry_after } => {
                Status::with_error_details(
                    Code::ResourceExhausted,
                    error.to_string(),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
