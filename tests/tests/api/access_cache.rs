//! Chat keeps auth's answers to `Check` for a short time, so a client's
//! calls in a row cost one round trip to auth; and what it keeps never
//! outlives a revocation, a rename or a rule change by more than the
//! revocation feed takes to tell it.

use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use tests::fixtures::{TwoMembers, two_members};
use tests::http::request;
use tests::services::{TestAuth, TestChat, TestUser, eventually};
use tonic::Code;

/// How many `Check` calls auth has allowed so far.
async fn checks_allowed(auth: &TestAuth) -> f64 {
    let scrape = request(auth.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;
    scrape
        .lines()
        .find(|line| {
            line.starts_with("auth_access_checks_total{") && line.contains("result=\"allowed\"")
        })
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(0.0)
}

async fn send(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
    text: &str,
) -> Result<pb::Message, tonic::Status> {
    chat.chats()
        .send_message(user.request(pb::SendMessageRequest {
            chat_id,
            text: text.into(),
            ..Default::default()
        }))
        .await
        .map(|response| response.into_inner().message.expect("a message"))
}

/// Until `user`'s calls are refused with `code`, within five seconds; how
/// long that took.
async fn refused_within(chat: &TestChat, user: &TestUser, chat_id: i64, code: Code) -> Duration {
    let since = Instant::now();
    assert!(
        eventually(|| async {
            send(chat, user, chat_id, "still?")
                .await
                .is_err_and(|status| status.code() == code)
        })
        .await,
        "{}'s calls are still allowed",
        user.name
    );
    since.elapsed()
}

#[tokio::test]
async fn a_clients_calls_in_a_row_take_one_check() {
    let TwoMembers {
        auth,
        chat,
        ada,
        chat_id,
        ..
    } = two_members().await;
    send(&chat, &ada, chat_id, "first").await.expect("a send");
    let before = checks_allowed(&auth).await;
    for n in 0..5 {
        send(&chat, &ada, chat_id, &format!("again {n}"))
            .await
            .expect("a send");
    }
    assert_eq!(
        checks_allowed(&auth).await,
        before,
        "the sends were checked again"
    );
    // Another endpoint is another question.
    chat.chats()
        .list_chats(ada.request(pb::ListChatsRequest::default()))
        .await
        .expect("a list");
    assert_eq!(checks_allowed(&auth).await, before + 1.0);
}

#[tokio::test]
async fn a_kept_answer_ends_with_a_deletion_a_role_or_password_change_and_a_rename() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let admin = auth.admin().await;
    let hopper = auth.register("hopper").await;
    chat.chats()
        .add_members(ada.request(pb::AddMembersRequest {
            chat_id,
            usernames: vec!["hopper".into()],
        }))
        .await
        .expect("adding hopper");
    for user in [&ada, &grace, &hopper] {
        send(&chat, user, chat_id, "kept").await.expect("a send");
    }
    // What follows refuses answers that were kept, not asked again.
    let before = checks_allowed(&auth).await;
    for user in [&ada, &grace, &hopper] {
        send(&chat, user, chat_id, "kept again")
            .await
            .expect("a send, answered from the cache");
    }
    assert_eq!(
        checks_allowed(&auth).await,
        before,
        "the answers were not kept"
    );

    // A rename reaches the sender's name at once.
    auth.users()
        .update(grace.request(auth_pb::UpdateRequest {
            id: grace.id,
            name: Some("grace-hopper".into()),
            current_password: grace.password.clone(),
            ..Default::default()
        }))
        .await
        .expect("renaming grace");
    assert!(
        eventually(|| async {
            send(&chat, &grace, chat_id, "who am I")
                .await
                .is_ok_and(|message| message.from_username == "grace-hopper")
        })
        .await,
        "a send still carries the old name"
    );

    auth.users()
        .change_password(grace.request(auth_pb::ChangePasswordRequest {
            id: grace.id,
            current_password: grace.password.clone(),
            new_password: "another password".into(),
            new_password_confirm: "another password".into(),
        }))
        .await
        .expect("changing grace's password");
    let took = refused_within(&chat, &grace, chat_id, Code::Unauthenticated).await;
    eprintln!("password change: refused after {took:?}");

    auth.users()
        .update(admin.request(auth_pb::UpdateRequest {
            id: hopper.id,
            role: Some(auth_pb::Role::Admin.into()),
            ..Default::default()
        }))
        .await
        .expect("promoting hopper");
    let took = refused_within(&chat, &hopper, chat_id, Code::Unauthenticated).await;
    eprintln!("role change: refused after {took:?}");

    auth.users()
        .delete(admin.request(auth_pb::DeleteRequest {
            id: ada.id,
            ..Default::default()
        }))
        .await
        .expect("deleting ada");
    let took = refused_within(&chat, &ada, chat_id, Code::Unauthenticated).await;
    eprintln!("deletion: refused after {took:?}");
}

#[tokio::test]
async fn a_rule_removed_refuses_what_was_kept() {
    let TwoMembers {
        auth,
        chat,
        ada,
        chat_id,
        ..
    } = two_members().await;
    send(&chat, &ada, chat_id, "kept").await.expect("a send");
    let before = checks_allowed(&auth).await;
    send(&chat, &ada, chat_id, "kept again")
        .await
        .expect("a send");
    assert_eq!(
        checks_allowed(&auth).await,
        before,
        "the answer was not kept"
    );
    sqlx::query("delete from access_rules where endpoint = '/chat.v1.ChatService/SendMessage'")
        .execute(&auth.db)
        .await
        .expect("removing the rule");
    let took = refused_within(&chat, &ada, chat_id, Code::PermissionDenied).await;
    eprintln!("rule removed: refused after {took:?}");
}
