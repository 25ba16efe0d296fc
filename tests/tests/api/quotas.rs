//! Quotas: one caller past a limit is refused with `RESOURCE_EXHAUSTED`
//! and a `RetryInfo` saying when to come back, while everyone else's calls
//! go through; and a registration flood cannot starve logins of hashing.

use std::time::Duration;

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use host::quota::Rate;
use tests::http::request;
use tests::services::{TestAuth, TestChat};
use tests::snapshot::retry_after;
use tonic::Code;

fn send(chat_id: i64, text: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        chat_id,
        text: text.into(),
        client_message_id: String::new(),
    }
}

/// The value of one metric series in a scrape.
async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let scrape = request(addr, "GET", "/metrics", None, None).await.body;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the scrape"))
}

#[tokio::test]
async fn a_sender_past_the_quota_waits_while_others_send() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.quotas.sends = Some(Rate::new(3, 0.5));
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;

    for n in 0..3 {
        chat.chats()
            .send_message(ada.request(send(chat_id, &format!("burst {n}"))))
            .await
            .expect("within the burst");
    }
    let refused = chat
        .chats()
        .send_message(ada.request(send(chat_id, "one too many")))
        .await
        .expect_err("past the quota");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let wait = retry_after(&refused).expect("a RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(2),
        "{wait:?}"
    );

    // Grace has her own allowance.
    for n in 0..3 {
        chat.chats()
            .send_message(grace.request(send(chat_id, &format!("grace {n}"))))
            .await
            .expect("another user's sends");
    }
    // Nothing refused was stored.
    let history = chat
        .chats()
        .list_messages(ada.request(pb::ListMessagesRequest {
            chat_id,
            ..Default::default()
        }))
        .await
        .expect("the history")
        .into_inner()
        .messages;
    assert_eq!(history.len(), 6);
    assert!(history.iter().all(|message| message.text != "one too many"));

    // The delay it named is enough.
    tokio::time::sleep(wait).await;
    chat.chats()
        .send_message(ada.request(send(chat_id, "after the wait")))
        .await
        .expect("the quota refilled");
    let refusals = metric(
        chat.metrics_addr,
        "chat_quota_refusals_total{quota=\"sends\"} ",
    )
    .await;
    assert_eq!(refusals, 1.0);
}

#[tokio::test]
async fn chats_created_and_members_added_are_limited_per_user() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.quotas.chats_created = Some(Rate::new(2, 0.01));
        config.quotas.members_added = Some(Rate::new(4, 0.01));
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let others: Vec<_> =
        futures::future::join_all(["b1", "b2", "b3", "b4"].map(|name| auth.register(name))).await;

    let create = |user: &tests::services::TestUser, members: &[&str]| {
        user.request(pb::CreateRequest {
            usernames: members.iter().map(|name| (*name).to_owned()).collect(),
            title: "a chat".into(),
        })
    };
    let first = chat
        .chats()
        .create(create(&ada, &["b1"]))
        .await
        .expect("a first chat")
        .into_inner()
        .id;
    chat.chats()
        .create(create(&ada, &["b2"]))
        .await
        .expect("a second chat");
    let third = chat
        .chats()
        .create(create(&ada, &["b3"]))
        .await
        .expect_err("past the chat quota");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(retry_after(&third).is_some(), "{third:?}");
    // Grace creates hers.
    chat.chats()
        .create(create(&grace, &["b1"]))
        .await
        .expect("another user's chat");

    // Two members spent on the chats; two left of four.
    let added = chat
        .chats()
        .add_members(ada.request(pb::AddMembersRequest {
            chat_id: first,
            usernames: vec!["b3".into(), "b4".into(), "grace".into()],
        }))
        .await
        .expect_err("three more members are past the quota");
    assert_eq!(added.code(), Code::ResourceExhausted);
    chat.chats()
        .add_members(ada.request(pb::AddMembersRequest {
            chat_id: first,
            usernames: vec!["b3".into(), "b4".into()],
        }))
        .await
        .expect("two fit");
    drop(others);
}

#[tokio::test]
async fn one_user_opens_only_so_many_streams() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| config.quotas.open_streams = Some(2)).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let connect = |user: &tests::services::TestUser| {
        user.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        })
    };

    let first = chat.chats().connect_chat(connect(&ada)).await.expect("one");
    let _second = chat.chats().connect_chat(connect(&ada)).await.expect("two");
    let third = chat
        .chats()
        .connect_chat(connect(&ada))
        .await
        .expect_err("a third stream");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(retry_after(&third).is_some(), "{third:?}");
    let _graces = chat
        .chats()
        .connect_chat(connect(&grace))
        .await
        .expect("grace's own streams");

    // Closing one frees its place.
    drop(first);
    assert!(
        tests::services::eventually(|| async {
            chat.chats().connect_chat(connect(&ada)).await.is_ok()
        })
        .await,
        "a closed stream's place never came free"
    );
}

#[tokio::test]
async fn registrations_and_anonymous_calls_are_limited_per_address() {
    let auth = TestAuth::spawn_with(|config| {
        config.quotas.registrations = Some(Rate::new(2, 0.01));
        config.quotas.anonymous_calls = Some(Rate::new(8, 0.01));
    })
    .await;
    let register = |name: &str| auth_pb::CreateRequest {
        name: name.into(),
        email: format!("{name}@example.com"),
        password: "a password".into(),
        password_confirm: "a password".into(),
        role: auth_pb::Role::Unspecified.into(),
    };
    auth.users().create(register("one")).await.expect("a first");
    auth.users()
        .create(register("two"))
        .await
        .expect("a second");
    let third = auth
        .users()
        .create(register("three"))
        .await
        .expect_err("past the registration quota");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(retry_after(&third).is_some(), "{third:?}");
    // An admin creating accounts is not a registration, and signed-in
    // calls are not anonymous.
    let admin = auth.admin().await;
    auth.users()
        .create(admin.request(register("three")))
        .await
        .expect("an admin creates an account");

    // Three registrations and a login so far: eight anonymous calls in
    // all, then refused.
    for _ in 0..4 {
        let _ = auth
            .sessions()
            .login(auth_pb::LoginRequest {
                username: "one".into(),
                password: "a password".into(),
                ..Default::default()
            })
            .await;
    }
    let refused = auth
        .sessions()
        .login(auth_pb::LoginRequest {
            username: "one".into(),
            password: "a password".into(),
            ..Default::default()
        })
        .await
        .expect_err("past the anonymous quota");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(retry_after(&refused).is_some(), "{refused:?}");
    auth.users()
        .get(admin.request(auth_pb::GetRequest { id: 1 }))
        .await
        .expect("a signed-in call");
}

#[tokio::test]
async fn logins_are_served_ahead_of_a_registration_flood() {
    let auth = TestAuth::spawn_with(|config| {
        config.passwords.memory_kib = 8 * 1024;
        config.passwords.iterations = 3;
        config.passwords.max_concurrent_hashes = 1;
        config.passwords.queued_new_hashes = 24;
    })
    .await;
    auth.register("ada").await;

    // Forty registrations at once: the queue takes 24, the rest are told
    // to come back.
    let mut flood = tokio::task::JoinSet::new();
    for n in 0..40 {
        let mut users = auth.users();
        flood.spawn(async move {
            let name = format!("flood{n}");
            let answer = users
                .create(auth_pb::CreateRequest {
                    email: format!("{name}@example.com"),
                    name,
                    password: "a password".into(),
                    password_confirm: "a password".into(),
                    role: auth_pb::Role::Unspecified.into(),
                })
                .await;
            (answer.map(drop), std::time::Instant::now())
        });
    }
    // Once the queue is full, a login joins.
    while metric(auth.metrics_addr, "auth_password_hashes_in_flight ").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let login_sent_at = std::time::Instant::now();
    let login = auth
        .sessions()
        .login(auth_pb::LoginRequest {
            username: "ada".into(),
            password: "ada-password".into(),
            ..Default::default()
        })
        .await;
    let logged_in_at = std::time::Instant::now();
    login.expect("the login is answered");

    let mut stored = 0;
    let mut refused = 0;
    let mut stored_while_the_login_waited = 0;
    while let Some(joined) = flood.join_next().await {
        let (answer, at) = joined.expect("a registration");
        match answer {
            Ok(()) => {
                stored += 1;
                if at > login_sent_at && at < logged_in_at {
                    stored_while_the_login_waited += 1;
                }
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(retry_after(&status).is_some(), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a full queue refused nobody");
    assert!(stored >= 24, "only {stored} registrations were stored");
    // The login waited for the hash running when it came, not for the
    // two dozen queued ahead of it.
    assert!(
        stored_while_the_login_waited <= 3,
        "{stored_while_the_login_waited} queued registrations were served before the login"
    );
}

/// A token of one's own account vouches for nothing: registrations and
/// logins made with it are paid for by the address all the same, or one
/// account would make unlimited others, and flood the password checks.
#[tokio::test]
async fn a_signed_in_caller_pays_the_address_quotas_too() {
    let auth = TestAuth::spawn_with(|config| {
        config.quotas.registrations = Some(Rate::new(2, 0.01));
        config.quotas.anonymous_calls = Some(Rate::new(5, 0.01));
    })
    .await;
    // One registration and one login.
    let ada = auth.register("ada").await;
    let register = |name: &str| auth_pb::CreateRequest {
        name: name.into(),
        email: format!("{name}@example.com"),
        password: "a password".into(),
        password_confirm: "a password".into(),
        role: auth_pb::Role::Unspecified.into(),
    };
    auth.users()
        .create(ada.request(register("sybil1")))
        .await
        .expect("a second registration, with ada's token");
    let third = auth
        .users()
        .create(ada.request(register("sybil2")))
        .await
        .expect_err("past the registration quota, token or not");
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    // Four calls to open endpoints so far; a fifth, then refused.
    let login = || {
        ada.request(auth_pb::LoginRequest {
            username: "ada".into(),
            password: "ada-password".into(),
            ..Default::default()
        })
    };
    auth.sessions().login(login()).await.expect("a fifth call");
    let refused = auth
        .sessions()
        .login(login())
        .await
        .expect_err("past the quota of open calls, token or not");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(retry_after(&refused).is_some(), "{refused:?}");
}
