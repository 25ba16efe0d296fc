//! The Prometheus endpoints reflect the calls made.

use api::auth::v1 as pb;
use tests::fixtures::{TwoMembers, two_members};
use tests::http::request;
use tests::services::TestAuth;

/// The value of the sample `name{labels}` in a scrape, if present.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let all_match = labels
                .iter()
                .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")));
            (series_name == name && all_match).then(|| value.parse().ok())?
        })
}

#[tokio::test]
async fn auth_metrics_count_rpcs_by_code_and_logins_by_result() {
    let auth = TestAuth::spawn().await;
    auth.register("ada").await;
    let _ = auth
        .sessions()
        .login(pb::LoginRequest {
            username: "ada".into(),
            password: "wrong password".into(),
            ..Default::default()
        })
        .await;

    let scrape = request(auth.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;

    let created = [
        ("grpc_service", "auth.v1.UserService"),
        ("grpc_method", "Create"),
        ("grpc_code", "Ok"),
    ];
    assert_eq!(
        sample(&scrape, "grpc_server_handled_total", &created),
        Some(1.0),
        "{scrape}"
    );
    let refused = [("grpc_method", "Login"), ("grpc_code", "Unauthenticated")];
    assert_eq!(
        sample(&scrape, "grpc_server_handled_total", &refused),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_started_total",
            &[("grpc_method", "Login")]
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &scrape,
            "grpc_server_handling_seconds_count",
            &[("grpc_method", "Login")]
        ) == Some(2.0)
    );
    assert_eq!(
        sample(&scrape, "auth_logins_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "auth_logins_total",
            &[("result", "wrong_credentials")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn chat_metrics_count_messages_and_open_streams() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let stream = chat
        .chats()
        .connect_chat(grace.request(api::chat::v1::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("a stream");
    chat.send(&ada, chat_id, "one").await;
    chat.send(&ada, chat_id, "two").await;

    let scrape = request(chat.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;

    assert_eq!(
        sample(&scrape, "chat_messages_sent_total", &[]),
        Some(2.0),
        "{scrape}"
    );
    assert_eq!(sample(&scrape, "chat_open_streams", &[]), Some(1.0));
    let stream_type = [
        ("grpc_method", "ConnectChat"),
        ("grpc_type", "server_stream"),
    ];
    assert_eq!(
        sample(&scrape, "grpc_server_started_total", &stream_type),
        Some(1.0)
    );
    drop(stream);
    let auth_scrape = request(auth.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;
    assert!(
        sample(
            &auth_scrape,
            "auth_access_checks_total",
            &[("result", "allowed")]
        )
        // The second send was answered from chat's access cache.
        .is_some_and(|n| n >= 3.0)
    );
}

#[tokio::test]
async fn calls_to_paths_nobody_serves_add_no_series() {
    let auth = TestAuth::spawn().await;
    let series = || async {
        request(auth.metrics_addr, "GET", "/metrics", None, None)
            .await
            .body
            .lines()
            .filter(|line| line.starts_with("grpc_server_"))
            .count()
    };
    let mut grpc = tonic::client::Grpc::new(auth.channel());
    // One call to an unknown path, so that its series exist.
    let call = |i: usize| {
        tonic::codegen::http::uri::PathAndQuery::from_maybe_shared(format!(
            "/random{i}.Service/Method{i}"
        ))
        .expect("a path")
    };
    grpc.ready().await.expect("ready");
    let _ = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            call(0),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let before = series().await;

    for i in 1..=1000 {
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                call(i),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("nobody serves it");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    let scrape = request(auth.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;
    assert_eq!(series().await, before, "random paths added series");
    assert!(!scrape.contains("random1"), "a random path became a label");
    assert_eq!(
        sample(
            &scrape,
            "grpc_server_started_total",
            &[("grpc_service", "unknown")]
        ),
        Some(1001.0)
    );
}
