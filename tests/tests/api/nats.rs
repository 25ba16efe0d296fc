//! Chat's fan-out over NATS (`CHAT_FANOUT_URL`), against a real NATS
//! server: replicas hear each other's messages and deletions through it,
//! a NATS restart mid-stream loses nothing, and with NATS gone streams
//! still get every message, from the database poll.

use std::time::Duration;

use api::chat::v1 as pb;
use chat::config::{Config, Fanout};
use tests::nats::NatsServer;
use tests::services::{OUTLASTS_ANY_TEST, TestAuth, TestChat, TestUser};
use tonic::{Code, Streaming};

use crate::streams::{connect, end_of, next_message};

/// Replicas on NATS whose poll never runs within a test: what they hear
/// from each other comes through NATS, or from the comparison made when
/// NATS (re)connects.
fn nats_only(nats: &NatsServer) -> impl Fn(&mut Config) {
    let url = nats.url();
    move |config| {
        config.fanout = Fanout::Nats(url.clone());
        config.fanout_poll = Duration::from_secs(3600);
    }
}

async fn two_replicas(
    customize: impl Fn(&mut Config),
) -> (TestAuth, TestChat, TestChat, TestUser, TestUser, i64) {
    // Streams are held through NATS restarts, however long they take.
    let auth = TestAuth::spawn_with(|config| config.tokens.access_ttl = OUTLASTS_ANY_TEST).await;
    let first = TestChat::spawn_with(&auth, &customize).await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), &customize).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = first.create_chat(&ada, &[&grace]).await;
    (auth, first, second, ada, grace, chat_id)
}

/// The next `count` messages, allowing `within` for all of them.
async fn next_messages(
    stream: &mut Streaming<pb::ConnectChatResponse>,
    count: usize,
    within: Duration,
) -> Vec<pb::Message> {
    tokio::time::timeout(within, async {
        let mut messages = Vec::new();
        while messages.len() < count {
            messages.push(next_message(stream).await);
        }
        messages
    })
    .await
    .unwrap_or_else(|_| panic!("{count} messages within {within:?}"))
}

#[tokio::test]
async fn replicas_hear_each_others_messages_and_deletions_over_nats() {
    let nats = NatsServer::start();
    let (_auth, first, second, ada, grace, chat_id) = two_replicas(nats_only(&nats)).await;
    let mut on_first = connect(&first, &grace, chat_id, None).await;
    let mut on_second = connect(&second, &ada, chat_id, None).await;

    let mut sent = Vec::new();
    for round in 0..5 {
        sent.push(second.send(&ada, chat_id, &format!("second {round}")).await);
        sent.push(first.send(&grace, chat_id, &format!("first {round}")).await);
    }
    for stream in [&mut on_first, &mut on_second] {
        assert_eq!(
            next_messages(stream, sent.len(), Duration::from_secs(10)).await,
            sent
        );
    }

    first
        .chats()
        .delete(ada.request(pb::DeleteRequest { id: chat_id }))
        .await
        .expect("deleting");
    for stream in [&mut on_first, &mut on_second] {
        let end = end_of(stream).await.expect("a status");
        assert_eq!(end.code(), Code::NotFound, "{end:?}");
    }
}

#[tokio::test]
async fn a_nats_restart_mid_stream_loses_nothing() {
    let mut nats = NatsServer::start();
    let (_auth, first, second, ada, _grace, chat_id) = two_replicas(nats_only(&nats)).await;
    let mut on_second = connect(&second, &ada, chat_id, None).await;
    let before = first.send(&ada, chat_id, "before").await;
    assert_eq!(next_message(&mut on_second).await, before);

    nats.stop();
    let mut sent = Vec::new();
    for text in ["while NATS is down", "still down"] {
        sent.push(first.send(&ada, chat_id, text).await);
    }
    nats.restart();
    sent.push(first.send(&ada, chat_id, "after the restart").await);

    // Reconnecting takes up to a few seconds of backoff.
    assert_eq!(
        next_messages(&mut on_second, sent.len(), Duration::from_secs(30)).await,
        sent
    );
    // And NATS carries messages again.
    let again = first.send(&ada, chat_id, "carried by NATS again").await;
    assert_eq!(next_message(&mut on_second).await, again);
}

#[tokio::test]
async fn with_nats_gone_streams_get_other_replicas_messages_from_the_database() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let on_nats = move |config: &mut Config| config.fanout = Fanout::Nats(url.clone());
    let auth = TestAuth::spawn().await;
    let first = TestChat::spawn_with(&auth, &on_nats).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = first.create_chat(&ada, &[&grace]).await;

    nats.stop();
    // A replica starts though NATS is down, and serves.
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), &on_nats).await;
    let mut on_second = connect(&second, &grace, chat_id, None).await;
    let mut on_first = connect(&first, &ada, chat_id, None).await;

    let sent = vec![
        first.send(&ada, chat_id, "through the first").await,
        second.send(&grace, chat_id, "through the second").await,
    ];
    // Each replica's poll runs every second.
    for stream in [&mut on_first, &mut on_second] {
        assert_eq!(
            next_messages(stream, sent.len(), Duration::from_secs(10)).await,
            sent
        );
    }
}

#[tokio::test]
async fn forged_announcements_on_the_bus_end_no_stream() {
    let nats = NatsServer::start();
    let (_auth, first, _second, ada, grace, chat_id) = two_replicas(nats_only(&nats)).await;
    let mut stream = connect(&first, &grace, chat_id, None).await;
    let before = first.send(&ada, chat_id, "before").await;
    assert_eq!(next_message(&mut stream).await, before);

    // Anyone who can publish on NATS says the chat is gone, and that grace
    // was removed; the database says otherwise.
    let bus = async_nats::connect(nats.url())
        .await
        .expect("a NATS client");
    let subject = format!("chat.events.{chat_id}");
    for payload in [
        format!("deleted:{chat_id}"),
        format!("removed:{chat_id}:{}:{}", grace.id, i64::MAX),
    ] {
        bus.publish(subject.clone(), payload.into())
            .await
            .expect("publishing");
    }
    bus.flush().await.expect("flushing");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after = first.send(&ada, chat_id, "after").await;
    assert_eq!(
        next_message(&mut stream).await,
        after,
        "a forged announcement ended the stream"
    );
    let scrape = tests::http::request(first.metrics_addr, "GET", "/metrics", None, None).await;
    assert!(
        scrape
            .body
            .contains("chat_unconfirmed_announcements_total 2"),
        "{}",
        scrape.body
    );
}

#[tokio::test]
async fn malformed_and_misaddressed_payloads_are_counted_and_ignored() {
    let nats = NatsServer::start();
    let (_auth, first, _second, ada, grace, chat_id) = two_replicas(nats_only(&nats)).await;
    let mut stream = connect(&first, &grace, chat_id, None).await;
    let bus = async_nats::connect(nats.url())
        .await
        .expect("a NATS client");
    // A message announcement for this chat, published under another
    // chat's subject, and a flood of junk.
    bus.publish(
        format!("chat.events.{}", chat_id + 1),
        format!("message:{chat_id}:{}", i64::MAX).into(),
    )
    .await
    .expect("publishing");
    for n in 0..200 {
        bus.publish(
            format!("chat.events.{chat_id}"),
            format!("{n}:{}", "x".repeat(10_000)).into(),
        )
        .await
        .expect("publishing");
    }
    bus.flush().await.expect("flushing");
    assert!(
        tests::services::eventually(|| async {
            tests::http::request(first.metrics_addr, "GET", "/metrics", None, None)
                .await
                .body
                .contains("chat_malformed_announcements_total 201")
        })
        .await,
        "the malformed payloads were not all counted"
    );
    let after = first.send(&ada, chat_id, "after").await;
    assert_eq!(next_message(&mut stream).await, after);
}

#[tokio::test]
async fn a_nats_server_that_wants_credentials_gets_them() {
    let nats = NatsServer::start_with_credentials("chat", "a-nats-password");
    let url = nats.url();
    let with = |password: &'static str| {
        let url = url.clone();
        move |config: &mut Config| {
            config.fanout = Fanout::Nats(url.clone());
            config.fanout_poll = Duration::from_secs(3600);
            config.fanout_auth.user = Some("chat".into());
            config.fanout_auth.password = Some(password.to_owned().into());
        }
    };
    let (auth, first, second, ada, grace, chat_id) = two_replicas(with("a-nats-password")).await;
    let mut stream = connect(&second, &grace, chat_id, None).await;
    let sent = first
        .send(&ada, chat_id, "through an authenticated bus")
        .await;
    assert_eq!(next_message(&mut stream).await, sent);
    let scrape = tests::http::request(first.metrics_addr, "GET", "/metrics", None, None).await;
    assert!(
        scrape.body.contains("chat_fanout_connected 1"),
        "{}",
        scrape.body
    );

    // The wrong password connects to nothing.
    let wrong = TestChat::spawn_on(first.database_url.clone(), &auth.url(), with("wrong")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scrape = tests::http::request(wrong.metrics_addr, "GET", "/metrics", None, None).await;
    assert!(
        scrape.body.contains("chat_fanout_connected 0"),
        "{}",
        scrape.body
    );
}

#[tokio::test]
async fn read_markers_and_typing_cross_replicas_over_nats() {
    let nats = NatsServer::start();
    let (_auth, first, second, ada, grace, chat_id) = two_replicas(nats_only(&nats)).await;
    let message = first.send(&ada, chat_id, "read me").await;
    let mut on_second = connect(&second, &ada, chat_id, None).await;

    first
        .chats()
        .mark_read(grace.request(pb::MarkReadRequest {
            chat_id,
            message_id: message.id,
        }))
        .await
        .expect("marking read");
    first
        .chats()
        .set_typing(grace.request(pb::SetTypingRequest { chat_id }))
        .await
        .expect("typing");

    let (mut marker, mut typing) = (None, None);
    tokio::time::timeout(Duration::from_secs(5), async {
        while marker.is_none() || typing.is_none() {
            let event = tokio_stream::StreamExt::next(&mut on_second)
                .await
                .expect("the stream is open")
                .expect("an event");
            marker = marker.or(event.read_marker);
            typing = typing.or(event.typing);
        }
    })
    .await
    .expect("both within five seconds, through NATS alone");
    assert_eq!(
        marker,
        Some(pb::ReadMarker {
            chat_id,
            user_id: grace.id,
            message_id: message.id
        })
    );
    assert_eq!(
        typing,
        Some(pb::Typing {
            chat_id,
            user_id: grace.id,
            for_ms: 6_000
        })
    );
}
