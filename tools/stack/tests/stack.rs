//! The run command itself: `stack` on a fresh data directory answers on
//! 50051, 50052, 8081 and 8080 (the web client), refuses a second start, stops cleanly on Ctrl-C,
//! keeps its data for the next start, and brings its PostgreSQL back after
//! a `kill -9` with everything it acknowledged.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::chat::v1 as pb;
use serde_json::json;
use tests::http::request;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn stack(data_dir: &Path, postgres_port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stack"));
    command
        .env("STACK_DATA_DIR", data_dir)
        .env("STACK_POSTGRES_PORT", postgres_port.to_string())
        // The sends through a PostgreSQL kill hold one token for as long as
        // the stack takes to recover, which the machine decides.
        .env("AUTH_ACCESS_TOKEN_TTL_SECS", "3600")
        .env_remove("AUTH_DATABASE_URL")
        .env_remove("CHAT_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a running stack printed.
type Output = Arc<Mutex<String>>;

/// Starts the stack and waits for its "up" banner.
async fn start(data_dir: &Path, postgres_port: u16) -> Child {
    start_capturing(data_dir, postgres_port).await.0
}

/// Starts the stack, waits for its "up" banner, and keeps what it prints
/// on standard output from then on.
async fn start_capturing(data_dir: &Path, postgres_port: u16) -> (Child, Output) {
    launch(stack(data_dir, postgres_port)).await
}

/// Runs `command`, waits for the stack's "up" banner, and keeps what it
/// prints on standard output from then on.
async fn launch(mut command: Command) -> (Child, Output) {
    let mut child = command.spawn().expect("starting the stack");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
    tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.expect("readable output") {
            if line.starts_with("The chat backend is up") {
                return;
            }
        }
        let mut said = String::new();
        while let Ok(Some(line)) = errors.next_line().await {
            said.push_str(&line);
            said.push('\n');
        }
        panic!("the stack ended before it was up:\n{said}");
    })
    .await
    .expect("the stack is up within 90 seconds");
    // Keep draining the output so the stack never blocks on a full pipe.
    let output = Output::default();
    let printed = output.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut printed = printed.lock().expect("the output");
            printed.push_str(&line);
            printed.push('\n');
        }
    });
    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
    (child, output)
}

/// Ctrl-C, and the exit that follows.
async fn interrupt(mut child: Child) {
    let pid = child.id().expect("a running stack").to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the stack stops within 30 seconds")
        .expect("an exit status");
    assert!(status.success(), "the stack exited with {status}");
}

async fn serving(port: u16) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .map(|e| e.connect_lazy())
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|response| response.into_inner().status() == ServingStatus::Serving)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[tokio::test]
async fn one_command_runs_the_system_and_keeps_its_data() {
    let data_dir = std::env::temp_dir().join(format!("stack-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let postgres_port = free_port();
    let rest = "127.0.0.1:8081".parse().expect("an address");

    let running = start(&data_dir, postgres_port).await;
    assert!(serving(50051).await, "auth does not answer on 50051");
    assert!(serving(50052).await, "chat does not answer on 50052");
    let registration = json!({ "name": "ada", "email": "ada@example.com", "password": "correct horse", "passwordConfirm": "correct horse" });
    let created = request(rest, "POST", "/v1/users", None, Some(&registration)).await;
    assert_eq!(created.status, 200, "{}", created.body);
    // The web client, pointed at the services it was started with.
    let web = "127.0.0.1:8080".parse().expect("an address");
    let page = request(web, "GET", "/", None, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("/app.js"), "{}", page.body);
    let settings = request(web, "GET", "/config.json", None, None).await.json();
    assert_eq!(
        settings,
        json!({ "authUrl": "http://127.0.0.1:50051", "chatUrl": "http://127.0.0.1:50052" })
    );
    // The data is kept, so the database must keep what it acknowledged.
    let mut database = <sqlx::PgConnection as sqlx::Connection>::connect(&format!(
        "postgres://postgres@127.0.0.1:{postgres_port}/chat"
    ))
    .await
    .expect("the stack's database");
    let fsync: String = sqlx::query_scalar("show fsync")
        .fetch_one(&mut database)
        .await
        .expect("the fsync setting");
    assert_eq!(
        fsync, "on",
        "the run command's database may lose acknowledged data"
    );
    drop(database);

    let second = stack(&data_dir, postgres_port)
        .output()
        .await
        .expect("a second stack runs");
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("already running"), "{said}");

    interrupt(running).await;
    assert!(
        !data_dir.join("postgres/postmaster.pid").exists(),
        "PostgreSQL is still running"
    );

    let (again, printed) = start_capturing(&data_dir, postgres_port).await;
    let login = request(
        rest,
        "POST",
        "/v1/auth/login",
        None,
        Some(&json!({ "username": "ada", "password": "correct horse" })),
    )
    .await;
    assert_eq!(
        login.status, 200,
        "the user did not survive a restart: {}",
        login.body
    );
    let access_token = serde_json::from_str::<serde_json::Value>(&login.body).expect("a JSON body")
        ["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned();

    // kill -9 of the private PostgreSQL mid-send: the stack says so and
    // starts it again; sends retried with their keys go through, and every
    // acknowledged one is there after another restart.
    let grace = json!({ "name": "grace", "email": "grace@example.com", "password": "correct horse", "passwordConfirm": "correct horse" });
    let created = request(rest, "POST", "/v1/users", None, Some(&grace)).await;
    assert_eq!(created.status, 200, "{}", created.body);
    // No SMTP server is configured: the stack says so, and prints grace's
    // verification mail, link and all, to its log.
    let mut logged = false;
    for _ in 0..200 {
        let said = printed.lock().expect("the output").clone();
        if said.contains("MAIL IS NOT SENT")
            && said.lines().any(|line| {
                line.contains("mail NOT sent")
                    && line.contains("grace@example.com")
                    && line.contains("#verify=ev_")
            })
        {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        logged,
        "grace's mail is not in the log:\n{}",
        printed.lock().expect("the output")
    );
    let acknowledged = sends_through_a_postgres_kill(&data_dir, &access_token).await;
    let said = printed.lock().expect("the output").clone();
    assert!(
        said.contains("stopped unexpectedly"),
        "the stack did not say so:\n{said}"
    );
    interrupt(again).await;
    let again = start(&data_dir, postgres_port).await;
    let mut database = <sqlx::PgConnection as sqlx::Connection>::connect(&format!(
        "postgres://postgres@127.0.0.1:{postgres_port}/chat"
    ))
    .await
    .expect("the stack's database");
    let stored: Vec<i64> = sqlx::query_scalar("select id from messages order by id")
        .fetch_all(&mut database)
        .await
        .expect("the messages");
    assert_eq!(
        stored, acknowledged,
        "acknowledged messages lost, or stored twice"
    );
    drop(database);
    interrupt(again).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Sends messages to a new chat of ada's, killing the stack's PostgreSQL
/// (`kill -9` of the postmaster) a third of the way; each send is retried
/// with its key until answered. The ids acknowledged, in order.
async fn sends_through_a_postgres_kill(data_dir: &Path, access_token: &str) -> Vec<i64> {
    const SENDS: usize = 60;
    fn authorized<T>(message: T, access_token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {access_token}")
                .parse()
                .expect("a header value"),
        );
        request.set_timeout(Duration::from_secs(5));
        request
    }
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50052").connect_lazy();
    let mut chats = pb::chat_service_client::ChatServiceClient::new(channel);
    let chat_id = chats
        .create(authorized(
            pb::CreateRequest {
                usernames: vec!["grace".into()],
                title: "through a crash".into(),
            },
            access_token,
        ))
        .await
        .expect("a chat")
        .into_inner()
        .id;
    let mut acknowledged = Vec::new();
    for n in 0..SENDS {
        if n == SENDS / 3 {
            let pid = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
                .expect("the postmaster's pid");
            let pid = pid.lines().next().expect("a pid").trim().to_owned();
            let killed = Command::new("kill")
                .args(["-9", &pid])
                .status()
                .await
                .expect("kill");
            assert!(killed.success());
        }
        let mut attempts = 0;
        let id = loop {
            attempts += 1;
            match chats
                .send_message(authorized(
                    pb::SendMessageRequest {
                        chat_id,
                        text: format!("message {n}"),
                        client_message_id: format!("m-{n}"),
                    },
                    access_token,
                ))
                .await
            {
                Ok(sent) => break sent.into_inner().message.expect("the message").id,
                // Past the send quota: back when the service says.
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    use tonic_types::StatusExt as _;
                    let wait = status
                        .get_details_retry_info()
                        .and_then(|info| info.retry_delay)
                        .unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
                    tokio::time::sleep(wait).await;
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    assert!(attempts < 300, "PostgreSQL did not come back");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        acknowledged.push(id);
    }
    acknowledged
}

/// `STACK_TLS=1`: every port over TLS with a development CA kept in the
/// data directory, and chat reaching auth with mutual TLS.
#[tokio::test]
async fn stack_tls_serves_every_port_over_tls_with_a_development_ca() {
    use api::auth::v1 as auth_pb;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let data_dir = std::env::temp_dir().join(format!("stack-tls-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let (auth_port, chat_port) = (free_port(), free_port());
    let mut command = stack(&data_dir, free_port());
    command.env("STACK_TLS", "1");
    for (variable, port) in [
        ("AUTH_GRPC_ADDR", auth_port),
        ("AUTH_HTTP_ADDR", free_port()),
        ("CHAT_GRPC_ADDR", chat_port),
        ("CHAT_HTTP_ADDR", free_port()),
        ("WEB_ADDR", free_port()),
    ] {
        command.env(variable, format!("127.0.0.1:{port}"));
    }
    command
        .env("AUTH_METRICS_ADDR", "off")
        .env("CHAT_METRICS_ADDR", "off");
    let (running, _) = launch(command).await;

    let ca = std::fs::read(data_dir.join("tls/ca.pem")).expect("the development CA");
    let channel = |port: u16| {
        Channel::from_shared(format!("https://localhost:{port}"))
            .expect("a URI")
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))
            .expect("TLS settings")
            .connect_lazy()
    };
    assert!(!serving(auth_port).await, "auth answers in plaintext");
    let mut users = auth_pb::user_service_client::UserServiceClient::new(channel(auth_port));
    users
        .create(auth_pb::CreateRequest {
            name: "ada".into(),
            email: "ada@example.com".into(),
            password: "correct horse".into(),
            password_confirm: "correct horse".into(),
            ..Default::default()
        })
        .await
        .expect("registering over TLS");
    let token = auth_pb::auth_service_client::AuthServiceClient::new(channel(auth_port))
        .login(auth_pb::LoginRequest {
            username: "ada".into(),
            password: "correct horse".into(),
            ..Default::default()
        })
        .await
        .expect("logging in over TLS")
        .into_inner()
        .access_token;
    // Chat checks the token with auth, over mutual TLS.
    let mut request = tonic::Request::new(pb::ListChatsRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    let chats = pb::chat_service_client::ChatServiceClient::new(channel(chat_port))
        .list_chats(request)
        .await
        .expect("a chat call checked by auth over mutual TLS")
        .into_inner();
    assert!(chats.chats.is_empty());
    interrupt(running).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
