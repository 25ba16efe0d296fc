//! `ListMessages` pages through an index, however many messages other
//! chats hold.

use std::time::{Duration, Instant};

use api::chat::v1 as pb;
use tests::fixtures::{TwoMembers, two_members};

#[tokio::test]
async fn a_page_of_history_is_an_index_scan_among_a_million_messages() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;

    // A million messages over a hundred chats, ours among them, written
    // straight into the table (no notifications: nobody is listening).
    let mut tx = chat.db.begin().await.expect("a transaction");
    sqlx::query("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("no triggers");
    sqlx::query("insert into chats (title, created_by) select 'other ' || n, 1 from generate_series(1, 99) n")
        .execute(&mut *tx)
        .await
        .expect("other chats");
    sqlx::query(
        "insert into messages (chat_id, seq, from_user_id, from_username, text)
         select c.id, s, 1, 'someone', 'message ' || s
         from (select id from chats order by id) c, generate_series(1, 10000) s",
    )
    .execute(&mut *tx)
    .await
    .expect("a million messages");
    sqlx::query("update chats set last_seq = 10000")
        .execute(&mut *tx)
        .await
        .expect("sequence numbers");
    tx.commit().await.expect("committing");
    sqlx::query("analyze messages")
        .execute(&chat.db)
        .await
        .expect("analyzing");

    let plan: Vec<String> = sqlx::query_scalar(
        "explain select id, chat_id, seq, from_user_id, from_username, text, created_at from messages
         where chat_id = $1 and id < $2 order by id desc limit $3",
    )
    .bind(chat_id)
    .bind(i64::MAX)
    .bind(51_i64)
    .fetch_all(&chat.db)
    .await
    .expect("the plan");
    let plan = plan.join("\n");
    eprintln!("history page plan:\n{plan}");
    assert!(
        plan.contains("Index Scan") && plan.contains("messages_chat_page_idx"),
        "a page is not read through the index:\n{plan}"
    );
    assert!(!plan.contains("Sort"), "a page sorts the chat:\n{plan}");

    let analyzed: Vec<String> = sqlx::query_scalar(
        "explain (analyze) select id, chat_id, seq, from_user_id, from_username, text, created_at
         from messages where chat_id = $1 and id < $2 order by id desc limit $3",
    )
    .bind(chat_id)
    .bind(i64::MAX)
    .bind(51_i64)
    .fetch_all(&chat.db)
    .await
    .expect("the analyzed plan");
    if let Some(execution) = analyzed
        .iter()
        .find(|line| line.starts_with("Execution Time"))
    {
        eprintln!("history: the page query in the database: {execution}");
    }

    // Twenty pages back through the chat, over gRPC; timed, not asserted.
    // Writing a million rows takes as long as the machine makes it: the
    // pages are asked for with a token minted after it.
    let ada = auth.login_again(&ada).await;
    let mut chats = chat.chats();
    let mut page_token = String::new();
    let mut took = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let page = chats
            .list_messages(ada.request(pb::ListMessagesRequest {
                chat_id,
                page_size: 50,
                page_token: page_token.clone(),
            }))
            .await
            .expect("a page")
            .into_inner();
        took.push(started.elapsed());
        assert_eq!(page.messages.len(), 50);
        page_token = page.next_page_token;
    }
    took.sort();
    eprintln!(
        "history: a page of 50 among 1,000,000 messages: median {:?}, slowest {:?} (over gRPC, debug build)",
        took[took.len() / 2],
        took.last().copied().unwrap_or(Duration::ZERO)
    );
}
