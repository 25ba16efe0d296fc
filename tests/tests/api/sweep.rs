//! Hostile requests to every RPC of both services, built from the
//! descriptor sets: a new RPC, field or validation rule is swept without
//! anyone touching this file.
//!
//! Each request is generated from a seed: empty and huge strings, control,
//! bidi, zero-width, combining and non-BMP characters, integer extremes,
//! unknown enum numbers, empty, long and duplicated lists, lengths and
//! numbers on either side of the field's `validate.rules`, mixed with real
//! names, emails, passwords, tokens, endpoints and ids so that requests
//! also get past validation to lookups and writes. Each goes without a
//! token, with a user's and with an admin's, as raw bytes to the method's
//! path.
//!
//! What must hold: no call is answered INTERNAL, UNKNOWN, UNAVAILABLE
//! (every dependency is up) or UNIMPLEMENTED (every RPC in the descriptors
//! is served), every call is answered, every OK answer decodes as the
//! method's output, nothing in the services panics; afterwards both
//! services still serve ordinary calls, and a bystander pair's user
//! records and chat, made before the sweep, are as they were.
//!
//! `SWEEP_CASES` sets the cases per (method, sender) pair (default 6); with
//! today's 18 RPCs and 3 senders, `SWEEP_CASES=200` makes 10,800 cases.
//! `SWEEP_SEED` changes the base seed. A failure names its method, sender
//! and case seed and shows the request as JSON; the same base seed on a
//! fresh run makes the same requests (only the tokens in them differ).

use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::chat::v1 as chat_pb;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tests::services::{TestAuth, TestChat, with_token};
use tests::sweep::*;
use tonic::{Code, Status};

#[test]
fn every_rpc_survives_hostile_requests_from_every_kind_of_sender() {
    watch_for_panics();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(WORKER_THREAD)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(sweep());
}

async fn sweep() {
    let started = Instant::now();
    let cases = env_number("SWEEP_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let base_seed = env_number("SWEEP_SEED").unwrap_or(DEFAULT_SEED);
    // Tokens must outlive a long sweep: the bystanders' are used at the end.
    let auth =
        TestAuth::spawn_with(|config| config.tokens.access_ttl = Duration::from_secs(3600)).await;
    let chat = TestChat::spawn(&auth).await;
    let root = auth.admin().await;
    let methods = methods();
    let endpoints: Vec<String> = methods.iter().map(|m| m.path.clone()).collect();

    let bystanders = Bystanders::arrange(&auth, &chat).await;
    let before = bystanders
        .observe(&auth, &chat)
        .await
        .expect("the bystanders read their accounts and chat");

    let mut tally = Tally::default();
    let mut harvested = Vec::new();
    for (index, method) in methods.iter().enumerate() {
        let channel = match method.service {
            Service::Auth => auth.channel(),
            Service::Chat => chat.channel(),
        };
        let mut actors = Actors::arrange(&auth, &chat, &root, index).await;
        for sender in Sender::ALL {
            for case in 0..cases {
                let seed = case_seed(base_seed, index, sender, case);
                let known =
                    Known::gather(&actors, &bystanders, &root, &endpoints, &harvested, sender);
                let protected = match sender {
                    // Admins may delete anyone and any chat: aimed at the
                    // bystanders, the sweep would itself break what it
                    // checks. Users and callers without a token may not,
                    // so for them the bystanders are fair targets.
                    Sender::Admin => bystanders.ids(&root),
                    Sender::Anonymous | Sender::User => Vec::new(),
                };
                let shape = Shape::of_case(case, seed);
                let request =
                    Generator::new(seed, &known, &protected, shape).message(&method.input, 0);
                let token = match sender {
                    Sender::Anonymous => None,
                    Sender::User => Some(actors.user.access_token.as_str()),
                    Sender::Admin => Some(actors.admin.access_token.as_str()),
                };
                let body = request.encode_to_vec();
                assert!(
                    body.len() < TONIC_LIMIT,
                    "seed {seed:#x} made a request of {} bytes: the generator overran its budget",
                    body.len()
                );
                let panics_before = panic_count();
                let answer = call(&channel, method, body.into(), token).await;
                let code = tally.record(&answer);
                if let Answer::Ok(Some(body)) = &answer
                    && let Ok(response) =
                        DynamicMessage::decode(method.descriptor.output(), body.clone())
                {
                    harvest_tokens(&response, &mut harvested);
                }
                if let Some(what) = answer.fault(method, panics_before) {
                    tally.failures.push(Failure {
                        path: method.path.clone(),
                        sender,
                        seed,
                        what,
                        request: request_json(&request),
                    });
                }
                // Something may have changed: a token revoked, a user or
                // the chat deleted. The next case gets a cast that works.
                let changed = code == Some(Code::Ok)
                    || (code == Some(Code::Unauthenticated) && token.is_some());
                if changed && !actors.intact(&auth, &chat).await {
                    actors = Actors::arrange(&auth, &chat, &root, index).await;
                }
            }
        }
    }

    eprintln!(
        "sweep: {} in {:.1} s (base seed {base_seed:#x}, {cases} per method and sender)",
        tally.summary(),
        started.elapsed().as_secs_f64(),
    );

    let mut afterwards = Vec::new();
    if let Err(status) = ordinary_calls(&auth, &chat).await {
        afterwards.push(format!("after the sweep, ordinary calls fail: {status:?}"));
    }
    match bystanders.observe(&auth, &chat).await {
        Ok(after) if after == before => {}
        Ok(after) => afterwards.push(format!(
            "after the sweep, the bystanders' accounts or chat differ:\n    before: {before:?}\n    after: {after:?}"
        )),
        Err(status) => afterwards.push(format!(
            "after the sweep, the bystanders cannot read their accounts or chat: {status:?}"
        )),
    }
    tally.assert_held(&afterwards);
}

/// What any client does first: registers, logs in, makes a chat and
/// sends to it.
async fn ordinary_calls(auth: &TestAuth, chat: &TestChat) -> Result<(), Status> {
    let password = "correct horse battery staple";
    for name in ["after-sweep-a", "after-sweep-b"] {
        auth.users()
            .create(auth_pb::CreateRequest {
                name: name.into(),
                email: format!("{name}@example.com"),
                password: password.into(),
                password_confirm: password.into(),
                role: auth_pb::Role::Unspecified.into(),
            })
            .await?;
    }
    let token = auth
        .sessions()
        .login(auth_pb::LoginRequest {
            username: "after-sweep-a".into(),
            password: password.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .access_token;
    let chat_id = chat
        .chats()
        .create(with_token(
            chat_pb::CreateRequest {
                usernames: vec!["after-sweep-b".into()],
                title: "after the sweep".into(),
            },
            &token,
        ))
        .await?
        .into_inner()
        .id;
    chat.chats()
        .send_message(with_token(
            chat_pb::SendMessageRequest {
                chat_id,
                text: "still here".into(),
                client_message_id: String::new(),
            },
            &token,
        ))
        .await?;
    Ok(())
}
