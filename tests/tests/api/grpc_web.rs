//! gRPC-Web on both services' gRPC ports, as browsers call them: binary and
//! text, unary and server streaming, through the same access check and
//! metrics as gRPC, and CORS only for the origins configured.

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use tests::grpc_web;
use tests::http::{request, request_with};
use tests::services::{TestAuth, TestChat, with_token};
use tonic::Code;

use crate::streams::next_message;

#[tokio::test]
async fn a_browser_logs_in_chats_and_follows_a_chat_live_over_grpc_web() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;

    let tokens = grpc_web::sessions(auth.addr)
        .login(auth_pb::LoginRequest {
            username: "ada".into(),
            password: ada.password.clone(),
            ..Default::default()
        })
        .await
        .expect("logging in over gRPC-Web")
        .into_inner();
    let token = tokens.access_token;
    let mut web = grpc_web::chats(chat.addr);
    let chat_id = web
        .create(with_token(
            pb::CreateRequest {
                usernames: vec!["grace".into()],
                title: "Engines".into(),
            },
            &token,
        ))
        .await
        .expect("creating over gRPC-Web")
        .into_inner()
        .id;
    let first = web
        .send_message(with_token(
            pb::SendMessageRequest {
                chat_id,
                text: "from the browser".into(),
                client_message_id: "m-1".into(),
            },
            &token,
        ))
        .await
        .expect("sending over gRPC-Web")
        .into_inner()
        .message
        .expect("the message");

    // Server streaming: the replay, then a message sent over gRPC, live.
    let mut stream = web
        .connect_chat(with_token(
            pb::ConnectChatRequest {
                chat_id,
                since_message_id: Some(0),
            },
            &token,
        ))
        .await
        .expect("a stream over gRPC-Web")
        .into_inner();
    assert_eq!(next_message(&mut stream).await, first);
    let live = chat.send(&grace, chat_id, "from grpc").await;
    assert_eq!(next_message(&mut stream).await, live);

    // The same guard and validation as gRPC.
    let anonymous = web
        .list_chats(pb::ListChatsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let invalid = web
        .get_chat(with_token(pb::GetChatRequest { id: 0 }, &token))
        .await
        .expect_err("a bad id");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("id"), "{invalid:?}");
    let outsider = auth.register("eve").await;
    let hidden = web
        .get_chat(outsider.request(pb::GetChatRequest { id: chat_id }))
        .await
        .expect_err("not a member");
    assert_eq!(hidden.code(), Code::NotFound);

    // Counted like any call.
    let scrape = request(chat.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;
    let sends = scrape
        .lines()
        .find(|line| {
            line.starts_with("grpc_server_handled_total{")
                && line.contains("grpc_method=\"SendMessage\"")
                && line.contains("grpc_code=\"Ok\"")
        })
        .unwrap_or_else(|| panic!("no SendMessage series: {scrape}"));
    assert!(sends.ends_with(" 2"), "one send each way: {sends}");
    let refused = scrape.lines().any(|line| {
        line.starts_with("grpc_server_handled_total{")
            && line.contains("grpc_method=\"ListChats\"")
            && line.contains("grpc_code=\"Unauthenticated\"")
    });
    assert!(refused, "{scrape}");
    drop(stream);
}

/// One gRPC-Web frame: flags, length, message.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// The frames of a gRPC-Web response body: (flags, payload).
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        frames.push((body[0], body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    frames
}

/// A `grpc-web-text` body: base64, each frame possibly encoded on its
/// own (padding ends one).
fn decode_text(body: &str) -> Vec<u8> {
    let text = body.trim().as_bytes();
    let (mut decoded, mut start, mut i) = (Vec::new(), 0, 0);
    while i < text.len() {
        if text[i] == b'=' {
            while i < text.len() && text[i] == b'=' {
                i += 1;
            }
            decoded.extend(STANDARD.decode(&text[start..i]).expect("base64"));
            start = i;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        decoded.extend(STANDARD.decode(&text[start..]).expect("base64"));
    }
    decoded
}

/// `grpc-web-text`, the base64 form browsers without binary streaming
/// use: the answer is text too, messages and trailers alike.
#[tokio::test]
async fn grpc_web_text_calls_are_answered_in_text() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let call = |password: &str| {
        STANDARD.encode(frame(&auth_pb::LoginRequest {
            username: "ada".into(),
            password: password.into(),
            ..Default::default()
        }))
    };
    let headers = [
        ("Content-Type", "application/grpc-web-text"),
        ("Accept", "application/grpc-web-text"),
        ("X-Grpc-Web", "1"),
    ];

    let right = request_with(
        auth.addr,
        "POST",
        "/auth.v1.AuthService/Login",
        &headers,
        &call(&ada.password),
    )
    .await;
    assert_eq!(right.status, 200, "{right:?}");
    assert!(
        right
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("application/grpc-web-text")),
        "{right:?}"
    );
    let decoded = decode_text(&right.body);
    let answered = frames(&decoded);
    let answer = auth_pb::LoginResponse::decode(answered[0].1.as_slice()).expect("a LoginResponse");
    assert!(answer.refresh_token.starts_with("rt_"));
    let trailers = String::from_utf8_lossy(&answered.last().expect("trailers").1).to_lowercase();
    assert_eq!(
        answered.last().map(|frame| frame.0),
        Some(0x80),
        "a trailer frame"
    );
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    let wrong = request_with(
        auth.addr,
        "POST",
        "/auth.v1.AuthService/Login",
        &headers,
        &call("wrong password"),
    )
    .await;
    let status = wrong.header("grpc-status").map(str::to_owned).or_else(|| {
        let trailers = frames(&decode_text(&wrong.body)).pop()?.1;
        String::from_utf8_lossy(&trailers)
            .to_lowercase()
            .lines()
            .find_map(|line| Some(line.strip_prefix("grpc-status:")?.trim().to_owned()))
    });
    assert_eq!(status.as_deref(), Some("16"), "{wrong:?}");
}

fn preflight_headers(origin: &str) -> [(&str, &str); 3] {
    [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        ),
    ]
}

#[tokio::test]
async fn only_the_configured_origins_may_call_from_a_browser() {
    // Auth as shipped: the bundled web client's origin only.
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.edge.cors_origins =
            host::grpc_web::CorsOrigins::parse("CHAT_CORS_ORIGINS", "https://chat.example.com")
                .expect("an origin");
    })
    .await;
    let path = "/chat.v1.ChatService/ListChats";
    let cases = [
        (auth.addr, host::grpc_web::WEB_CLIENT_ORIGIN, true),
        (auth.addr, "https://chat.example.com", false),
        (chat.addr, "https://chat.example.com", true),
        (chat.addr, host::grpc_web::WEB_CLIENT_ORIGIN, false),
        (chat.addr, "https://evil.example.com", false),
    ];
    for (addr, origin, allowed) in cases {
        let answer = request_with(addr, "OPTIONS", path, &preflight_headers(origin), "").await;
        let allow = answer.header("access-control-allow-origin");
        if allowed {
            assert_eq!(allow, Some(origin), "{origin} at {addr}: {answer:?}");
            let headers = answer
                .header("access-control-allow-headers")
                .unwrap_or_default()
                .to_lowercase();
            assert!(headers.contains("authorization"), "{answer:?}");
        } else {
            assert_eq!(allow, None, "{origin} at {addr}: {answer:?}");
        }
    }

    // An allowed origin's call can read the status and request id.
    let ada = auth.register("ada").await;
    let token = format!("Bearer {}", ada.access_token);
    let body = STANDARD.encode(frame(&pb::ListChatsRequest::default()));
    let answer = request_with(
        chat.addr,
        "POST",
        path,
        &[
            ("Origin", "https://chat.example.com"),
            ("Content-Type", "application/grpc-web-text"),
            ("Authorization", &token),
        ],
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let exposed = answer
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    for header in ["grpc-status", "grpc-message", "x-request-id"] {
        assert!(exposed.contains(header), "{header}: {answer:?}");
    }
}
