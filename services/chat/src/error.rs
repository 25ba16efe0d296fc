//! The service's one error type, and what clients see of it.

use std::borrow::Cow;

use tonic::Status;

use crate::domain::ChatId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        field: Cow<'static, str>,
        description: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's credentials no longer hold (a token that expired while
    /// a stream was open).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller took more than the service gives (a stream whose client
    /// stopped reading).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request is valid but the chat's state refuses it (a limit).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Auth or the database could not be asked, or auth answered with
    /// something other than a verdict on the request.
    #[error("{0}")]
    Unavailable(String),
    /// A transaction lost a race (deadlock, serialization); retrying may
    /// succeed.
    #[error("{0}")]
    Aborted(String),
    /// A unique value clashed; the constraint is named.
    #[error("{0}")]
    AlreadyExists(String),
    /// A status from the auth service, passed on as it is.
    #[error("{}", .0.message())]
    Auth(Status),
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

    /// What a caller who is not a member learns of a chat: nothing, not
    /// even that it exists.
    pub(crate) fn chat_not_found(chat_id: ChatId) -> Error {
        Error::NotFound(format!("chat {chat_id} not found"))
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
            Failure::UniqueViolation(_) => Error::AlreadyExists(message),
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
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::ResourceExhausted(message) => Status::resource_exhausted(message),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::Aborted(message) => Status::aborted(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::Auth(status) => Status::new(status.code(), status.message()),
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
