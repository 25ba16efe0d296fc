//! A load run on this machine, over loopback, with figures at the end:
//!
//!     cargo run --release -p tests --example load [SECONDS]
//!
//! Starts auth and chat in-process on fresh databases (PostgreSQL as the
//! tests find it) and measures, each for SECONDS (default 5):
//! 1. access checks (`AccessService/Check`) from 8 concurrent clients;
//! 2. sends (`SendMessage`) from 8 concurrent senders into one chat, with
//!    a stream subscribed, and how long messages take to reach it;
//! 3. a burst of 32 logins (32 users at once) with production argon2id
//!    parameters, and what it does to the latency of access checks running
//!    meanwhile.
//!
//! Every loop is bounded in time and count.

use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::chat::v1 as chat_pb;
use tests::services::{TestAuth, TestChat, TestUser};
use tokio_stream::StreamExt as _;

const CLIENTS: usize = 8;
const MAX_CALLS_PER_CLIENT: usize = 200_000;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let window = Duration::from_secs(seconds);
    let auth = TestAuth::spawn_with(|config| {
        // Production hashing, as the login burst is about it.
        config.passwords.memory_kib = 19 * 1024;
        config.passwords.iterations = 2;
    })
    .await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    println!(
        "load run: {CLIENTS} clients, {seconds} s per phase, postgres from {:?}",
        tests::postgres::provider()
    );

    let checks = run_clients(window, |_| {
        let mut access = auth.access();
        let ada = ada.clone();
        async move {
            access
                .check(ada.request(auth_pb::CheckRequest {
                    endpoint_address: "/chat.v1.ChatService/SendMessage".into(),
                }))
                .await
                .is_ok()
        }
    })
    .await;
    report("AccessService/Check", &checks, window);

    // Each phase runs on tokens minted just before it: the phases before
    // it took as long as the machine made them.
    let (ada, grace) = (auth.login_again(&ada).await, auth.login_again(&grace).await);
    let mut stream = chat
        .chats()
        .connect_chat(grace.request(chat_pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("a stream")
        .into_inner();
    let delivery = tokio::spawn(async move {
        let mut delays = Vec::new();
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        {
            if let Some(at) = event.message.and_then(|m| m.created_at) {
                let sent = Duration::new(at.seconds as u64, at.nanos as u32);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                delays.push(now.saturating_sub(sent));
            }
        }
        delays
    });
    let sends = run_clients(window, |n| {
        let mut chats = chat.chats();
        let ada = ada.clone();
        async move {
            chats
                .send_message(ada.request(chat_pb::SendMessageRequest {
                    chat_id,
                    text: format!("load message from client {n}"),
                    client_message_id: String::new(),
                }))
                .await
                .is_ok()
        }
    })
    .await;
    report("ChatService/SendMessage", &sends, window);
    let mut delays = delivery.await.expect("the subscriber");
    delays.sort();
    println!(
        "  stream delivery: {} messages received of {} sent; delay p50 {:?}, p99 {:?}",
        delays.len(),
        sends.ok,
        percentile(&delays, 0.50),
        percentile(&delays, 0.99)
    );

    idle_streams(&chat, &auth.login_again(&grace).await, chat_id).await;
    login_burst(&auth, &ada).await;
    wrong_logins(&auth).await;
}

/// Wrong passwords for names that exist and names that do not, one at a
/// time: an attacker must not tell them apart by the time they take.
async fn wrong_logins(auth: &TestAuth) {
    const ROUNDS: usize = 40;
    let mut known = Vec::new();
    for n in 0..ROUNDS {
        known.push(auth.register(&format!("known{n}")).await.name);
    }
    let mut sessions = auth.sessions();
    let mut timings = [Vec::new(), Vec::new()];
    for (n, known) in known.iter().enumerate() {
        // Alternated, so that drift in the machine's speed hits both alike.
        for (kind, name) in [known.clone(), format!("unknown{n}")]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            let answer = sessions
                .login(auth_pb::LoginRequest {
                    username: name,
                    password: "not the password".into(),
                    ..Default::default()
                })
                .await;
            assert!(answer.is_err(), "a wrong password was accepted");
            timings[kind].push(started.elapsed());
        }
    }
    for timing in &mut timings {
        timing.sort();
    }
    println!(
        "wrong passwords ({ROUNDS} each, argon2id m=19 MiB t=2): known names p50 {:?}, p90 {:?}; unknown names p50 {:?}, p90 {:?}",
        percentile(&timings[0], 0.5),
        percentile(&timings[0], 0.9),
        percentile(&timings[1], 0.5),
        percentile(&timings[1], 0.9)
    );
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Opens idle streams and reports what each costs in memory: client and
/// server sides together, as both run in this process.
async fn idle_streams(chat: &TestChat, user: &TestUser, chat_id: i64) {
    const STREAMS: usize = 2_000;
    const PER_CONNECTION: usize = 100;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss();
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS / PER_CONNECTION {
        let mut chats = chat.chats();
        for _ in 0..PER_CONNECTION {
            let stream = chats
                .connect_chat(user.request(chat_pb::ConnectChatRequest {
                    chat_id,
                    since_message_id: None,
                }))
                .await
                .expect("an idle stream")
                .into_inner();
            streams.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss();
    println!(
        "idle streams: {STREAMS} open cost {:.1} MiB, {:.1} KiB each (client and server sides together)",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
        after.saturating_sub(before) as f64 / 1024.0 / STREAMS as f64
    );
    drop(streams);
}

struct Outcome {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

async fn run_clients<F, Fut>(window: Duration, call: F) -> Outcome
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + window;
    let clients = (0..CLIENTS).map(|n| {
        let call = &call;
        async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            for _ in 0..MAX_CALLS_PER_CLIENT {
                if Instant::now() >= deadline {
                    break;
                }
                let started = Instant::now();
                if call(n).await {
                    latencies.push(started.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }
    });
    let mut outcome = Outcome {
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
    };
    for (latencies, failed) in futures::future::join_all(clients).await {
        outcome.ok += latencies.len();
        outcome.failed += failed;
        outcome.latencies.extend(latencies);
    }
    outcome.latencies.sort();
    outcome
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn report(what: &str, outcome: &Outcome, window: Duration) {
    println!(
        "{what}: {} ok, {} failed, {:.0} calls/s; latency p50 {:?}, p95 {:?}, p99 {:?}",
        outcome.ok,
        outcome.failed,
        outcome.ok as f64 / window.as_secs_f64(),
        percentile(&outcome.latencies, 0.50),
        percentile(&outcome.latencies, 0.95),
        percentile(&outcome.latencies, 0.99)
    );
}

async fn login_burst(auth: &TestAuth, ada: &TestUser) {
    const LOGINS: usize = 32;
    let mut users = Vec::new();
    for n in 0..LOGINS {
        users.push(auth.register(&format!("burst{n}")).await);
    }
    let started = Instant::now();
    let logins: Vec<_> = users
        .iter()
        .map(|user| {
            let mut sessions = auth.sessions();
            let (name, password) = (user.name.clone(), user.password.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let ok = sessions
                    .login(auth_pb::LoginRequest {
                        username: name,
                        password,
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                (ok, started.elapsed())
            })
        })
        .collect();
    // Access checks meanwhile: hashing must not starve them. The
    // registrations above took as long as the machine made them.
    let ada = auth.login_again(ada).await;
    let mut check_latencies = Vec::new();
    let mut access = auth.access();
    while !logins.iter().all(tokio::task::JoinHandle::is_finished)
        && check_latencies.len() < 100_000
    {
        let at = Instant::now();
        let _ = access
            .check(ada.request(auth_pb::CheckRequest {
                endpoint_address: "/chat.v1.ChatService/Create".into(),
            }))
            .await;
        check_latencies.push(at.elapsed());
    }
    let mut latencies = Vec::new();
    let mut ok = 0;
    for login in logins {
        let (succeeded, latency) = login.await.expect("a login task");
        ok += usize::from(succeeded);
        latencies.push(latency);
    }
    latencies.sort();
    check_latencies.sort();
    println!(
        "Login burst ({LOGINS} at once, argon2id m=19 MiB t=2): {ok} ok in {:?}; login latency p50 {:?}, max {:?}",
        started.elapsed(),
        percentile(&latencies, 0.50),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "  access checks during the burst: {} calls, p50 {:?}, p99 {:?}",
        check_latencies.len(),
        percentile(&check_latencies, 0.50),
        percentile(&check_latencies, 0.99)
    );
}
