//! The one error type both services answer with, and what clients see of
//! it: a precise status for each failure a client can act on, and an
//! opaque `INTERNAL` (its cause logged, never shown) for a bug.

use std::borrow::Cow;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::database::Failure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        field: Cow<'static, str>,
        description: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// A unique value is taken already.
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's access token expired: a fresh one cures it. The status
    /// says so in a `google.rpc.ErrorInfo` whose reason is
    /// [`TOKEN_EXPIRED`], for clients to tell it from a revoked token
    /// without reading the message.
    #[error("{0}")]
    TokenExpired(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid, but the state it relies on refuses it (a limit,
    /// or a row that changed or went away underneath it).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A transaction lost a race (deadlock, serialization); retrying may
    /// succeed.
    #[error("{0}")]
    Aborted(String),
    /// The database, another service, or state kept from them cannot be
    /// relied on now.
    #[error("{0}")]
    Unavailable(String),
    /// The caller reached a limit; with `retry_after`, the status carries a
    /// `google.rpc.RetryInfo` saying when to try again.
    #[error("{message}")]
    ResourceExhausted {
        limit: Limit,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A status from another service, passed on as it is.
    #[error("{}", .0.message())]
    Upstream(Status),
    /// Anything the client cannot act on; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The `google.rpc.ErrorInfo` reason of an `UNAUTHENTICATED` status that
/// a fresh access token cures.
pub const TOKEN_EXPIRED: &str = "ACCESS_TOKEN_EXPIRED";
/// The `google.rpc.ErrorInfo` reason of an `UNAUTHENTICATED` status that
/// refuses the calling service's own credential (its client certificate or
/// service secret), not the token of the user it calls for: the calling
/// service is misconfigured.
pub const SERVICE_CREDENTIAL_REFUSED: &str = "SERVICE_CREDENTIAL_REFUSED";
/// The `google.rpc.ErrorInfo` domain of this project's reasons.
pub const ERROR_DOMAIN: &str = "chat-backend";

/// Which limit a caller reached, for whoever must tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Too many failed attempts at a password: locked for a while.
    Lockout,
    /// Too many checks of one password under way at once.
    Busy,
    /// A stream whose client stopped reading.
    StalledReader,
    /// A caller's quota of calls (or of open streams) is used up.
    Quota,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `UNAUTHENTICATED` for a calling service's own credential (see
/// [`SERVICE_CREDENTIAL_REFUSED`]).
pub fn service_credential_refused(message: &str) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        message,
        ErrorDetails::with_error_info(
            SERVICE_CREDENTIAL_REFUSED,
            ERROR_DOMAIN,
            std::collections::HashMap::<String, String>::new(),
        ),
    )
}

/// Whether `status` refuses the calling service's own credential.
pub fn refuses_service_credential(status: &Status) -> bool {
    status
        .get_details_error_info()
        .is_some_and(|info| info.reason == SERVICE_CREDENTIAL_REFUSED)
}

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
        let failure = crate::database::classify(&error);
        let message = failure.message();
        match failure {
            Failure::Unavailable => Error::Unavailable(message),
            Failure::Aborted => Error::Aborted(message),
            Failure::Gone | Failure::RowNotFound => Error::NotFound(message),
            Failure::UniqueViolation(_) => Error::AlreadyExists(message),
            Failure::Other => Error::Internal(error.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument { field, description } => {
                crate::invalid::invalid_argument(&field, description)
            }
            Error::NotFound(message) => Status::not_found(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::TokenExpired(message) => Status::with_error_details(
                Code::Unauthenticated,
                message,
                ErrorDetails::with_error_info(
                    TOKEN_EXPIRED,
                    ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                ),
            ),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Aborted(message) => Status::aborted(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::ResourceExhausted {
                message,
                retry_after: Some(retry_after),
                ..
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::ResourceExhausted { message, .. } => Status::resource_exhausted(message),
            Error::Upstream(status) => Status::with_details(
                status.code(),
                status.message(),
                status.details().to_vec().into(),
            ),
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
