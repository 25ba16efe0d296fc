//! `SetTyping`: ephemeral, throttled, for members, across replicas, and
//! ended by a send.

use std::time::Duration;

use api::chat::v1 as pb;
use tests::fixtures::{TwoMembers, two_members};
use tests::services::{TestChat, TestUser};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};

use crate::streams::connect;

async fn typing(chat: &TestChat, user: &TestUser, chat_id: i64) -> Result<(), tonic::Status> {
    chat.chats()
        .set_typing(user.request(pb::SetTypingRequest { chat_id }))
        .await
        .map(drop)
}

/// Every event a stream passes on within `within`.
async fn events_within(
    stream: &mut Streaming<pb::ConnectChatResponse>,
    within: Duration,
) -> Vec<pb::ConnectChatResponse> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
        events.push(item.expect("an event, not an error"));
    }
    events
}

#[tokio::test]
async fn typing_reaches_the_others_on_every_replica_and_a_send_ends_it() {
    let TwoMembers {
        auth,
        chat: first,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), |_| {}).await;
    let mut grace_on_second = connect(&second, &grace, chat_id, None).await;
    let mut ada_on_first = connect(&first, &ada, chat_id, None).await;

    typing(&first, &ada, chat_id).await.expect("typing");
    let heard = events_within(&mut grace_on_second, Duration::from_secs(1)).await;
    let typed: Vec<_> = heard.iter().filter_map(|event| event.typing).collect();
    assert_eq!(
        typed,
        [pb::Typing {
            chat_id,
            user_id: ada.id,
            for_ms: 6_000
        }]
    );

    let sent = first.send(&ada, chat_id, "done typing").await;
    let heard = events_within(&mut grace_on_second, Duration::from_secs(1)).await;
    assert!(
        heard
            .iter()
            .any(|event| event.message.as_ref() == Some(&sent)),
        "the message arrived: {heard:?}"
    );
    assert!(
        heard.iter().any(|event| event.typing
            == Some(pb::Typing {
                chat_id,
                user_id: ada.id,
                for_ms: 0
            })),
        "the send ended the typing: {heard:?}"
    );

    // Nobody hears their own typing.
    let own = events_within(&mut ada_on_first, Duration::from_millis(300)).await;
    assert!(
        own.iter().all(|event| event.typing.is_none()),
        "ada heard her own typing: {own:?}"
    );
}

#[tokio::test]
async fn typing_passes_on_once_per_interval_and_only_for_members() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let hopper = auth.register("hopper").await;
    let mut stream = connect(&chat, &grace, chat_id, None).await;

    for _ in 0..5 {
        typing(&chat, &ada, chat_id)
            .await
            .expect("every call succeeds");
    }
    let heard = events_within(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(
        heard.iter().filter(|event| event.typing.is_some()).count(),
        1,
        "five calls at once pass on once: {heard:?}"
    );
    // Past the interval, typing again extends it.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    typing(&chat, &ada, chat_id).await.expect("typing again");
    let heard = events_within(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(
        heard.iter().filter(|event| event.typing.is_some()).count(),
        1
    );

    let outsider = typing(&chat, &hopper, chat_id)
        .await
        .expect_err("hopper is no member");
    assert_eq!(outsider.code(), Code::NotFound);
    let bad = typing(&chat, &ada, 0).await.expect_err("no chat id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("chat_id"), "{}", bad.message());
    // Nothing about typing is stored.
    let columns: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.columns
         where table_schema = 'public' and column_name like '%typing%'",
    )
    .fetch_one(&chat.db)
    .await
    .expect("reading the schema");
    assert_eq!(columns, 0);
}
