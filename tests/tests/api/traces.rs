//! One trace across both services: a `SendMessage` that arrives with a W3C
//! `traceparent` yields, at a real OTLP receiver, chat's server span for
//! the send, its client span for auth's `Check`, auth's server span for
//! that `Check` (the client span's child) and chat's database span, all in
//! the caller's trace under the send; and chat logs the call with its
//! trace id.

use std::time::Duration;

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use tests::otlp::{Received, Receiver};
use tests::process::{Process, Service, auth_env, binary, chat_env, free_addr};
use tonic::transport::Channel;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn with_trace<T>(message: T, token: &str, traceparent: &str) -> tonic::Request<T> {
    let mut request = tests::services::with_token(message, token);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("metadata"));
    request
}

#[tokio::test]
async fn a_send_is_one_trace_across_chat_auth_and_the_database() {
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let traced = |service: &str| {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                format!("http://{otlp}"),
            ),
            ("OTEL_SERVICE_NAME".to_owned(), service.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ]
    };

    let auth_addr = free_addr();
    let mut env = auth_env(&tests::postgres::fresh_database().await, auth_addr);
    env.extend(traced("auth"));
    let _auth = Process::start("auth", &binary(Service::Auth), auth_addr, &env).await;
    let chat_addr = free_addr();
    let mut env = chat_env(
        &tests::postgres::fresh_database().await,
        chat_addr,
        &format!("http://{auth_addr}"),
    );
    env.extend(traced("chat"));
    let chat = Process::start("chat", &binary(Service::Chat), chat_addr, &env).await;

    let auth_channel = Channel::from_shared(format!("http://{auth_addr}"))
        .expect("a URI")
        .connect_lazy();
    let mut users = auth_pb::user_service_client::UserServiceClient::new(auth_channel.clone());
    for name in ["ada", "grace"] {
        users
            .create(auth_pb::CreateRequest {
                name: name.into(),
                email: format!("{name}@example.com"),
                password: "correct horse".into(),
                password_confirm: "correct horse".into(),
                ..Default::default()
            })
            .await
            .expect("registering");
    }
    let token = auth_pb::auth_service_client::AuthServiceClient::new(auth_channel)
        .login(auth_pb::LoginRequest {
            username: "ada".into(),
            password: "correct horse".into(),
            ..Default::default()
        })
        .await
        .expect("logging in")
        .into_inner()
        .access_token;
    let mut chats = pb::chat_service_client::ChatServiceClient::new(
        Channel::from_shared(format!("http://{chat_addr}"))
            .expect("a URI")
            .connect_lazy(),
    );
    let chat_id = chats
        .create(tests::services::with_token(
            pb::CreateRequest {
                usernames: vec!["grace".into()],
                title: "traced".into(),
            },
            &token,
        ))
        .await
        .expect("creating a chat")
        .into_inner()
        .id;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    chats
        .send_message(with_trace(
            pb::SendMessageRequest {
                chat_id,
                text: "traced".into(),
                client_message_id: String::new(),
            },
            &token,
            &format!("00-{trace_id}-{caller_span}-01"),
        ))
        .await
        .expect("sending");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (send, check_client, check_server, store) = loop {
        let spans: Vec<Received> = receiver
            .spans()
            .into_iter()
            .filter(|span| hex(&span.trace_id) == trace_id)
            .collect();
        // Whether `span` lies under the span `ancestor`, in this trace.
        let under = |span: &Received, ancestor: &[u8]| {
            let mut parent = span.parent_span_id.clone();
            for _ in 0..spans.len() {
                if parent == ancestor {
                    return true;
                }
                match spans.iter().find(|candidate| candidate.span_id == parent) {
                    Some(next) => parent = next.parent_span_id.clone(),
                    None => return false,
                }
            }
            false
        };
        let find = |service: &str, name: &str, ancestor: Option<&[u8]>| {
            spans
                .iter()
                .find(|span| {
                    span.service == service
                        && span.name == name
                        && ancestor.is_none_or(|ancestor| under(span, ancestor))
                })
                .cloned()
        };
        let send = find("chat", "/chat.v1.ChatService/SendMessage", None);
        let check_client = send
            .as_ref()
            .and_then(|send| find("chat", "/auth.v1.AccessService/Check", Some(&send.span_id)));
        let check_server = check_client.as_ref().and_then(|client| {
            find(
                "auth",
                "/auth.v1.AccessService/Check",
                Some(&client.span_id),
            )
        });
        let store = send
            .as_ref()
            .and_then(|send| find("chat", "store messages", Some(&send.span_id)));
        if let (Some(a), Some(b), Some(c), Some(d)) = (send, check_client, check_server, store) {
            break (a, b, c, d);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trace is incomplete: {:?}",
            spans
                .iter()
                .map(|span| format!(
                    "{} {} {} <- {}",
                    span.service,
                    span.name,
                    hex(&span.span_id),
                    hex(&span.parent_span_id)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        hex(&send.parent_span_id),
        caller_span,
        "the send continues the caller's trace"
    );
    // Auth's span is the direct child of chat's call to it.
    assert_eq!(check_server.parent_span_id, check_client.span_id);
    assert_ne!(store.span_id, send.span_id);
    assert!(
        chat.log_text().contains(trace_id),
        "chat's log does not name the trace: {}",
        chat.log_text()
    );
}
