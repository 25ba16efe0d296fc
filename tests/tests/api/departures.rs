//! Accounts deleted in auth leave their chats, on every replica, as leaving
//! does: the creator role passes on and a chat left empty is deleted. Chat
//! learns of deletions from auth's revocation feed, and catches up on those
//! it missed when the feed resyncs.

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use tests::services::{TestAuth, TestChat, TestUser, eventually};
use tonic::Code;

async fn delete(auth: &TestAuth, admin: &TestUser, user: &TestUser) {
    auth.users()
        .delete(admin.request(auth_pb::DeleteRequest {
            id: user.id,
            ..Default::default()
        }))
        .await
        .expect("the admin deletes the account");
}

async fn members(chat: &TestChat, chat_id: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "select user_id from chat_members where chat_id = $1 order by joined_at, user_id",
    )
    .bind(chat_id)
    .fetch_all(&chat.db)
    .await
    .expect("the members")
}

async fn get(
    chat: &TestChat,
    user: &TestUser,
    id: i64,
) -> Result<pb::GetChatResponse, tonic::Status> {
    chat.chats()
        .get_chat(user.request(pb::GetChatRequest { id }))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_deleted_account_leaves_its_chats_on_every_replica() {
    let auth = TestAuth::spawn().await;
    let first = TestChat::spawn(&auth).await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), |_| {}).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let linus = auth.register("linus").await;
    let admin = auth.admin().await;
    let shared = first.create_chat(&ada, &[&grace, &linus]).await;
    let alone = first.create_chat(&ada, &[&grace]).await;
    first
        .chats()
        .remove_member(grace.request(pb::RemoveMemberRequest {
            chat_id: alone,
            user_id: grace.id,
        }))
        .await
        .expect("grace leaves ada alone");

    delete(&auth, &admin, &ada).await;

    let left = eventually(|| async { members(&first, shared).await == [grace.id, linus.id] }).await;
    assert!(
        left,
        "ada is still a member: {:?}",
        members(&first, shared).await
    );
    for replica in [&first, &second] {
        let chat = get(replica, &linus, shared)
            .await
            .expect("the chat goes on")
            .chat
            .expect("the chat");
        assert_eq!(
            chat.creator_id, grace.id,
            "the longest-standing member takes over"
        );
        assert_eq!(
            chat.members
                .iter()
                .map(|member| member.user_id)
                .collect::<Vec<_>>(),
            [grace.id, linus.id]
        );
        let gone = get(replica, &admin, alone)
            .await
            .expect_err("the chat ada was alone in");
        assert_eq!(gone.code(), Code::NotFound);
    }
    let grace_role = get(&second, &grace, shared)
        .await
        .expect("grace reads it")
        .role();
    assert_eq!(grace_role, pb::ChatRole::Creator);
    // Both replicas heard the deletion; one of them took ada out.
    let departed = first
        .metric("chat_departed_accounts_total")
        .await
        .unwrap_or(0.0)
        + second
            .metric("chat_departed_accounts_total")
            .await
            .unwrap_or(0.0);
    assert!(departed >= 1.0, "no replica counted the departure");
}

#[tokio::test]
async fn deletions_missed_while_chat_was_down_are_caught_up_on_by_a_sweep() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let linus = auth.register("linus").await;
    let admin = auth.admin().await;
    let chat_id = chat.create_chat(&ada, &[&grace, &linus]).await;
    let database_url = chat.database_url.clone();
    chat.stop().await;

    delete(&auth, &admin, &grace).await;
    delete(&auth, &admin, &ada).await;
    // Long enough ago that auth pruned the revocations: every token they
    // refused has expired, and the feed's resync no longer names them.
    sqlx::query("delete from token_revocations")
        .execute(&auth.db)
        .await
        .expect("pruning the revocations");
    let auth_database = auth.database_url.clone();
    auth.stop().await;
    let auth = TestAuth::spawn_on(auth_database, |_| {}).await;

    let chat = TestChat::spawn_on(database_url, &auth.url(), |_| {}).await;
    let caught_up = eventually(|| async { members(&chat, chat_id).await == [linus.id] }).await;
    assert!(caught_up, "members: {:?}", members(&chat, chat_id).await);
    let role = get(&chat, &linus, chat_id)
        .await
        .expect("linus reads it")
        .role();
    assert_eq!(role, pb::ChatRole::Creator);
}

/// A chat pointed at an auth that knows none of its members (the wrong
/// one, or an empty one) must not empty every chat on its first resync.
#[tokio::test]
async fn a_sweep_believes_no_auth_that_knows_few_of_the_members() {
    let real = TestAuth::spawn().await;
    let chat = TestChat::spawn(&real).await;
    let ada = real.register("ada").await;
    let grace = real.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    // 150 members auth has never heard of.
    sqlx::query(
        "insert into chat_members (chat_id, user_id) select $1, id from generate_series(1000001, 1000150) as id",
    )
    .bind(chat_id)
    .execute(&chat.db)
    .await
    .expect("adding members");
    let database_url = chat.database_url.clone();
    chat.stop().await;

    let wrong = TestAuth::spawn().await;
    let chat = TestChat::spawn_on(database_url, &wrong.url(), |_| {}).await;
    let swept = eventually(|| async {
        chat.metric(r#"chat_member_sweeps_total{outcome="implausible"}"#)
            .await
            .is_some_and(|count| count >= 1.0)
    })
    .await;
    assert!(swept, "no sweep was refused");
    assert_eq!(members(&chat, chat_id).await.len(), 152, "members left");
}
