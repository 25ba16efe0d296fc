//! The chat service's one connection to auth: a single channel, connected
//! on first use and reconnected by tonic when it breaks, shared by every
//! call.

use std::time::Duration;

use api::auth::v1 as pb;
use api::auth::v1::access_service_client::AccessServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use http::HeaderValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::Instrument as _;

use crate::config::AuthConfig;
use crate::domain::Caller;
use crate::error::{Error, Result};

#[derive(Clone)]
pub(crate) struct AuthClient {
    access: AccessServiceClient<Channel>,
    /// The revocation feed, on a connection of its own: a slow or broken
    /// connection for checks does not silence it, nor it them. Behind a
    /// load balancer the two may reach different auth replicas, which is
    /// why the feed says which token versions it revokes.
    watch: AccessServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    check_timeout: Duration,
    /// `Bearer <service secret>`, for calls on chat's own behalf: the
    /// revocation feed and the lookups of names and ids.
    service_authorization: Option<HeaderValue>,
    /// Whether lookups are made on chat's own behalf (a service secret or
    /// a client certificate), never with the caller's token.
    own_behalf: bool,
}

impl AuthClient {
    pub(crate) fn connect_lazy(config: &AuthConfig) -> anyhow::Result<AuthClient> {
        let mut endpoint = Endpoint::from_shared(config.url.clone())?
            .connect_timeout(config.check_timeout)
            .tcp_nodelay(true);
        if config.url.starts_with("https://") {
            endpoint = endpoint.tls_config(tls_config(&config.tls)?)?;
        }
        let channel = endpoint.connect_lazy();
        let watch_channel = endpoint.connect_lazy();
        let service_authorization = match &config.service_secret {
            Some(secret) => {
                use secrecy::ExposeSecret as _;
                let mut value = HeaderValue::try_from(format!("Bearer {}", secret.expose_secret()))
                    .ok()
                    .filter(|value| value.to_str().is_ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("CHAT_AUTH_SERVICE_SECRET must be printable ASCII")
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(AuthClient {
            access: AccessServiceClient::new(channel.clone()),
            watch: AccessServiceClient::new(watch_channel),
            users: UserServiceClient::new(channel),
            check_timeout: config.check_timeout,
            own_behalf: service_authorization.is_some() || config.tls.client_cert_file.is_some(),
            service_authorization,
        })
    }

    /// How long a check may take: the configured timeout, or half of what
    /// the guarded call has left (its `grpc-timeout`), whichever is less.
    pub(crate) fn check_deadline(&self, call_timeout: Option<&HeaderValue>) -> Duration {
        call_timeout
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.check_timeout, |left| self.check_timeout.min(left / 2))
    }

    /// Asks auth whether the bearer of `authorization` may call `endpoint`.
    /// Auth's UNAUTHENTICATED and PERMISSION_DENIED are passed on as they
    /// are; anything else, a timeout included, is UNAVAILABLE: no call goes
    /// through unchecked.
    pub(crate) async fn check(
        &self,
        authorization: Option<&HeaderValue>,
        request_id: Option<&HeaderValue>,
        endpoint: &str,
        deadline: Duration,
    ) -> Result<Caller> {
        let span = tracing::info_span!(
            "auth check",
            otel.name = "/auth.v1.AccessService/Check",
            otel.kind = "client",
            endpoint,
        );
        let request = span.in_scope(|| {
            self.request(
                pb::CheckRequest {
                    endpoint_address: endpoint.to_owned(),
                },
                authorization,
                request_id,
                deadline,
            )
        })?;
        let mut access = self.access.clone();
        let answer = tokio::time::timeout(deadline, access.check(request))
            .instrument(span)
            .await
            .map_err(|_| unavailable(&Status::deadline_exceeded("no answer in time")))?
            .map_err(|status| match status.code() {
                _ if host::error::refuses_service_credential(&status) => refused(&status),
                Code::Unauthenticated | Code::PermissionDenied => Error::Upstream(status),
                _ => unavailable(&status),
            })?
            .into_inner();
        let expires_at = answer.expires_at.and_then(|at| {
            let seconds = u64::try_from(at.seconds).ok()?;
            std::time::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
        });
        Ok(Caller {
            user_id: crate::domain::UserId::new(answer.user_id),
            is_admin: answer.role() == pb::Role::Admin,
            username: answer.username,
            expires_at,
            token_version: answer.token_version,
            session: (!answer.session_id.is_empty()).then_some(answer.session_id),
        })
    }

    /// Auth's feed of revocations (see `AccessService/WatchRevocations`).
    pub(crate) async fn watch_revocations(
        &self,
    ) -> Result<tonic::Streaming<pb::WatchRevocationsResponse>, Status> {
        let mut access = self.watch.clone();
        let mut request = tonic::Request::new(pb::WatchRevocationsRequest {});
        if let Some(authorization) = self
            .service_authorization
            .as_ref()
            .and_then(|value| value.to_str().ok()?.parse().ok())
        {
            request
                .metadata_mut()
                .insert("authorization", authorization);
        }
        tokio::time::timeout(self.check_timeout, access.watch_revocations(request))
            .await
            .map_err(|_| Status::deadline_exceeded("no answer in time"))?
            .map(tonic::Response::into_inner)
    }

    /// The check timeout, for calls made on the service's own behalf.
    pub(crate) fn check_timeout(&self) -> Duration {
        self.check_timeout
    }

    /// The users with these names, and the names that matched nobody, as
    /// auth compares them. Asked on chat's own behalf, with the service
    /// secret; without one (a service built by hand, not from the
    /// environment), with the caller's `authorization`. Auth's verdicts on
    /// the request (a bad name) are passed on as they are; only a failure
    /// to get an answer is UNAVAILABLE.
    pub(crate) async fn lookup_usernames(
        &self,
        authorization: Option<&HeaderValue>,
        request_id: Option<&HeaderValue>,
        usernames: Vec<String>,
    ) -> Result<pb::LookupUsernamesResponse> {
        let request = self.request(
            pb::LookupUsernamesRequest { usernames },
            self.on_whose_behalf(authorization),
            request_id,
            self.check_timeout,
        )?;
        let mut users = self.users.clone();
        self.answer(users.lookup_usernames(request)).await
    }

    /// The current names of the users with these ids, as
    /// [`AuthClient::lookup_usernames`] asks.
    pub(crate) async fn lookup_user_ids(
        &self,
        authorization: Option<&HeaderValue>,
        request_id: Option<&HeaderValue>,
        ids: Vec<i64>,
    ) -> Result<pb::LookupUserIdsResponse> {
        let request = self.request(
            pb::LookupUserIdsRequest { ids },
            self.on_whose_behalf(authorization),
            request_id,
            self.check_timeout,
        )?;
        let mut users = self.users.clone();
        self.answer(users.lookup_user_ids(request)).await
    }

    /// The authorization a lookup carries: chat's own, or, for a chat with
    /// no credential of its own, the caller's.
    fn on_whose_behalf<'a>(&'a self, caller: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
        if self.own_behalf {
            self.service_authorization.as_ref()
        } else {
            caller
        }
    }

    /// Auth's answer in time; its verdicts on the request passed on, any
    /// other failure UNAVAILABLE. A refusal of the service secret is
    /// chat's misconfiguration, not the caller's fault: UNAVAILABLE too.
    async fn answer<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T> {
        let own_behalf = self.own_behalf;
        let answer = tokio::time::timeout(self.check_timeout, call)
            .await
            .map_err(|_| unavailable(&Status::deadline_exceeded("no answer in time")))?
            .map_err(|status| match status.code() {
                Code::Unauthenticated | Code::PermissionDenied if own_behalf => refused(&status),
                Code::Unauthenticated
                | Code::PermissionDenied
                | Code::InvalidArgument
                | Code::NotFound
                | Code::ResourceExhausted
                | Code::FailedPrecondition
                | Code::OutOfRange => Error::Upstream(lookup_verdict(&status)),
                _ => unavailable(&status),
            })?;
        Ok(answer.into_inner())
    }

    /// A request to auth carrying the caller's authorization and the
    /// request id, so that both services' logs tell of the same call.
    fn request<T>(
        &self,
        message: T,
        authorization: Option<&HeaderValue>,
        request_id: Option<&HeaderValue>,
        deadline: Duration,
    ) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        host::trace_context::inject(request.metadata_mut());
        if let Some(id) = request_id.and_then(|id| id.to_str().ok()?.parse().ok()) {
            request.metadata_mut().insert(host::metrics::REQUEST_ID, id);
        }
        if let Some(authorization) = authorization {
            let value = authorization
                .to_str()
                .ok()
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| {
                    Error::Upstream(Status::unauthenticated(
                        "authorization metadata must be Bearer <access token>",
                    ))
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// TLS to auth: its certificate verified against the configured CA (the
/// system's roots without one), and chat's client certificate, if any.
fn tls_config(tls: &crate::config::AuthTls) -> anyhow::Result<ClientTlsConfig> {
    use anyhow::Context as _;
    let read = |variable: &str, path: &std::path::Path| {
        std::fs::read(path)
            .with_context(|| format!("{variable}={}: cannot read it", path.display()))
    };
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_file {
        Some(path) => {
            config.ca_certificate(Certificate::from_pem(read("CHAT_AUTH_CA_FILE", path)?))
        }
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
        config = config.identity(Identity::from_pem(
            read("CHAT_AUTH_CLIENT_CERT_FILE", cert)?,
            read("CHAT_AUTH_CLIENT_KEY_FILE", key)?,
        ));
    }
    Ok(config)
}

/// Auth refused chat's own credential: chat is misconfigured, and its
/// callers are told of an outage, not of a fault of theirs.
fn refused(status: &Status) -> Error {
    tracing::error!(
        code = ?status.code(),
        message = status.message(),
        "auth refused chat's own credential: CHAT_AUTH_SERVICE_SECRET must be auth's AUTH_SERVICE_SECRET, and under mutual TLS chat needs a client certificate from auth's client CA"
    );
    Error::Unavailable("the auth service is unavailable; try again".into())
}

fn unavailable(status: &Status) -> Error {
    tracing::warn!(code = ?status.code(), message = status.message(), "the auth service could not be asked");
    Error::Unavailable("the auth service is unavailable; try again".into())
}

/// `grpc-timeout`: 1 to 8 ASCII digits and a unit (H, M, S, m, u, n), per
/// the gRPC HTTP/2 protocol; anything else is no timeout.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..unit_at)?, value.get(unit_at..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// What a client of chat is told of auth's verdict on a lookup made for
/// it: the code and message, and of the details only an expired token's,
/// which says a fresh token cures it. Auth's other details name auth's
/// fields, not the client's.
fn lookup_verdict(status: &Status) -> Status {
    use tonic_types::StatusExt as _;
    match status.get_details_error_info() {
        Some(info) if info.reason == host::error::TOKEN_EXPIRED => status.clone(),
        _ => Status::new(status.code(), status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for junk in ["123456789S", "+5S", "-5S", "5 S", "5é", "é", "1e3S"] {
            assert_eq!(parse_grpc_timeout(junk), None, "{junk:?}");
        }
    }

    #[tokio::test]
    async fn a_check_gets_at_most_half_of_what_the_call_has_left() {
        let client = AuthClient::connect_lazy(&AuthConfig {
            url: "http://127.0.0.1:1".into(),
            check_timeout: Duration::from_secs(2),
            service_secret: None,
            tls: crate::config::AuthTls::default(),
            access_cache_ttl: Duration::ZERO,
        })
        .expect("a valid URI");
        assert_eq!(client.check_deadline(None), Duration::from_secs(2));
        assert_eq!(
            client.check_deadline(Some(&HeaderValue::from_static("1S"))),
            Duration::from_millis(500)
        );
        assert_eq!(
            client.check_deadline(Some(&HeaderValue::from_static("1M"))),
            Duration::from_secs(2)
        );
    }
}
