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

#[tokio::test]
async fn a_session_file_readable_by_others_is_made_private_again() {
    use std::os::unix::fs::PermissionsExt as _;
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("private");
    let cli = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };
    cli.ok(&["register", "ada", "ada@example.com"]).await;
    cli.ok(&["login", "ada"]).await;
    let file = dir.join("session.json");
    let mode = |file: &Path| {
        std::fs::metadata(file)
            .expect("the session file")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&file), 0o600);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
        .expect("loosening the file");
    cli.ok(&["login", "ada"]).await;
    assert_eq!(
        mode(&file),
        0o600,
        "the session file stayed readable by others"
    );
}

/// Two logged-in users and a chat between them; the chat's id.
async fn two_users_and_a_chat<'a>(ada: &Cli<'a>, grace: &Cli<'a>) -> String {
    ada.ok(&["register", "ada", "ada@example.com"]).await;
    grace.ok(&["register", "grace", "grace@example.com"]).await;
    ada.ok(&["login", "ada"]).await;
    grace.ok(&["login", "grace"]).await;
    ada.ok(&["chat", "create", "--title", "t", "grace"])
        .await
        .trim()
        .strip_prefix("created chat ")
        .expect("a chat id")
        .to_owned()
}

#[tokio::test]
async fn printed_messages_cannot_forge_lines_in_another_terminal() {
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
    let chat_id = two_users_and_a_chat(&ada, &grace).await;

    // The server keeps a bidi override only when the message closes it;
    // chatctl shows neither as a control character.
    ada.ok(&["chat", "send", &chat_id, "\r#99 admin: hi\u{202e}x\u{202c}"])
        .await;

    let history = grace.ok(&["chat", "history", &chat_id]).await;
    assert!(
        !history.contains('\r') && !history.contains('\u{202e}'),
        "{history:?}"
    );
    assert!(
        history
            .trim_end()
            .ends_with("ada: \\r#99 admin: hi\\u{202e}x\\u{202c}"),
        "{history:?}"
    );
    assert_eq!(history.lines().count(), 1, "{history:?}");
}

#[tokio::test]
async fn a_send_retries_through_an_outage_with_one_message_id() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let relay = tests::outage::Relay::start(chat.addr).await;
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
    let chat_id = two_users_and_a_chat(&ada, &grace).await;

    relay.cut();
    let sending = ada
        .command(&["chat", "send", &chat_id, "through the outage"])
        .env("CHATCTL_CHAT_URL", format!("http://{}", relay.addr))
        .output();
    let restoring = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        relay.restore().await;
    };
    let (output, ()) = tokio::join!(sending, restoring);
    let output = output.expect("chatctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");

    let stored: i64 =
        sqlx::query_scalar("select count(*) from messages where text = 'through the outage'")
            .fetch_one(&chat.db)
            .await
            .expect("a count");
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_send_whose_answer_was_lost_is_retried_with_its_key_and_stored_once() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let relay = tests::outage::Relay::start(chat.addr).await;
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
    let chat_id = two_users_and_a_chat(&ada, &grace).await;
    let stored = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from messages where text = 'answer lost'")
            .fetch_one(&chat.db)
            .await
            .expect("a count")
    };

    // The send reaches the service and is stored; its answer never comes
    // back, and then the connection breaks.
    relay.hold_replies();
    let sending = ada
        .command(&["chat", "send", &chat_id, "answer lost"])
        .env("CHATCTL_CHAT_URL", format!("http://{}", relay.addr))
        .output();
    let breaking = async {
        assert!(
            tests::services::eventually(|| async { stored().await == 1 }).await,
            "the send never arrived"
        );
        relay.cut();
        relay.restore().await;
    };
    let (output, ()) = tokio::join!(sending, breaking);
    let output = output.expect("chatctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    assert_eq!(stored().await, 1, "a retry stored the message again");
}

#[tokio::test]
async fn connect_resumes_from_the_last_message_after_the_service_goes_away() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let relay = tests::outage::Relay::start(chat.addr).await;
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
    let chat_id = two_users_and_a_chat(&ada, &grace).await;

    let mut listener = grace
        .command(&["chat", "connect", &chat_id, "--since", "0"])
        .env("CHATCTL_CHAT_URL", format!("http://{}", relay.addr))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chatctl chat connect");
    let mut live = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    let mut notes = BufReader::new(listener.stderr.take().expect("stderr")).lines();
    ada.ok(&["chat", "send", &chat_id, "one"]).await;
    assert!(next_line(&mut live).await.ends_with("ada: one"));

    relay.cut();
    ada.ok(&["chat", "send", &chat_id, "two"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.restore().await;

    let two = tokio::time::timeout(Duration::from_secs(15), live.next_line())
        .await
        .expect("a line in time")
        .expect("readable output");
    let Some(two) = two else {
        let note = notes.next_line().await;
        panic!("chatctl stopped: {note:?}");
    };
    assert!(two.ends_with("ada: two"), "{two}");
    ada.ok(&["chat", "send", &chat_id, "three"]).await;
    assert!(
        next_line(&mut live).await.ends_with("ada: three"),
        "a message came twice or not at all"
    );
    let note = tokio::time::timeout(Duration::from_secs(5), notes.next_line())
        .await
        .expect("a note in time")
        .expect("readable")
        .expect("a note");
    assert!(note.contains("resuming after message"), "{note}");
}

#[tokio::test]
async fn connect_resumes_when_its_access_token_expires() {
    let auth =
        TestAuth::spawn_with(|config| config.tokens.access_ttl = Duration::from_secs(16)).await;
    let chat = TestChat::spawn(&auth).await;
    let (ada_dir, grace_dir) = (temp_dir("ada-expiry"), temp_dir("grace-expiry"));
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
    let chat_id = two_users_and_a_chat(&ada, &grace).await;
    let mut listener = grace
        .command(&["chat", "connect", &chat_id, "--since", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chatctl chat connect");
    let mut live = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    let mut notes = BufReader::new(listener.stderr.take().expect("stderr")).lines();
    ada.ok(&["chat", "send", &chat_id, "one"]).await;
    assert!(next_line(&mut live).await.ends_with("ada: one"));

    // The server ends the stream when grace's token expires, saying so in
    // a status detail; chatctl takes a fresh token and resumes.
    let note = tokio::time::timeout(Duration::from_secs(30), notes.next_line())
        .await
        .expect("a note in time")
        .expect("readable")
        .expect("chatctl kept running");
    assert!(note.contains("resuming after message"), "{note}");
    ada.ok(&["chat", "send", &chat_id, "two"]).await;
    assert!(next_line(&mut live).await.ends_with("ada: two"));
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable output")
        .expect("a line")
}

#[tokio::test]
async fn chats_are_listed_shown_renamed_and_members_added_removed_and_leave() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let (ada_dir, grace_dir, linus_dir) = (temp_dir("ada"), temp_dir("grace"), temp_dir("linus"));
    let cli = |config_dir| Cli {
        auth: &auth,
        chat: &chat,
        config_dir,
    };
    let (ada, grace, linus) = (cli(&ada_dir), cli(&grace_dir), cli(&linus_dir));
    let chat_id = two_users_and_a_chat(&ada, &grace).await;
    linus.ok(&["register", "linus", "linus@example.com"]).await;
    linus.ok(&["login", "linus"]).await;

    grace.ok(&["chat", "send", &chat_id, "hello"]).await;
    let listed = ada.ok(&["chat", "list"]).await;
    assert_eq!(
        listed.trim(),
        format!("{chat_id}\tt\t2 members\t1 unread\tcreator\tgrace: hello")
    );
    let grace_listed = grace.ok(&["chat", "list"]).await;
    assert!(
        grace_listed.contains("\t0 unread\t"),
        "her own message is not unread to her: {grace_listed}"
    );

    assert!(
        ada.ok(&["chat", "add", &chat_id, "linus"])
            .await
            .contains("added 1 member(s)")
    );
    assert!(
        ada.ok(&["chat", "add", &chat_id, "linus"])
            .await
            .contains("no one added")
    );
    let (ok, _, refused) = grace.run(&["chat", "rename", &chat_id, "mine"]).await;
    assert!(
        !ok && refused
            .trim()
            .ends_with("only the chat's creator or an admin may change its title or members"),
        "{refused}"
    );
    ada.ok(&["chat", "rename", &chat_id, "Engines"]).await;

    let shown = linus.ok(&["chat", "show", &chat_id]).await;
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], format!("{chat_id}\tEngines"));
    assert!(
        lines[1].ends_with("\tada\tread nothing\tcreator"),
        "{shown}"
    );
    assert_eq!(lines.len(), 4, "{shown}");

    ada.ok(&["chat", "remove", &chat_id, "grace"]).await;
    let (ok, _, gone) = grace.run(&["chat", "history", &chat_id]).await;
    assert!(!ok && gone.contains("not found"), "{gone}");
    assert!(
        linus
            .ok(&["chat", "leave", &chat_id])
            .await
            .contains("is no longer in chat")
    );
    assert!(linus.ok(&["chat", "list"]).await.trim().is_empty());
    assert_eq!(ada.ok(&["chat", "show", &chat_id]).await.lines().count(), 2);
}

#[tokio::test]
async fn a_send_past_the_quota_waits_as_the_server_asks_and_lands() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.quotas.sends = Some(host::quota::Rate::new(1, 2.0));
    })
    .await;
    let (ada_dir, grace_dir) = (temp_dir("quota-ada"), temp_dir("quota-grace"));
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
    let chat_id = two_users_and_a_chat(&ada, &grace).await;
    ada.ok(&["chat", "send", &chat_id, "first"]).await;
    let (ok, _, stderr) = ada.run(&["chat", "send", &chat_id, "second"]).await;
    assert!(ok, "the second send failed: {stderr}");
    assert!(stderr.contains("quota"), "no wait was asked for: {stderr}");
    let history = ada.ok(&["chat", "history", &chat_id]).await;
    assert!(
        history.contains("first") && history.contains("second"),
        "{history}"
    );
}

#[tokio::test]
async fn logging_out_keeps_the_device_token_for_the_next_login() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 2).await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("device");
    let ada = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };
    ada.ok(&["register", "ada", "ada@example.com"]).await;
    ada.ok(&["login", "ada"]).await;
    ada.ok(&["logout"]).await;
    // Someone else guesses ada's password until her name is locked.
    for _ in 0..3 {
        let _ = auth
            .sessions()
            .login(api::auth::v1::LoginRequest {
                username: "ada".into(),
                password: "a guess".into(),
                ..Default::default()
            })
            .await;
    }
    // chatctl presents this device's token: ada still gets in.
    ada.ok(&["login", "ada"]).await;
    let session = std::fs::read_to_string(dir.join("session.json")).expect("a session");
    assert!(session.contains("dt_"), "no device token kept: {session}");
}

#[tokio::test]
async fn unread_counts_fall_as_chats_are_read_and_connect_shows_markers_and_typing() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let (ada_dir, grace_dir) = (temp_dir("ada"), temp_dir("grace"));
    let cli = |config_dir| Cli {
        auth: &auth,
        chat: &chat,
        config_dir,
    };
    let (ada, grace) = (cli(&ada_dir), cli(&grace_dir));
    let chat_id = two_users_and_a_chat(&ada, &grace).await;
    let first = ada.ok(&["chat", "send", &chat_id, "one"]).await;
    let first = first
        .trim()
        .strip_prefix("sent message ")
        .expect("an id")
        .to_owned();
    let second = ada.ok(&["chat", "send", &chat_id, "two"]).await;
    let second = second
        .trim()
        .strip_prefix("sent message ")
        .expect("an id")
        .to_owned();
    assert!(
        grace.ok(&["chat", "list"]).await.contains("\t2 unread\t"),
        "two unread"
    );

    // Ada follows the chat; grace reads up to the first message, then
    // says she is typing.
    let mut following = ada.command(&["chat", "connect", &chat_id, "--since", &second]);
    let mut following = following
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .expect("chatctl connect");
    let mut lines = BufReader::new(following.stdout.take().expect("stdout")).lines();
    // The stream is open once a message sent now arrives.
    ada.ok(&["chat", "send", &chat_id, "three"]).await;
    assert!(next_line(&mut lines).await.ends_with("ada: three"));
    assert_eq!(
        grace
            .ok(&["chat", "read", &chat_id, "--message", &first])
            .await
            .trim(),
        format!("chat {chat_id} read up to #{first}; 2 unread")
    );
    assert_eq!(
        next_line(&mut lines).await,
        format!("* grace read up to #{first}")
    );
    grace.ok(&["chat", "typing", &chat_id]).await;
    assert_eq!(next_line(&mut lines).await, "* grace is typing");

    let read = grace.ok(&["chat", "read", &chat_id]).await;
    assert!(read.trim().ends_with("; 0 unread"), "{read}");
    assert!(grace.ok(&["chat", "list"]).await.contains("\t0 unread\t"));
    let shown = ada.ok(&["chat", "show", &chat_id]).await;
    assert!(
        shown
            .lines()
            .any(|line| line.contains("\tgrace\tread up to #")),
        "{shown}"
    );
    following.kill().await.expect("stopping chatctl");
}

#[tokio::test]
async fn sessions_are_listed_and_another_device_is_logged_out_from_this_one() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let (laptop_dir, phone_dir) = (temp_dir("laptop"), temp_dir("phone"));
    let laptop = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &laptop_dir,
    };
    let phone = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &phone_dir,
    };
    laptop.ok(&["register", "ada", "ada@example.com"]).await;
    laptop.ok(&["login", "ada"]).await;
    phone.ok(&["login", "ada"]).await;

    let listed = laptop.ok(&["sessions"]).await;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines.iter().all(|line| line.contains("chatctl/")),
        "{listed}"
    );
    assert!(
        lines.iter().all(|line| line.contains("127.0.0.1")),
        "{listed}"
    );
    let (this, other): (Vec<&str>, Vec<&str>) =
        lines.iter().partition(|line| line.contains("(this one)"));
    assert_eq!((this.len(), other.len()), (1, 1), "{listed}");
    let other_id = other[0].split_whitespace().next().expect("an id");

    let ended = laptop.ok(&["sessions", "revoke", other_id]).await;
    assert!(ended.contains(other_id), "{ended}");
    let (ok, _, stderr) = phone.run(&["chat", "list"]).await;
    assert!(!ok, "the phone's session still works");
    assert!(
        stderr.contains("session has ended") || stderr.contains("revoked"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\n') || stderr.lines().count() == 1,
        "{stderr}"
    );
    laptop.ok(&["chat", "list"]).await;

    // Ending the others with none left ends none.
    let others = laptop.ok(&["sessions", "revoke-others"]).await;
    assert!(others.contains("ended 0"), "{others}");
    let (ok, _, stderr) = laptop.run(&["sessions", "revoke", "nonsense"]).await;
    assert!(!ok && stderr.contains("session_id"), "{stderr}");
}

#[tokio::test]
async fn two_factor_login_is_turned_on_used_and_turned_off() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("totp");
    let ada = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };
    ada.ok(&["register", "ada", "ada@example.com"]).await;
    ada.ok(&["login", "ada"]).await;
    let enrolled = ada.ok(&["totp", "enroll"]).await;
    let secret = enrolled
        .lines()
        .find_map(|line| line.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("a secret: {enrolled}"));
    let secret = tests::totp::base32_decode(secret);
    let now = tests::totp::now();
    let confirmed = ada
        .ok(&["totp", "confirm", &tests::totp::code_at(&secret, now, 6)])
        .await;
    let recovery: Vec<&str> = confirmed.lines().skip(1).collect();
    assert_eq!(recovery.len(), 10, "{confirmed}");
    ada.ok(&["logout"]).await;

    // A login without a code fails on one line; with the next step's code
    // it works.
    let mut without = ada.command(&["login", "ada"]);
    without.stdin(Stdio::null());
    let output = without.output().await.expect("chatctl runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("two-factor code"), "{stderr}");
    let mut with = ada.command(&["login", "ada"]);
    with.env(
        "CHATCTL_TOTP_CODE",
        tests::totp::code_at(&secret, now + 30, 6),
    );
    let output = with.output().await.expect("chatctl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ada.ok(&["whoami"]).await;

    let mut off = ada.command(&["totp", "disable"]);
    off.env("CHATCTL_TOTP_CODE", recovery[0]);
    let output = off.output().await.expect("chatctl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ada.ok(&["logout"]).await;
    ada.ok(&["login", "ada"]).await;
}

#[tokio::test]
async fn renaming_and_deleting_oneself_send_the_password_as_proof() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("proof");
    let ada = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };
    let registered = ada.ok(&["register", "ada", "ada@example.com"]).await;
    let id = registered
        .split("(id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("an id: {registered}"))
        .to_owned();
    ada.ok(&["login", "ada"]).await;
    // Without the password the server refuses, naming what is missing.
    let mut without = ada.command(&["users", "update", &id, "--name", "ada2"]);
    without.env_remove("CHATCTL_PASSWORD").stdin(Stdio::null());
    let output = without.output().await.expect("chatctl runs");
    assert!(!output.status.success());
    let renamed = ada.ok(&["users", "update", &id, "--name", "ada2"]).await;
    assert!(renamed.contains("ada2"), "{renamed}");
    ada.ok(&["users", "delete", &id]).await;
    let (ok, _, _) = ada.run(&["whoami"]).await;
    assert!(!ok, "a deleted account's session is over");
}

#[tokio::test]
async fn an_address_is_verified_and_a_forgotten_password_reset_by_mail() {
    let server = tests::mail::MailServer::start();
    let smtp = server.smtp_config(None);
    let auth = TestAuth::spawn_with(|config| config.mail.smtp = Some(smtp)).await;
    let chat = TestChat::spawn(&auth).await;
    let dir = temp_dir("recovery");
    let ada = Cli {
        auth: &auth,
        chat: &chat,
        config_dir: &dir,
    };
    ada.ok(&["register", "ada", "ada@example.com"]).await;
    ada.ok(&["login", "ada"]).await;
    assert!(ada.ok(&["users", "get"]).await.contains("\tunverified"));
    let mail = server
        .wait_for("ada@example.com", "Confirm", 1, Duration::from_secs(60))
        .await;
    let verified = ada.ok(&["verify-email", &mail.link_token("verify")]).await;
    assert!(verified.contains("verified ada@example.com"), "{verified}");
    assert!(ada.ok(&["users", "get"]).await.contains("\tverified"));
    let (ok, _, stderr) = ada.run(&["resend-verification"]).await;
    assert!(!ok && stderr.contains("verified already"), "{stderr}");

    ada.ok(&["reset-password", "request", "ada@example.com"])
        .await;
    let mail = server
        .wait_for("ada@example.com", "Reset", 1, Duration::from_secs(60))
        .await;
    let mut complete = ada.command(&["reset-password", "complete", &mail.link_token("reset")]);
    complete.env("CHATCTL_NEW_PASSWORD", "a newer password");
    let output = complete.output().await.expect("chatctl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The session it kept has ended; the new password logs in.
    let (ok, _, stderr) = ada.run(&["whoami"]).await;
    assert!(!ok, "the session survived the reset: {stderr}");
    let (ok, _, _) = ada.run(&["login", "ada"]).await;
    assert!(!ok, "the old password still works");
    let mut login = ada.command(&["login", "ada"]);
    login.env("CHATCTL_PASSWORD", "a newer password");
    let output = login.output().await.expect("chatctl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
