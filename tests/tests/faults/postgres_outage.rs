//! PostgreSQL really stopped under load, then started again: both services
//! on a private server of their own, sends from several clients, streams
//! open, access checks running throughout.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use local_postgres::Durability;
use tests::postgres::{create_service_databases, private_server};
use tests::services::{OUTLASTS_ANY_TEST, TestAuth, TestChat, TestUser, with_token};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tonic::Code;

const SENDERS: usize = 3;
const READERS: usize = 2;
const OUTAGE: Duration = Duration::from_secs(5);

/// Codes seen, by name, with counts.
type Codes = BTreeMap<String, u64>;

fn seen(codes: &mut Codes, code: Code) {
    *codes.entry(format!("{code:?}")).or_default() += 1;
}

/// Sends until told to stop; a send that is not answered OK is retried
/// with its key. What was acknowledged, and every code seen.
async fn send_until(
    chat: tonic::transport::Channel,
    user: TestUser,
    chat_id: i64,
    sender: usize,
    mut stop: watch::Receiver<bool>,
) -> (Vec<i64>, Codes) {
    let mut chats = pb::chat_service_client::ChatServiceClient::new(chat);
    let (mut acknowledged, mut codes) = (Vec::new(), Codes::new());
    for n in 0.. {
        if *stop.borrow() {
            break;
        }
        let key = format!("s{sender}-{n}");
        for _attempt in 0..400 {
            let mut request = user.request(pb::SendMessageRequest {
                chat_id,
                text: format!("text of {key}"),
                client_message_id: key.clone(),
            });
            request.set_timeout(Duration::from_secs(8));
            match chats.send_message(request).await {
                Ok(sent) => {
                    seen(&mut codes, Code::Ok);
                    acknowledged.push(sent.into_inner().message.expect("the message").id);
                    break;
                }
                Err(status) => {
                    seen(&mut codes, status.code());
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acknowledged, codes)
}

/// Reads the chat, resuming from the last message after any end, until
/// told to stop. Every id received, in order, and the codes streams ended
/// with.
async fn read_until(
    chat: tonic::transport::Channel,
    user: TestUser,
    chat_id: i64,
    mut stop: watch::Receiver<bool>,
) -> (Vec<i64>, Codes) {
    let mut chats = pb::chat_service_client::ChatServiceClient::new(chat);
    let (mut received, mut codes) = (Vec::<i64>::new(), Codes::new());
    while !*stop.borrow() {
        let opened = chats
            .connect_chat(user.request(pb::ConnectChatRequest {
                chat_id,
                since_message_id: Some(received.last().copied().unwrap_or(0)),
            }))
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                seen(&mut codes, status.code());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = stop.changed() => break,
            };
            match item {
                Some(Ok(item)) => received.push(item.message.expect("a message").id),
                Some(Err(status)) => {
                    seen(&mut codes, status.code());
                    break;
                }
                None => break,
            }
        }
    }
    (received, codes)
}

/// Checks a good token and a bad one until told to stop; the codes of each.
async fn check_until(
    auth: tonic::transport::Channel,
    user: TestUser,
    mut stop: watch::Receiver<bool>,
) -> (Codes, Codes) {
    let mut access = auth_pb::access_service_client::AccessServiceClient::new(auth);
    let (mut good, mut bad) = (Codes::new(), Codes::new());
    while !*stop.borrow() {
        let request = |token: &str| {
            with_token(
                auth_pb::CheckRequest {
                    endpoint_address: "/chat.v1.ChatService/SendMessage".into(),
                },
                token,
            )
        };
        let answer = access.check(request(&user.access_token)).await;
        seen(
            &mut good,
            answer.err().map_or(Code::Ok, |status| status.code()),
        );
        let answer = access.check(request("not-a-token")).await;
        seen(
            &mut bad,
            answer.err().map_or(Code::Ok, |status| status.code()),
        );
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => {}
        }
    }
    (good, bad)
}

#[tokio::test]
async fn postgres_stopped_under_load_loses_nothing_acknowledged_and_service_resumes() {
    let dir = std::env::temp_dir().join(format!("postgres-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = private_server(dir.clone(), 0, Durability::Scratch).await;
    let port = server.port();
    create_service_databases(&server).await;
    // The senders, readers and checker hold their tokens through the
    // outage and PostgreSQL's restart, however long the machine takes.
    let auth = TestAuth::spawn_on(server.url("auth"), |config| {
        config.tokens.access_ttl = OUTLASTS_ANY_TEST;
    })
    .await;
    // The senders here are a load, not people: no send quota.
    let chat = TestChat::spawn_on(server.url("chat"), &auth.url(), |config| {
        config.quotas.sends = None;
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;

    let (stop, stopped) = watch::channel(false);
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| {
            tokio::spawn(send_until(
                chat.channel(),
                ada.clone(),
                chat_id,
                n,
                stopped.clone(),
            ))
        })
        .collect();
    let (stop_reading, reading_stopped) = watch::channel(false);
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            tokio::spawn(read_until(
                chat.channel(),
                grace.clone(),
                chat_id,
                reading_stopped.clone(),
            ))
        })
        .collect();
    let checker = tokio::spawn(check_until(auth.channel(), ada.clone(), stopped.clone()));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stopping postgres");
    tokio::time::sleep(OUTAGE).await;
    let server = private_server(dir.clone(), port, Durability::Scratch).await;
    let back = Instant::now();
    // Service resumes by itself: a send goes through within seconds.
    let mut probe = chat.chats();
    let recovered = loop {
        let mut request = ada.request(pb::SendMessageRequest {
            chat_id,
            text: "after the outage".into(),
            client_message_id: "probe".into(),
        });
        request.set_timeout(Duration::from_secs(2));
        if probe.send_message(request).await.is_ok() {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "no send went through after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);

    let mut acknowledged = HashSet::new();
    let mut send_codes = Codes::new();
    for sender in senders {
        let (ids, codes) = sender.await.expect("a sender");
        acknowledged.extend(ids);
        for (code, count) in codes {
            *send_codes.entry(code).or_default() += count;
        }
    }
    let (good, bad) = checker.await.expect("the checker");

    // Every acknowledged message is stored exactly once.
    let stored: Vec<(i64, String)> =
        sqlx::query_as("select id, client_message_id from messages where chat_id = $1 order by id")
            .bind(chat_id)
            .fetch_all(&chat.db)
            .await
            .expect("the history");
    let stored_ids: HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
    let keys: HashSet<&String> = stored.iter().map(|(_, key)| key).collect();
    assert_eq!(keys.len(), stored.len(), "a key stored twice");
    let lost: Vec<_> = acknowledged.difference(&stored_ids).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");

    // Every open stream got every acknowledged message, once, in order.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_reading.send(true);
    let mut stream_codes = Codes::new();
    for reader in readers {
        let (received, codes) = reader.await.expect("a reader");
        for (code, count) in codes {
            *stream_codes.entry(code).or_default() += count;
        }
        assert!(
            received.windows(2).all(|pair| pair[0] < pair[1]),
            "out of order or twice"
        );
        let received: HashSet<i64> = received.into_iter().collect();
        let missed: Vec<_> = acknowledged.difference(&received).collect();
        assert!(
            missed.is_empty(),
            "a stream missed acknowledged messages: {missed:?}"
        );
    }

    eprintln!(
        "postgres outage of {OUTAGE:?}: {} sends acknowledged, all stored once and streamed; \
         send answers {send_codes:?}; stream ends {stream_codes:?}; \
         checks of a good token {good:?}, of a bad one {bad:?}; \
         first send {recovered:?} after postgres was back",
        acknowledged.len()
    );
    for code in send_codes.keys().chain(stream_codes.keys()) {
        assert!(
            matches!(code.as_str(), "Ok" | "Unavailable"),
            "a send or stream saw {code}"
        );
    }
    for code in good.keys() {
        assert!(
            matches!(code.as_str(), "Ok" | "Unavailable"),
            "a good token got {code}"
        );
    }
    assert_eq!(
        bad.keys().collect::<Vec<_>>(),
        ["Unauthenticated"],
        "a bad token got {bad:?}"
    );
    assert!(
        send_codes.contains_key("Unavailable"),
        "the outage was never seen"
    );

    drop(chat);
    drop(auth);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stopping postgres");
    let _ = std::fs::remove_dir_all(&dir);
}
