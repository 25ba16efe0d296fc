//! A soak run: both services as release processes on a private, durable
//! PostgreSQL, driven at half of their peak for a chosen time:
//!
//!     cargo run --release -p tests --example soak [MINUTES]
//!
//! First it measures the peak of each call of the mix (access checks,
//! sends, logins with production argon2id) for a few seconds each, from
//! 8 concurrent clients, each alone on the machine. The mix's peak gives
//! each of the three a third of the machine; the soak runs at half of
//! that (each call at a sixth of its own peak), all at once, with streams
//! open on every chat and access tokens refreshed through their refresh
//! tokens, for MINUTES (default 10). Every 30 s it
//! prints calls and errors by status and the resident memory of each
//! service. It ends with a verdict: no errors, and memory flat (the last
//! five minutes, or the second half of a shorter run, grow less than 5%).
//!
//! A stream that ends because its access token expired is resumed with a
//! fresh token from where it was, as clients are told to; it is counted,
//! not as an error. Every loop is bounded by the run's end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::auth::v1::access_service_client::AccessServiceClient;
use api::auth::v1::auth_service_client::AuthServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use api::chat::v1 as pb;
use api::chat::v1::chat_service_client::ChatServiceClient;
use local_postgres::Durability;
use tests::postgres::{create_service_databases, private_server};
use tests::process::{Process, Service, auth_env, binary, chat_env, free_addr};
use tests::services::with_token;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

const USERS: usize = 16;
const CHATS: usize = 8;
const PEAK_CLIENTS: usize = 8;
const PEAK_WINDOW: Duration = Duration::from_secs(4);
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// A user of the run, with an access token kept fresh.
struct User {
    name: String,
    refresh_token: Mutex<String>,
    access_token: RwLock<String>,
}

impl User {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, &self.access_token.read().expect("the token"))
    }
}

/// Calls and errors by status, shared by every worker.
#[derive(Default)]
struct Tally {
    by_call: Mutex<BTreeMap<(&'static str, String), u64>>,
    errors: AtomicU64,
    expired_streams: AtomicU64,
}

impl Tally {
    fn record(&self, call: &'static str, outcome: Result<(), Code>) {
        let code = match outcome {
            Ok(()) => "Ok".to_owned(),
            Err(code) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                format!("{code:?}")
            }
        };
        *self
            .by_call
            .lock()
            .expect("the tally")
            .entry((call, code))
            .or_default() += 1;
    }
}

fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_lazy()
}

#[tokio::main]
async fn main() {
    let minutes: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let run_for = Duration::from_secs(minutes * 60);

    let dir = std::env::temp_dir().join(format!("soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let postgres = private_server(dir.clone(), 0, Durability::Durable).await;
    create_service_databases(&postgres).await;

    let auth_addr = free_addr();
    let mut env = auth_env(&postgres.url("auth"), auth_addr);
    for (key, value) in [
        ("AUTH_ARGON2_MEMORY_KIB", "19456"),
        ("AUTH_ARGON2_ITERATIONS", "2"),
    ] {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    }
    let auth = Process::start("auth", &binary(Service::Auth), auth_addr, &env).await;
    let chat_addr = free_addr();
    let chat = Process::start(
        "chat",
        &binary(Service::Chat),
        chat_addr,
        &chat_env(
            &postgres.url("chat"),
            chat_addr,
            &format!("http://{auth_addr}"),
        ),
    )
    .await;

    let users = register(auth_addr).await;
    let chats = create_chats(chat_addr, &users).await;
    println!(
        "soak: {USERS} users, {CHATS} chats, {minutes} min at half of the peak; auth pid {}, chat pid {}",
        auth.pid(),
        chat.pid()
    );

    // The peak of each call, alone, closed loop.
    let (auth_channel, chat_channel) = (channel(auth_addr), channel(chat_addr));
    let peak_checks = {
        let (auth, users) = (auth_channel.clone(), users.clone());
        peak(move |n| check(auth.clone(), users[n % USERS].clone())).await
    };
    let peak_sends = {
        let (chat, users, chats) = (chat_channel.clone(), users.clone(), chats.clone());
        peak(move |n| send(chat.clone(), users[n % USERS].clone(), chats[n % CHATS], n)).await
    };
    let peak_logins = {
        let (auth, users) = (auth_channel.clone(), users.clone());
        peak(move |n| login(auth.clone(), users[n % USERS].clone())).await
    };
    println!(
        "peaks: checks {peak_checks:.0}/s, sends {peak_sends:.0}/s, logins {peak_logins:.0}/s; running each at a sixth (half of the mix's peak)"
    );

    let tally = Arc::new(Tally::default());
    let end = Instant::now() + run_for;
    let mut workers = Vec::new();
    let calls = [
        ("check", peak_checks),
        ("send", peak_sends),
        ("login", peak_logins),
    ];
    let share = 1.0 / calls.len() as f64;
    for (call, rate) in calls {
        workers.push(tokio::spawn(paced(
            call,
            rate * share / 2.0,
            end,
            tally.clone(),
            auth_channel.clone(),
            chat_channel.clone(),
            users.clone(),
            chats.clone(),
        )));
    }
    for (n, chat_id) in chats.iter().enumerate() {
        workers.push(tokio::spawn(read(
            chat_addr,
            users[n % USERS].clone(),
            *chat_id,
            end,
            tally.clone(),
        )));
    }
    workers.push(tokio::spawn(refresh(
        auth_addr,
        users.clone(),
        end,
        tally.clone(),
    )));

    let started = Instant::now();
    let mut memory: Vec<(Duration, u64, u64)> = vec![(Duration::ZERO, auth.rss(), chat.rss())];
    while Instant::now() < end {
        tokio::time::sleep(REPORT_EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        let at = started.elapsed();
        memory.push((at, auth.rss(), chat.rss()));
        let by_call = tally.by_call.lock().expect("the tally").clone();
        let summary: Vec<String> = by_call
            .iter()
            .map(|((call, code), count)| format!("{call} {code} {count}"))
            .collect();
        println!(
            "{:>5.0} s  RSS auth {:.1} MiB, chat {:.1} MiB  errors {}  expired streams resumed {}  [{}]",
            at.as_secs_f64(),
            mib(auth.rss()),
            mib(chat.rss()),
            tally.errors.load(Ordering::Relaxed),
            tally.expired_streams.load(Ordering::Relaxed),
            summary.join(", ")
        );
    }
    for worker in workers {
        let _ = worker.await;
    }

    let errors = tally.errors.load(Ordering::Relaxed);
    let tail_from = run_for
        .saturating_sub(Duration::from_secs(300))
        .max(run_for / 2);
    let at_tail = memory
        .iter()
        .rev()
        .find(|(at, _, _)| *at <= tail_from)
        .copied()
        .unwrap_or(memory[0]);
    let last = *memory.last().expect("a reading");
    let growth = |before: u64, after: u64| (after as f64 / before.max(1) as f64 - 1.0) * 100.0;
    let (auth_growth, chat_growth) = (growth(at_tail.1, last.1), growth(at_tail.2, last.2));
    let flat = auth_growth < 5.0 && chat_growth < 5.0;
    println!(
        "verdict: {} errors; memory from {:.0} s to the end: auth {:.1} -> {:.1} MiB ({auth_growth:+.1}%), chat {:.1} -> {:.1} MiB ({chat_growth:+.1}%): {}",
        errors,
        at_tail.0.as_secs_f64(),
        mib(at_tail.1),
        mib(last.1),
        mib(at_tail.2),
        mib(last.2),
        if errors == 0 && flat { "PASS" } else { "FAIL" }
    );
    drop(chat);
    drop(auth);
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
    if errors != 0 || !flat {
        std::process::exit(1);
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn register(auth: std::net::SocketAddr) -> Vec<Arc<User>> {
    let mut users = Vec::new();
    let mut accounts = UserServiceClient::new(channel(auth));
    let mut sessions = AuthServiceClient::new(channel(auth));
    for n in 0..USERS {
        let name = format!("soak{n}");
        let password = format!("{name}-password");
        accounts
            .create(auth_pb::CreateRequest {
                name: name.clone(),
                email: format!("{name}@example.com"),
                password: password.clone(),
                password_confirm: password.clone(),
                role: auth_pb::Role::Unspecified.into(),
            })
            .await
            .expect("registering");
        let login = sessions
            .login(auth_pb::LoginRequest {
                username: name.clone(),
                password,
                ..Default::default()
            })
            .await
            .expect("logging in")
            .into_inner();
        users.push(Arc::new(User {
            name,
            refresh_token: Mutex::new(login.refresh_token),
            access_token: RwLock::new(login.access_token),
        }));
    }
    users
}

async fn create_chats(chat: std::net::SocketAddr, users: &[Arc<User>]) -> Vec<i64> {
    let mut chats = ChatServiceClient::new(channel(chat));
    let mut ids = Vec::new();
    // Chat n is user n's, with users n + CHATS, n + 1 and n + 2 in it:
    // user u sends to chat u % CHATS, of which it is a member.
    for n in 0..CHATS {
        let members: Vec<String> = [n + CHATS, (n + 1) % CHATS, (n + 2) % CHATS]
            .into_iter()
            .map(|m| users[m].name.clone())
            .collect();
        let created = chats
            .create(users[n % USERS].request(pb::CreateRequest {
                usernames: members,
                title: format!("soak {n}"),
            }))
            .await
            .expect("a chat")
            .into_inner();
        ids.push(created.id);
    }
    ids
}

async fn check(auth: Channel, user: Arc<User>) -> Result<(), Code> {
    AccessServiceClient::new(auth)
        .check(user.request(auth_pb::CheckRequest {
            endpoint_address: "/chat.v1.ChatService/SendMessage".into(),
        }))
        .await
        .map(drop)
        .map_err(|status| status.code())
}

async fn send(chat: Channel, user: Arc<User>, chat_id: i64, n: usize) -> Result<(), Code> {
    ChatServiceClient::new(chat)
        .send_message(user.request(pb::SendMessageRequest {
            chat_id,
            text: format!("soak message {n}"),
            client_message_id: String::new(),
        }))
        .await
        .map(drop)
        .map_err(|status| status.code())
}

async fn login(auth: Channel, user: Arc<User>) -> Result<(), Code> {
    AuthServiceClient::new(auth)
        .login(auth_pb::LoginRequest {
            username: user.name.clone(),
            password: format!("{}-password", user.name),
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|status| status.code())
}

/// Calls per second of `call` from [`PEAK_CLIENTS`] clients in a closed
/// loop for [`PEAK_WINDOW`].
async fn peak<F, Fut>(call: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Code>> + Send + 'static,
{
    let end = Instant::now() + PEAK_WINDOW;
    let done = Arc::new(AtomicU64::new(0));
    let call = Arc::new(call);
    let mut clients = Vec::new();
    for client in 0..PEAK_CLIENTS {
        let (done, call) = (done.clone(), call.clone());
        clients.push(tokio::spawn(async move {
            for n in 0..1_000_000 {
                if Instant::now() >= end {
                    return;
                }
                if call(client + n * PEAK_CLIENTS).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        let _ = client.await;
    }
    done.load(Ordering::Relaxed) as f64 / PEAK_WINDOW.as_secs_f64()
}

/// Makes `call` at `rate` per second until `end`, each call in a task of
/// its own so that a slow one does not slow the pace.
#[allow(clippy::too_many_arguments)]
async fn paced(
    call: &'static str,
    rate: f64,
    end: Instant,
    tally: Arc<Tally>,
    auth: Channel,
    chat: Channel,
    users: Vec<Arc<User>>,
    chats: Vec<i64>,
) {
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    let mut n = 0;
    let mut running = tokio::task::JoinSet::new();
    while Instant::now() < end {
        every.tick().await;
        n += 1;
        let user = users[n % USERS].clone();
        let tally = tally.clone();
        let chat_id = chats[n % CHATS];
        let (auth, chat) = (auth.clone(), chat.clone());
        running.spawn(async move {
            let outcome = match call {
                "check" => check(auth, user).await,
                "send" => send(chat, user, chat_id, n).await,
                _ => login(auth, user).await,
            };
            tally.record(call, outcome);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Keeps a stream of `chat_id` open until `end`, resuming from the last
/// message after it ends.
async fn read(
    chat: std::net::SocketAddr,
    user: Arc<User>,
    chat_id: i64,
    end: Instant,
    tally: Arc<Tally>,
) {
    let mut chats = ChatServiceClient::new(channel(chat));
    let mut last = None;
    while Instant::now() < end {
        let opened = chats
            .connect_chat(user.request(pb::ConnectChatRequest {
                chat_id,
                since_message_id: last,
            }))
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                tally.record("connect", Err(status.code()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tally.record("connect", Ok(()));
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Ok(item))) => last = item.message.map(|message| message.id).or(last),
                Ok(Some(Err(status)))
                    if status
                        .get_details_error_info()
                        .is_some_and(|info| info.reason == host::error::TOKEN_EXPIRED) =>
                {
                    tally.expired_streams.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Some(Err(status))) => {
                    tally.record("stream", Err(status.code()));
                    break;
                }
            }
        }
    }
}

/// Refreshes every user's access token when the run starts (the peaks
/// before it took as long as the machine made them) and then each minute,
/// through the refresh token (which rotates), until `end`.
async fn refresh(
    auth: std::net::SocketAddr,
    users: Vec<Arc<User>>,
    end: Instant,
    tally: Arc<Tally>,
) {
    let mut sessions = AuthServiceClient::new(channel(auth));
    let mut first = true;
    while Instant::now() < end {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = tokio::time::sleep_until(end.into()) => return,
            }
        }
        first = false;
        for user in &users {
            let refresh_token = user.refresh_token.lock().expect("the token").clone();
            let rotated = sessions
                .get_refresh_token(auth_pb::GetRefreshTokenRequest { refresh_token })
                .await;
            let Ok(rotated) = rotated else {
                tally.record(
                    "refresh",
                    Err(rotated.err().map_or(Code::Unknown, |status| status.code())),
                );
                continue;
            };
            let refresh_token = rotated.into_inner().refresh_token;
            let access = sessions
                .get_access_token(auth_pb::GetAccessTokenRequest {
                    refresh_token: refresh_token.clone(),
                })
                .await;
            *user.refresh_token.lock().expect("the token") = refresh_token;
            match access {
                Ok(access) => {
                    *user.access_token.write().expect("the token") =
                        access.into_inner().access_token;
                    tally.record("refresh", Ok(()));
                }
                Err(status) => tally.record("refresh", Err(status.code())),
            }
        }
    }
}
