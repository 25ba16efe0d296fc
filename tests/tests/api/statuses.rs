//! Every client mistake and every outage gets its precise status: text no
//! field can hold is `INVALID_ARGUMENT` naming the field, in both
//! services; a database that is gone is `UNAVAILABLE`, never `INTERNAL`.

use std::time::Duration;

use api::auth::v1 as pb;
use api::chat::v1 as chat_pb;
use tests::outage::{Relay, server_of};
use tests::services::{TestAuth, TestChat};
use tonic::Code;

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "{field} is not named: {status:?}"
    );
}

#[tokio::test]
async fn nul_and_control_characters_are_invalid_arguments_naming_the_field() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;

    let login = auth
        .sessions()
        .login(pb::LoginRequest {
            username: "a\0da".into(),
            password: "ada-password".into(),
            ..Default::default()
        })
        .await
        .expect_err("a NUL in a name");
    assert_invalid(&login, "username");

    let lookup = auth
        .users()
        .lookup_usernames(ada.request(pb::LookupUsernamesRequest {
            usernames: vec!["grace".into(), "gr\0ace".into()],
        }))
        .await
        .expect_err("a NUL in a name");
    assert_invalid(&lookup, "usernames[1]");

    let create = chat
        .chats()
        .create(ada.request(chat_pb::CreateRequest {
            usernames: vec!["gr\u{1b}ace".into()],
            title: "a chat".into(),
        }))
        .await
        .expect_err("a control character in a name");
    assert_invalid(&create, "usernames[0]");

    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let send = chat
        .chats()
        .send_message(ada.request(chat_pb::SendMessageRequest {
            chat_id,
            text: "hello".into(),
            client_message_id: "m-\0".into(),
        }))
        .await
        .expect_err("a NUL in a key");
    assert_invalid(&send, "client_message_id");
}

#[tokio::test]
async fn chat_passes_on_what_auth_says_of_a_bad_name() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let too_long = "x".repeat(101);
    let create = chat
        .chats()
        .create(ada.request(chat_pb::CreateRequest {
            usernames: vec![too_long],
            title: "a chat".into(),
        }))
        .await
        .expect_err("a name no user can have");
    assert_eq!(create.code(), Code::InvalidArgument, "{create:?}");
}

#[tokio::test]
async fn sends_while_the_database_is_gone_are_unavailable_and_service_resumes() {
    let auth = TestAuth::spawn().await;
    let database_url = tests::postgres::fresh_database().await;
    let relay = Relay::start(server_of(&database_url)).await;
    let chat = TestChat::spawn_on(relay.url_for(&database_url), &auth.url(), |_| {}).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    chat.send(&ada, chat_id, "before").await;

    relay.cut();
    let send = |text: &str| {
        let mut chats = chat.chats();
        let mut request = ada.request(chat_pb::SendMessageRequest {
            chat_id,
            text: text.into(),
            client_message_id: String::new(),
        });
        request.set_timeout(Duration::from_secs(20));
        async move { chats.send_message(request).await }
    };
    for _ in 0..3 {
        let during = send("during").await.expect_err("the database is gone");
        assert_eq!(during.code(), Code::Unavailable, "{during:?}");
    }

    relay.restore().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match send("after").await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the service did not resume"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_an_invalid_argument_in_both_services() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    // Field 1 (username), a string, holding bytes that are not UTF-8.
    let not_utf8 = bytes::Bytes::from_static(&[0x0a, 0x02, 0xff, 0xfe]);
    for (channel, path, token) in [
        (auth.channel(), "/auth.v1.AuthService/Login", None),
        (
            chat.channel(),
            "/chat.v1.ChatService/Create",
            Some(ada.access_token.as_str()),
        ),
    ] {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(not_utf8.clone());
        if let Some(token) = token {
            request = tests::services::with_token(not_utf8.clone(), token);
        }
        let status = grpc
            .unary::<_, bytes::Bytes, _>(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tests::sweep::RawCodec,
            )
            .await
            .expect_err("not a request message");
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
    }
}
