//! `chat.v1.ChatService`: chats, membership and messages, and the access
//! check through auth in front of every call.

use std::time::Duration;

use api::auth::v1 as auth_pb;
use api::chat::v1 as pb;
use serde_json::json;
use tests::fixtures::{TwoMembers, two_members};
use tests::services::{TestAuth, TestChat, with_token};
use tests::snapshot;
use tokio_stream::StreamExt as _;
use tonic::Code;

fn send(chat_id: i64, text: &str, client_message_id: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        chat_id,
        text: text.into(),
        client_message_id: client_message_id.into(),
    }
}

fn message_json(message: &pb::Message) -> serde_json::Value {
    json!({
        "id": message.id,
        "chat_id": message.chat_id,
        "from_user_id": message.from_user_id,
        "from_username": message.from_username,
        "text": message.text,
        "created_at": snapshot::timestamp(&message.created_at),
    })
}

/// Every RPC of ChatService, called with `request` as the template for
/// its metadata; the status each one ends with.
async fn call_every_rpc(chat: &TestChat, token: Option<&str>) -> serde_json::Value {
    fn wrap<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        match token {
            Some(token) => with_token(message, token),
            None => tonic::Request::new(message),
        }
    }
    let mut chats = chat.chats();
    let create = chats
        .create(wrap(
            pb::CreateRequest {
                usernames: vec!["x".into()],
                title: "t".into(),
            },
            token,
        ))
        .await
        .expect_err("Create");
    let delete = chats
        .delete(wrap(pb::DeleteRequest { id: 1 }, token))
        .await
        .expect_err("Delete");
    let send = chats
        .send_message(wrap(send(1, "hi", ""), token))
        .await
        .expect_err("SendMessage");
    let list = chats
        .list_messages(wrap(
            pb::ListMessagesRequest {
                chat_id: 1,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect_err("ListMessages");
    let connect = chats
        .connect_chat(wrap(
            pb::ConnectChatRequest {
                chat_id: 1,
                since_message_id: None,
            },
            token,
        ))
        .await
        .expect_err("ConnectChat");
    let list_chats = chats
        .list_chats(wrap(pb::ListChatsRequest::default(), token))
        .await
        .expect_err("ListChats");
    let get_chat = chats
        .get_chat(wrap(pb::GetChatRequest { id: 1 }, token))
        .await
        .expect_err("GetChat");
    let add_members = chats
        .add_members(wrap(
            pb::AddMembersRequest {
                chat_id: 1,
                usernames: vec!["x".into()],
            },
            token,
        ))
        .await
        .expect_err("AddMembers");
    let remove_member = chats
        .remove_member(wrap(
            pb::RemoveMemberRequest {
                chat_id: 1,
                user_id: 1,
            },
            token,
        ))
        .await
        .expect_err("RemoveMember");
    let update_chat = chats
        .update_chat(wrap(
            pb::UpdateChatRequest {
                id: 1,
                title: "t".into(),
            },
            token,
        ))
        .await
        .expect_err("UpdateChat");
    let mark_read = chats
        .mark_read(wrap(
            pb::MarkReadRequest {
                chat_id: 1,
                message_id: 1,
            },
            token,
        ))
        .await
        .expect_err("MarkRead");
    let set_typing = chats
        .set_typing(wrap(pb::SetTypingRequest { chat_id: 1 }, token))
        .await
        .expect_err("SetTyping");
    json!({
        "Create": snapshot::status(&create),
        "Delete": snapshot::status(&delete),
        "SendMessage": snapshot::status(&send),
        "ListMessages": snapshot::status(&list),
        "ConnectChat": snapshot::status(&connect),
        "ListChats": snapshot::status(&list_chats),
        "GetChat": snapshot::status(&get_chat),
        "AddMembers": snapshot::status(&add_members),
        "RemoveMember": snapshot::status(&remove_member),
        "UpdateChat": snapshot::status(&update_chat),
        "MarkRead": snapshot::status(&mark_read),
        "SetTyping": snapshot::status(&set_typing),
    })
}

#[tokio::test]
async fn a_chat_has_its_creator_and_the_named_users_as_members() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let eve = auth.register("eve").await;

    let chat_id = chat
        .chats()
        .create(ada.request(pb::CreateRequest {
            usernames: vec!["GRACE".into()],
            title: "Engines".into(),
        }))
        .await
        .expect("creating a chat")
        .into_inner()
        .id;

    let mut members: Vec<i64> =
        sqlx::query_scalar("select user_id from chat_members where chat_id = $1 order by user_id")
            .bind(chat_id)
            .fetch_all(&chat.db)
            .await
            .expect("the members");
    members.sort_unstable();
    assert_eq!(members, [ada.id, grace.id]);
    chat.send(&grace, chat_id, "hello").await;
    let outsider = chat
        .chats()
        .send_message(eve.request(send(chat_id, "hi", "")))
        .await
        .expect_err("a non-member");
    assert_eq!(outsider.code(), Code::NotFound);
}

#[tokio::test]
async fn an_unknown_username_is_not_found_and_named() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    auth.register("grace").await;

    let status = chat
        .chats()
        .create(ada.request(pb::CreateRequest {
            usernames: vec!["grace".into(), "nobody".into()],
            title: "t".into(),
        }))
        .await
        .expect_err("an unknown user");

    insta::assert_json_snapshot!(snapshot::status(&status));
    let chats: i64 = sqlx::query_scalar("select count(*) from chats")
        .fetch_one(&chat.db)
        .await
        .expect("count");
    assert_eq!(chats, 0);
}

#[tokio::test]
async fn create_validates_its_input() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let create = |usernames: Vec<&str>, title: &str| {
        ada.request(pb::CreateRequest {
            usernames: usernames.into_iter().map(str::to_owned).collect(),
            title: title.into(),
        })
    };
    let eleven: Vec<&str> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"].to_vec();

    let cases = [
        ("no usernames", create(vec![], "t")),
        ("eleven usernames", create(eleven, "t")),
        ("a name twice", create(vec!["grace", "grace"], "t")),
        ("an empty name", create(vec![""], "t")),
        ("no title", create(vec!["grace"], "")),
        ("a blank title", create(vec!["grace"], "   ")),
    ];
    let mut outcomes = serde_json::Map::new();
    for (case, request) in cases {
        let status = chat.chats().create(request).await.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
        outcomes.insert(case.into(), snapshot::status(&status));
    }
    insta::assert_json_snapshot!(outcomes);
}

#[tokio::test]
async fn every_rpc_refuses_missing_garbage_and_expired_tokens() {
    let auth =
        TestAuth::spawn_with(|config| config.tokens.access_ttl = Duration::from_secs(1)).await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    insta::assert_json_snapshot!(json!({
        "missing": call_every_rpc(&chat, None).await,
        "garbage": call_every_rpc(&chat, Some("garbage")).await,
        "expired": call_every_rpc(&chat, Some(&ada.access_token)).await,
    }));
}

#[tokio::test]
async fn a_deleted_users_token_is_refused_at_once() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;

    auth.users()
        .delete(ada.request(auth_pb::DeleteRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            ..Default::default()
        }))
        .await
        .expect("deleting ada");

    let status = chat
        .chats()
        .send_message(ada.request(send(chat_id, "still here?", "")))
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "access token has been revoked");
}

#[tokio::test]
async fn a_role_without_a_rule_is_denied_as_auth_says() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    sqlx::query("delete from access_rules where endpoint = '/chat.v1.ChatService/SendMessage' and role = 'user'")
        .execute(&auth.db)
        .await
        .expect("removing the rule");

    let denied = tests::services::eventually(|| {
        let mut chats = chat.chats();
        let request = ada.request(send(chat_id, "hi", ""));
        async move {
            chats
                .send_message(request)
                .await
                .is_err_and(|status| status.code() == Code::PermissionDenied)
        }
    })
    .await;
    assert!(denied, "a user may still send without a rule");
    let status = chat
        .chats()
        .send_message(ada.request(send(chat_id, "hi", "")))
        .await
        .expect_err("denied");
    insta::assert_json_snapshot!(snapshot::status(&status));
}

#[tokio::test]
async fn with_auth_down_every_call_is_unavailable() {
    let TwoMembers {
        auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;

    auth.stop().await;

    let send = chat
        .chats()
        .send_message(ada.request(send(chat_id, "hi", "")))
        .await
        .expect_err("auth is down");
    let connect = chat
        .chats()
        .connect_chat(ada.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: None,
        }))
        .await
        .expect_err("auth is down");
    assert_eq!(send.code(), Code::Unavailable);
    assert_eq!(connect.code(), Code::Unavailable);
    insta::assert_json_snapshot!(snapshot::status(&send));
    let stored: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&chat.db)
        .await
        .expect("count");
    assert_eq!(stored, 0, "a message got in unchecked");
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    auth.stop().await;
    let health = tonic_health::pb::health_client::HealthClient::new(chat.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "chat.v1.ChatService".into(),
        })
        .await
        .expect("health without a token, even with auth down")
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn non_members_cannot_tell_a_chat_from_no_chat() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let eve = auth.register("eve").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;

    let mut outcomes = serde_json::Map::new();
    for (case, id) in [("existing chat", chat_id), ("no such chat", chat_id + 1000)] {
        let mut chats = chat.chats();
        let send = chats
            .send_message(eve.request(send(id, "hi", "")))
            .await
            .expect_err("send");
        let list = chats
            .list_messages(eve.request(pb::ListMessagesRequest {
                chat_id: id,
                ..Default::default()
            }))
            .await
            .expect_err("list");
        let connect = chats
            .connect_chat(eve.request(pb::ConnectChatRequest {
                chat_id: id,
                since_message_id: None,
            }))
            .await
            .expect_err("connect");
        let delete = chats
            .delete(eve.request(pb::DeleteRequest { id }))
            .await
            .expect_err("delete");
        for status in [&send, &list, &connect, &delete] {
            assert_eq!(status.code(), Code::NotFound, "{case}: {status:?}");
        }
        outcomes.insert(
            case.into(),
            json!([
                send.code() as i32,
                list.code() as i32,
                connect.code() as i32,
                delete.code() as i32
            ]),
        );
    }
    assert_eq!(outcomes["existing chat"], outcomes["no such chat"]);
}

#[tokio::test]
async fn only_the_creator_or_an_admin_deletes_a_chat() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let admin = auth.admin().await;
    let first = chat.create_chat(&ada, &[&grace]).await;
    let second = chat.create_chat(&ada, &[&grace]).await;
    chat.send(&grace, first, "soon gone").await;

    let by_member = chat
        .chats()
        .delete(grace.request(pb::DeleteRequest { id: first }))
        .await
        .expect_err("a member");
    assert_eq!(by_member.code(), Code::PermissionDenied);
    insta::assert_json_snapshot!(snapshot::status(&by_member));

    chat.chats()
        .delete(ada.request(pb::DeleteRequest { id: first }))
        .await
        .expect("the creator");
    chat.chats()
        .delete(admin.request(pb::DeleteRequest { id: second }))
        .await
        .expect("an admin, not a member");

    let left: i64 = sqlx::query_scalar("select (select count(*) from chats) + (select count(*) from messages) + (select count(*) from chat_members)")
        .fetch_one(&chat.db)
        .await
        .expect("count");
    assert_eq!(left, 0, "a deleted chat left rows behind");
    let gone = chat
        .chats()
        .delete(admin.request(pb::DeleteRequest { id: first }))
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_message_is_from_the_caller_whatever_the_request_says() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada: _,
        grace,
        chat_id,
    } = two_members().await;

    let message = chat.send(&grace, chat_id, "hello, ada").await;

    assert_eq!(
        (message.from_user_id, message.from_username.as_str()),
        (grace.id, "grace")
    );
    insta::assert_json_snapshot!(message_json(&message), {
        ".id" => "[id]", ".chat_id" => "[id]", ".from_user_id" => "[id]", ".created_at" => "[timestamp]"
    });
}

#[tokio::test]
async fn message_input_is_validated() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    let cases = [
        ("empty text", send(chat_id, "", "")),
        ("blank text", send(chat_id, " \n ", "")),
        ("long text", send(chat_id, &"x".repeat(4097), "")),
        ("chat id 0", send(0, "hi", "")),
        (
            "long client message id",
            send(chat_id, "hi", &"k".repeat(65)),
        ),
    ];
    let mut outcomes = serde_json::Map::new();
    for (case, request) in cases {
        let status = chat
            .chats()
            .send_message(ada.request(request))
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
        outcomes.insert(case.into(), snapshot::status(&status));
    }
    insta::assert_json_snapshot!(outcomes);
    chat.send(&ada, chat_id, &"x".repeat(4096)).await;
}

#[tokio::test]
async fn a_retried_send_returns_the_first_message_and_stores_nothing_new() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;

    let first = chat
        .chats()
        .send_message(ada.request(send(chat_id, "once", "key-1")))
        .await
        .expect("first");
    let retry = chat
        .chats()
        .send_message(ada.request(send(chat_id, "once", "key-1")))
        .await
        .expect("retry");
    let other_sender = chat
        .chats()
        .send_message(grace.request(send(chat_id, "once", "key-1")))
        .await
        .expect("grace");

    assert_eq!(first.get_ref().message, retry.get_ref().message);
    assert_ne!(first.get_ref().message, other_sender.get_ref().message);
    let stored: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&chat.db)
        .await
        .expect("count");
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn a_key_reused_for_other_content_is_refused_naming_the_key() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    chat.chats()
        .send_message(ada.request(send(chat_id, "pay 10", "key-1")))
        .await
        .expect("first");

    let reused = chat
        .chats()
        .send_message(ada.request(send(chat_id, "pay 1000", "key-1")))
        .await
        .expect_err("the same key with other content");

    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    assert!(
        reused.message().contains("client_message_id"),
        "{}",
        reused.message()
    );
    let stored: Vec<String> = sqlx::query_scalar("select text from messages")
        .fetch_all(&chat.db)
        .await
        .expect("the texts");
    assert_eq!(stored, ["pay 10"]);
}

#[tokio::test]
async fn concurrent_retries_store_one_message() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;

    let sends = (0..10).map(|_| {
        let mut chats = chat.chats();
        let request = ada.request(send(chat_id, "once", "same-key"));
        tokio::spawn(async move { chats.send_message(request).await })
    });
    let ids: Vec<i64> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|joined| {
            joined
                .expect("a task")
                .expect("a send")
                .into_inner()
                .message
                .expect("a message")
                .id
        })
        .collect();

    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
    let stored: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&chat.db)
        .await
        .expect("count");
    assert_eq!(stored, 1);
    // No sequence number was taken by a retry: streams would wait for it.
    let last_seq: i64 = sqlx::query_scalar("select last_seq from chats where id = $1")
        .bind(chat_id)
        .fetch_one(&chat.db)
        .await
        .expect("the chat");
    assert_eq!(last_seq, 1);
}

#[tokio::test]
async fn a_retry_from_someone_no_longer_a_member_is_not_answered() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada: _,
        grace,
        chat_id,
    } = two_members().await;
    chat.chats()
        .send_message(grace.request(send(chat_id, "hello", "key-1")))
        .await
        .expect("first");
    sqlx::query("delete from chat_members where chat_id = $1 and user_id = $2")
        .bind(chat_id)
        .bind(grace.id)
        .execute(&chat.db)
        .await
        .expect("removing grace");

    let retry = chat
        .chats()
        .send_message(grace.request(send(chat_id, "hello", "key-1")))
        .await
        .expect_err("a retry after leaving");
    assert_eq!(retry.code(), tonic::Code::NotFound, "{retry:?}");
}

#[tokio::test]
async fn history_pages_newest_first_and_ignores_messages_sent_meanwhile() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    for n in 1..=7 {
        chat.send(&ada, chat_id, &format!("m{n}")).await;
    }

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = chat
            .chats()
            .list_messages(grace.request(pb::ListMessagesRequest {
                chat_id,
                page_size: 3,
                page_token: page_token.clone(),
            }))
            .await
            .expect("a page")
            .into_inner();
        assert!(page.messages.len() <= 3);
        seen.extend(page.messages.into_iter().map(|m| m.text));
        if seen.len() == 3 {
            chat.send(&ada, chat_id, "late").await;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }

    assert_eq!(seen, ["m7", "m6", "m5", "m4", "m3", "m2", "m1"]);
    let bad = chat
        .chats()
        .list_messages(grace.request(pb::ListMessagesRequest {
            chat_id,
            page_size: 3,
            page_token: "x".into(),
        }))
        .await
        .expect_err("a made-up token");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_empty_chat_lists_no_messages() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace: _,
        chat_id,
    } = two_members().await;
    let page = chat
        .chats()
        .list_messages(ada.request(pb::ListMessagesRequest {
            chat_id,
            ..Default::default()
        }))
        .await
        .expect("a page")
        .into_inner();
    assert!(page.messages.is_empty());
    assert!(page.next_page_token.is_empty());
    // A stream with nothing to replay stays open.
    let mut stream = chat
        .chats()
        .connect_chat(ada.request(pb::ConnectChatRequest {
            chat_id,
            since_message_id: Some(0),
        }))
        .await
        .expect("a stream")
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err()
    );
}

/// Names are folded once, by auth's database: whatever spelling auth's
/// lookup finds, creating a chat with it finds too, final sigma and dotted
/// capital I included.
#[tokio::test]
async fn a_chat_finds_every_member_auth_finds_whatever_the_case() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let registered = ["ΟΔΥΣΣΕΑΣ", "İlker"];
    for name in registered {
        auth.register(name).await;
    }

    for spelling in [
        "ΟΔΥΣΣΕΑΣ",
        "οδυσσεας",
        "οδυσσεασ",
        "İlker",
        "i̇lker",
        "ilker",
    ] {
        let looked_up = auth
            .users()
            .lookup_usernames(ada.request(api::auth::v1::LookupUsernamesRequest {
                usernames: vec![spelling.into()],
            }))
            .await
            .expect("a lookup")
            .into_inner();
        let created = chat
            .chats()
            .create(ada.request(pb::CreateRequest {
                usernames: vec![spelling.into()],
                title: "t".into(),
            }))
            .await;
        assert_eq!(
            looked_up.users.len(),
            1 - looked_up.missing_usernames.len(),
            "{spelling}: every name is found or missing"
        );
        match created {
            Ok(_) => assert_eq!(
                looked_up.users.len(),
                1,
                "{spelling}: chat found a user auth did not"
            ),
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::NotFound,
                    "{spelling}: {status:?}"
                );
                assert!(
                    looked_up.users.is_empty(),
                    "{spelling}: auth found the user, chat did not"
                );
            }
        }
        if registered.contains(&spelling) {
            // As registered, a name is always found: the folding in the
            // query is the folding of the unique index.
            assert_eq!(
                looked_up.users.len(),
                1,
                "{spelling}: not found as registered"
            );
        }
    }
}

#[tokio::test]
async fn titles_and_texts_cannot_hide_characters_or_reorder_what_follows() {
    let TwoMembers {
        auth: _auth,
        chat,
        ada,
        grace,
        chat_id,
    } = two_members().await;
    for title in ["Team\u{200B}", "\u{202E}maeT", "Team\u{FEFF}"] {
        let status = chat
            .chats()
            .create(ada.request(pb::CreateRequest {
                usernames: vec![grace.name.clone()],
                title: title.into(),
            }))
            .await
            .expect_err(title);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{title:?}: {status:?}"
        );
        assert!(status.message().contains("title"), "{status:?}");
    }
    let status = chat
        .chats()
        .send_message(ada.request(pb::SendMessageRequest {
            chat_id,
            text: "runs \u{202E}past the end".into(),
            client_message_id: String::new(),
        }))
        .await
        .expect_err("an open override");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // What languages need stays: joiners, and overrides closed in the text.
    let kept = "👩\u{200D}💻 می\u{200C}خواهم \u{202E}olleh\u{202C}";
    assert_eq!(chat.send(&ada, chat_id, kept).await.text, kept);
}
