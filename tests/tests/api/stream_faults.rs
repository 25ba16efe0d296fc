//! Streams at the edges: bursts, a listener that is lost and regained, a
//! database that goes away, clients that vanish or stop reading, and the
//! hub's memory, which holds only chats someone watches.

use std::time::Duration;

use api::chat::v1 as pb;
use sqlx::Connection as _;
use tests::fixtures::{TwoMembers, two_members};
use tests::http::request;
use tests::outage::{Relay, server_of};
use tests::services::{TestAuth, TestChat, TestUser, eventually};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};

async fn connect(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
    since: Option<i64>,
) -> Streaming<pb::ConnectChatResponse> {
    chat.chats()
        .connect_chat(user.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: since,
        }))
        .await
        .expect("opening a stream")
        .into_inner()
}

async fn next_message(
    stream: &mut Streaming<pb::ConnectChatResponse>,
    within: Duration,
) -> pb::Message {
    tokio::time::timeout(within, stream.next())
        .await
        .expect("a message in time")
        .expect("the stream is open")
        .expect("a message, not an error")
        .message
        .expect("a message")
}

async fn end_of(stream: &mut Streaming<pb::ConnectChatResponse>) -> Option<tonic::Status> {
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(item) = stream.next().await {
            if let Err(status) = item {
                return Some(status);
            }
        }
        None
    })
    .await
    .expect("the stream ends in time")
}

/// Commits `count` messages to the chat in one transaction, straight into
/// the database, as a busy set of replicas would.
async fn commit_at_once(db: &sqlx::PgPool, chat_id: i64, from: &TestUser, count: i64) {
    let mut tx = db.begin().await.expect("a transaction");
    let last: i64 = sqlx::query_scalar(
        "update chats set last_seq = last_seq + $2 where id = $1 returning last_seq - $2",
    )
    .bind(chat_id)
    .bind(count)
    .fetch_one(&mut *tx)
    .await
    .expect("taking sequence numbers");
    sqlx::query(
        "insert into messages (chat_id, seq, from_user_id, from_username, text)
         select $1, $2 + n, $3, $4, 'burst ' || n || ' ' || repeat('x', 1000) from generate_series(1, $5) n",
    )
    .bind(chat_id)
    .bind(last)
    .bind(from.id)
    .bind(&from.name)
    .bind(count)
    .execute(&mut *tx)
    .await
    .expect("inserting");
    tx.commit().await.expect("committing");
}

/// A stream over a connection of its own with HTTP/2's smallest windows,
/// never read: its client's buffers fill up soon.
async fn stalled(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
) -> Streaming<pb::ConnectChatResponse> {
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", chat.addr))
        .expect("a valid URI")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_lazy();
    api::chat::v1::chat_service_client::ChatServiceClient::new(narrow)
        .connect_chat(user.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("opening a stream")
        .into_inner()
}

#[tokio::test]
async fn a_burst_of_a_thousand_ends_only_the_reader_that_stopped_reading() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.stream_stall_timeout = Duration::from_secs(1);
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let mut stalled = stalled(&chat, &grace, chat_id).await;
    let mut fast = connect(&chat, &ada, chat_id, None).await;

    commit_at_once(&chat.db, chat_id, &ada, 1000).await;

    for n in 1..=1000 {
        let message = next_message(&mut fast, Duration::from_secs(10)).await;
        assert!(
            message.text.starts_with(&format!("burst {n} ")),
            "message {n} came as {:.12}",
            message.text
        );
    }
    // Still not reading, past the stall timeout: then read what it got.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = end_of(&mut stalled)
        .await
        .expect("the stalled stream ends with a status");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(
        end.message().contains("since_message_id"),
        "{}",
        end.message()
    );
}

#[tokio::test]
async fn a_reader_that_stops_in_a_quiet_chat_is_ended_too() {
    // Few enough messages that the server's queue for the stalled reader
    // never fills, so no send ever blocks: only watching the reader finds
    // that it stopped.
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.stream_stall_timeout = Duration::from_secs(1);
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let mut stalled = stalled(&chat, &grace, chat_id).await;

    commit_at_once(&chat.db, chat_id, &ada, QUIET_BURST).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let end = end_of(&mut stalled)
        .await
        .expect("the stalled stream ends with a status");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
}

/// Messages that fill a stalled reader's HTTP/2 windows and what tonic
/// buffers (about 80 of these, measured), and half of the server's queue
/// of 16 for it, so that no send blocks.
const QUIET_BURST: i64 = 88;

/// The backend listening for chat events, terminated.
async fn terminate_listener(database_url: &str) {
    let mut own = sqlx::PgConnection::connect(database_url)
        .await
        .expect("a connection");
    let terminated: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid() and query ilike 'listen%'",
    )
    .fetch_all(&mut own)
    .await
    .expect("terminating the listener");
    assert_eq!(terminated, [true], "one listener to terminate");
}

#[tokio::test]
async fn a_message_committed_while_the_listener_is_terminated_still_arrives_in_a_quiet_chat() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    terminate_listener(&chat.database_url).await;
    commit_at_once(&chat.db, chat_id, &ada, 1).await;

    let message = next_message(&mut stream, Duration::from_secs(10)).await;
    assert!(message.text.starts_with("burst 1 "));
}

/// A chat service whose database connections all pass through a relay.
async fn behind_a_relay(auth: &TestAuth) -> (TestChat, Relay, sqlx::PgPool) {
    let database_url = tests::postgres::fresh_database().await;
    let relay = Relay::start(server_of(&database_url)).await;
    let chat = TestChat::spawn_on(relay.url_for(&database_url), &auth.url(), |_| {}).await;
    let direct = sqlx::PgPool::connect(&database_url)
        .await
        .expect("a direct pool");
    (chat, relay, direct)
}

#[tokio::test]
async fn a_message_committed_while_postgres_is_away_arrives_once_it_is_back() {
    let auth = TestAuth::spawn().await;
    let (chat, relay, direct) = behind_a_relay(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    relay.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    commit_at_once(&direct, chat_id, &ada, 1).await;
    relay.restore().await;

    let message = next_message(&mut stream, Duration::from_secs(10)).await;
    assert!(message.text.starts_with("burst 1 "));
}

#[tokio::test]
async fn a_chat_deleted_while_postgres_is_away_ends_its_streams_once_it_is_back() {
    let auth = TestAuth::spawn().await;
    let (chat, relay, direct) = behind_a_relay(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    relay.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("delete from chats where id = $1")
        .bind(chat_id)
        .execute(&direct)
        .await
        .expect("deleting");
    relay.restore().await;

    let end = end_of(&mut stream).await.expect("a status");
    assert_eq!(end.code(), Code::NotFound, "{end:?}");
}

async fn gauge(chat: &TestChat, name: &str) -> f64 {
    let scrape = request(chat.metrics_addr, "GET", "/metrics", None, None)
        .await
        .body;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {scrape}"))
}

#[tokio::test]
async fn the_hub_forgets_a_chat_when_its_last_stream_ends_whichever_way() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let mut streams = Vec::new();
    let mut chats = Vec::new();
    for _ in 0..20 {
        let chat_id = chat.create_chat(&ada, &[&grace]).await;
        streams.push(connect(&chat, &grace, chat_id, None).await);
        chats.push(chat_id);
    }
    assert!(eventually(|| async { gauge(&chat, "chat_watched_chats").await == 20.0 }).await);

    // Half end because the client leaves, half because the chat is deleted.
    let deleted = streams.split_off(10);
    drop(streams);
    for chat_id in &chats[10..] {
        chat.chats()
            .delete(ada.request(pb::DeleteRequest { id: *chat_id }))
            .await
            .expect("deleting");
    }
    assert!(
        eventually(|| async { gauge(&chat, "chat_watched_chats").await == 0.0 }).await,
        "the hub still holds chats nobody watches"
    );
    drop(deleted);
}

#[tokio::test]
async fn the_service_works_with_a_single_database_connection() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| config.database.max_connections = 1).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;
    let sent = chat.send(&ada, chat_id, "one connection is enough").await;
    let received = next_message(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(received.id, sent.id);
}

#[tokio::test]
async fn keepalive_frees_the_stream_of_a_client_that_vanished() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.edge.http2_keepalive_interval = Duration::from_secs(1);
        config.edge.http2_keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let relay = Relay::start(chat.addr).await;
    let through = tonic::transport::Endpoint::from_shared(format!("http://{}", relay.addr))
        .expect("a valid URI")
        .connect_lazy();
    let _vanishing = api::chat::v1::chat_service_client::ChatServiceClient::new(through)
        .connect_chat(grace.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("opening a stream")
        .into_inner();
    assert!(eventually(|| async { gauge(&chat, "chat_open_streams").await == 1.0 }).await);

    relay.freeze();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gauge(&chat, "chat_open_streams").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the vanished client's stream is still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
