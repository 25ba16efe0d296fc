//! chatctl against the real services: register, log in, create a chat,
//! send, read history, and receive a message live.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tests::services::{TestAuth, TestChat};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

struct Cli<'a> {
    auth: &'a TestAuth,
    chat: &'a TestChat,
    config_dir: &'a Path,
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatctl"));
        command
            .args(args)
            .env("CHATCTL_AUTH_URL", self.auth.url())
            .env("CHATCTL_CHAT_URL", format!("http://{}", self.chat.addr))
            .env("CHATCTL_CONFIG_DIR", self.config_dir)
            .env("CHATCTL_PASSWORD", "a fine password")
            .kill_on_drop(true);
        command
    }

    /// Runs to the end; (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = tokio::time::timeout(Duration::from_secs(30), self.command(args).output())
            .await
            .expect("chatctl finishes")
            .expect("chatctl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(ok, "chatctl {args:?} failed: {stderr}");
        stdout
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chatctl-test-{name}-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn uuid_like() -> String {
    format!("{}-{:?}", std::process::id(), std::time::Instant::now())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

#[tokio::test]
async fn a_user_registers_logs_in_chats_and_sees_messages_live() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let (ada_dir, grace_dir) = (temp_dir("ada"), temp_dir("grace"));
    let ada = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &ada_dir,
    };
    let grace = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &grace_dir,
    };

    assert!(
        ada.ok(&["register", "ada", "ada@example.com"])
            .await
            .starts_with("registered ada (id ")
    );
    grace.ok(&["register", "grace", "grace@example.com"]).await;
    assert_eq!(ada.ok(&["login", "ada"]).await.trim(), "logged in as ada");
    grace.ok(&["login", "grace"]).await;
    assert!(ada.ok(&["whoami"]).await.starts_with("ada (id "));

    let created = ada
        .ok(&["chat", "create", "--title", "Engines", "grace"])
        .await;
    let chat_id = created
        .trim()
        .strip_prefix("created chat ")
        .expect("a chat id")
        .to_owned();

    // Grace listens (replaying from the start) and types a line.
    let mut listener = grace
        .command(&["chat", "connect", &chat_id, "--since", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("chatctl chat connect");
    let mut live = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    ada.ok(&["chat", "send", &chat_id, "hello grace"]).await;
    let line = tokio::time::timeout(Duration::from_secs(10), live.next_line())
        .await
        .expect("a line within ten seconds")
        .expect("readable output")
        .expect("a line");
    assert!(line.ends_with("ada: hello grace"), "{line}");

    let mut typing = listener.stdin.take().expect("stdin");
    typing.write_all(b"hi ada\n").await.expect("typing");
    let echoed = tokio::time::timeout(Duration::from_secs(10), live.next_line())
        .await
        .expect("grace's own message comes back")
        .expect("readable output")
        .expect("a line");
    assert!(echoed.ends_with("grace: hi ada"), "{echoed}");

    let history = ada.ok(&["chat", "history", &chat_id]).await;
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].ends_with("ada: hello grace") && lines[1].ends_with("grace: hi ada"),
        "{history}"
    );
}

#[tokio::test]
async fn server_errors_are_one_line_and_exit_non_zero() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("errors");
    let cli = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };

    let (ok, _, stderr) = cli.run(&["whoami"]).await;
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: not logged in: run chatctl login NAME"
    );

    cli.ok(&["register", "ada", "ada@example.com"]).await;
    let (ok, _, stderr) = cli.run(&["register", "ada", "other@example.com"]).await;
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: already exists: name is already taken"
    );

    cli.ok(&["login", "ada"]).await;
    let (ok, _, stderr) = cli.run(&["chat", "send", "9999", "anyone?"]).await;
    assert!(!ok);
    assert_eq!(stderr.trim(), "error: not found: chat 9999 not found");
    assert_eq!(stderr.lines().count(), 1);
}

#[tokio::test]
async fn an_expiring_access_token_is_refreshed_and_the_session_kept() {
    let auth =
        TestAuth::spawn_with(|config| config.tokens.access_ttl = Duration::from_secs(16)).await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("refresh");
    let cli = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };
    cli.ok(&["register", "ada", "ada@example.com"]).await;
    cli.ok(&["login", "ada"]).await;
    let before = std::fs::read_to_string(dir.join("session.json")).expect("a session");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(cli.ok(&["whoami"]).await.starts_with("ada"));

    let after = std::fs::read_to_string(dir.join("session.json")).expect("a session");
    let token = |session: &str| {
        serde_json::from_str::<serde_json::Value>(session).expect("JSON")["refresh_token"].clone()
    };
    assert_ne!(
        token(&before),
        token(&after),
        "the refresh token was not rotated"
    );
}
