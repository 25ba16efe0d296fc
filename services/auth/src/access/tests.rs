//! The policy's rules, revocations and freshness, without a database.

use super::*;
use crate::config::{SigningKey, TokenConfig};

const ENDPOINT: &str = "/chat.v1.ChatService/Create";

fn policy() -> AccessPolicy {
    let tokens = AccessTokens::new(&TokenConfig {
        access_ttl: Duration::from_secs(60),
        refresh_ttl: Duration::from_secs(60),
        family_ttl: Duration::from_secs(60),
        sessions_per_user: 100,
        signing_keys: vec![SigningKey {
            id: "k".into(),
            secret: "0123456789abcdef0123456789abcdef".to_owned().into(),
        }],
    })
    .expect("valid config");
    let policy = AccessPolicy::new(tokens, Duration::from_secs(60));
    policy.freshness().confirm(policy.freshness().now());
    policy.replace_rules(
        policy.next_generation(),
        [
            (ENDPOINT.to_owned(), Role::User),
            ("/auth.v1.UserService/Create".to_owned(), Role::Anonymous),
            ("/auth.v1.UserService/List".to_owned(), Role::Admin),
        ],
    );
    policy
}

fn bearer(policy: &AccessPolicy, role: Role, version: i64) -> String {
    let principal = Principal {
        user_id: UserId(1),
        name: "ada".into(),
        role,
        token_version: version,
        expires_at: 0,
        session: None,
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

#[test]
fn on_open_endpoints_a_token_that_does_not_check_out_counts_as_none() {
    let policy = policy();
    let open = "/auth.v1.UserService/Create";
    let revoked = bearer(&policy, Role::User, 0);
    policy.revoke(UserId(1), 1);
    for authorization in [
        Some("Bearer junk"),
        Some("Basic abc"),
        Some(revoked.as_str()),
    ] {
        assert_eq!(
            policy.authorize(authorization, open).ok(),
            Some(Caller::Anonymous),
            "{authorization:?}"
        );
    }
    policy.replace_rules(
        policy.next_generation(),
        [
            (open.to_owned(), Role::Anonymous),
            (open.to_owned(), Role::Admin),
        ],
    );
    let valid = bearer(&policy, Role::Admin, 1);
    assert!(matches!(
        policy.authorize(Some(&valid), open),
        Ok(Caller::User(_))
    ));
}

#[test]
fn stale_state_fails_closed() {
    let policy = policy();
    let token = bearer(&policy, Role::User, 0);
    let stale = AccessPolicy::new(
        AccessTokens::new(&TokenConfig {
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(60),
            family_ttl: Duration::from_secs(60),
            sessions_per_user: 100,
            signing_keys: vec![SigningKey {
                id: "k".into(),
                secret: "0123456789abcdef0123456789abcdef".to_owned().into(),
            }],
        })
        .expect("valid config"),
        Duration::from_millis(10),
    );
    stale.replace_rules(stale.next_generation(), [(ENDPOINT.to_owned(), Role::User)]);
    assert_eq!(
        code(stale.check(Some(&token), ENDPOINT)),
        tonic::Code::Unavailable,
        "never confirmed"
    );
    // An open endpoint still answers, as to a caller with no token.
    stale.replace_rules(
        stale.next_generation(),
        [
            (ENDPOINT.to_owned(), Role::User),
            ("/auth.v1.AuthService/Login".to_owned(), Role::Anonymous),
        ],
    );
    let open = stale
        .authorize(Some(&token), "/auth.v1.AuthService/Login")
        .expect("an open endpoint answers while stale");
    assert!(matches!(open, Caller::Unconfirmed(_)), "{open:?}");
    assert_eq!(open.principal(), None);
    assert_eq!(code(open.confirmed()), tonic::Code::Unavailable);
    stale.freshness().confirm(stale.freshness().now());
    assert!(stale.check(Some(&token), ENDPOINT).is_ok());
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        code(stale.check(Some(&token), ENDPOINT)),
        tonic::Code::Unavailable,
        "confirmed too long ago"
    );
}

#[test]
fn a_renamed_user_is_answered_with_the_new_name() {
    let policy = policy();
    let token = bearer(&policy, Role::User, 0);
    policy.merge(
        UserId(1),
        Revocation {
            min_version: 0,
            current_name: Some("ada2".into()),
            name_version: 7,
            at: OffsetDateTime::now_utc(),
        },
    );
    let principal = policy.check(Some(&token), ENDPOINT).expect("still valid");
    assert_eq!(principal.name, "ada2");
}

#[test]
fn an_earlier_rename_never_replaces_a_later_one_whatever_the_clocks() {
    let policy = policy();
    let token = bearer(&policy, Role::User, 0);
    let rename = |name: &str, name_version, at| Revocation {
        min_version: 0,
        current_name: Some(name.into()),
        name_version,
        at,
    };
    let now = OffsetDateTime::now_utc();
    policy.merge(
        UserId(1),
        rename("later", 8, now - time::Duration::seconds(5)),
    );
    // A reload that read the earlier rename, stamped by a clock ahead.
    policy.merge(UserId(1), rename("earlier", 7, now));
    let principal = policy.check(Some(&token), ENDPOINT).expect("still valid");
    assert_eq!(principal.name, "later");
}

#[test]
fn an_older_load_of_the_rules_never_replaces_a_newer_one() {
    let policy = policy();
    let older = policy.next_generation();
    let newer = policy.next_generation();
    policy.replace_rules(newer, [(ENDPOINT.to_owned(), Role::Admin)]);
    policy.replace_rules(older, [(ENDPOINT.to_owned(), Role::User)]);
    assert_eq!(
        code(policy.check(Some(&bearer(&policy, Role::User, 0)), ENDPOINT)),
        tonic::Code::PermissionDenied
    );
}

#[test]
fn revocations_are_forgotten_once_every_token_they_refuse_has_expired() {
    let policy = policy();
    policy.revoke(UserId(1), 3);
    policy.merge(
        UserId(2),
        Revocation {
            min_version: 1,
            current_name: None,
            name_version: 0,
            at: OffsetDateTime::now_utc() - time::Duration::hours(1),
        },
    );
    assert_eq!(policy.forget_expired(), 1);
    assert_eq!(
        code(policy.check(Some(&bearer(&policy, Role::User, 2)), ENDPOINT)),
        tonic::Code::Unauthenticated
    );
}
