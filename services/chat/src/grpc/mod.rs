//! The wire boundary: `chat.v1.ChatService`, the guard that asks auth
//! about every call before it reaches a handler, and the conversions
//! between the wire's messages and the application's values.

pub(crate) mod chat_service;
mod convert;
pub(crate) mod guard;

use tonic::{Request, Status};

use crate::access_watch::Epoch;
use crate::app::Forwarded;
use crate::domain::Caller;

/// What every handler starts from: who is calling (as the guard checked),
/// what to carry on to auth for them, and their request as the domain
/// value it converts into.
struct Accepted<D> {
    caller: Caller,
    forwarded: Forwarded,
    /// Where the revocation feed was when the guard checked the call.
    checked_at: Option<Epoch>,
    request: D,
}

/// Every handler's first step, the same for all: the caller the guard let
/// through (recorded on the handler's span), then the request converted at
/// the boundary, refused with `INVALID_ARGUMENT` naming the field.
fn accept<T, D>(request: Request<T>) -> Result<Accepted<D>, Status>
where
    D: TryFrom<T, Error = Status>,
{
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!(
                "a guarded handler ran without a caller: is the service wrapped in the guard?"
            );
            Status::internal("internal error")
        })?;
    tracing::Span::current().record("user_id", caller.user_id.get());
    let checked_at = request.extensions().get::<Epoch>().copied();
    let header = |name: &str| -> Option<http::HeaderValue> {
        request
            .metadata()
            .get(name)
            .and_then(|value| value.to_str().ok()?.parse().ok())
    };
    let forwarded = Forwarded {
        authorization: header("authorization"),
        request_id: header(host::metrics::REQUEST_ID),
    };
    Ok(Accepted {
        caller,
        forwarded,
        checked_at,
        request: D::try_from(request.into_inner())?,
    })
}
