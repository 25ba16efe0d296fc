//! Wire values as JSON, for insta snapshots with redactions.

use serde_json::{Value, json};
use tonic_types::StatusExt as _;

/// A status as a client sees it: code, message and field violations.
pub fn status(status: &tonic::Status) -> Value {
    let details = status.get_error_details();
    let violations: Vec<Value> = details
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| json!({ "field": v.field, "description": v.description }))
                .collect()
        })
        .unwrap_or_default();
    let retry_after = details
        .retry_info()
        .and_then(|retry| retry.retry_delay)
        .map(|delay| delay.as_secs());
    let mut value = json!({
        "code": format!("{:?}", status.code()),
        "message": status.message(),
    });
    if !violations.is_empty() {
        value["field_violations"] = Value::Array(violations);
    }
    if let Some(seconds) = retry_after {
        value["retry_after_seconds"] = json!(seconds);
    }
    value
}

/// The outcome of a call: the response as JSON, or the status.
pub fn outcome<T>(
    result: &Result<tonic::Response<T>, tonic::Status>,
    response: impl Fn(&T) -> Value,
) -> Value {
    match result {
        Ok(ok) => json!({ "ok": response(ok.get_ref()) }),
        Err(error) => json!({ "error": status(error) }),
    }
}

pub fn timestamp(at: &Option<prost_types::Timestamp>) -> Value {
    match at {
        Some(at) => json!(format!("{}.{:09}", at.seconds, at.nanos)),
        None => Value::Null,
    }
}

pub fn user(user: &api::auth::v1::User) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "role": user.role().as_str_name(),
        "created_at": timestamp(&user.created_at),
        "updated_at": timestamp(&user.updated_at),
    })
}

/// The delay a status's `google.rpc.RetryInfo` asks for, if it has one.
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt as _;
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
}
