//! A chat's life after it is created: listing a user's chats, reading one,
//! adding and removing members, leaving and renaming, with every
//! permission case; and what a removal does to the removed member's open
//! streams, on every replica.

use std::time::Duration;

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use tests::services::{TestAuth, TestChat, TestUser};
use tonic::Code;

use crate::streams::{connect, end_of, next_message};

/// Ada created a chat with Grace and Linus; Eve is in no chat; the admin
/// is in none either.
struct Team {
    auth: TestAuth,
    chat: TestChat,
    ada: TestUser,
    grace: TestUser,
    linus: TestUser,
    eve: TestUser,
    admin: TestUser,
    chat_id: i64,
}

async fn a_team() -> Team {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let linus = auth.register("linus").await;
    let eve = auth.register("eve").await;
    let admin = auth.admin().await;
    let chat_id = chat.create_chat(&ada, &[&grace, &linus]).await;
    Team {
        auth,
        chat,
        ada,
        grace,
        linus,
        eve,
        admin,
        chat_id,
    }
}

impl Team {
    async fn get(&self, user: &TestUser) -> Result<pb::GetChatResponse, tonic::Status> {
        self.chat
            .chats()
            .get_chat(user.request(pb::GetChatRequest { id: self.chat_id }))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn add(
        &self,
        user: &TestUser,
        names: &[&str],
    ) -> Result<pb::AddMembersResponse, tonic::Status> {
        self.chat
            .chats()
            .add_members(user.request(pb::AddMembersRequest {
                chat_id: self.chat_id,
                usernames: names.iter().map(|name| (*name).to_owned()).collect(),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn remove(
        &self,
        user: &TestUser,
        member: &TestUser,
    ) -> Result<pb::RemoveMemberResponse, tonic::Status> {
        self.chat
            .chats()
            .remove_member(user.request(pb::RemoveMemberRequest {
                chat_id: self.chat_id,
                user_id: member.id,
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn rename(&self, user: &TestUser, title: &str) -> Result<pb::Chat, tonic::Status> {
        self.chat
            .chats()
            .update_chat(user.request(pb::UpdateChatRequest {
                id: self.chat_id,
                title: title.into(),
            }))
            .await
            .map(|response| response.into_inner().chat.expect("the chat"))
    }

    /// The members' ids, in the order they joined.
    async fn members(&self) -> Vec<i64> {
        sqlx::query_scalar(
            "select user_id from chat_members where chat_id = $1 order by joined_at, user_id",
        )
        .bind(self.chat_id)
        .fetch_all(&self.chat.db)
        .await
        .expect("the members")
    }
}

async fn list(
    chat: &TestChat,
    user: &TestUser,
    page_size: u32,
    token: &str,
) -> pb::ListChatsResponse {
    chat.chats()
        .list_chats(user.request(pb::ListChatsRequest {
            page_size,
            page_token: token.into(),
        }))
        .await
        .expect("listing chats")
        .into_inner()
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("the call is refused").code()
}

#[tokio::test]
async fn list_chats_shows_the_callers_chats_most_recent_activity_first_in_pages() {
    let team = a_team().await;
    let (chat, ada, grace) = (&team.chat, &team.ada, &team.grace);
    let quiet = chat.create_chat(grace, &[ada]).await;
    let busy = team.chat_id;
    let newest = chat.create_chat(ada, &[&team.eve]).await;
    // A message makes the first chat the most recent.
    let sent = chat.send(&team.linus, busy, "latest").await;

    let all = list(chat, ada, 0, "").await;
    let ids: Vec<i64> = all.chats.iter().map(|listed| listed.id).collect();
    assert_eq!(ids, [busy, newest, quiet]);
    assert!(all.next_page_token.is_empty());
    let first = &all.chats[0];
    assert_eq!(first.title, "a chat");
    assert_eq!(first.member_count, 3);
    assert_eq!(first.last_message.as_ref(), Some(&sent));
    assert_eq!(first.role, pb::ChatRole::Creator as i32);
    assert_eq!(all.chats[1].member_count, 2);
    assert_eq!(all.chats[1].last_message, None);
    assert_eq!(all.chats[2].role, pb::ChatRole::Member as i32);

    // Pages of one follow the same order, and end.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(chat, ada, 1, &token).await;
        assert!(page.chats.len() <= 1);
        paged.extend(page.chats.iter().map(|listed| listed.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, ids);

    // Only one's own chats; an outsider has none.
    let graces: Vec<i64> = list(chat, grace, 0, "")
        .await
        .chats
        .iter()
        .map(|listed| listed.id)
        .collect();
    assert_eq!(graces, [busy, quiet]);
    let outsider = team.auth.register("turing").await;
    assert!(list(chat, &outsider, 0, "").await.chats.is_empty());

    let foreign = chat
        .chats()
        .list_chats(ada.request(pb::ListChatsRequest {
            page_size: 1,
            page_token: "not-a-token".into(),
        }))
        .await
        .expect_err("a junk page token");
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert!(foreign.message().contains("page_token"), "{foreign:?}");
}

#[tokio::test]
async fn get_chat_shows_members_current_names_to_members_and_admins_only() {
    let team = a_team().await;
    // Names come from auth as they are now, not as they were.
    team.auth
        .users()
        .update(team.grace.request(auth_pb::UpdateRequest {
            id: team.grace.id,
            current_password: team.grace.password.clone(),
            name: Some("grace-hopper".into()),
            ..Default::default()
        }))
        .await
        .expect("renaming grace");

    let seen = team
        .get(&team.linus)
        .await
        .expect("a member reads the chat");
    assert_eq!(seen.role, pb::ChatRole::Member as i32);
    let chat = seen.chat.expect("the chat");
    assert_eq!((chat.id, chat.title.as_str()), (team.chat_id, "a chat"));
    assert_eq!(chat.creator_id, team.ada.id);
    assert!(chat.created_at.is_some());
    let members: Vec<(i64, &str)> = chat
        .members
        .iter()
        .map(|member| (member.user_id, member.username.as_str()))
        .collect();
    assert_eq!(members[0], (team.ada.id, "ada"), "the creator joined first");
    let mut rest = members[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(
        rest,
        [(team.grace.id, "grace-hopper"), (team.linus.id, "linus")]
    );

    let creator = team.get(&team.ada).await.expect("the creator reads it");
    assert_eq!(creator.role, pb::ChatRole::Creator as i32);
    let admin = team.get(&team.admin).await.expect("an admin reads it");
    assert_eq!(admin.role, pb::ChatRole::Unspecified as i32);
    assert_eq!(code(team.get(&team.eve).await), Code::NotFound);
}

#[tokio::test]
async fn the_creator_and_admins_add_members_once_and_no_one_else_may() {
    let team = a_team().await;
    let turing = team.auth.register("turing").await;
    let hopper = team.auth.register("hopper").await;

    // Neither an outsider nor a plain member, and unknown names are named.
    assert_eq!(code(team.add(&team.eve, &["turing"]).await), Code::NotFound);
    assert_eq!(
        code(team.add(&team.grace, &["turing"]).await),
        Code::PermissionDenied
    );
    let unknown = team
        .add(&team.ada, &["turing", "nobody"])
        .await
        .expect_err("an unknown name");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("nobody"), "{unknown:?}");
    assert_eq!(team.members().await.len(), 3, "nothing was added");

    let added = team
        .add(&team.ada, &["TURING", "grace"])
        .await
        .expect("the creator adds");
    assert_eq!(
        added.added_user_ids,
        [turing.id],
        "grace was a member already"
    );
    let again = team
        .add(&team.ada, &["turing"])
        .await
        .expect("adding again is no error");
    assert!(again.added_user_ids.is_empty());
    let by_admin = team
        .add(&team.admin, &["hopper"])
        .await
        .expect("an admin adds");
    assert_eq!(by_admin.added_user_ids, [hopper.id]);

    // A new member reads the history and sends.
    team.chat
        .chats()
        .list_messages(turing.request(pb::ListMessagesRequest {
            chat_id: team.chat_id,
            ..Default::default()
        }))
        .await
        .expect("a new member reads the history");
    team.chat.send(&turing, team.chat_id, "hello all").await;
    let members = team.members().await;
    assert_eq!(members.len(), 5);
    assert_eq!(
        &members[3..],
        [turing.id, hopper.id],
        "in the order they joined"
    );
}

#[tokio::test]
async fn members_leave_the_creator_and_admins_remove_and_no_one_else_may() {
    let team = a_team().await;
    let (ada, grace, linus, eve) = (&team.ada, &team.grace, &team.linus, &team.eve);

    assert_eq!(code(team.remove(eve, grace).await), Code::NotFound);
    assert_eq!(code(team.remove(eve, eve).await), Code::NotFound);
    assert_eq!(
        code(team.remove(grace, linus).await),
        Code::PermissionDenied
    );
    assert_eq!(team.members().await.len(), 3);

    let left = team.remove(grace, grace).await.expect("grace leaves");
    assert!(left.removed && !left.chat_deleted);
    let again = team
        .remove(ada, grace)
        .await
        .expect("removing a non-member");
    assert!(!again.removed, "nothing changed");
    let removed = team
        .remove(&team.admin, linus)
        .await
        .expect("an admin removes");
    assert!(removed.removed);
    assert_eq!(team.members().await, [ada.id]);

    // Gone means gone: no history, no sends, no chat in the list.
    let history = team
        .chat
        .chats()
        .list_messages(linus.request(pb::ListMessagesRequest {
            chat_id: team.chat_id,
            ..Default::default()
        }))
        .await;
    assert_eq!(code(history), Code::NotFound);
    let send = team
        .chat
        .chats()
        .send_message(grace.request(pb::SendMessageRequest {
            chat_id: team.chat_id,
            text: "still here?".into(),
            client_message_id: String::new(),
        }))
        .await;
    assert_eq!(code(send), Code::NotFound);
    assert!(list(&team.chat, grace, 0, "").await.chats.is_empty());
}

#[tokio::test]
async fn when_the_creator_leaves_the_longest_standing_member_takes_over() {
    let team = a_team().await;
    let turing = team.auth.register("turing").await;
    team.add(&team.ada, &["turing"])
        .await
        .expect("adding turing");
    let second = team.members().await[1];

    team.remove(&team.ada, &team.ada)
        .await
        .expect("the creator leaves");
    let chat = team
        .get(&team.linus)
        .await
        .expect("the chat goes on")
        .chat
        .expect("the chat");
    assert_eq!(chat.creator_id, second, "the member who joined next");
    assert_ne!(second, turing.id);
    let new_creator = if second == team.grace.id {
        &team.grace
    } else {
        &team.linus
    };
    team.rename(new_creator, "new hands")
        .await
        .expect("the new creator renames");
    assert_eq!(code(team.rename(&team.ada, "back").await), Code::NotFound);
}

#[tokio::test]
async fn the_last_member_leaving_deletes_the_chat() {
    let team = a_team().await;
    let mut stream = connect(&team.chat, &team.ada, team.chat_id, None).await;
    team.remove(&team.ada, &team.grace)
        .await
        .expect("removing grace");
    team.remove(&team.ada, &team.linus)
        .await
        .expect("removing linus");
    let last = team
        .remove(&team.ada, &team.ada)
        .await
        .expect("the last leaves");
    assert!(last.removed && last.chat_deleted);
    let chats: i64 = sqlx::query_scalar("select count(*) from chats where id = $1")
        .bind(team.chat_id)
        .fetch_one(&team.chat.db)
        .await
        .expect("counting chats");
    assert_eq!(chats, 0);
    let end = end_of(&mut stream).await.expect("the stream ends");
    assert_eq!(end.code(), Code::NotFound);
    assert_eq!(code(team.get(&team.admin).await), Code::NotFound);
}

#[tokio::test]
async fn the_creator_and_admins_rename_a_chat_and_no_one_else_may() {
    let team = a_team().await;
    assert_eq!(code(team.rename(&team.eve, "mine").await), Code::NotFound);
    assert_eq!(
        code(team.rename(&team.grace, "mine").await),
        Code::PermissionDenied
    );
    let blank = team
        .rename(&team.ada, " ")
        .await
        .expect_err("a blank title");
    assert_eq!(blank.code(), Code::InvalidArgument);
    assert!(blank.message().contains("title"), "{blank:?}");

    let renamed = team.rename(&team.ada, "Engines").await.expect("renaming");
    assert_eq!(renamed.title, "Engines");
    assert_eq!(renamed.members.len(), 3);
    team.rename(&team.ada, "Engines")
        .await
        .expect("the same title again is no error");
    let by_admin = team
        .rename(&team.admin, "Analytical")
        .await
        .expect("an admin renames");
    assert_eq!(by_admin.title, "Analytical");
    let listed = list(&team.chat, &team.grace, 0, "").await;
    assert_eq!(listed.chats[0].title, "Analytical");
}

#[tokio::test]
async fn a_removed_members_streams_end_as_a_non_members_request_would() {
    let team = a_team().await;
    let mut graces = connect(&team.chat, &team.grace, team.chat_id, None).await;
    let mut linus = connect(&team.chat, &team.linus, team.chat_id, None).await;

    team.remove(&team.ada, &team.grace)
        .await
        .expect("removing grace");
    let end = end_of(&mut graces).await.expect("grace's stream ends");
    assert_eq!(end.code(), Code::NotFound);
    assert_eq!(end.message(), format!("chat {} not found", team.chat_id));

    // The others' streams go on.
    let sent = team
        .chat
        .send(&team.ada, team.chat_id, "without grace")
        .await;
    assert_eq!(next_message(&mut linus).await, sent);
    let reopened = team
        .chat
        .chats()
        .connect_chat(team.grace.request(pb::ConnectChatRequest {
            chat_id: team.chat_id,
            since_message_id: Some(0),
        }))
        .await;
    assert_eq!(code(reopened), Code::NotFound);
}

#[tokio::test]
async fn a_removal_through_another_replica_ends_streams_here() {
    let team = a_team().await;
    // The poll waits an hour: only the announcement can end the stream.
    let second = TestChat::spawn_on(team.chat.database_url.clone(), &team.auth.url(), |config| {
        config.fanout_poll = Duration::from_secs(3600);
    })
    .await;
    let mut on_second = connect(&second, &team.grace, team.chat_id, None).await;
    team.remove(&team.ada, &team.grace)
        .await
        .expect("removing grace");
    let end = end_of(&mut on_second).await.expect("the stream ends");
    assert_eq!(end.code(), Code::NotFound);
}

/// The announcement of a removal can be lost, as a replica can die right
/// after the commit. The poll finds the change of members.
#[tokio::test]
async fn a_removal_never_announced_still_ends_the_removed_members_streams() {
    let team = a_team().await;
    let mut graces = connect(&team.chat, &team.grace, team.chat_id, None).await;
    let mut linus = connect(&team.chat, &team.linus, team.chat_id, None).await;
    // Wait for a poll to have seen the chat as it is.
    tokio::time::sleep(chat::config::DEFAULT_FANOUT_POLL * 2).await;

    // The removal's transaction, as a replica commits it, and no announcement.
    sqlx::query(
        "with gone as (delete from chat_members where chat_id = $1 and user_id = $2 returning 1)
         update chats set members_version = members_version + 1
         where id = $1 and exists (select 1 from gone)",
    )
    .bind(team.chat_id)
    .bind(team.grace.id)
    .execute(&team.chat.db)
    .await
    .expect("removing grace directly");

    let removed = std::time::Instant::now();
    let end = end_of(&mut graces).await.expect("grace's stream ends");
    assert_eq!(end.code(), Code::NotFound);
    assert!(
        removed.elapsed() < chat::config::DEFAULT_FANOUT_POLL * 3,
        "ended after {:?}",
        removed.elapsed()
    );
    let sent = team.chat.send(&team.ada, team.chat_id, "still on").await;
    assert_eq!(
        next_message(&mut linus).await,
        sent,
        "members' streams go on"
    );
}

/// Waits until `count` statements on the chat database wait for a lock.
async fn waiting_for_locks(chat: &TestChat, count: i64) {
    let waiting = tests::services::eventually(|| async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity
             where wait_event_type = 'Lock' and datname = current_database()",
        )
        .fetch_one(&chat.db)
        .await
        .is_ok_and(|waiting| waiting >= count)
    })
    .await;
    assert!(
        waiting,
        "{count} statements never waited for the chat's lock"
    );
}

/// A removal as RemoveMember makes it, held open until committed.
async fn removal_in_progress(
    team: &Team,
    member: &TestUser,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = team.chat.db.begin().await.expect("a transaction");
    sqlx::query("select 1 from chats where id = $1 for update")
        .bind(team.chat_id)
        .execute(&mut *tx)
        .await
        .expect("locking the chat");
    sqlx::query("delete from chat_members where chat_id = $1 and user_id = $2")
        .bind(team.chat_id)
        .bind(member.id)
        .execute(&mut *tx)
        .await
        .expect("removing");
    sqlx::query("update chats set members_version = members_version + 1 where id = $1")
        .bind(team.chat_id)
        .execute(&mut *tx)
        .await
        .expect("raising the members version");
    tx
}

async fn messages_in(team: &Team) -> i64 {
    sqlx::query_scalar("select count(*) from messages where chat_id = $1")
        .bind(team.chat_id)
        .fetch_one(&team.chat.db)
        .await
        .expect("counting messages")
}

/// A send that starts while its sender is being removed waits for the
/// chat's lock, and must then see the removal: a statement reads as of
/// when it started, which was before.
#[tokio::test]
async fn a_send_that_waited_for_its_senders_removal_stores_nothing() {
    let team = a_team().await;
    let removal = removal_in_progress(&team, &team.grace).await;
    let send = tokio::spawn({
        let (mut chats, request) = (
            team.chat.chats(),
            team.grace.request(pb::SendMessageRequest {
                chat_id: team.chat_id,
                text: "sent while leaving".into(),
                client_message_id: String::new(),
            }),
        );
        async move { chats.send_message(request).await }
    });
    waiting_for_locks(&team.chat, 1).await;
    removal.commit().await.expect("committing the removal");

    let sent = send.await.expect("the send finished");
    assert_eq!(code(sent), Code::NotFound);
    assert_eq!(
        messages_in(&team).await,
        0,
        "a non-member's message was stored"
    );
}

/// The same wait for another member's removal must not refuse the send.
#[tokio::test]
async fn a_send_that_waited_for_another_members_removal_is_stored_once() {
    let team = a_team().await;
    let removal = removal_in_progress(&team, &team.linus).await;
    let send = tokio::spawn({
        let (mut chats, request) = (
            team.chat.chats(),
            team.grace.request(pb::SendMessageRequest {
                chat_id: team.chat_id,
                text: "still here".into(),
                client_message_id: String::new(),
            }),
        );
        async move { chats.send_message(request).await }
    });
    waiting_for_locks(&team.chat, 1).await;
    removal.commit().await.expect("committing the removal");

    send.await
        .expect("the send finished")
        .expect("a member's send goes through");
    assert_eq!(messages_in(&team).await, 1);
}

/// Two members leave a chat of two at once: one of them is the last, and
/// the chat goes; no chat is left without members.
#[tokio::test]
async fn the_last_two_members_leaving_at_once_delete_the_chat() {
    let team = a_team().await;
    team.remove(&team.ada, &team.linus)
        .await
        .expect("removing linus");
    let mut lock = team.chat.db.begin().await.expect("a transaction");
    sqlx::query("select 1 from chats where id = $1 for update")
        .bind(team.chat_id)
        .execute(&mut *lock)
        .await
        .expect("locking the chat");
    let leave = |user: &TestUser| {
        let (mut chats, request) = (
            team.chat.chats(),
            user.request(pb::RemoveMemberRequest {
                chat_id: team.chat_id,
                user_id: user.id,
            }),
        );
        tokio::spawn(async move { chats.remove_member(request).await })
    };
    let (ada, grace) = (leave(&team.ada), leave(&team.grace));
    waiting_for_locks(&team.chat, 2).await;
    lock.commit().await.expect("releasing the chat");

    let answers = [
        ada.await
            .expect("ada's call")
            .expect("ada leaves")
            .into_inner(),
        grace
            .await
            .expect("grace's call")
            .expect("grace leaves")
            .into_inner(),
    ];
    assert!(answers.iter().all(|answer| answer.removed));
    assert_eq!(
        answers.iter().filter(|answer| answer.chat_deleted).count(),
        1,
        "{answers:?}"
    );
    let chats: i64 = sqlx::query_scalar("select count(*) from chats")
        .fetch_one(&team.chat.db)
        .await
        .expect("counting chats");
    assert_eq!(chats, 0, "a chat without members was left");
}

/// A removal whose announcement never comes, and a message sent after it
/// through the replica where the removed member's stream is: the stream
/// ends instead of passing the message on.
#[tokio::test]
async fn a_message_sent_after_a_removal_never_reaches_the_removed_members_stream() {
    let team = a_team().await;
    let second = TestChat::spawn_on(team.chat.database_url.clone(), &team.auth.url(), |config| {
        config.fanout_poll = Duration::from_secs(3600);
    })
    .await;
    let mut graces = connect(&second, &team.grace, team.chat_id, None).await;
    let mut linus = connect(&second, &team.linus, team.chat_id, None).await;
    removal_in_progress(&team, &team.grace)
        .await
        .commit()
        .await
        .expect("removing grace without a word");

    let sent = second
        .send(&team.ada, team.chat_id, "after grace left")
        .await;
    assert_eq!(next_message(&mut linus).await, sent);
    let end = end_of(&mut graces).await.expect("grace's stream ends");
    assert_eq!(end.code(), Code::NotFound);
}

/// The value of chat's counter `name`.
async fn counter(chat: &TestChat, name: &str) -> f64 {
    chat.metric(name)
        .await
        .unwrap_or_else(|| panic!("no {name} in chat's metrics"))
}

/// Every stream of a chat must learn whether its user is still a member
/// when the members change; they share one read of the members, however
/// many they are, so that removals in a busy chat do not flood the
/// database.
#[tokio::test]
async fn a_chat_s_streams_share_one_read_of_its_members_per_change() {
    let team = a_team().await;
    let mut streams = Vec::new();
    for user in [&team.ada, &team.linus] {
        for _ in 0..5 {
            streams.push(connect(&team.chat, user, team.chat_id, None).await);
        }
    }
    tokio::time::sleep(chat::config::DEFAULT_FANOUT_POLL * 2).await;
    let before = counter(&team.chat, "chat_membership_reads_total").await;

    // Unannounced, so only the poll tells the streams.
    removal_in_progress(&team, &team.grace)
        .await
        .commit()
        .await
        .expect("removing grace without a word");
    tokio::time::sleep(chat::config::DEFAULT_FANOUT_POLL * 3).await;
    let sent = team
        .chat
        .send(&team.ada, team.chat_id, "all still here")
        .await;
    for stream in &mut streams {
        assert_eq!(next_message(stream).await, sent, "a member's stream ended");
    }
    let reads = counter(&team.chat, "chat_membership_reads_total").await - before;
    assert_eq!(reads, 1.0, "ten streams, one change of members");
}

/// A chat holds at most 1,000 members, so that one `GetChat` resolves
/// every name in one call to auth; an addition past that stores nothing.
#[tokio::test]
async fn a_chat_holds_at_most_a_thousand_members() {
    let team = a_team().await;
    let turing = team.auth.register("turing").await;
    // Members known to chat only, up to the limit: 3 + 997.
    sqlx::query(
        "insert into chat_members (chat_id, user_id)
         select $1, 1000000 + n from generate_series(1, 997) as n",
    )
    .bind(team.chat_id)
    .execute(&team.chat.db)
    .await
    .expect("filling the chat");

    let refused = team
        .add(&team.ada, &["turing"])
        .await
        .expect_err("one past the limit");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("1000"), "{refused:?}");
    assert_eq!(team.members().await.len(), 1000);
    assert!(!team.members().await.contains(&turing.id));
}
