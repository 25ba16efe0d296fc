//! The run command itself: `stack` on a fresh data directory answers on
//! 50051, 50052 and 8081, refuses a second start, stops cleanly on Ctrl-C
//! and keeps its data for the next start.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

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
        .env_remove("AUTH_DATABASE_URL")
        .env_remove("CHAT_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts the stack and waits for its "up" banner.
async fn start(data_dir: &Path, postgres_port: u16) -> Child {
    let mut child = stack(data_dir, postgres_port)
        .spawn()
        .expect("starting the stack");
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
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
    child
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

    let again = start(&data_dir, postgres_port).await;
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
    interrupt(again).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
