//! Logs: each RPC runs in a span with its method, request id, caller and
//! status, and chat passes its request id on to auth, so that a chat call
//! and its access check are found together.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

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

#[tokio::test]
async fn a_chat_call_and_its_access_check_share_a_request_id() {
    let logs = captured();
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());

    let mut request = ada.request(api::chat::v1::SendMessageRequest {
        chat_id,
        text: "traced".into(),
        client_message_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("metadata"));
    chat.chats().send_message(request).await.expect("a send");

    let text = String::from_utf8_lossy(
        &logs
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&request_id))
        .collect();
    let finished = |method: &str| {
        lines.iter().any(|line| {
            line.contains("rpc finished")
                && line.contains(method)
                && line.contains("grpc.code=\"Ok\"")
        })
    };
    assert!(finished("/chat.v1.ChatService/SendMessage"), "{lines:#?}");
    assert!(finished("/auth.v1.AccessService/Check"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("SendMessage")
                && line.contains(&format!("user_id={}", ada.id))),
        "{lines:#?}"
    );
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
