//! A request body that is not the method's message (a string field that
//! is not UTF-8, a truncated field) is the client's mistake, yet tonic's
//! prost codec answers it `INTERNAL`. This layer answers it
//! `INVALID_ARGUMENT`, so that `INTERNAL` keeps meaning a bug.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tower::{Layer, Service};

/// What prost's decode errors say first.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";
/// What `grpc-message` must percent-encode besides controls.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorsAreInvalid;

impl<S> Layer<S> for DecodeErrorsAreInvalid {
    type Service = Rewritten<S>;

    fn layer(&self, inner: S) -> Rewritten<S> {
        Rewritten { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Rewritten<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for Rewritten<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite(response.headers_mut());
            Ok(response)
        })
    }
}

/// Turns a trailers-only `INTERNAL` decode failure into `INVALID_ARGUMENT`.
fn rewrite(headers: &mut http::HeaderMap) {
    if headers.get("grpc-status").and_then(|s| s.to_str().ok()) != Some("13") {
        return;
    }
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
    else {
        return;
    };
    if !message.starts_with(DECODE_FAILURE) {
        return;
    }
    let message =
        format!("invalid request: the body is not the method's request message ({message})");
    headers.insert("grpc-status", HeaderValue::from_static("3"));
    if let Ok(value) =
        HeaderValue::from_str(&utf8_percent_encode(&message, GRPC_MESSAGE).to_string())
    {
        headers.insert("grpc-message", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(status));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        headers
    }

    #[test]
    fn decode_failures_become_invalid_arguments_and_other_statuses_stay() {
        let mut failed = headers(
            "13",
            "failed%20to%20decode%20Protobuf%20message:%20invalid%20string",
        );
        rewrite(&mut failed);
        assert_eq!(failed["grpc-status"], "3");
        let message = percent_decode_str(failed["grpc-message"].to_str().expect("ASCII"))
            .decode_utf8_lossy()
            .into_owned();
        assert!(message.starts_with("invalid request:"), "{message}");

        let mut bug = headers("13", "internal%20error");
        rewrite(&mut bug);
        assert_eq!(bug["grpc-status"], "13");
        let mut other = headers("5", "failed%20to%20decode%20Protobuf%20message");
        rewrite(&mut other);
        assert_eq!(other["grpc-status"], "5");
    }
}
