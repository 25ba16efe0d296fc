//! `AuthService/ListSessions`, `RevokeSession` and `RevokeOtherSessions`:
//! people see where they are logged in, and end one session or all the
//! others. An ended session's refresh tokens, access tokens and open chat
//! streams all end at once, on every replica; the caller's other sessions
//! go on.

use std::time::{Duration, Instant};

use api::auth::v1 as pb;
use api::chat::v1 as chat_pb;
use tests::services::{TestAuth, TestChat, TestUser, with_token};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};

/// `user` logged in again from a client that calls itself `client`.
async fn login_from(auth: &TestAuth, user: &TestUser, client: &str) -> TestUser {
    let mut request = tonic::Request::new(pb::LoginRequest {
        username: user.name.clone(),
        password: user.password.clone(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("user-agent", client.parse().expect("a metadata value"));
    let tokens = auth
        .sessions()
        .login(request)
        .await
        .expect("logging in")
        .into_inner();
    TestUser {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        ..user.clone()
    }
}

async fn list(auth: &TestAuth, user: &TestUser) -> Vec<pb::Session> {
    auth.sessions()
        .list_sessions(user.request(pb::ListSessionsRequest {}))
        .await
        .expect("listing sessions")
        .into_inner()
        .sessions
}

async fn revoke(auth: &TestAuth, user: &TestUser, session_id: &str) -> Result<(), tonic::Status> {
    auth.sessions()
        .revoke_session(user.request(pb::RevokeSessionRequest {
            session_id: session_id.into(),
        }))
        .await
        .map(drop)
}

async fn check(auth: &TestAuth, access_token: &str) -> Result<pb::CheckResponse, tonic::Status> {
    auth.access()
        .check(with_token(
            pb::CheckRequest {
                endpoint_address: "/chat.v1.ChatService/ListChats".into(),
            },
            access_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn rotate(auth: &TestAuth, user: &TestUser) -> Result<String, tonic::Status> {
    auth.sessions()
        .get_refresh_token(pb::GetRefreshTokenRequest {
            refresh_token: user.refresh_token.clone(),
        })
        .await
        .map(|response| response.into_inner().refresh_token)
}

/// The id of the session `user`'s access token belongs to.
async fn session_of(auth: &TestAuth, user: &TestUser) -> String {
    check(auth, &user.access_token)
        .await
        .expect("the token works")
        .session_id
}

async fn connect(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
) -> Streaming<chat_pb::ConnectChatResponse> {
    chat.chats()
        .connect_chat(user.request(chat_pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("opening a stream")
        .into_inner()
}

/// The status `stream` ends with, within five seconds, and when.
async fn end_of(stream: &mut Streaming<chat_pb::ConnectChatResponse>) -> (tonic::Status, Instant) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = stream.next().await {
            if let Err(status) = item {
                return (status, Instant::now());
            }
        }
        panic!("the stream ended without a status");
    })
    .await
    .expect("the stream ends in time")
}

#[tokio::test]
async fn a_user_sees_their_own_sessions_most_recent_first_with_the_current_one_marked() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let phone = login_from(&auth, &ada, "phone-app/2.1 (Android 15)").await;
    let logged_out = login_from(&auth, &ada, "old-laptop").await;
    auth.sessions()
        .logout(pb::LogoutRequest {
            refresh_token: logged_out.refresh_token.clone(),
        })
        .await
        .expect("logging out");

    let seen = list(&auth, &ada).await;
    let ids: Vec<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let (first, phone_id) = (
        session_of(&auth, &ada).await,
        session_of(&auth, &phone).await,
    );
    // Logged out is gone; grace's never showed.
    assert_eq!(ids, [phone_id.as_str(), first.as_str()], "{seen:?}");
    assert_eq!(
        seen.iter().map(|s| s.current).collect::<Vec<_>>(),
        [false, true]
    );
    let phone_seen = &seen[0];
    // The client's words first; a gRPC library may add its own.
    assert!(
        phone_seen.client.starts_with("phone-app/2.1 (Android 15)"),
        "{phone_seen:?}"
    );
    assert_eq!(phone_seen.address, "127.0.0.1");
    let started = phone_seen.started_at.expect("a start");
    let expires = phone_seen.expires_at.expect("an end");
    assert!(expires.seconds > started.seconds, "{phone_seen:?}");
    // The other device marks its own.
    let from_phone = list(&auth, &phone).await;
    assert!(from_phone.iter().any(|s| s.id == phone_id && s.current));
    assert!(
        list(&auth, &grace)
            .await
            .iter()
            .all(|s| s.id != first && s.id != phone_id)
    );

    // Using a session an hour later moves it to the top; its last use is
    // kept to the minute.
    sqlx::query("update refresh_families set last_used_at = last_used_at - interval '1 hour'")
        .execute(&auth.db)
        .await
        .expect("an hour passes");
    let ada = TestUser {
        refresh_token: rotate(&auth, &ada).await.expect("rotating"),
        ..ada
    };
    assert_eq!(list(&auth, &ada).await[0].id, first);
    drop(ada);
}

#[tokio::test]
async fn ending_a_session_ends_its_tokens_and_streams_on_every_replica_and_spares_the_others() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let other_auth = TestAuth::spawn_on(auth.database_url.clone(), |_| {}).await;
    let other_chat = TestChat::spawn_on(chat.database_url.clone(), &other_auth.url(), |_| {}).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let laptop = login_from(&auth, &ada, "laptop").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;

    let mut kept = connect(&chat, &ada, chat_id).await;
    let mut ended_here = connect(&chat, &laptop, chat_id).await;
    let mut ended_there = connect(&other_chat, &laptop, chat_id).await;
    let laptop_id = session_of(&auth, &laptop).await;

    let since = Instant::now();
    revoke(&auth, &ada, &laptop_id)
        .await
        .expect("ending the laptop's session");
    for (stream, replica) in [
        (&mut ended_here, "this replica"),
        (&mut ended_there, "the other"),
    ] {
        let (status, at) = end_of(stream).await;
        eprintln!(
            "{replica}: the stream ended {:?} after the session",
            at - since
        );
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{replica}: {status:?}"
        );
        assert!(
            at - since < Duration::from_secs(1),
            "{replica}: {:?}",
            at - since
        );
    }
    // Every token of the session is refused, on every auth replica.
    assert_eq!(
        check(&auth, &laptop.access_token)
            .await
            .expect_err("refused")
            .code(),
        Code::Unauthenticated
    );
    assert!(
        tests::services::eventually(|| async {
            check(&other_auth, &laptop.access_token)
                .await
                .is_err_and(|status| status.code() == Code::Unauthenticated)
        })
        .await,
        "the other auth replica refuses the session's token"
    );
    assert_eq!(
        rotate(&auth, &laptop).await.expect_err("refused").code(),
        Code::Unauthenticated
    );
    let refused = chat
        .chats()
        .list_chats(laptop.request(chat_pb::ListChatsRequest::default()))
        .await
        .expect_err("a chat call with the ended session's token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The session it was ended from goes on: its stream, its token, its
    // refresh token.
    chat.send(&grace, chat_id, "still there?").await;
    let next = tokio::time::timeout(Duration::from_secs(5), kept.next()).await;
    assert!(matches!(next, Ok(Some(Ok(_)))), "{next:?}");
    check(&auth, &ada.access_token)
        .await
        .expect("ada's own session goes on");
    rotate(&auth, &ada).await.expect("and rotates");
    assert_eq!(list(&auth, &ada).await.len(), 1);

    // Ending it again changes nothing.
    revoke(&auth, &ada, &laptop_id)
        .await
        .expect("ending it again");
}

#[tokio::test]
async fn ending_the_other_sessions_keeps_only_the_current_one() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let phone = login_from(&auth, &ada, "phone").await;
    let tablet = login_from(&auth, &ada, "tablet").await;
    let grace = auth.register("grace").await;

    let revoked = auth
        .sessions()
        .revoke_other_sessions(ada.request(pb::RevokeOtherSessionsRequest {}))
        .await
        .expect("ending the others")
        .into_inner()
        .revoked;
    assert_eq!(revoked, 2);
    let left: Vec<String> = list(&auth, &ada).await.into_iter().map(|s| s.id).collect();
    assert_eq!(left, [session_of(&auth, &ada).await]);
    for other in [&phone, &tablet] {
        assert_eq!(
            check(&auth, &other.access_token)
                .await
                .expect_err("refused")
                .code(),
            Code::Unauthenticated
        );
        assert_eq!(
            rotate(&auth, other).await.expect_err("refused").code(),
            Code::Unauthenticated
        );
    }
    check(&auth, &grace.access_token)
        .await
        .expect("another user's session is untouched");
    rotate(&auth, &ada)
        .await
        .expect("the current session goes on");

    let again = auth
        .sessions()
        .revoke_other_sessions(ada.request(pb::RevokeOtherSessionsRequest {}))
        .await
        .expect("ending the others again")
        .into_inner()
        .revoked;
    assert_eq!(again, 0);
}

#[tokio::test]
async fn another_users_session_is_not_found_and_a_malformed_id_names_its_field() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let adas = session_of(&auth, &ada).await;

    let status = revoke(&auth, &grace, &adas).await.expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    check(&auth, &ada.access_token)
        .await
        .expect("ada's session is untouched");
    let status = revoke(&auth, &grace, &uuid::Uuid::new_v4().to_string())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    for malformed in ["nope", "", &"a".repeat(65)] {
        let status = revoke(&auth, &grace, malformed).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{malformed:?}: {status:?}"
        );
        assert!(status.message().contains("session_id"), "{status:?}");
    }

    // Without a token, nothing is listed or ended.
    for status in [
        auth.sessions()
            .list_sessions(pb::ListSessionsRequest {})
            .await
            .map(drop)
            .expect_err("refused"),
        auth.sessions()
            .revoke_session(pb::RevokeSessionRequest {
                session_id: adas.clone(),
            })
            .await
            .map(drop)
            .expect_err("refused"),
        auth.sessions()
            .revoke_other_sessions(pb::RevokeOtherSessionsRequest {})
            .await
            .map(drop)
            .expect_err("refused"),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    check(&auth, &ada.access_token)
        .await
        .expect("still untouched");
}

#[tokio::test]
async fn a_logout_and_a_reused_refresh_token_end_the_sessions_access_tokens_everywhere() {
    let auth = TestAuth::spawn().await;
    let other_auth = TestAuth::spawn_on(auth.database_url.clone(), |_| {}).await;
    let ada = auth.register("ada").await;
    let phone = login_from(&auth, &ada, "phone").await;
    let stolen = login_from(&auth, &ada, "tablet").await;
    auth.sessions()
        .logout(pb::LogoutRequest {
            refresh_token: ada.refresh_token.clone(),
        })
        .await
        .expect("logging out");
    let status = check(&auth, &ada.access_token).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // A retired refresh token presented again ends its session too.
    rotate(&auth, &stolen).await.expect("the thief rotates");
    rotate(&auth, &stolen)
        .await
        .expect_err("the owner's copy, presented again");
    let status = check(&auth, &stolen.access_token)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    for (replica, name) in [
        (&other_auth, "the other replica, told"),
        (&auth, "this one"),
    ] {
        for ended in [&ada, &stolen] {
            assert!(
                tests::services::eventually(|| async {
                    check(replica, &ended.access_token)
                        .await
                        .is_err_and(|status| status.code() == Code::Unauthenticated)
                })
                .await,
                "{name} refuses an ended session's token"
            );
        }
    }
    // A replica that starts afterwards loads the endings.
    let late = TestAuth::spawn_on(auth.database_url.clone(), |_| {}).await;
    for ended in [&ada, &stolen] {
        let status = check(&late, &ended.access_token)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    check(&late, &phone.access_token)
        .await
        .expect("the other session goes on");
}

#[tokio::test]
async fn a_login_past_the_limit_ends_the_least_recently_used_session() {
    let auth = TestAuth::spawn_with(|config| config.tokens.sessions_per_user = 2).await;
    let ada = auth.register("ada").await;
    let phone = login_from(&auth, &ada, "phone").await;
    // The phone is used: the first session is now the least recent.
    sqlx::query("update refresh_families set last_used_at = last_used_at - interval '1 hour'")
        .execute(&auth.db)
        .await
        .expect("an hour passes");
    rotate(&auth, &phone).await.expect("the phone rotates");
    let tablet = login_from(&auth, &ada, "tablet").await;

    let status = check(&auth, &ada.access_token).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    rotate(&auth, &ada)
        .await
        .expect_err("its refresh token too");
    check(&auth, &tablet.access_token)
        .await
        .expect("the new session");
    let listed: Vec<String> = list(&auth, &tablet)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&session_of(&auth, &tablet).await));
}
