//! Who may call what: the access rules and the token revocations, held in
//! memory so that a check needs no database round trip, and kept current
//! by [`sync`].

pub mod sync;

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::domain::{Role, UserId};
use crate::error::Error;
use crate::tokens::access::{AccessTokens, Principal, TokenError};

/// Who is calling, as far as the access rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token, on an endpoint open to anonymous calls.
    Anonymous,
    User(Principal),
}

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Anonymous => None,
            Caller::User(principal) => Some(principal),
        }
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
    /// Endpoint (gRPC full method name) to the roles that may call it.
    rules: RwLock<HashMap<String, HashSet<Role>>>,
    /// User to the lowest token version still valid.
    revocations: RwLock<HashMap<UserId, i64>>,
}

impl AccessPolicy {
    pub fn new(tokens: AccessTokens) -> AccessPolicy {
        AccessPolicy {
            tokens,
            rules: RwLock::default(),
            revocations: RwLock::default(),
        }
    }

    pub fn tokens(&self) -> &AccessTokens {
        &self.tokens
    }

    /// Decides a call to `endpoint` with the given `authorization` metadata.
    /// Calls without a token get through only where anonymous calls may.
    pub fn authorize(&self, authorization: Option<&str>, endpoint: &str) -> Result<Caller, Error> {
        match authorization {
            None if self.allows(endpoint, Role::Anonymous) => Ok(Caller::Anonymous),
            _ => self.check(authorization, endpoint).map(Caller::User),
        }
    }

    /// Decides a call to `endpoint` by the bearer of an access token.
    pub fn check(&self, authorization: Option<&str>, endpoint: &str) -> Result<Principal, Error> {
        let token = bearer_token(authorization)?;
        let principal = self.tokens.verify(token).map_err(|error| match error {
            TokenError::Expired => Error::unauthenticated("access token expired"),
            TokenError::Invalid => Error::unauthenticated("access token is invalid"),
        })?;
        if self.is_revoked(&principal) {
            return Err(Error::unauthenticated("access token has been revoked"));
        }
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rules.get(endpoint) {
            None => Err(Error::permission_denied(format!(
                "no access rule allows {endpoint}"
            ))),
            Some(roles) if !roles.contains(&principal.role) => Err(Error::permission_denied(
                format!("role {} may not call {endpoint}", principal.role.as_str()),
            )),
            Some(_) => Ok(principal),
        }
    }

    fn allows(&self, endpoint: &str, role: Role) -> bool {
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rules
            .get(endpoint)
            .is_some_and(|roles| roles.contains(&role))
    }

    fn is_revoked(&self, principal: &Principal) -> bool {
        let revocations = self
            .revocations
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revocations
            .get(&principal.user_id)
            .is_some_and(|min_version| principal.token_version < *min_version)
    }

    /// Replaces every rule with `rules`.
    pub fn replace_rules(&self, rules: impl IntoIterator<Item = (String, Role)>) {
        let mut by_endpoint: HashMap<String, HashSet<Role>> = HashMap::new();
        for (endpoint, role) in rules {
            by_endpoint.entry(endpoint).or_default().insert(role);
        }
        *self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = by_endpoint;
    }

    /// Revokes `user`'s tokens older than `min_version`. Revocations only
    /// ever grow, so replicas may learn of them in any order.
    pub fn revoke(&self, user: UserId, min_version: i64) {
        let mut revocations = self
            .revocations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = revocations.entry(user).or_insert(min_version);
        *entry = (*entry).max(min_version);
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{SigningKey, TokenConfig};

    const ENDPOINT: &str = "/chat.v1.ChatService/Create";

    fn policy() -> AccessPolicy {
        let tokens = AccessTokens::new(&TokenConfig {
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(60),
            signing_keys: vec![SigningKey {
                id: "k".into(),
                secret: "0123456789abcdef0123456789abcdef".to_owned().into(),
            }],
        })
        .expect("valid config");
        let policy = AccessPolicy::new(tokens);
        policy.replace_rules([
            (ENDPOINT.to_owned(), Role::User),
            ("/auth.v1.UserService/Create".to_owned(), Role::Anonymous),
            ("/auth.v1.UserService/List".to_owned(), Role::Admin),
        ]);
        policy
    }

    fn bearer(policy: &AccessPolicy, role: Role, version: i64) -> String {
        let principal = Principal {
            user_id: UserId(1),
            name: "ada".into(),
            role,
            token_version: version,
        };
        format!(
            "Bearer {}",
            policy.tokens().issue(&principal).expect("issuing")
        )
    }

    fn code(result: Result<impl std::fmt::Debug, Error>) -> tonic::Code {
        tonic::Status::from(result.expect_err("expected a refusal")).code()
    }

    #[test]
    fn a_role_with_a_rule_passes() {
        let policy = policy();
        assert!(
            policy
                .check(Some(&bearer(&policy, Role::User, 0)), ENDPOINT)
                .is_ok()
        );
    }

    #[test]
    fn a_role_without_a_rule_is_denied() {
        let policy = policy();
        let admin_only = "/auth.v1.UserService/List";
        assert_eq!(
            code(policy.check(Some(&bearer(&policy, Role::User, 0)), admin_only)),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn an_endpoint_without_rules_is_denied_to_everyone() {
        let policy = policy();
        let unknown = "/chat.v1.ChatService/Nothing";
        assert_eq!(
            code(policy.check(Some(&bearer(&policy, Role::Admin, 0)), unknown)),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn missing_and_malformed_authorization_is_unauthenticated() {
        let policy = policy();
        for authorization in [
            None,
            Some("token"),
            Some("Basic abc"),
            Some("Bearer "),
            Some("Bearer junk"),
        ] {
            assert_eq!(
                code(policy.check(authorization, ENDPOINT)),
                tonic::Code::Unauthenticated,
                "{authorization:?}"
            );
        }
    }

    #[test]
    fn anonymous_calls_pass_only_where_a_rule_lets_them() {
        let policy = policy();
        assert_eq!(
            policy.authorize(None, "/auth.v1.UserService/Create").ok(),
            Some(Caller::Anonymous)
        );
        assert_eq!(
            code(policy.authorize(None, ENDPOINT)),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn tokens_older_than_a_revocation_are_refused_and_newer_ones_pass() {
        let policy = policy();
        let old = bearer(&policy, Role::User, 0);
        policy.revoke(UserId(1), 1);
        assert_eq!(
            code(policy.check(Some(&old), ENDPOINT)),
            tonic::Code::Unauthenticated
        );
        assert!(
            policy
                .check(Some(&bearer(&policy, Role::User, 1)), ENDPOINT)
                .is_ok()
        );
    }

    #[test]
    fn revocations_never_move_backwards() {
        let policy = policy();
        policy.revoke(UserId(1), 5);
        policy.revoke(UserId(1), 2);
        assert_eq!(
            code(policy.check(Some(&bearer(&policy, Role::User, 4)), ENDPOINT)),
            tonic::Code::Unauthenticated
        );
    }
}
