//! A tower layer in front of `ChatService` (and nothing else, so health
//! and reflection stay open): every call, unary or streaming, is first
//! checked with auth's `AccessService/Check` under its full method name,
//! or answered from the answers auth gave lately, while the revocation
//! feed vouches for them (see [`crate::access_cache`]). tonic's
//! interceptors cannot await, hence a layer.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::access_watch::AccessWatch;
use crate::auth_client::AuthClient;

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: AuthClient,
    /// Where the revocation feed was when each call was checked, for the
    /// streams it holds afterwards.
    access: Arc<AccessWatch>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, auth: AuthClient, access: Arc<AccessWatch>) -> Guarded<S> {
        Guarded {
            inner,
            auth,
            access,
        }
    }
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let auth = self.auth.clone();
        let checked_at = self.access.epoch();
        let access = self.access.clone();
        Box::pin(async move {
            let headers = request.headers();
            let authorization = headers.get(http::header::AUTHORIZATION);
            let endpoint = request.uri().path();
            let checked = match access.cached(authorization, endpoint) {
                Some(caller) => Ok(caller),
                None => {
                    let asked_at = access.cache_generation();
                    let deadline = auth.check_deadline(headers.get("grpc-timeout"));
                    let checked = auth
                        .check(
                            authorization,
                            headers.get(host::metrics::REQUEST_ID),
                            endpoint,
                            deadline,
                        )
                        .await;
                    if let Ok(caller) = &checked {
                        access.remember(asked_at, authorization, endpoint, caller);
                    }
                    checked
                }
            };
            match checked {
                Ok(caller) => {
                    tracing::Span::current().record("user_id", caller.user_id.get());
                    tracing::debug!(
                        user_id = caller.user_id.get(),
                        endpoint = request.uri().path(),
                        "access granted"
                    );
                    request.extensions_mut().insert(caller);
                    request.extensions_mut().insert(checked_at);
                    inner.call(request).await
                }
                Err(error) => Ok(Status::from(error).into_http()),
            }
        })
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}
