//! An open stream ends when its caller's access ends: deleted, role or
//! password changed, token expired, on every replica; and when chat can no
//! longer learn of revocations, it fails closed.

use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use tests::outage::{Relay, server_of};
use tests::services::{TestAuth, TestChat, TestUser};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};
use tonic_types::StatusExt as _;

async fn connect(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
) -> Streaming<pb::ConnectChatResponse> {
    chat.chats()
        .connect_chat(user.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("opening a stream")
        .into_inner()
}

/// How the stream ends, and how long after `since`; within `within`.
async fn end_of(
    stream: &mut Streaming<pb::ConnectChatResponse>,
    since: Instant,
    within: Duration,
) -> (tonic::Status, Duration) {
    let status = tokio::time::timeout(within, async {
        while let Some(item) = stream.next().await {
            if let Err(status) = item {
                return Some(status);
            }
        }
        None
    })
    .await
    .expect("the stream ends in time")
    .expect("with a status");
    (status, since.elapsed())
}

struct Setup {
    auth: TestAuth,
    chat: TestChat,
    admin: TestUser,
    ada: TestUser,
    grace: TestUser,
    chat_id: i64,
}

async fn setup() -> Setup {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let admin = auth.admin().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    Setup {
        auth,
        chat,
        admin,
        ada,
        grace,
        chat_id,
    }
}

/// Ends within a second, with UNAUTHENTICATED; the figure is printed.
async fn assert_ends_unauthenticated(
    stream: &mut Streaming<pb::ConnectChatResponse>,
    since: Instant,
    what: &str,
) {
    let (status, took) = end_of(stream, since, Duration::from_secs(5)).await;
    eprintln!("{what}: the stream ended {took:?} after the change");
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    // Not an expiry: a fresh token of the same session would not cure it.
    assert!(
        status.get_details_error_info().is_none(),
        "{what}: {status:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "{what}: the stream ended only after {took:?}"
    );
}

#[tokio::test]
async fn deleting_a_user_ends_their_open_stream() {
    let s = setup().await;
    let mut stream = connect(&s.chat, &s.grace, s.chat_id).await;
    let since = Instant::now();
    s.auth
        .users()
        .delete(s.admin.request(auth_pb::DeleteRequest {
            id: s.grace.id,
            ..Default::default()
        }))
        .await
        .expect("deleting grace");
    assert_ends_unauthenticated(&mut stream, since, "deletion").await;
    // Others' streams go on.
    let mut ada = connect(&s.chat, &s.ada, s.chat_id).await;
    s.chat.send(&s.ada, s.chat_id, "still here").await;
    let next = tokio::time::timeout(Duration::from_secs(5), ada.next()).await;
    assert!(matches!(next, Ok(Some(Ok(_)))), "{next:?}");
}

/// A second auth replica, and a second chat replica that it feeds.
async fn other_replicas(s: &Setup) -> (TestAuth, TestChat) {
    let auth = TestAuth::spawn_on(s.auth.database_url.clone(), |_| {}).await;
    let chat = TestChat::spawn_on(s.chat.database_url.clone(), &auth.url(), |_| {}).await;
    (auth, chat)
}

#[tokio::test]
async fn a_role_change_and_a_password_change_end_open_streams_on_every_replica() {
    let s = setup().await;
    let (_other_auth, other_chat) = other_replicas(&s).await;
    let mut grace = connect(&s.chat, &s.grace, s.chat_id).await;
    let mut grace_there = connect(&other_chat, &s.grace, s.chat_id).await;
    let since = Instant::now();
    s.auth
        .users()
        .update(s.admin.request(auth_pb::UpdateRequest {
            id: s.grace.id,
            name: None,
            email: None,
            role: Some(auth_pb::Role::Admin.into()),
            ..Default::default()
        }))
        .await
        .expect("promoting grace");
    assert_ends_unauthenticated(&mut grace, since, "role change").await;
    assert_ends_unauthenticated(&mut grace_there, since, "role change, other replica").await;

    let mut ada = connect(&s.chat, &s.ada, s.chat_id).await;
    let mut ada_there = connect(&other_chat, &s.ada, s.chat_id).await;
    let since = Instant::now();
    s.auth
        .users()
        .change_password(s.ada.request(auth_pb::ChangePasswordRequest {
            id: s.ada.id,
            current_password: "ada-password".into(),
            new_password: "a new password".into(),
            new_password_confirm: "a new password".into(),
        }))
        .await
        .expect("changing ada's password");
    assert_ends_unauthenticated(&mut ada, since, "password change").await;
    assert_ends_unauthenticated(&mut ada_there, since, "password change, other replica").await;
}

#[tokio::test]
async fn a_revocation_on_one_auth_replica_ends_a_stream_on_another_chat_replica() {
    let s = setup().await;
    let (_other_auth, other_chat) = other_replicas(&s).await;
    let mut stream = connect(&other_chat, &s.grace, s.chat_id).await;
    let since = Instant::now();
    s.auth
        .users()
        .delete(s.admin.request(auth_pb::DeleteRequest {
            id: s.grace.id,
            ..Default::default()
        }))
        .await
        .expect("deleting grace");
    assert_ends_unauthenticated(&mut stream, since, "deletion seen by another replica").await;
}

#[tokio::test]
async fn a_revocation_ends_a_stream_whose_checks_reach_an_auth_replica_that_has_not_heard() {
    // Behind a load balancer, chat's feed reaches one auth replica and its
    // checks another. The second has not heard of the revocation (its
    // database connections are frozen, so it is stale but within its
    // staleness bound): only the feed's versions can end the stream.
    let s = setup().await;
    let auth_database = Relay::start(server_of(&s.auth.database_url)).await;
    let lagging = TestAuth::spawn_on(auth_database.url_for(&s.auth.database_url), |_| {}).await;
    let balancer = Relay::split(s.auth.addr, lagging.addr).await;
    let chat = TestChat::spawn_on(
        s.chat.database_url.clone(),
        &format!("http://{}", balancer.addr),
        |_| {},
    )
    .await;
    // The feed's connection, the first, is made at start-up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = connect(&chat, &s.grace, s.chat_id).await;

    auth_database.freeze();
    let since = Instant::now();
    s.auth
        .users()
        .delete(s.admin.request(auth_pb::DeleteRequest {
            id: s.grace.id,
            ..Default::default()
        }))
        .await
        .expect("deleting grace");
    assert_ends_unauthenticated(&mut stream, since, "deletion, checks on a lagging replica").await;
}

#[tokio::test]
async fn a_stream_ends_when_its_access_token_expires() {
    let auth =
        TestAuth::spawn_with(|config| config.tokens.access_ttl = Duration::from_secs(2)).await;
    let chat = TestChat::spawn(&auth).await;
    let other_chat = TestChat::spawn_on(chat.database_url.clone(), &auth.url(), |_| {}).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    // Each replica has asked auth once (its connection is up), so that the
    // streams below open within the lifetime of a token minted just before.
    other_chat
        .chats()
        .list_chats(ada.request(pb::ListChatsRequest::default()))
        .await
        .expect("the other replica answers");
    let since = Instant::now();
    let grace = auth.login_again(&grace).await;
    let mut streams = [
        connect(&chat, &grace, chat_id).await,
        connect(&other_chat, &grace, chat_id).await,
    ];
    for stream in &mut streams {
        let (status, took) = end_of(stream, since, Duration::from_secs(6)).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("expired"), "{}", status.message());
        // Clients tell an expired token from a revoked one by this detail,
        // not by the message.
        let reason = status.get_details_error_info().map(|info| info.reason);
        assert_eq!(
            reason.as_deref(),
            Some("ACCESS_TOKEN_EXPIRED"),
            "{status:?}"
        );
        assert!(took <= Duration::from_secs(3), "ended only after {took:?}");
    }
}

#[tokio::test]
async fn without_the_revocation_feed_open_streams_end_unavailable() {
    let s = setup().await;
    let mut stream = connect(&s.chat, &s.grace, s.chat_id).await;
    let since = Instant::now();
    s.auth.stop().await;
    let (status, took) = end_of(&mut stream, since, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eprintln!("feed lost: the stream ended {took:?} after auth stopped");
    // The stated bound: the feed's silence, plus a heartbeat's interval
    // and the watchdog's tick.
    let bound = chat::access_watch::FEED_LOSS_BOUND + Duration::from_millis(1500);
    assert!(took <= bound, "ended only after {took:?}, past {bound:?}");
    assert!(
        status.message().contains("since_message_id"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn only_services_with_the_secret_watch_revocations_and_few_per_address() {
    let auth = TestAuth::spawn().await;
    let watch = |secret: Option<&str>| {
        let mut access = auth.access();
        let mut request = tonic::Request::new(auth_pb::WatchRevocationsRequest {});
        if let Some(secret) = secret {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {secret}")
                    .parse()
                    .expect("a metadata value"),
            );
        }
        async move { access.watch_revocations(request).await }
    };
    for secret in [None, Some("not the secret")] {
        let refused = watch(secret).await.expect_err("no secret, no feed");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut feed = watch(Some(tests::services::SERVICE_SECRET))
            .await
            .expect("a watch")
            .into_inner();
        let first = feed.message().await.expect("a message").expect("the first");
        assert!(first.resync, "the first message is a resync");
        held.push(feed);
    }
    let fifth = watch(Some(tests::services::SERVICE_SECRET))
        .await
        .expect_err("a fifth watch from one address");
    assert_eq!(fifth.code(), Code::ResourceExhausted, "{fifth:?}");
}
