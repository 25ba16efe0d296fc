//! Read markers: `MarkRead`, unread counts in `ListChats`, "seen by" in
//! `GetChat`, and markers reaching the chat's streams on every replica.

use std::time::Duration;

use api::chat::v1 as pb;
use tests::fixtures::{TwoMembers, two_members};
use tests::services::{TestChat, TestUser};
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};

use crate::streams::connect;

async fn mark(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
    message_id: i64,
) -> Result<pb::MarkReadResponse, tonic::Status> {
    chat.chats()
        .mark_read(user.request(pb::MarkReadRequest {
            chat_id,
            message_id,
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The user's entry for `chat_id` in `ListChats`.
async fn listed(chat: &TestChat, user: &TestUser, chat_id: i64) -> pb::ChatSummary {
    chat.chats()
        .list_chats(user.request(pb::ListChatsRequest::default()))
        .await
        .expect("listing chats")
        .into_inner()
        .chats
        .into_iter()
        .find(|listed| listed.id == chat_id)
        .expect("the chat is listed")
}

/// Each member's marker, as `GetChat` shows it.
async fn seen_by(chat: &TestChat, user: &TestUser, chat_id: i64) -> Vec<(i64, i64)> {
    chat.chats()
        .get_chat(user.request(pb::GetChatRequest { id: chat_id }))
        .await
        .expect("getting the chat")
        .into_inner()
        .chat
        .expect("a chat")
        .members
        .iter()
        .map(|member| (member.user_id, member.read_message_id))
        .collect()
}

#[tokio::test]
async fn unread_counts_follow_the_marker_which_only_moves_forward() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let first = chat.send(&ada, chat_id, "one").await;
    let second = chat.send(&ada, chat_id, "two").await;
    let third = chat.send(&ada, chat_id, "three").await;

    let grace_listed = listed(&chat, &grace, chat_id).await;
    assert_eq!(
        (grace_listed.unread_count, grace_listed.read_message_id),
        (3, 0)
    );
    let ada_listed = listed(&chat, &ada, chat_id).await;
    assert_eq!(
        (ada_listed.unread_count, ada_listed.read_message_id),
        (0, third.id),
        "sending marks read"
    );

    let marked = mark(&chat, &grace, chat_id, second.id)
        .await
        .expect("marked");
    assert_eq!(
        (marked.read_message_id, marked.unread_count),
        (second.id, 1)
    );
    assert_eq!(listed(&chat, &grace, chat_id).await.unread_count, 1);

    // Backwards: accepted, and nothing changes.
    let again = mark(&chat, &grace, chat_id, first.id)
        .await
        .expect("accepted");
    assert_eq!((again.read_message_id, again.unread_count), (second.id, 1));
    assert_eq!(
        listed(&chat, &grace, chat_id).await.read_message_id,
        second.id
    );

    // Grace's own message: not unread to her, and it moves her marker.
    let reply = chat.send(&grace, chat_id, "four").await;
    let grace_listed = listed(&chat, &grace, chat_id).await;
    assert_eq!(
        (grace_listed.unread_count, grace_listed.read_message_id),
        (0, reply.id)
    );
    assert_eq!(listed(&chat, &ada, chat_id).await.unread_count, 1);
    let mut markers = seen_by(&chat, &ada, chat_id).await;
    markers.sort_unstable();
    let mut expected = vec![(ada.id, third.id), (grace.id, reply.id)];
    expected.sort_unstable();
    assert_eq!(markers, expected);
}

#[tokio::test]
async fn a_member_added_later_starts_with_the_history_read() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    chat.send(&ada, chat_id, "before hopper").await;
    let last = chat.send(&ada, chat_id, "still before").await;
    let hopper = auth.register("hopper").await;
    chat.chats()
        .add_members(ada.request(pb::AddMembersRequest {
            chat_id,
            usernames: vec!["hopper".into()],
        }))
        .await
        .expect("adding hopper");

    let listed = listed(&chat, &hopper, chat_id).await;
    assert_eq!((listed.unread_count, listed.read_message_id), (0, last.id));
    chat.send(&ada, chat_id, "after hopper").await;
    assert_eq!(self::listed(&chat, &hopper, chat_id).await.unread_count, 1);
}

#[tokio::test]
async fn a_member_added_by_a_replica_without_markers_starts_with_the_history_read() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    chat.send(&ada, chat_id, "before hopper").await;
    let last = chat.send(&ada, chat_id, "still before").await;
    let hopper = auth.register("hopper").await;
    // What a replica from before read markers inserts, during a rolling
    // deploy: no marker named.
    sqlx::query("insert into chat_members (chat_id, user_id) values ($1, $2)")
        .bind(chat_id)
        .bind(hopper.id)
        .execute(&chat.db)
        .await
        .expect("adding hopper as an old replica does");

    let listed = listed(&chat, &hopper, chat_id).await;
    assert_eq!((listed.unread_count, listed.read_message_id), (0, last.id));
}

#[tokio::test]
async fn only_members_mark_and_only_messages_of_the_chat() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let hopper = auth.register("hopper").await;
    let message = chat.send(&ada, chat_id, "hi").await;
    let other_chat = chat.create_chat(&hopper, &[&grace]).await;
    let elsewhere = chat.send(&hopper, other_chat, "elsewhere").await;

    let outsider = mark(&chat, &hopper, chat_id, message.id)
        .await
        .expect_err("hopper is no member");
    assert_eq!(outsider.code(), Code::NotFound);
    assert_eq!(outsider.message(), format!("chat {chat_id} not found"));

    let wrong_chat = mark(&chat, &ada, chat_id, elsewhere.id)
        .await
        .expect_err("a message of another chat");
    assert_eq!(wrong_chat.code(), Code::NotFound);
    assert_eq!(
        wrong_chat.message(),
        format!("message {} not found in chat {chat_id}", elsewhere.id)
    );

    let bad = mark(&chat, &ada, chat_id, 0)
        .await
        .expect_err("no message id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("message_id"), "{}", bad.message());
    assert_eq!(listed(&chat, &grace, chat_id).await.unread_count, 1);
}

#[tokio::test]
async fn concurrent_marks_from_two_devices_end_at_the_furthest() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(chat.send(&ada, chat_id, &format!("message {n}")).await.id);
    }
    let phone = auth.login_again(&grace).await;
    let furthest = *ids.last().expect("messages");

    // Both devices mark every message at once, in opposite orders.
    let forward = ids.iter().map(|&id| mark(&chat, &grace, chat_id, id));
    let backward = ids.iter().rev().map(|&id| mark(&chat, &phone, chat_id, id));
    let outcomes = futures::future::join_all(forward.chain(backward)).await;
    for outcome in outcomes {
        outcome.expect("every mark is accepted");
    }

    assert!(
        seen_by(&chat, &ada, chat_id)
            .await
            .contains(&(grace.id, furthest))
    );
    let listed = listed(&chat, &phone, chat_id).await;
    assert_eq!((listed.unread_count, listed.read_message_id), (0, furthest));
}

/// The read markers a stream passes on within `within`.
async fn markers_within(
    stream: &mut Streaming<pb::ConnectChatResponse>,
    within: Duration,
) -> Vec<pb::ReadMarker> {
    let mut markers = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Some(marker) = item.expect("an event, not an error").read_marker {
            markers.push(marker);
        }
    }
    markers
}

#[tokio::test]
async fn markers_reach_streams_on_every_replica_coalesced_and_never_backwards() {
    let TwoMembers {
        auth,
        chat: first,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), |_| {}).await;
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(first.send(&ada, chat_id, &format!("message {n}")).await.id);
    }
    let mut on_second = connect(&second, &ada, chat_id, None).await;
    let mut own_on_first = connect(&first, &grace, chat_id, None).await;

    // Grace scrolls through the history on the first replica, one mark per
    // message, as fast as the calls go.
    for &id in &ids {
        mark(&first, &grace, chat_id, id).await.expect("marked");
    }
    let heard = markers_within(&mut on_second, Duration::from_secs(2)).await;
    let last = heard.last().expect("a marker reached the other replica");
    assert_eq!(
        (last.chat_id, last.user_id, last.message_id),
        (chat_id, grace.id, ids[29])
    );
    assert!(
        heard.len() < ids.len() / 2,
        "{} events for {} marks: not coalesced",
        heard.len(),
        ids.len()
    );
    assert!(
        heard
            .windows(2)
            .all(|pair| pair[0].message_id < pair[1].message_id),
        "markers went backwards or repeated: {heard:?}"
    );
    // Grace's other devices hear of her own marker too.
    let own = markers_within(&mut own_on_first, Duration::from_millis(500)).await;
    assert_eq!(own.last().map(|marker| marker.message_id), Some(ids[29]));

    // A mark that moves nothing passes nothing on.
    mark(&second, &grace, chat_id, ids[3])
        .await
        .expect("accepted");
    let after = markers_within(&mut on_second, Duration::from_secs(1)).await;
    assert!(
        after.is_empty(),
        "a backwards mark was passed on: {after:?}"
    );
}

#[tokio::test]
async fn a_marker_forged_on_the_bus_holds_no_stream_back() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let first = chat.send(&ada, chat_id, "one").await;
    let mut watching = connect(&chat, &ada, chat_id, None).await;

    // Whoever can notify on the bus claims that grace read up to a message
    // the chat never reaches.
    sqlx::query("select pg_notify('chat_events', $1)")
        .bind(format!(
            "read:{chat_id}:{}:{}:{}",
            grace.id,
            i64::MAX - 1,
            i64::MAX
        ))
        .execute(&chat.db)
        .await
        .expect("notifying");
    let forged = markers_within(&mut watching, Duration::from_secs(1)).await;
    assert!(
        forged.is_empty(),
        "a forged marker was passed on: {forged:?}"
    );

    // Her real marker still reaches the stream.
    mark(&chat, &grace, chat_id, first.id)
        .await
        .expect("marked");
    let heard = markers_within(&mut watching, Duration::from_secs(2)).await;
    assert_eq!(
        heard
            .iter()
            .map(|marker| (marker.user_id, marker.message_id))
            .collect::<Vec<_>>(),
        vec![(grace.id, first.id)]
    );
}

#[tokio::test]
async fn a_replica_that_stops_announces_the_markers_still_waiting_for_their_tick() {
    let TwoMembers {
        auth,
        chat: first,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    let second = TestChat::spawn_on(first.database_url.clone(), &auth.url(), |_| {}).await;
    let message = first.send(&ada, chat_id, "read me").await;
    let mut on_second = connect(&second, &ada, chat_id, None).await;

    // Marked, and the replica stopped before its next marker tick.
    mark(&first, &grace, chat_id, message.id)
        .await
        .expect("marked");
    first.stop().await;

    let heard = markers_within(&mut on_second, Duration::from_secs(2)).await;
    assert_eq!(
        heard
            .iter()
            .map(|marker| (marker.user_id, marker.message_id))
            .collect::<Vec<_>>(),
        vec![(grace.id, message.id)]
    );
}
