//! `auth.v1.AccessService/Check`, and the same rules guarding auth's own RPCs.

use std::time::Duration;

use api::auth::v1 as pb;
use serde_json::json;
use tests::services::{TestAuth, eventually, with_token};
use tests::snapshot;
use tonic::Code;

fn check(endpoint: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        endpoint_address: endpoint.into(),
    }
}

#[tokio::test]
async fn a_role_with_a_rule_is_allowed_and_told_who_it_is() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    let me = auth
        .access()
        .check(ada.request(check("/chat.v1.ChatService/SendMessage")))
        .await
        .expect("users may send messages")
        .into_inner();

    insta::assert_json_snapshot!(json!({
        "user_id": me.user_id == ada.id,
        "username": me.username,
        "role": me.role().as_str_name(),
    }));
}

#[tokio::test]
async fn a_role_without_a_rule_and_an_unknown_endpoint_are_denied() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let admin = auth.admin().await;

    let not_for_users = auth
        .access()
        .check(ada.request(check("/auth.v1.UserService/List")))
        .await
        .expect_err("list");
    let unknown = auth
        .access()
        .check(admin.request(check("/chat.v1.ChatService/Nope")))
        .await
        .expect_err("unknown");

    insta::assert_json_snapshot!(json!({
        "not_for_users": snapshot::status(&not_for_users),
        "unknown_endpoint": snapshot::status(&unknown),
    }));
}

#[tokio::test]
async fn missing_malformed_tampered_and_expired_tokens_are_unauthenticated() {
    let auth =
        TestAuth::spawn_with(|config| config.tokens.access_ttl = Duration::from_secs(1)).await;
    let ada = auth.register("ada").await;
    let endpoint = "/chat.v1.ChatService/Create";

    let missing = auth
        .access()
        .check(check(endpoint))
        .await
        .expect_err("missing");
    let mut basic = tonic::Request::new(check(endpoint));
    basic
        .metadata_mut()
        .insert("authorization", "Basic YWRhOnB3".parse().expect("metadata"));
    let malformed = auth.access().check(basic).await.expect_err("malformed");
    let garbage = auth
        .access()
        .check(with_token(check(endpoint), "garbage"))
        .await
        .expect_err("garbage");
    let mut parts: Vec<String> = ada.access_token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replace(char::is_alphanumeric, "A");
    let tampered = auth
        .access()
        .check(with_token(check(endpoint), &parts.join(".")))
        .await
        .expect_err("tampered");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = auth
        .access()
        .check(ada.request(check(endpoint)))
        .await
        .expect_err("expired");

    insta::assert_json_snapshot!(json!({
        "missing": snapshot::status(&missing),
        "malformed": snapshot::status(&malformed),
        "garbage": snapshot::status(&garbage),
        "tampered": snapshot::status(&tampered),
        "expired": snapshot::status(&expired),
    }));
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_unauthenticated() {
    let auth = TestAuth::spawn().await;
    let other = TestAuth::spawn_with(|config| {
        config.tokens.signing_keys[0].secret =
            "another-signing-key-0123456789abcdef".to_owned().into();
    })
    .await;
    let ada = other.register("ada").await;
    let foreign = auth
        .access()
        .check(ada.request(check("/chat.v1.ChatService/Create")))
        .await
        .expect_err("a foreign token");
    assert_eq!(foreign.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn endpoint_addresses_are_validated() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let status = auth
        .access()
        .check(ada.request(check("not a method")))
        .await
        .expect_err("junk");
    assert_eq!(status.code(), Code::InvalidArgument);
    insta::assert_json_snapshot!(snapshot::status(&status));
    for junk in [
        "/chat.v1.ChatService/SendMessage/extra",
        "/chat.v1.ChatService/",
        "chat.v1.ChatService/SendMessage",
        "/chat.v1.ChatService/Send\u{0}",
        "/chat.v1.Chat\u{202e}Service/SendMessage",
    ] {
        let status = auth
            .access()
            .check(ada.request(check(junk)))
            .await
            .expect_err(junk);
        assert_eq!(status.code(), Code::InvalidArgument, "{junk:?}");
        assert!(
            status.message().starts_with("invalid endpoint_address:"),
            "{junk:?}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn rules_are_data_and_changes_apply_without_a_restart() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let endpoint = "/chat.v1.ChatService/Archive";
    let denied = auth
        .access()
        .check(ada.request(check(endpoint)))
        .await
        .expect_err("no rule yet");
    assert_eq!(denied.code(), Code::PermissionDenied);

    sqlx::query("insert into access_rules (endpoint, role) values ($1, 'user')")
        .bind(endpoint)
        .execute(&auth.db)
        .await
        .expect("adding a rule");

    let allowed = eventually(|| {
        let request = ada.request(check(endpoint));
        let mut access = auth.access();
        async move { access.check(request).await.is_ok() }
    })
    .await;
    assert!(allowed, "the new rule never applied");
}

#[tokio::test]
async fn revocations_reach_every_replica() {
    let first = TestAuth::spawn().await;
    let second = TestAuth::spawn_on(first.database_url.clone(), |_| {}).await;
    let ada = first.register("ada").await;
    let admin = first.admin().await;
    let endpoint = "/chat.v1.ChatService/Create";
    second
        .access()
        .check(ada.request(check(endpoint)))
        .await
        .expect("valid on the other replica");

    first
        .users()
        .update(admin.request(pb::UpdateRequest {
            id: ada.id,
            role: Some(pb::Role::Admin.into()),
            ..Default::default()
        }))
        .await
        .expect("a role change on the first replica");

    let revoked = eventually(|| {
        let request = ada.request(check(endpoint));
        let mut access = second.access();
        async move {
            access
                .check(request)
                .await
                .is_err_and(|status| status.code() == Code::Unauthenticated)
        }
    })
    .await;
    assert!(revoked, "the second replica still accepts a revoked token");
}

#[tokio::test]
async fn auths_own_rpcs_are_guarded_by_the_same_rules() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    sqlx::query("delete from access_rules where endpoint = '/auth.v1.UserService/Get'")
        .execute(&auth.db)
        .await
        .expect("removing a rule");

    let denied = eventually(|| {
        let request = ada.request(pb::GetRequest { id: ada.id });
        let mut users = auth.users();
        async move {
            users
                .get(request)
                .await
                .is_err_and(|status| status.code() == Code::PermissionDenied)
        }
    })
    .await;
    assert!(denied, "Get is still allowed without a rule");
}

/// Names by id would list every account to anyone counting from 1: only
/// admins, and services with the service secret, may look them up.
#[tokio::test]
async fn looking_names_up_by_id_takes_an_admin_or_the_service_secret() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let admin = auth.admin().await;
    let lookup = || pb::LookupUserIdsRequest { ids: vec![ada.id] };

    let user = auth
        .users()
        .lookup_user_ids(ada.request(lookup()))
        .await
        .expect_err("an ordinary user");
    assert_eq!(user.code(), Code::PermissionDenied, "{user:?}");
    let by_admin = auth
        .users()
        .lookup_user_ids(admin.request(lookup()))
        .await
        .expect("an admin")
        .into_inner();
    assert_eq!(by_admin.users.len(), 1);
    let by_service = auth
        .users()
        .lookup_user_ids(with_token(lookup(), tests::services::SERVICE_SECRET))
        .await
        .expect("a service")
        .into_inner();
    assert_eq!(by_service.users[0].name, "ada");
    let wrong = auth
        .users()
        .lookup_user_ids(with_token(
            lookup(),
            "not-the-service-secret-0123456789abcdef",
        ))
        .await
        .expect_err("a wrong secret");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    // The secret opens the lookups and nothing else.
    let elsewhere = auth
        .users()
        .list(with_token(
            pb::ListRequest::default(),
            tests::services::SERVICE_SECRET,
        ))
        .await
        .expect_err("listing users with the service secret");
    assert_eq!(elsewhere.code(), Code::Unauthenticated);
}

/// Chat looks names up on its own behalf: a chat whose secret auth refuses
/// is misconfigured, which its callers are told is an outage, not their
/// fault.
#[tokio::test]
async fn a_chat_with_a_wrong_service_secret_is_unavailable_for_lookups() {
    let auth = TestAuth::spawn().await;
    let chat = tests::services::TestChat::spawn_with(&auth, |config| {
        config.auth.service_secret =
            Some("not-the-service-secret-0123456789abcdef".to_owned().into());
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;

    let refused = chat
        .chats()
        .create(ada.request(api::chat::v1::CreateRequest {
            usernames: vec![grace.name.clone()],
            title: "a chat".into(),
        }))
        .await
        .expect_err("a lookup with a wrong secret");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
}
