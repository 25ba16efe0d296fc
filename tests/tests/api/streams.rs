//! `ConnectChat`: live messages, replay, fan-out across replicas, slow
//! subscribers and the ways a stream ends.

use std::time::Duration;

use api::chat::v1 as pb;
use tests::fixtures::{TwoMembers, two_members};
use tests::services::{TestAuth, TestChat, TestUser};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};

pub(crate) async fn connect(
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

/// The next message on the stream, within five seconds.
pub(crate) async fn next_message(stream: &mut Streaming<pb::ConnectChatResponse>) -> pb::Message {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a message within five seconds")
        .expect("the stream is open")
        .expect("a message, not an error")
        .message
        .expect("a message")
}

/// How the stream ends, within ten seconds, after any messages still queued.
pub(crate) async fn end_of(
    stream: &mut Streaming<pb::ConnectChatResponse>,
) -> Option<tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = stream.next().await {
            if let Err(status) = item {
                return Some(status);
            }
        }
        None
    })
    .await
    .expect("the stream ends within ten seconds")
}

pub(crate) async fn a_chat() -> (TestAuth, TestChat, TestUser, TestUser, i64) {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    (auth, chat, ada, grace, chat_id)
}

#[tokio::test]
async fn a_stream_receives_messages_as_they_are_sent() {
    let (_auth, chat, ada, grace, chat_id) = a_chat().await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    let sent = chat.send(&ada, chat_id, "live").await;

    assert_eq!(next_message(&mut stream).await, sent);
}

#[tokio::test]
async fn without_since_a_stream_starts_with_the_next_message() {
    let (_auth, chat, ada, grace, chat_id) = a_chat().await;
    chat.send(&ada, chat_id, "before").await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;
    let after = chat.send(&ada, chat_id, "after").await;
    assert_eq!(next_message(&mut stream).await, after);
}

#[tokio::test]
async fn since_zero_replays_the_whole_history_then_goes_live() {
    let (_auth, chat, ada, grace, chat_id) = a_chat().await;
    let first = chat.send(&ada, chat_id, "one").await;
    let second = chat.send(&grace, chat_id, "two").await;

    let mut stream = connect(&chat, &grace, chat_id, Some(0)).await;
    assert_eq!(next_message(&mut stream).await, first);
    assert_eq!(next_message(&mut stream).await, second);
    let third = chat.send(&ada, chat_id, "three").await;
    assert_eq!(next_message(&mut stream).await, third);
}

#[tokio::test]
async fn replay_and_live_meet_without_a_gap_or_a_duplicate() {
    let (_auth, chat, ada, grace, chat_id) = a_chat().await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(chat.send(&ada, chat_id, &format!("early {n}")).await.id);
    }
    let resume_after = sent[1];

    // Keep sending while the stream opens and replays.
    let sender = {
        let chats = chat.chats();
        let ada = ada.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..40 {
                let message = chats
                    .clone()
                    .send_message(ada.request(pb::SendMessageRequest {
                        chat_id,
                        text: format!("late {n}"),
                        client_message_id: String::new(),
                    }))
                    .await
                    .expect("a send")
                    .into_inner()
                    .message
                    .expect("a message");
                ids.push(message.id);
            }
            ids
        })
    };
    let mut stream = connect(&chat, &grace, chat_id, Some(resume_after)).await;
    sent.extend(sender.await.expect("the sender"));

    let expected: Vec<i64> = sent.into_iter().filter(|id| *id > resume_after).collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(next_message(&mut stream).await.id);
    }
    assert_eq!(received, expected);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "an extra message"
    );
}

#[tokio::test]
async fn replicas_deliver_each_others_messages() {
    let (auth, first, ada, grace, chat_id) = a_chat().await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), |_| {}).await;
    let mut on_first = connect(&first, &grace, chat_id, None).await;
    let mut on_second = connect(&second, &ada, chat_id, None).await;

    let via_second = second
        .send(&ada, chat_id, "sent through the second replica")
        .await;
    let via_first = first
        .send(&grace, chat_id, "sent through the first replica")
        .await;

    assert_eq!(next_message(&mut on_first).await, via_second);
    assert_eq!(next_message(&mut on_first).await, via_first);
    assert_eq!(next_message(&mut on_second).await, via_second);
    assert_eq!(next_message(&mut on_second).await, via_first);
}

/// A transaction with a pending notification takes a database-wide lock at
/// commit, which would make every send in every chat commit one at a time:
/// no trigger on what a send writes (its message, its chat's sequence
/// number) may notify, directly or through a function it calls.
/// (Replicas announce after commit.)
#[tokio::test]
async fn no_trigger_on_what_a_send_writes_notifies() {
    let (_auth, chat, ..) = a_chat().await;
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "select t.tgrelid::regclass::text || '.' || t.tgname, p.prosrc
         from pg_trigger t join pg_proc p on p.oid = t.tgfoid
         where t.tgrelid in ('messages'::regclass, 'chats'::regclass)
           and not t.tgisinternal
           -- row or statement triggers on INSERT (4) or UPDATE (16)
           and t.tgtype & (4 | 16) <> 0",
    )
    .fetch_all(&chat.db)
    .await
    .expect("reading the triggers");
    let functions: Vec<String> = sqlx::query_scalar(
        "select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.prosrc ilike '%notify%'",
    )
    .fetch_all(&chat.db)
    .await
    .expect("reading the functions");
    for (trigger, source) in &triggers {
        let lower = source.to_lowercase();
        assert!(
            !lower.contains("notify") && !functions.iter().any(|f| lower.contains(f.as_str())),
            "{trigger} notifies: {source}"
        );
    }
}

/// A replica can die between committing a message and announcing it. The
/// message still reaches every open stream, on every replica, soon after,
/// though nothing follows it in the chat.
#[tokio::test]
async fn a_message_stored_but_never_announced_still_reaches_open_streams() {
    let (auth, first, ada, grace, chat_id) = a_chat().await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), |_| {}).await;
    let mut on_first = connect(&first, &grace, chat_id, None).await;
    let mut on_second = connect(&second, &ada, chat_id, None).await;
    let sent = first.send(&ada, chat_id, "announced").await;
    assert_eq!(next_message(&mut on_first).await, sent);
    assert_eq!(next_message(&mut on_second).await, sent);

    // The send's transaction, as a replica commits it, and no announcement.
    let id: i64 = sqlx::query_scalar(
        "with c as (update chats set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (chat_id, seq, from_user_id, from_username, text)
         select $1, last_seq, $2, 'ada', 'never announced' from c
         returning id",
    )
    .bind(chat_id)
    .bind(ada.id)
    .fetch_one(&first.db)
    .await
    .expect("storing a message directly");

    // Found by each replica's poll, once a second.
    let stored = std::time::Instant::now();
    for stream in [&mut on_first, &mut on_second] {
        let message = next_message(stream).await;
        assert_eq!((message.id, message.text.as_str()), (id, "never announced"));
    }
    assert!(
        stored.elapsed() < chat::config::DEFAULT_FANOUT_POLL * 3,
        "found after {:?}",
        stored.elapsed()
    );
}

#[tokio::test]
async fn a_slow_subscriber_blocks_no_sender_and_is_ended_when_too_far_behind() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.stream_buffer = 8;
        config.stream_stall_timeout = Duration::from_secs(1);
        // The sender floods faster than any person types.
        config.quotas.sends = None;
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    // Never read until the end, over a connection with HTTP/2's smallest
    // windows, so that the client's buffers fill up soon.
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", chat.addr))
        .expect("a valid URI")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_lazy();
    let mut slow = api::chat::v1::chat_service_client::ChatServiceClient::new(narrow)
        .connect_chat(grace.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect("opening a stream")
        .into_inner();
    let mut fast = connect(&chat, &ada, chat_id, None).await;

    let text = "x".repeat(4000);
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < 900 {
            next_message(&mut fast).await;
            received += 1;
        }
        received
    });
    for _ in 0..900 {
        chat.send(&ada, chat_id, &text).await;
    }

    assert_eq!(reader.await.expect("the fast reader"), 900);
    let end = end_of(&mut slow)
        .await
        .expect("the slow stream ends with a status");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(
        end.message().contains("since_message_id"),
        "{}",
        end.message()
    );
}

#[tokio::test]
async fn deleting_a_chat_ends_its_streams() {
    let (_auth, chat, ada, grace, chat_id) = a_chat().await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    chat.chats()
        .delete(ada.request(pb::DeleteRequest { id: chat_id }))
        .await
        .expect("deleting");

    let end = end_of(&mut stream).await.expect("a status");
    assert_eq!(end.code(), Code::NotFound);
    assert_eq!(end.message(), format!("chat {chat_id} was deleted"));
}

#[tokio::test]
async fn shutting_down_ends_streams_with_where_to_resume() {
    let (_auth, chat, _ada, grace, chat_id) = a_chat().await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    let stopping = tokio::spawn(chat.stop());

    let end = end_of(&mut stream).await.expect("a status");
    assert_eq!(end.code(), Code::Unavailable);
    assert!(end.message().contains("since_message_id"));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops once its streams have ended")
        .expect("stopping");
}
