//! Group commit: concurrent sends share transactions, and each still comes
//! to what it would alone. Sequence numbers stay gapless and in id order,
//! a key given twice stores one message, a key reused for other text is
//! refused for that send only, a sender who is not a member is refused
//! alone, and streams see every message once, in order.

use std::collections::{BTreeMap, HashMap};

use api::chat::v1 as pb;
use tests::services::{TestAuth, TestChat, TestUser};
use tokio::task::JoinSet;
use tonic::Code;

use crate::streams::{connect, next_message};

/// What a send came to.
type Answer = Result<pb::Message, tonic::Status>;

/// One send of the burst, and what it is.
#[derive(Clone)]
struct Planned {
    chat: usize,
    by: usize,
    text: String,
    key: String,
}

async fn send(
    chat: &TestChat,
    user: &TestUser,
    chat_id: i64,
    planned: &Planned,
) -> Result<pb::Message, tonic::Status> {
    chat.chats()
        .send_message(user.request(pb::SendMessageRequest {
            chat_id,
            text: planned.text.clone(),
            client_message_id: planned.key.clone(),
        }))
        .await
        .map(|answer| answer.into_inner().message.expect("a message"))
}

#[tokio::test]
async fn a_burst_of_sends_shares_commits_and_each_send_keeps_its_own_outcome() {
    let auth = TestAuth::spawn().await;
    // Many sends at once from two people: past their send quotas.
    let chat = TestChat::spawn_with(&auth, |config| config.quotas.sends = None).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let mallory = auth.register("mallory").await;
    let mut chats = Vec::new();
    for _ in 0..4 {
        chats.push(chat.create_chat(&ada, &[&grace]).await);
    }
    let mut watching = connect(&chat, &grace, chats[0], None).await;

    // 256 sends: every tenth sent twice with one key (one message), every
    // tenth plus five sent twice with one key and other texts (one
    // refused), and 40 by mallory, who is in none of the chats.
    let users = [ada.clone(), grace.clone(), mallory.clone()];
    let mut plan = Vec::new();
    for j in 0..180 {
        let base = Planned {
            chat: j % 4,
            by: (j / 4) % 2,
            text: format!("message {j}"),
            key: String::new(),
        };
        match j % 10 {
            0 => {
                let keyed = Planned {
                    key: format!("twice-{j}"),
                    ..base
                };
                plan.push(keyed.clone());
                plan.push(keyed);
            }
            5 => {
                let keyed = Planned {
                    key: format!("clash-{j}"),
                    ..base
                };
                plan.push(Planned {
                    text: format!("{} (other)", keyed.text),
                    ..keyed.clone()
                });
                plan.push(keyed);
            }
            _ => plan.push(base),
        }
    }
    for j in 0..40 {
        plan.push(Planned {
            chat: j % 4,
            by: 2,
            text: format!("intruding {j}"),
            key: String::new(),
        });
    }
    let sent_before = chat.metric("chat_send_commits_total").await.unwrap_or(0.0);
    let stored_before = chat.metric("chat_messages_sent_total").await.unwrap_or(0.0);
    let mut burst = JoinSet::new();
    for (at, planned) in plan.iter().cloned().enumerate() {
        let (chat_handle, user, chat_id) =
            (chat.chats(), users[planned.by].clone(), chats[planned.chat]);
        burst.spawn(async move {
            let mut client = chat_handle;
            let answer = client
                .send_message(user.request(pb::SendMessageRequest {
                    chat_id,
                    text: planned.text.clone(),
                    client_message_id: planned.key.clone(),
                }))
                .await
                .map(|answer| answer.into_inner().message.expect("a message"));
            (at, answer)
        });
    }
    let mut answers: Vec<Option<Answer>> = vec![None; plan.len()];
    while let Some(done) = burst.join_next().await {
        let (at, answer) = done.expect("a send task");
        answers[at] = Some(answer);
    }
    let answers: Vec<Answer> = answers.into_iter().map(|a| a.expect("answered")).collect();

    // Each send's own outcome.
    let mut by_key: HashMap<(usize, usize, String), Vec<&Answer>> = HashMap::new();
    for (planned, answer) in plan.iter().zip(&answers) {
        if planned.by == 2 {
            let status = answer.as_ref().expect_err("mallory is no member");
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
        } else if planned.key.is_empty() {
            let message = answer
                .as_ref()
                .unwrap_or_else(|status| panic!("{status:?}"));
            assert_eq!(message.text, planned.text);
        } else {
            by_key
                .entry((planned.chat, planned.by, planned.key.clone()))
                .or_default()
                .push(answer);
        }
    }
    for ((_, _, key), pair) in &by_key {
        assert_eq!(pair.len(), 2, "{key}");
        if key.starts_with("twice-") {
            let (first, second) = (
                pair[0].as_ref().expect("stored"),
                pair[1].as_ref().expect("the same message"),
            );
            assert_eq!(first.id, second.id, "{key} stored twice");
        } else {
            let refused: Vec<_> = pair.iter().filter_map(|a| a.as_ref().err()).collect();
            assert_eq!(refused.len(), 1, "{key}: {pair:?}");
            assert_eq!(refused[0].code(), Code::AlreadyExists, "{key}");
        }
    }

    // Per chat: sequence numbers 1..n without a gap, ids rising with them,
    // and one row per stored send.
    let mut stored_per_chat: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    let rows: Vec<(i64, i64, i64)> =
        sqlx::query_as("select chat_id, seq, id from messages order by chat_id, seq")
            .fetch_all(&chat.db)
            .await
            .expect("the messages");
    for (chat_id, seq, id) in rows {
        stored_per_chat.entry(chat_id).or_default().push((seq, id));
    }
    let total: usize = stored_per_chat.values().map(Vec::len).sum();
    assert_eq!(total, 180, "one row per planned message");
    for (chat_id, rows) in &stored_per_chat {
        let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=rows.len() as i64).collect::<Vec<_>>(),
            "chat {chat_id}"
        );
        assert!(
            rows.windows(2).all(|pair| pair[0].1 < pair[1].1),
            "ids fall with sequence in chat {chat_id}: {rows:?}"
        );
    }

    // Every stored message counted once, whatever its sender waited for.
    let stored = chat.metric("chat_messages_sent_total").await.unwrap_or(0.0) - stored_before;
    assert_eq!(stored, 180.0, "messages counted as stored");

    // Batches formed: fewer commits than sends.
    let commits = chat.metric("chat_send_commits_total").await.unwrap_or(0.0) - sent_before;
    assert!(commits < 180.0, "{commits} commits for 180 stored sends");
    let batches = chat
        .metric("chat_send_batch_size_count")
        .await
        .unwrap_or(0.0);
    let sends = chat.metric("chat_send_batch_size_sum").await.unwrap_or(0.0);
    assert!(sends > batches, "no batch held more than one send");
    // ... and each was stored as a batch: none fell back to one by one,
    // which would hide a batch's mistakes behind the single sends' care.
    let split = chat.metric("chat_send_batches_split_total").await;
    assert_eq!(split, Some(0.0), "batches were refused and split");
    println!("{sends} sends in {batches} batches, {commits} commits for 180 stored");

    // The stream saw chat 0's messages once each, in order.
    let in_first = stored_per_chat.get(&chats[0]).map_or(0, Vec::len);
    let mut seen = Vec::new();
    for _ in 0..in_first {
        seen.push(next_message(&mut watching).await.id);
    }
    let ids: Vec<i64> = stored_per_chat[&chats[0]]
        .iter()
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(seen, ids, "the stream's order is the chat's");

    // And alone, a send still stores and answers as before.
    let alone = send(
        &chat,
        &ada,
        chats[1],
        &Planned {
            chat: 1,
            by: 0,
            text: "after the burst".into(),
            key: "after".into(),
        },
    )
    .await
    .expect("a lone send");
    assert_eq!(alone.text, "after the burst");
}

#[tokio::test]
async fn a_chat_held_by_another_transaction_holds_up_only_its_own_sends() {
    let auth = TestAuth::spawn().await;
    // One writer: if it waited for the busy chat, nothing else would go.
    let chat = TestChat::spawn_with(&auth, |config| {
        config.quotas.sends = None;
        config.group_commit.writers = 1;
    })
    .await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let busy = chat.create_chat(&ada, &[&grace]).await;
    let free = chat.create_chat(&ada, &[&grace]).await;

    // Another transaction holds the busy chat's row, as a long deletion
    // would.
    let mut holder = chat.db.begin().await.expect("a transaction");
    sqlx::query("select id from chats where id = $1 for update")
        .bind(busy)
        .execute(&mut *holder)
        .await
        .expect("holding the chat");
    let waiting: Vec<_> = (0..4)
        .map(|n| {
            let (mut client, request) = (
                chat.chats(),
                ada.request(pb::SendMessageRequest {
                    chat_id: busy,
                    text: format!("waiting {n}"),
                    client_message_id: String::new(),
                }),
            );
            tokio::spawn(async move { client.send_message(request).await })
        })
        .collect();
    // Sends elsewhere go on meanwhile, more than the writers could take
    // if the busy chat's sends held them.
    let planned = Planned {
        chat: 0,
        by: 0,
        text: String::new(),
        key: String::new(),
    };
    for n in 0..20 {
        let text = format!("elsewhere {n}");
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            send(
                &chat,
                &grace,
                free,
                &Planned {
                    text: text.clone(),
                    ..planned.clone()
                },
            ),
        )
        .await
        .expect("a send to another chat is not held up")
        .expect("stored");
    }
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "a send went through a held chat"
    );
    holder.commit().await.expect("letting go");
    for task in waiting {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the waiting sends finish once the chat is free")
            .expect("a task")
            .expect("stored")
            .into_inner()
            .message
            .expect("a message");
        assert!(message.text.starts_with("waiting"));
    }
    let seqs: Vec<i64> =
        sqlx::query_scalar("select seq from messages where chat_id = $1 order by seq")
            .bind(busy)
            .fetch_all(&chat.db)
            .await
            .expect("the busy chat's messages");
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}
