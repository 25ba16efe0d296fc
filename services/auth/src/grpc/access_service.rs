//! `auth.v1.AccessService`: other services ask whether a caller may call
//! one of their endpoints, and watch revocations to end the calls they
//! hold open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::v1 as pb;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::access::{AccessPolicy, Change};
use crate::app::App;
use crate::domain::EndpointAddress;

/// Watchers served at once, and from one address; more are refused.
/// Watchers are services (one per chat replica), not users.
const MAX_WATCHERS: usize = 64;
const MAX_WATCHERS_PER_PEER: usize = 4;
/// A watcher hears something at least this often.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Users named in one message at most.
const USERS_PER_MESSAGE: usize = 256;

pub struct AccessApi {
    state: Arc<App>,
    /// `auth_access_checks_total{result="allowed"}`, resolved once.
    allowed: prometheus::IntCounter,
    watchers: Arc<Semaphore>,
    /// Watchers per peer address; an entry goes with its last watcher.
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AccessApi {
    pub fn new(state: Arc<App>) -> AccessApi {
        AccessApi {
            allowed: state.metrics.access_checks.with_label_values(&["allowed"]),
            state,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            peers: Arc::default(),
        }
    }
}

/// One watcher's place among its peer's; given back when dropped.
struct PeerWatch {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: Option<IpAddr>,
}

impl PeerWatch {
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, peer: Option<IpAddr>) -> Option<PeerWatch> {
        if let Some(peer) = peer {
            let mut counts = peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = counts.entry(peer).or_default();
            if *count >= MAX_WATCHERS_PER_PEER {
                return None;
            }
            *count += 1;
        }
        Some(PeerWatch {
            peers: peers.clone(),
            peer,
        })
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            let mut counts = self
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&peer);
                }
            }
        }
    }
}

type Watched = Result<pb::WatchRevocationsResponse, Status>;

#[tonic::async_trait]
impl pb::access_service_server::AccessService for AccessApi {
    // Checks are logged at DEBUG when they allow (see startup).
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = %request.get_ref().endpoint_address))]
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let checks = &self.state.metrics.access_checks;
        let policy = &self.state.policy;
        if policy.services_need_certificates()
            && !policy.is_service_certificate(request.peer_certs().as_ref())
        {
            checks.with_label_values(&["unauthenticated"]).inc();
            return Err(host::error::service_credential_refused(
                "Check takes a service's client certificate from auth's client CA (mutual TLS; AUTH_SERVICE_CLIENT_NAMES)",
            ));
        }
        let endpoint = match host::invalid::validate(request.get_ref()).and_then(|()| {
            EndpointAddress::parse("endpoint_address", &request.get_ref().endpoint_address)
                .map_err(Status::from)
        }) {
            Ok(endpoint) => endpoint,
            Err(status) => {
                checks.with_label_values(&["invalid_argument"]).inc();
                return Err(status);
            }
        };
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or_default());
        let principal = match self.state.policy.check(authorization, endpoint.as_str()) {
            Ok(principal) => {
                self.allowed.inc();
                principal
            }
            Err(error) => {
                let status = Status::from(error);
                let result = match status.code() {
                    tonic::Code::PermissionDenied => "permission_denied",
                    tonic::Code::Unavailable => "unavailable",
                    _ => "unauthenticated",
                };
                checks.with_label_values(&[result]).inc();
                return Err(status);
            }
        };
        Ok(Response::new(pb::CheckResponse {
            user_id: principal.user_id.0,
            username: principal.name,
            role: principal.role.to_proto().into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: i64::try_from(principal.expires_at).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            token_version: principal.token_version,
            session_id: principal
                .session
                .map(|session| session.to_string())
                .unwrap_or_default(),
        }))
    }

    type WatchRevocationsStream = ReceiverStream<Watched>;

    #[tracing::instrument(skip_all)]
    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        if self.state.policy.services_need_certificates() {
            if !self
                .state
                .policy
                .is_service_certificate(request.peer_certs().as_ref())
            {
                return Err(host::error::service_credential_refused(
                    "watching revocations takes a service's client certificate from auth's client CA (mutual TLS; AUTH_SERVICE_CLIENT_NAMES)",
                ));
            }
        } else if let Some(secret) = self.state.policy.service_secret() {
            let authorization = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok());
            if !secret.presented_in(authorization) {
                return Err(host::error::service_credential_refused(
                    "watching revocations takes the service secret (authorization: Bearer <AUTH_SERVICE_SECRET>)",
                ));
            }
        }
        let peer = PeerWatch::take(&self.peers, request.remote_addr().map(|addr| addr.ip()))
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "{MAX_WATCHERS_PER_PEER} watches from this address already"
                ))
            })?;
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_WATCHERS} services watch revocations already; try again later"
            ))
        })?;
        let changes = self.state.policy.watch();
        let policy = self.state.policy.clone();
        let max_staleness = self.state.policy_max_staleness;
        let (sender, receiver) = mpsc::channel(4);
        let shutdown = self.state.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _peer = peer;
            tokio::select! {
                () = watch(changes, sender.clone(), &policy, max_staleness) => {}
                () = shutdown.cancelled() => {
                    let _ = sender.send(Err(Status::unavailable("the auth service is shutting down"))).await;
                }
            }
        });
        tracing::info!("a service watches revocations");
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Forwards `changes` to a watcher until it leaves: a resync first, then
/// revoked users in batches, heartbeats when nothing happens. A resync
/// carries every revocation the replica holds, so a watcher can refuse
/// old tokens without asking again. No heartbeat vouches for a policy that
/// is not current: while it is stale the watcher hears nothing, and fails
/// closed.
async fn watch(
    mut changes: broadcast::Receiver<Change>,
    sender: mpsc::Sender<Watched>,
    policy: &AccessPolicy,
    max_staleness: Duration,
) {
    let first = pb::WatchRevocationsResponse {
        resync: true,
        ..Default::default()
    };
    if !send_with_revocations(&sender, first, policy).await {
        return;
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.tick().await;
    loop {
        let message = tokio::select! {
            () = sender.closed() => return,
            _ = heartbeat.tick() => pb::WatchRevocationsResponse::default(),
            change = changes.recv() => {
                let mut message = pb::WatchRevocationsResponse::default();
                let mut next = Some(change);
                while let Some(change) = next.take() {
                    match change {
                        Ok(Change::Revoked(user, min_token_version)) => {
                            message.user_ids.push(user.0);
                            message.revocations.push(pb::Revocation {
                                user_id: user.0,
                                min_token_version,
                            });
                        }
                        Ok(Change::Renamed(user)) => {
                            // Named without a version: watchers drop what
                            // they kept of the user and check again.
                            message.user_ids.push(user.0);
                        }
                        Ok(Change::SessionEnded(user, session)) => {
                            message.user_ids.push(user.0);
                            message.ended_sessions.push(pb::EndedSession {
                                user_id: user.0,
                                session_id: session.to_string(),
                            });
                        }
                        Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            message.resync = true;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    if message.user_ids.len() < USERS_PER_MESSAGE {
                        next = match changes.try_recv() {
                            Ok(change) => Some(Ok(change)),
                            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                                Some(Err(broadcast::error::RecvError::Lagged(missed)))
                            }
                            Err(_) => None,
                        };
                    }
                }
                message
            }
        };
        let heartbeat_only = message.user_ids.is_empty() && !message.resync;
        if heartbeat_only && !policy.freshness().within(max_staleness) {
            continue;
        }
        let sent = if message.resync {
            send_with_revocations(&sender, message, policy).await
        } else {
            sender.send(Ok(message)).await.is_ok()
        };
        if !sent {
            return;
        }
        heartbeat.reset();
    }
}

/// Sends `message`, then every revocation and ended session the replica
/// holds, at most [`USERS_PER_MESSAGE`] of each a message; whether the
/// watcher is still there.
async fn send_with_revocations(
    sender: &mpsc::Sender<Watched>,
    mut message: pb::WatchRevocationsResponse,
    policy: &AccessPolicy,
) -> bool {
    let revoked = policy.revoked_versions();
    let ended = policy.ended_sessions();
    let mut batches = revoked.chunks(USERS_PER_MESSAGE);
    let mut ended_batches = ended.chunks(USERS_PER_MESSAGE);
    loop {
        if let Some(batch) = batches.next() {
            message
                .revocations
                .extend(
                    batch
                        .iter()
                        .map(|(user, min_token_version)| pb::Revocation {
                            user_id: user.0,
                            min_token_version: *min_token_version,
                        }),
                );
        }
        if let Some(batch) = ended_batches.next() {
            message
                .ended_sessions
                .extend(batch.iter().map(|(user, session)| pb::EndedSession {
                    user_id: user.0,
                    session_id: session.to_string(),
                }));
        }
        if sender.send(Ok(message)).await.is_err() {
            return false;
        }
        if batches.len() == 0 && ended_batches.len() == 0 {
            return true;
        }
        message = pb::WatchRevocationsResponse::default();
    }
}
