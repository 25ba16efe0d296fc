//! A tower layer that applies the access rules to a service's calls before
//! they reach it: the same [`AccessPolicy::authorize`] that answers other
//! services' `Check` calls. The caller it lets through travels to the
//! handler in the request's extensions.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::access::service::SERVICE_ENDPOINTS;
use crate::access::{AccessPolicy, Caller};
use crate::quotas::AddressQuotas;

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
    quotas: Arc<AddressQuotas>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, policy: Arc<AccessPolicy>, quotas: Arc<AddressQuotas>) -> Guarded<S> {
        Guarded {
            inner,
            policy,
            quotas,
        }
    }
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // A value that is not text is as malformed as a wrong scheme.
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or_default());
        let endpoint = request.uri().path();
        let certificates = self.policy.services_need_certificates();
        let certified = self
            .policy
            .is_service_certificate(host::tls::peer_certs(&request).as_ref());
        let service_endpoint = SERVICE_ENDPOINTS.contains(&endpoint);
        let allowed: Result<Caller, Status> = if certificates && certified && service_endpoint {
            Ok(Caller::Service)
        } else {
            self.policy
                .authorize(authorization, endpoint)
                .map_err(Status::from)
        }
        .and_then(|caller| {
            // Under mutual TLS a service is its certificate, never a
            // secret alone.
            if certificates && caller == Caller::Service && !certified {
                return Err(host::error::service_credential_refused(
                    "calls on a service's own behalf take a service's client certificate from auth's client CA",
                ));
            }
            // The endpoints open to anyone are paid for by the caller's
            // address, token or not: a token of one's own account vouches
            // for nothing. Only admins are exempt.
            let open = matches!(caller, Caller::Anonymous | Caller::Unconfirmed(_))
                || self.policy.is_open(endpoint);
            if open && !caller.is_admin() && caller != Caller::Service {
                self.quotas.anonymous_call(&request).map_err(Status::from)?;
            }
            Ok(caller)
        });
        match allowed {
            Ok(caller) => {
                if let Some(principal) = caller.principal() {
                    tracing::Span::current().record("user_id", principal.user_id.0);
                }
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}
