//! Faults of the services around chat: auth slow or down, and a chat
//! replica dying with streams open. Every test is bounded in time and
//! count.

use std::time::{Duration, Instant};

use api::chat::v1 as pb;
use tests::outage::Relay;
use tests::services::{TestAuth, TestChat, TestUser, eventually};
use tokio_stream::StreamExt as _;
use tonic::Code;

/// The deadline every call is made with.
const DEADLINE: Duration = Duration::from_secs(1);

/// `message` from `user`, with a deadline.
fn call<T>(user: &TestUser, message: T) -> tonic::Request<T> {
    let mut request = user.request(message);
    request.set_timeout(DEADLINE);
    request
}

/// Every chat RPC, each once; the status of each, and how long it took.
async fn every_rpc(
    chat: &TestChat,
    ada: &TestUser,
    chat_id: i64,
) -> Vec<(&'static str, Code, Duration)> {
    let mut chats = chat.chats();
    let mut outcomes = Vec::new();
    let mut record = |name, result: Result<(), tonic::Status>, started: Instant| {
        let code = result.err().map_or(Code::Ok, |status| status.code());
        outcomes.push((name, code, started.elapsed()));
    };
    let started = Instant::now();
    let result = chats
        .create(call(
            ada,
            pb::CreateRequest {
                usernames: vec!["grace".into()],
                title: "during the fault".into(),
            },
        ))
        .await
        .map(drop);
    record("Create", result, started);
    let started = Instant::now();
    let result = chats
        .send_message(call(
            ada,
            pb::SendMessageRequest {
                chat_id,
                text: "during the fault".into(),
                client_message_id: String::new(),
            },
        ))
        .await
        .map(drop);
    record("SendMessage", result, started);
    let started = Instant::now();
    let result = chats
        .list_messages(call(
            ada,
            pb::ListMessagesRequest {
                chat_id,
                page_size: 10,
                page_token: String::new(),
            },
        ))
        .await
        .map(drop);
    record("ListMessages", result, started);
    let started = Instant::now();
    let result = chats
        .connect_chat(call(
            ada,
            pb::ConnectChatRequest {
                chat_id,
                since_message_id: Some(0),
            },
        ))
        .await
        .map(drop);
    record("ConnectChat", result, started);
    let started = Instant::now();
    let result = chats
        .delete(call(ada, pb::DeleteRequest { id: chat_id }))
        .await
        .map(drop);
    record("Delete", result, started);
    outcomes
}

async fn count(chat: &TestChat, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&chat.db)
        .await
        .expect("a count")
}

#[tokio::test]
async fn with_auth_slow_or_down_every_chat_rpc_is_unavailable_in_time_and_none_runs_unchecked() {
    let auth = TestAuth::spawn().await;
    let to_auth = Relay::start(auth.addr).await;
    let chat = TestChat::spawn_on(
        tests::postgres::fresh_database().await,
        &format!("http://{}", to_auth.addr),
        |_| {},
    )
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    let (chats, messages) = (
        count(&chat, "select count(*) from chats").await,
        count(&chat, "select count(*) from messages").await,
    );

    for (fault, apply) in [
        ("auth slow", Relay::freeze as fn(&Relay)),
        ("auth down", Relay::cut as fn(&Relay)),
    ] {
        apply(&to_auth);
        // Chat answers from auth's recent answers only while the
        // revocation feed vouches for them: once it has been silent for
        // its bound, every call needs auth again.
        tokio::time::sleep(chat::access_cache::FEED_BOUND + Duration::from_millis(500)).await;
        for (rpc, code, took) in every_rpc(&chat, &ada, chat_id).await {
            eprintln!("{fault}: {rpc} answered {code:?} in {took:?}");
            assert_eq!(code, Code::Unavailable, "{fault}: {rpc}");
            assert!(took < DEADLINE, "{fault}: {rpc} took {took:?}");
        }
        assert_eq!(
            count(&chat, "select count(*) from chats").await,
            chats,
            "{fault}: a call ran unchecked"
        );
        assert_eq!(
            count(&chat, "select count(*) from messages").await,
            messages,
            "{fault}: a call ran unchecked"
        );

        // Back by itself once auth is.
        to_auth.restore().await;
        assert!(
            eventually(|| async {
                chat.chats()
                    .list_messages(call(
                        &ada,
                        pb::ListMessagesRequest {
                            chat_id,
                            page_size: 1,
                            page_token: String::new(),
                        },
                    ))
                    .await
                    .is_ok()
            })
            .await,
            "{fault}: chat did not recover when auth came back"
        );
    }
}

#[tokio::test]
async fn clients_of_a_replica_that_dies_resume_on_another_with_no_gap_or_duplicate() {
    let auth = TestAuth::spawn().await;
    // The sender here is a load, not a person: no send quota.
    let no_send_quota = |config: &mut chat::config::Config| config.quotas.sends = None;
    let dying = TestChat::spawn_with(&auth, no_send_quota).await;
    let surviving =
        TestChat::spawn_on(dying.database_url.clone(), &auth.url(), no_send_quota).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = dying.create_chat(&ada, &[&grace]).await;
    const SENT: usize = 200;

    // Ada sends through the surviving replica throughout.
    let sending = {
        let mut chats = surviving.chats();
        let ada = ada.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..SENT {
                let sent = chats
                    .send_message(ada.request(pb::SendMessageRequest {
                        chat_id,
                        text: format!("message {n}"),
                        client_message_id: format!("m-{n}"),
                    }))
                    .await
                    .expect("sending through the surviving replica")
                    .into_inner();
                acknowledged.push(sent.message.expect("the message").id);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acknowledged
        })
    };

    // Grace reads on the dying replica, which goes away mid-stream.
    let mut received: Vec<i64> = Vec::new();
    let mut stream = dying
        .chats()
        .connect_chat(grace.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: Some(0),
        }))
        .await
        .expect("a stream")
        .into_inner();
    while received.len() < SENT / 4 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a message");
        received.push(item.message.expect("a message").id);
    }
    dying.stop().await;
    // Whatever was in flight, then the end.
    while let Ok(Some(Ok(item))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
    {
        received.push(item.message.expect("a message").id);
    }

    // Resume on the other replica from the last message received.
    let mut stream = surviving
        .chats()
        .connect_chat(grace.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: received.last().copied(),
        }))
        .await
        .expect("resuming on the surviving replica")
        .into_inner();
    let acknowledged = sending.await.expect("the sender");
    while received.len() < acknowledged.len() {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a message");
        received.push(item.message.expect("a message").id);
    }
    assert_eq!(
        received, acknowledged,
        "a gap or a duplicate across the handover"
    );
}
