//! `kill -9` of a service mid-call, then a restart on the same address and
//! database: nothing acknowledged is lost, and nothing is half done.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::v1 as auth_pb;
use api::auth::v1::auth_service_client::AuthServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use api::chat::v1 as pb;
use api::chat::v1::chat_service_client::ChatServiceClient;
use tests::process::{Process, Service, auth_env, binary, chat_env, free_addr};
use tests::services::{TestAuth, TestUser};
use tonic::Code;
use tonic::transport::Channel;

const SENDERS: usize = 4;

fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_lazy()
}

fn with_deadline<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
    request.set_timeout(Duration::from_secs(2));
    request
}

fn send(user: &TestUser, chat_id: i64, key: &str) -> tonic::Request<pb::SendMessageRequest> {
    with_deadline(user.request(pb::SendMessageRequest {
        chat_id,
        text: format!("text of {key}"),
        client_message_id: key.to_owned(),
    }))
}

#[tokio::test]
async fn killing_chat_mid_send_loses_no_acknowledged_message_and_a_retry_stores_once() {
    // Everything whose length depends on the machine (the database server,
    // the chat process coming up) happens before any token is minted.
    let auth = TestAuth::spawn().await;
    let database_url = tests::postgres::fresh_database().await;
    let chat_binary = binary(Service::Chat);
    let addr = free_addr();
    let env = chat_env(&database_url, addr, &auth.url());
    let mut chat = Process::start("chat", &chat_binary, addr, &env).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = ChatServiceClient::new(channel(addr))
        .create(ada.request(pb::CreateRequest {
            usernames: vec![grace.name.clone()],
            title: "kill -9".into(),
        }))
        .await
        .expect("a chat")
        .into_inner()
        .id;

    // Senders send until the first failure: what was answered is
    // acknowledged, the send that failed is not.
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let ada = ada.clone();
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            let mut chats = ChatServiceClient::new(channel(addr));
            for n in 0.. {
                let key = format!("s{sender}-{n}");
                match chats.send_message(send(&ada, chat_id, &key)).await {
                    Ok(sent) => {
                        let id = sent.into_inner().message.expect("the message").id;
                        acknowledged.lock().expect("the list").push((key, id));
                    }
                    Err(_) => return key,
                }
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    chat.kill();
    let mut unacknowledged = Vec::new();
    for sender in senders {
        unacknowledged.push(sender.await.expect("a sender"));
    }
    let acknowledged = acknowledged.lock().expect("the list").clone();
    assert!(
        acknowledged.len() > 10,
        "too few sends before the kill: {}",
        acknowledged.len()
    );

    let _chat = Process::start("chat", &chat_binary, addr, &env).await;
    // The restart took as long as the machine made it: the retries below
    // carry a token minted after it.
    let ada = auth.login_again(&ada).await;
    let db = sqlx::PgPool::connect(&database_url)
        .await
        .expect("the chat database");
    let stored = |key: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from messages where client_message_id = $1",
            )
            .bind(key)
            .fetch_one(&db)
            .await
            .expect("a count")
        }
    };
    for (key, id) in &acknowledged {
        let rows: Vec<String> =
            sqlx::query_scalar("select client_message_id from messages where id = $1")
                .bind(id)
                .fetch_all(&db)
                .await
                .expect("the message");
        assert_eq!(
            rows,
            std::slice::from_ref(key),
            "acknowledged message {id} ({key})"
        );
        assert_eq!(stored(key.clone()).await, 1, "{key} stored more than once");
    }
    // Each send that got no answer, retried with its key, ends up stored
    // once, whether or not the first try had committed.
    let mut chats = ChatServiceClient::new(channel(addr));
    for key in unacknowledged {
        let before = stored(key.clone()).await;
        let retried = chats
            .send_message(send(&ada, chat_id, &key))
            .await
            .unwrap_or_else(|status| panic!("retrying {key}: {status:?}"));
        assert_eq!(
            stored(key.clone()).await,
            1,
            "{key}: stored {before} before the retry"
        );
        assert!(retried.into_inner().message.is_some());
    }
    eprintln!(
        "kill -9 of chat: {} acknowledged sends stored once each, {SENDERS} unanswered sends retried",
        acknowledged.len()
    );
}

/// A family's state, as the database holds it.
struct Family {
    revoked: bool,
    live_tokens: i64,
}

async fn families(db: &sqlx::PgPool) -> Vec<Family> {
    let rows: Vec<(bool, i64)> = sqlx::query_as(
        "select f.revoked_at is not null,
                count(t.id) filter (where t.retired_at is null)
         from refresh_families f left join refresh_tokens t on t.family_id = f.id
         group by f.id",
    )
    .fetch_all(db)
    .await
    .expect("the families");
    rows.into_iter()
        .map(|(revoked, live_tokens)| Family {
            revoked,
            live_tokens,
        })
        .collect()
}

#[tokio::test]
async fn killing_auth_mid_rotation_leaves_no_family_half_rotated() {
    const FAMILIES: usize = 4;
    let database_url = tests::postgres::fresh_database().await;
    let auth_binary = binary(Service::Auth);
    let addr = free_addr();
    let env = auth_env(&database_url, addr);
    let mut auth = Process::start("auth", &auth_binary, addr, &env).await;
    UserServiceClient::new(channel(addr))
        .create(auth_pb::CreateRequest {
            name: "ada".into(),
            email: "ada@example.com".into(),
            password: "ada-password".into(),
            password_confirm: "ada-password".into(),
            role: auth_pb::Role::Unspecified.into(),
        })
        .await
        .expect("registering ada");

    let mut rotating = Vec::new();
    for _ in 0..FAMILIES {
        let mut sessions = AuthServiceClient::new(channel(addr));
        let login = sessions
            .login(auth_pb::LoginRequest {
                username: "ada".into(),
                password: "ada-password".into(),
                ..Default::default()
            })
            .await
            .expect("logging in")
            .into_inner();
        rotating.push(tokio::spawn(async move {
            // The newest token whose rotation was answered.
            let mut token = login.refresh_token;
            loop {
                let request = with_deadline(tonic::Request::new(auth_pb::GetRefreshTokenRequest {
                    refresh_token: token.clone(),
                }));
                match sessions.get_refresh_token(request).await {
                    Ok(next) => token = next.into_inner().refresh_token,
                    Err(_) => return token,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    auth.kill();
    let mut last_answered = Vec::new();
    for family in rotating {
        last_answered.push(family.await.expect("a rotation loop"));
    }

    let _auth = Process::start("auth", &auth_binary, addr, &env).await;
    let db = sqlx::PgPool::connect(&database_url)
        .await
        .expect("the auth database");
    // Every family is whole: revoked, or with exactly one live token.
    let before = families(&db).await;
    assert_eq!(before.len(), FAMILIES);
    for family in &before {
        assert!(
            family.revoked || family.live_tokens == 1,
            "a family half rotated: {} live tokens",
            family.live_tokens
        );
    }
    // The last token each client was given either still works, or its
    // rotation committed unanswered, and showing it again (a reuse)
    // revokes its family: no token is left unusable yet unrevoked.
    let mut sessions = AuthServiceClient::new(channel(addr));
    let mut reused = 0;
    for token in last_answered {
        match sessions
            .get_refresh_token(auth_pb::GetRefreshTokenRequest {
                refresh_token: token,
            })
            .await
        {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                reused += 1;
            }
        }
    }
    let after = families(&db).await;
    let revoked = after.iter().filter(|family| family.revoked).count();
    assert_eq!(revoked, reused, "a refused token left its family unrevoked");
    for family in &after {
        assert!(family.revoked || family.live_tokens == 1);
    }
    eprintln!("kill -9 of auth: {FAMILIES} families whole, {reused} revoked on reuse");
}
