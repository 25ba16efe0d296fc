//! Logs: each RPC runs in a span with its method, request id, caller and
//! status, and chat passes its request id on to auth, so that a chat call
//! and its access check are found together.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tests::fixtures::{TwoMembers, two_members};
use tests::services::{TestAuth, TestChat};
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged by this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn captured() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_env_filter("info")
            .init();
        logs
    })
}

fn logged() -> String {
    String::from_utf8_lossy(
        &captured()
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}

/// The lines that carry `request_id`.
fn lines_of(text: &str, request_id: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.contains(request_id))
        .map(str::to_owned)
        .collect()
}

fn finished(lines: &[String], method: &str, code: &str) -> bool {
    lines.iter().any(|line| {
        line.contains("rpc finished")
            && line.contains(method)
            && line.contains(&format!("grpc.code=\"{code}\""))
    })
}

fn with_request_id<T>(mut request: tonic::Request<T>) -> (tonic::Request<T>, String) {
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("metadata"));
    (request, request_id)
}

/// Chat passes its request id on to auth. An access check that allows is
/// one per chat call, which chat logs, so at INFO only chat's line is
/// there; one that refuses is logged by both, under the same id.
#[tokio::test]
async fn a_chat_call_and_its_access_check_share_a_request_id() {
    let _ = captured();
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    let send = || api::chat::v1::SendMessageRequest {
        chat_id,
        text: "traced".into(),
        client_message_id: String::new(),
    };

    let (allowed, allowed_id) = with_request_id(ada.request(send()));
    chat.chats().send_message(allowed).await.expect("a send");
    let (refused, refused_id) = with_request_id(tests::services::with_token(send(), "not-a-token"));
    let status = chat
        .chats()
        .send_message(refused)
        .await
        .expect_err("a send with a bad token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // A call logged after both, so that their lines are in.
    auth.register("alan").await;

    let text = logged();
    let allowed_lines = lines_of(&text, &allowed_id);
    assert!(
        finished(&allowed_lines, "/chat.v1.ChatService/SendMessage", "Ok"),
        "{allowed_lines:#?}"
    );
    assert!(
        allowed_lines
            .iter()
            .any(|line| line.contains("SendMessage")
                && line.contains(&format!("user_id={}", ada.id))),
        "{allowed_lines:#?}"
    );
    assert!(
        !allowed_lines
            .iter()
            .any(|line| line.contains("/auth.v1.AccessService/Check")),
        "{allowed_lines:#?}"
    );
    let refused_lines = lines_of(&text, &refused_id);
    for method in [
        "/chat.v1.ChatService/SendMessage",
        "/auth.v1.AccessService/Check",
    ] {
        assert!(
            finished(&refused_lines, method, "Unauthenticated"),
            "{method}: {refused_lines:#?}"
        );
    }
}

/// Probes call health many times a second: their calls are logged at DEBUG,
/// so that at INFO they leave no line.
#[tokio::test]
async fn health_checks_leave_no_line_at_info() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let logs = captured();
    let auth = TestAuth::spawn().await;
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("metadata"));
    HealthClient::new(auth.channel())
        .check(request)
        .await
        .expect("a health check");
    // A call that is logged, after it: its line is there, so the health
    // check's would have been too.
    let ada = auth.register("ada").await;

    let text = String::from_utf8_lossy(
        &logs
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(
        text.lines()
            .any(|line| line.contains("rpc finished")
                && line.contains("/auth.v1.UserService/Create")),
        "the registration of {} left no line",
        ada.name
    );
    let health: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&request_id))
        .collect();
    assert!(health.is_empty(), "{health:#?}");
}

/// A browser's call, in gRPC-Web, is logged like any other: its request
/// id reaches chat's span and auth's access check.
#[tokio::test]
async fn a_grpc_web_call_and_its_access_check_share_a_request_id() {
    let _ = captured();
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let (refused, request_id) = with_request_id(tests::services::with_token(
        api::chat::v1::ListChatsRequest::default(),
        "not-a-token",
    ));
    let status = tests::grpc_web::chats(chat.addr)
        .list_chats(refused)
        .await
        .expect_err("a bad token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    auth.register("alan").await;

    let lines = lines_of(&logged(), &request_id);
    for method in [
        "/chat.v1.ChatService/ListChats",
        "/auth.v1.AccessService/Check",
    ] {
        assert!(
            finished(&lines, method, "Unauthenticated"),
            "{method}: {lines:#?}"
        );
    }
}
