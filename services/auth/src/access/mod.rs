//! Who may call what: the access rules and the token revocations, held in
//! memory so that a check needs no database round trip, and kept current
//! by [`sync`].

pub mod service;
pub mod sync;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use host::notifications::Freshness;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::{Role, UserId};
use crate::error::Error;
use crate::tokens::access::{AccessTokens, Principal, TokenError};

/// Who is calling, as far as the access rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token, on an endpoint open to anonymous calls.
    Anonymous,
    User(Principal),
    /// On an endpoint open to anonymous calls, a token that may be good
    /// but cannot be confirmed now (the revocations are stale): treated as
    /// no token, unless the call needs what only a token gives, which then
    /// fails closed with this reason.
    Unconfirmed(String),
    /// A service on its own behalf, with the service secret (see
    /// [`service`]), on one of [`service::SERVICE_ENDPOINTS`].
    Service,
}

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Anonymous | Caller::Unconfirmed(_) | Caller::Service => None,
            Caller::User(principal) => Some(principal),
        }
    }

    /// Fails closed for a call that needs a confirmed token, when the
    /// token presented could not be confirmed.
    pub fn confirmed(&self) -> Result<(), Error> {
        match self {
            Caller::Unconfirmed(reason) => Err(Error::Unavailable(reason.clone())),
            Caller::Anonymous | Caller::User(_) | Caller::Service => Ok(()),
        }
    }

    /// The principal of a caller with a confirmed token; else
    /// `UNAUTHENTICATED`, saying `why` a token is needed (or `UNAVAILABLE`,
    /// see [`Caller::confirmed`]).
    pub fn signed_in(&self, why: &str) -> Result<&Principal, Error> {
        self.confirmed()?;
        self.principal()
            .ok_or_else(|| Error::unauthenticated(why.to_owned()))
    }

    pub fn is_admin(&self) -> bool {
        self.principal().is_some_and(|p| p.role == Role::Admin)
    }

    /// Whether the caller may act on `user`'s account: it is theirs, or
    /// they are an admin.
    pub fn may_act_on(&self, user: UserId) -> bool {
        self.principal()
            .is_some_and(|p| p.user_id == user || p.role == Role::Admin)
    }
}

pub struct AccessPolicy {
    tokens: AccessTokens,
    rules: RwLock<Rules>,
    /// Per user: the lowest token version still valid, and the name tokens
    /// issued before a rename answer to.
    revocations: RwLock<HashMap<UserId, Revocation>>,
    /// Sessions (refresh token families) ended within the tokens'
    /// lifetime: their access tokens are refused.
    ended_sessions: RwLock<HashMap<Uuid, EndedSession>>,
    /// How current the rules and revocations are (see [`sync`]).
    freshness: Freshness,
    /// Older state than this is not answered from: checks fail closed.
    max_staleness: Duration,
    /// How long a revocation or rename is kept: every token issued before
    /// it has expired by then.
    revocation_lifetime: Duration,
    /// Numbers the loads of the rules, in the order they started.
    generations: AtomicU64,
    /// Revocations as they become known, for services that hold calls
    /// open (`AccessService/WatchRevocations`).
    changes: broadcast::Sender<Change>,
    /// What services present to call on their own behalf, if any may.
    service: Option<service::ServiceSecret>,
    /// Services prove who they are with a client certificate (mutual TLS)
    /// instead: one whose common name is one of these.
    service_certificates: Option<Vec<String>>,
}

/// What `WatchRevocations` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The user's tokens below this version were revoked.
    Revoked(UserId, i64),
    /// The user's session ended: its tokens are refused.
    SessionEnded(UserId, Uuid),
    /// The user was renamed: what a service kept of their name is stale.
    Renamed(UserId),
    /// The policy was reloaded: anything may have changed.
    Resync,
}

/// Changes a watcher may fall behind by before it is told to resync.
const CHANGES_BUFFER: usize = 1024;

#[derive(Default)]
struct Rules {
    /// The load these came from; an older load never replaces them.
    generation: u64,
    /// Endpoint (gRPC full method name) to the roles that may call it.
    by_endpoint: HashMap<String, HashSet<Role>>,
}

/// What is known of a user's tokens beyond what they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Tokens with a lower version are revoked.
    pub min_version: i64,
    /// The user's name, if they were renamed.
    pub current_name: Option<String>,
    /// Orders renames (the database's `name_versions`): of two names, the
    /// one with the higher number is the later, whatever the clocks say.
    pub name_version: i64,
    /// When this last changed.
    pub at: OffsetDateTime,
}

/// A session whose access tokens are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedSession {
    pub user: UserId,
    /// When it ended, as far as this replica knows.
    pub at: OffsetDateTime,
}

impl AccessPolicy {
    pub fn new(tokens: AccessTokens, max_staleness: Duration) -> AccessPolicy {
        // Kept a minute past the tokens' lifetime, for a token issued just
        // as a revocation committed.
        let revocation_lifetime = tokens.ttl() + Duration::from_secs(60);
        AccessPolicy {
            tokens,
            rules: RwLock::default(),
            revocations: RwLock::default(),
            ended_sessions: RwLock::default(),
            freshness: Freshness::new(),
            max_staleness,
            revocation_lifetime,
            generations: AtomicU64::new(1),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            service: None,
            service_certificates: None,
        }
    }

    /// Makes services prove who they are with a client certificate whose
    /// common name is one of `names`, for `Check`, `WatchRevocations` and
    /// [`service::SERVICE_ENDPOINTS`]: a call to them without one is
    /// refused, and one with one needs no secret.
    #[must_use]
    pub fn with_service_certificates(mut self, names: Option<Vec<String>>) -> AccessPolicy {
        self.service_certificates = names;
        self
    }

    /// Whether services prove who they are with a client certificate.
    pub fn services_need_certificates(&self) -> bool {
        self.service_certificates.is_some()
    }

    /// Whether `certs` (a connection's verified client certificates) are a
    /// service's.
    pub fn is_service_certificate(
        &self,
        certs: Option<&std::sync::Arc<Vec<host::tls::CertificateDer<'static>>>>,
    ) -> bool {
        self.service_certificates
            .as_deref()
            .is_some_and(|names| host::tls::peer_named(certs, names))
    }

    /// Lets services that present `secret` call
    /// [`service::SERVICE_ENDPOINTS`] on their own behalf.
    #[must_use]
    pub fn with_service_secret(mut self, secret: Option<service::ServiceSecret>) -> AccessPolicy {
        self.service = secret;
        self
    }

    /// The service secret, if services may call on their own behalf.
    pub fn service_secret(&self) -> Option<&service::ServiceSecret> {
        self.service.as_ref()
    }

    /// Revocations from now on.
    pub fn watch(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Tells watchers that anything may have changed (after a reload).
    pub fn announce_resync(&self) {
        let _ = self.changes.send(Change::Resync);
    }

    pub fn tokens(&self) -> &AccessTokens {
        &self.tokens
    }

    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    /// How long a revocation must be remembered.
    pub fn revocation_lifetime(&self) -> Duration {
        self.revocation_lifetime
    }

    /// Decides a call to `endpoint` with the given `authorization` metadata.
    /// On an endpoint open to anonymous calls, a token that does not check
    /// out (expired, revoked, garbled) counts as no token: a client that
    /// always sends its last token can still log in, even while the
    /// revocations cannot be confirmed current ([`Caller::Unconfirmed`]).
    pub fn authorize(&self, authorization: Option<&str>, endpoint: &str) -> Result<Caller, Error> {
        if service::SERVICE_ENDPOINTS.contains(&endpoint)
            && self
                .service
                .as_ref()
                .is_some_and(|secret| secret.presented_in(authorization))
        {
            return Ok(Caller::Service);
        }
        if !self.allows(endpoint, Role::Anonymous) {
            return self.check(authorization, endpoint).map(Caller::User);
        }
        if authorization.is_none() {
            return Ok(Caller::Anonymous);
        }
        match self.check(authorization, endpoint) {
            Ok(principal) => Ok(Caller::User(principal)),
            Err(Error::Unavailable(reason)) => Ok(Caller::Unconfirmed(reason)),
            Err(_) => Ok(Caller::Anonymous),
        }
    }

    /// Decides a call to `endpoint` by the bearer of an access token.
    pub fn check(&self, authorization: Option<&str>, endpoint: &str) -> Result<Principal, Error> {
        let token = bearer_token(authorization)?;
        let mut principal = self.tokens.verify(token).map_err(|error| match error {
            TokenError::Expired => Error::TokenExpired("access token expired".into()),
            TokenError::Invalid => Error::unauthenticated("access token is invalid"),
        })?;
        if !self.freshness.within(self.max_staleness) {
            return Err(Error::Unavailable(
                "token revocations cannot be confirmed current; try again".into(),
            ));
        }
        self.apply_revocations(&mut principal)?;
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rules.by_endpoint.get(endpoint) {
            None => Err(Error::permission_denied(format!(
                "no access rule allows {endpoint}"
            ))),
            Some(roles) if !roles.contains(&principal.role) => Err(Error::permission_denied(
                format!("role {} may not call {endpoint}", principal.role.as_str()),
            )),
            Some(_) => Ok(principal),
        }
    }

    /// Whether `endpoint` may be called without a token (logging in,
    /// registering, refreshing).
    pub fn is_open(&self, endpoint: &str) -> bool {
        self.allows(endpoint, Role::Anonymous)
    }

    fn allows(&self, endpoint: &str, role: Role) -> bool {
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rules
            .by_endpoint
            .get(endpoint)
            .is_some_and(|roles| roles.contains(&role))
    }

    /// Refuses a revoked token, or one of an ended session; gives a
    /// renamed user their current name.
    fn apply_revocations(&self, principal: &mut Principal) -> Result<(), Error> {
        if let Some(session) = principal.session
            && self
                .ended_sessions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&session)
        {
            return Err(Error::unauthenticated(
                "the session has ended (logged out or revoked); log in again",
            ));
        }
        let revocations = self
            .revocations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(revocation) = revocations.get(&principal.user_id) else {
            return Ok(());
        };
        if principal.token_version < revocation.min_version {
            return Err(Error::unauthenticated("access token has been revoked"));
        }
        if let Some(name) = &revocation.current_name {
            principal.name.clone_from(name);
        }
        Ok(())
    }

    /// A number for a load of the rules about to start.
    pub fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::AcqRel)
    }

    /// Replaces every rule with `rules`, read by the load numbered
    /// `generation`, unless a later load was applied already.
    pub fn replace_rules(&self, generation: u64, rules: impl IntoIterator<Item = (String, Role)>) {
        let mut by_endpoint: HashMap<String, HashSet<Role>> = HashMap::new();
        for (endpoint, role) in rules {
            by_endpoint.entry(endpoint).or_default().insert(role);
        }
        let mut current = self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if generation > current.generation {
            *current = Rules {
                generation,
                by_endpoint,
            };
        }
    }

    /// Revokes `user`'s tokens older than `min_version`. Revocations only
    /// ever grow, so replicas may learn of them in any order.
    pub fn revoke(&self, user: UserId, min_version: i64) {
        self.merge(
            user,
            Revocation {
                min_version,
                current_name: None,
                name_version: 0,
                at: OffsetDateTime::now_utc(),
            },
        );
    }

    /// Merges what is known of `user`: the higher minimum version, and the
    /// later name.
    pub fn merge(&self, user: UserId, revocation: Revocation) {
        // Older than every token it could refuse: nothing to keep, and a
        // rename among such rows, merged again on a reload, would be
        // announced anew.
        if revocation.at < self.oldest_kept() {
            return;
        }
        let mut revocations = self
            .revocations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let min_version = revocation.min_version;
        let (raised, renamed) = match revocations.entry(user) {
            Entry::Vacant(entry) => {
                let raised = revocation.min_version > 0;
                let renamed = revocation.current_name.is_some();
                entry.insert(revocation);
                (raised, renamed)
            }
            Entry::Occupied(mut entry) => {
                let known = entry.get_mut();
                let raised = revocation.min_version > known.min_version;
                known.min_version = known.min_version.max(revocation.min_version);
                let renamed = revocation.current_name.is_some()
                    && revocation.name_version > known.name_version;
                if renamed {
                    known.current_name = revocation.current_name;
                    known.name_version = revocation.name_version;
                }
                known.at = known.at.max(revocation.at);
                (raised, renamed)
            }
        };
        drop(revocations);
        if raised {
            let _ = self.changes.send(Change::Revoked(user, min_version));
        }
        if renamed {
            let _ = self.changes.send(Change::Renamed(user));
        }
    }

    /// Refuses the access tokens of `session`, ended at `at`. Endings
    /// only ever add up, so replicas may learn of them in any order.
    pub fn end_session(&self, session: Uuid, ended: EndedSession) {
        let new = self
            .ended_sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session, ended)
            .is_none();
        if new {
            let _ = self.changes.send(Change::SessionEnded(ended.user, session));
        }
    }

    /// Every session ended and still remembered: what a watcher is told on
    /// a resync.
    pub fn ended_sessions(&self) -> Vec<(UserId, Uuid)> {
        self.ended_sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(session, ended)| (ended.user, *session))
            .collect()
    }

    /// Every user with tokens revoked, and the lowest version still valid:
    /// what a watcher is told on a resync.
    pub fn revoked_versions(&self) -> Vec<(UserId, i64)> {
        self.revocations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, revocation)| revocation.min_version > 0)
            .map(|(user, revocation)| (*user, revocation.min_version))
            .collect()
    }

    /// Forgets revocations and renames older than every token they could
    /// apply to; how many are kept.
    pub fn forget_expired(&self) -> usize {
        let oldest = self.oldest_kept();
        let mut revocations = self
            .revocations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revocations.retain(|_, revocation| revocation.at >= oldest);
        let kept = revocations.len();
        drop(revocations);
        let mut ended = self
            .ended_sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ended.retain(|_, session| session.at >= oldest);
        kept + ended.len()
    }
}

impl AccessPolicy {
    /// Revocations and endings from before this refuse no unexpired token.
    fn oldest_kept(&self) -> OffsetDateTime {
        let lifetime =
            time::Duration::try_from(self.revocation_lifetime).unwrap_or(time::Duration::MAX);
        OffsetDateTime::now_utc() - lifetime
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(authorization: Option<&str>) -> Result<&str, Error> {
    let value = authorization.ok_or_else(|| {
        Error::unauthenticated("missing authorization metadata (Bearer <access token>)")
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Error::unauthenticated(
            "authorization metadata must be Bearer <access token>",
        )),
    }
}

#[cfg(test)]
mod tests;
