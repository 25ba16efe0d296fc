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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use api::auth::v1 as auth_pb;
use api::chat::v1 as chat_pb;
use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};
use tests::services::{TestAuth, TestChat, TestUser, with_token};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Cases per (method, sender) pair unless `SWEEP_CASES` says otherwise.
const DEFAULT_CASES: usize = 6;
const DEFAULT_SEED: u64 = 0x5EED_CA5E;
/// The packages swept, and whose descriptor set describes them.
const SWEPT: [(&str, &[u8], Service); 2] = [
    ("auth.v1", api::auth::v1::FILE_DESCRIPTOR_SET, Service::Auth),
    ("chat.v1", api::chat::v1::FILE_DESCRIPTOR_SET, Service::Chat),
];
/// Codes no request may get while every dependency is up: they mean the
/// service failed, not the request.
const FORBIDDEN: [Code; 4] = [
    Code::Internal,
    Code::Unknown,
    Code::Unavailable,
    Code::Unimplemented,
];
/// A call unanswered this long has hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stream is watched for its first item or status.
const FIRST_ITEM: Duration = Duration::from_millis(300);
/// Bytes of strings a request may carry: well under tonic's limit on
/// decoded messages, so that no case is refused for its size alone.
const REQUEST_BUDGET: usize = 3 << 20;
/// tonic's default limit on a decoded message.
const TONIC_LIMIT: usize = 4 << 20;
/// Tokens kept from responses for later requests.
const HARVESTED_TOKENS: usize = 16;
/// Threads of the runtime the services run on, so that a panic in them is
/// told apart from one in another test.
const WORKER_THREAD: &str = "sweep-worker";
/// Failures shown in full; the rest are counted.
const SHOWN_FAILURES: usize = 20;

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

/// Which process serves a method.
#[derive(Clone, Copy, Debug)]
enum Service {
    Auth,
    Chat,
}

/// One RPC, as its descriptor tells it.
struct Method {
    service: Service,
    /// `/package.Service/Method`.
    path: String,
    input: MessageDescriptor,
    descriptor: MethodDescriptor,
}

/// Every method of every service in the swept packages, nothing else
/// (health and reflection are not the services' own).
fn methods() -> Vec<Method> {
    let mut methods = Vec::new();
    for (package, descriptor_set, service) in SWEPT {
        let pool = DescriptorPool::decode(descriptor_set).expect("a valid descriptor set");
        for service_descriptor in pool.services() {
            if service_descriptor.package_name() != package {
                continue;
            }
            for method in service_descriptor.methods() {
                methods.push(Method {
                    service,
                    path: format!("/{}/{}", service_descriptor.full_name(), method.name()),
                    input: method.input(),
                    descriptor: method,
                });
            }
        }
    }
    // The sweep must not pass by finding nothing to sweep.
    for service in [
        "auth.v1.UserService",
        "auth.v1.AuthService",
        "auth.v1.AccessService",
        "chat.v1.ChatService",
    ] {
        assert!(
            methods
                .iter()
                .any(|m| m.path.starts_with(&format!("/{service}/"))),
            "{service} is missing from the descriptor sets"
        );
    }
    methods
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    Anonymous,
    User,
    Admin,
}

impl Sender {
    const ALL: [Sender; 3] = [Sender::Anonymous, Sender::User, Sender::Admin];

    fn name(self) -> &'static str {
        match self {
            Sender::Anonymous => "no token",
            Sender::User => "a user's token",
            Sender::Admin => "an admin's token",
        }
    }
}

fn case_seed(base: u64, method: usize, sender: Sender, case: usize) -> u64 {
    let mut rng = Rng(base ^ ((method as u64) << 40) ^ ((sender as u64) << 32) ^ case as u64);
    rng.next()
}

/// splitmix64: small, seedable and the same everywhere, so that a seed
/// names a request.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The users, admin and chat one method is swept with. Made afresh for
/// each method, and again whenever a case broke them (a deleted account,
/// revoked tokens, a deleted chat), so that one case's damage does not
/// hide what the next would find.
struct Actors {
    user: TestUser,
    /// Another member of the user's chat: someone to act on.
    peer: TestUser,
    admin: TestUser,
    /// Made by the user, with the peer and the admin as members.
    chat_id: i64,
    message_ids: Vec<i64>,
}

impl Actors {
    async fn arrange(auth: &TestAuth, chat: &TestChat, root: &TestUser, method: usize) -> Actors {
        static CASTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cast = CASTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let label = format!("sweep{method}c{cast}");
        let user = auth.register(&format!("{label}user")).await;
        let peer = auth.register(&format!("{label}peer")).await;
        let admin = promoted(auth, root, &format!("{label}admin")).await;
        let chat_id = chat.create_chat(&user, &[&peer, &admin]).await;
        let message_ids = vec![
            chat.send(&user, chat_id, "first").await.id,
            chat.send(&peer, chat_id, "second").await.id,
        ];
        Actors {
            user,
            peer,
            admin,
            chat_id,
            message_ids,
        }
    }

    /// Whether both tokens still work and the chat still exists.
    async fn intact(&self, auth: &TestAuth, chat: &TestChat) -> bool {
        for actor in [&self.user, &self.admin] {
            let check = auth
                .access()
                .check(actor.request(auth_pb::CheckRequest {
                    endpoint_address: "/chat.v1.ChatService/ListMessages".into(),
                }))
                .await;
            if check.is_err() {
                return false;
            }
        }
        sqlx::query_scalar::<_, bool>("select exists (select 1 from chats where id = $1)")
            .bind(self.chat_id)
            .fetch_one(&chat.db)
            .await
            .expect("asking whether the chat exists")
    }
}

/// A new user made admin by `root`, logged in again to get a token with
/// the new role.
async fn promoted(auth: &TestAuth, root: &TestUser, name: &str) -> TestUser {
    let user = auth.register(name).await;
    auth.users()
        .update(root.request(auth_pb::UpdateRequest {
            id: user.id,
            role: Some(auth_pb::Role::Admin.into()),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|status| panic!("promoting {name}: {status:?}"));
    auth.login(user.id, name, &user.password).await
}

/// Two users with a chat, made before the sweep by nobody the sweep
/// sends as.
struct Bystanders {
    ada: TestUser,
    grace: TestUser,
    chat_id: i64,
    message_ids: Vec<i64>,
}

/// What the bystanders see of themselves and their chat.
#[derive(Debug, PartialEq)]
struct Observed {
    ada: Option<auth_pb::User>,
    grace: Option<auth_pb::User>,
    messages: Vec<chat_pb::Message>,
}

impl Bystanders {
    async fn arrange(auth: &TestAuth, chat: &TestChat) -> Bystanders {
        let ada = auth.register("ada").await;
        let grace = auth.register("grace").await;
        let chat_id = chat.create_chat(&ada, &[&grace]).await;
        let mut message_ids = Vec::new();
        for (from, text) in [(&ada, "hello"), (&grace, "hi ada"), (&ada, "bye")] {
            message_ids.push(chat.send(from, chat_id, text).await.id);
        }
        Bystanders {
            ada,
            grace,
            chat_id,
            message_ids,
        }
    }

    async fn observe(&self, auth: &TestAuth, chat: &TestChat) -> Result<Observed, Status> {
        let user = |bystander: &TestUser| {
            let mut users = auth.users();
            let request = bystander.request(auth_pb::GetRequest { id: bystander.id });
            async move { Ok::<_, Status>(users.get(request).await?.into_inner().user) }
        };
        let messages = chat
            .chats()
            .list_messages(self.ada.request(chat_pb::ListMessagesRequest {
                chat_id: self.chat_id,
                page_size: 100,
                page_token: String::new(),
            }))
            .await?
            .into_inner()
            .messages;
        Ok(Observed {
            ada: user(&self.ada).await?,
            grace: user(&self.grace).await?,
            messages,
        })
    }

    /// Every id of theirs, and root's, which the harness needs.
    fn ids(&self, root: &TestUser) -> Vec<i64> {
        let mut ids = vec![root.id, self.ada.id, self.grace.id, self.chat_id];
        ids.extend(&self.message_ids);
        ids
    }
}

/// Real values for the generator to mix with hostile ones.
struct Known {
    user_ids: Vec<i64>,
    chat_ids: Vec<i64>,
    message_ids: Vec<i64>,
    names: Vec<String>,
    emails: Vec<String>,
    passwords: Vec<String>,
    tokens: Vec<String>,
    endpoints: Vec<String>,
}

impl Known {
    fn gather(
        actors: &Actors,
        bystanders: &Bystanders,
        root: &TestUser,
        endpoints: &[String],
        harvested: &[String],
        sender: Sender,
    ) -> Known {
        let mut user_ids = vec![actors.user.id, actors.peer.id, actors.admin.id];
        // A sender's own account is where most of its calls can go
        // further: it comes up more often.
        match sender {
            Sender::User => user_ids.extend([actors.user.id; 2]),
            Sender::Admin => user_ids.extend([actors.admin.id; 2]),
            Sender::Anonymous => {}
        }
        let mut chat_ids = vec![actors.chat_id];
        let mut message_ids = actors.message_ids.clone();
        if sender != Sender::Admin {
            user_ids.extend([root.id, bystanders.ada.id, bystanders.grace.id]);
            chat_ids.push(bystanders.chat_id);
            message_ids.extend(&bystanders.message_ids);
        }
        let people = [
            &actors.user,
            &actors.peer,
            &actors.admin,
            &bystanders.ada,
            &bystanders.grace,
            root,
        ];
        let mut names: Vec<String> = people.iter().map(|p| p.name.clone()).collect();
        names.extend(people.iter().map(|p| p.name.to_uppercase()));
        names.push("nobody".into());
        let emails = names
            .iter()
            .map(|name| format!("{name}@example.com"))
            .collect();
        let mut passwords: Vec<String> = [&actors.user, &actors.peer, &actors.admin]
            .iter()
            .map(|p| p.password.clone())
            .collect();
        passwords.extend([
            "correct horse".into(),
            "correct horse battery staple".into(),
        ]);
        let mut tokens = Vec::new();
        for actor in [&actors.user, &actors.peer, &actors.admin] {
            tokens.push(actor.refresh_token.clone());
            tokens.push(actor.access_token.clone());
        }
        // Page tokens are opaque, but hostile clients forge them: these
        // are the list positions the services write, at their extremes.
        for prefix in ["users-after:", "messages-before:"] {
            for position in ["0", "1", "-1", "9223372036854775807", "9223372036854775808"] {
                tokens.push(base64_url(format!("{prefix}{position}").as_bytes()));
            }
        }
        tokens.extend_from_slice(harvested);
        let mut endpoints = endpoints.to_vec();
        endpoints.extend([
            "/grpc.health.v1.Health/Check".into(),
            "/chat.v1.ChatService/Nothing".into(),
            "/".into(),
        ]);
        Known {
            user_ids,
            chat_ids,
            message_ids,
            names,
            emails,
            passwords,
            tokens,
            endpoints,
        }
    }

    /// The real ids a field is likely to take, by its name, or else by
    /// its package's.
    fn ids_for(&self, field: &FieldDescriptor) -> Vec<i64> {
        let [users, chats, messages] = [&self.user_ids, &self.chat_ids, &self.message_ids];
        let by_name: &[&Vec<i64>] = match field.name() {
            name if name.contains("message") => &[messages],
            name if name.contains("chat") => &[chats],
            name if name.contains("user") => &[users],
            _ if field.full_name().starts_with("chat.") => &[chats, messages],
            _ if field.full_name().starts_with("auth.") => &[users],
            _ => &[users, chats, messages],
        };
        by_name.iter().flat_map(|ids| ids.iter().copied()).collect()
    }

    /// The real values a field of this name is likely to take.
    fn strings_for(&self, field: &str) -> Vec<&String> {
        let by_name: &[&Vec<String>] = if field.contains("email") {
            &[&self.emails]
        } else if field.contains("password") {
            &[&self.passwords]
        } else if field.contains("token") {
            &[&self.tokens]
        } else if field.contains("endpoint") || field.contains("address") {
            &[&self.endpoints]
        } else if field.contains("name") {
            &[&self.names]
        } else {
            &[
                &self.names,
                &self.emails,
                &self.passwords,
                &self.tokens,
                &self.endpoints,
            ]
        };
        by_name.iter().flat_map(|values| values.iter()).collect()
    }
}

/// Keeps the tokens a response carries (page tokens, refresh and access
/// tokens), the newest few, for requests to come.
fn harvest_tokens(message: &DynamicMessage, tokens: &mut Vec<String>) {
    for (field, value) in message.fields() {
        match value {
            Value::String(token) if field.name().contains("token") && !token.is_empty() => {
                if tokens.len() == HARVESTED_TOKENS {
                    tokens.remove(0);
                }
                tokens.push(token.clone());
            }
            Value::Message(inner) => harvest_tokens(inner, tokens),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        harvest_tokens(inner, tokens);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Unpadded base64url, as the services write page tokens.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// How a case's request is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Every field left out.
    Empty,
    /// Real values only: the request may well succeed.
    Plausible,
    /// Hostile values mixed with real ones: each value is hostile with
    /// this chance in percent, so that some requests carry one bad value
    /// among good ones and others little but bad ones.
    Hostile(usize),
}

impl Shape {
    fn of_case(case: usize, seed: u64) -> Shape {
        match case {
            0 => Shape::Plausible,
            1 => Shape::Empty,
            _ => Shape::Hostile(*Rng(seed).pick(&[15, 35, 65, 90])),
        }
    }
}

/// Strings that break naive handling, whole.
const NASTY_STRINGS: &[&str] = &[
    "\0",
    "a\0b",
    "\u{1}\u{2}\u{3}",
    "\u{7}",
    "\u{8}",
    "\u{1b}[31mred\u{1b}[0m",
    "\u{7f}",
    "\u{80}\u{85}\u{9f}",
    "\u{202e}drow\u{202c}",
    "\u{2066}x\u{2069}",
    "\u{200b}",
    "\u{feff}",
    "\u{200d}\u{200c}",
    "e\u{301}",
    "Z\u{36b}\u{303}\u{36a}\u{350}\u{35b}\u{330}\u{326}",
    "\u{301}",
    "😀",
    "👩\u{200d}👩\u{200d}👧",
    "\u{10ffff}",
    "\u{e0001}\u{e0041}",
    "\u{fffd}",
    "\u{fffe}\u{ffff}",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}\u{2029}",
    "İ",
    "ß",
    "ﬃ",
    "ΣΑΣ",
    "'; drop table users; --",
    "%",
    "_",
    "\\",
    "%00",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "%s%n",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "null",
    "-1",
    "9223372036854775808",
    "@",
    "a@",
    "@b",
    "a@b@c",
    "\"quoted\"@example.com",
    "x@[::1]",
    "/",
    "//",
    "/chat.v1.ChatService/",
    "Bearer ",
];

/// Characters slipped into otherwise real values.
const ODD_CHARS: &[char] = &[
    '\0',
    '\u{1}',
    '\u{7}',
    '\u{1b}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{9f}',
    '\u{202e}',
    '\u{2066}',
    '\u{2069}',
    '\u{200b}',
    '\u{200d}',
    '\u{feff}',
    '\u{301}',
    '\u{36b}',
    '😀',
    '\u{10ffff}',
    '\u{e0001}',
    '\u{fffd}',
    '\u{ffff}',
    '\u{a0}',
    '\u{3000}',
    '\u{2028}',
    ' ',
    '\t',
    '\n',
    '\r',
    'İ',
    'ß',
    'Σ',
    '%',
    '_',
    '\\',
    '\'',
    '"',
    '@',
    '/',
];

/// What huge strings are made of: one, two and four bytes a character,
/// and characters that are not text on their own.
const FILLS: &[&str] = &["a", "é", "😀", "\u{202e}", "a\u{301}", "\0", "\u{200b}"];

/// Lengths tried when a field states none.
const LENGTHS: &[i64] = &[64, 72, 100, 255, 256, 512, 4096];

/// Integer extremes tried in every integer field, then clamped to its type.
const EXTREMES: &[i128] = &[
    0,
    1,
    -1,
    2,
    i64::MIN as i128,
    i64::MIN as i128 + 1,
    i64::MAX as i128,
    i64::MAX as i128 - 1,
    i32::MIN as i128,
    i32::MAX as i128,
    i32::MAX as i128 + 1,
    u32::MAX as i128,
    u32::MAX as i128 + 1,
    u64::MAX as i128,
    1 << 53,
    999_999_999,
];

/// The numbers a field's `validate.rules` state, to try either side of.
#[derive(Default)]
struct Rules {
    /// Lengths and bounds of the field's values (of its items, for a list).
    values: Vec<i64>,
    /// Bounds on a list's number of items.
    counts: Vec<i64>,
}

impl Rules {
    fn of(field: &FieldDescriptor) -> Rules {
        let mut rules = Rules::default();
        let Some(extension) = field.parent_pool().get_extension_by_name("validate.rules") else {
            return rules;
        };
        let options = field.options();
        if !options.has_extension(&extension) {
            return rules;
        }
        if let Value::Message(field_rules) = options.get_extension(&extension).as_ref() {
            for (kind, value) in field_rules.fields() {
                match (kind.name(), value) {
                    ("repeated", Value::Message(repeated)) => {
                        for (rule, value) in repeated.fields() {
                            if rule.name() == "items" {
                                numbers_in(value, &mut rules.values);
                            } else {
                                numbers_in(value, &mut rules.counts);
                            }
                        }
                    }
                    (_, value) => numbers_in(value, &mut rules.values),
                }
            }
        }
        rules
    }
}

fn numbers_in(value: &Value, out: &mut Vec<i64>) {
    match value {
        Value::I32(n) => out.push(i64::from(*n)),
        Value::I64(n) => out.push(*n),
        Value::U32(n) => out.push(i64::from(*n)),
        Value::U64(n) => out.push(i64::try_from(*n).unwrap_or(i64::MAX)),
        Value::EnumNumber(n) => out.push(i64::from(*n)),
        Value::List(items) => items.iter().for_each(|item| numbers_in(item, out)),
        Value::Message(message) => message.fields().for_each(|(_, v)| numbers_in(v, out)),
        _ => {}
    }
}

/// Makes one request from a seed.
struct Generator<'a> {
    rng: Rng,
    known: &'a Known,
    /// Ids this sender must not be aimed at; moved out of the way.
    protected: &'a [i64],
    shape: Shape,
    /// Bytes of strings this request may still carry.
    budget: usize,
}

impl<'a> Generator<'a> {
    fn new(seed: u64, known: &'a Known, protected: &'a [i64], shape: Shape) -> Generator<'a> {
        Generator {
            rng: Rng(seed),
            known,
            protected,
            shape,
            budget: REQUEST_BUDGET,
        }
    }

    /// Whether this value is to be real rather than hostile.
    fn plausible(&mut self) -> bool {
        match self.shape {
            Shape::Empty | Shape::Plausible => true,
            Shape::Hostile(percent) => self.rng.below(100) >= percent,
        }
    }

    fn message(&mut self, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        if self.shape == Shape::Empty || depth > 3 {
            return message;
        }
        let mut oneofs_set = HashSet::new();
        for field in descriptor.fields() {
            // At most one field of a real oneof; optional fields, nested
            // messages among them, are left out now and then.
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                if oneofs_set.contains(oneof.name()) || self.rng.one_in(2) {
                    continue;
                }
                oneofs_set.insert(oneof.name().to_owned());
            } else if field.supports_presence() && self.rng.one_in(3) {
                continue;
            }
            let value = self.field(&field, depth);
            message.set_field(&field, value);
        }
        self.confirm(&mut message, descriptor);
        message
    }

    /// A field named after another (`password_confirm`, `password`) must
    /// often repeat it: otherwise no request would get past the check
    /// that they agree.
    fn confirm(&mut self, message: &mut DynamicMessage, descriptor: &MessageDescriptor) {
        let fields: Vec<FieldDescriptor> = descriptor.fields().collect();
        for copy in &fields {
            let Some(original) = fields.iter().find(|original| {
                copy.name().starts_with(&format!("{}_", original.name()))
                    && original.kind() == copy.kind()
                    && original.is_list() == copy.is_list()
            }) else {
                continue;
            };
            if message.has_field(original) && (self.shape == Shape::Plausible || self.rng.one_in(2))
            {
                let value = message.get_field(original).into_owned();
                message.set_field(copy, value);
            }
        }
    }

    fn field(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        let rules = Rules::of(field);
        let kind = field.kind();
        if field.is_map() {
            let entry = kind.as_message().expect("a map's entry message");
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let count = self.count(&rules.counts);
            let mut map = HashMap::new();
            for _ in 0..count {
                let key_value = self.single(&key, &key.kind(), &rules.values, depth);
                if let Some(key_value) = key_value.into_map_key() {
                    map.insert(key_value, self.single(&value, &value.kind(), &[], depth));
                }
            }
            Value::Map(map)
        } else if field.is_list() {
            let count = self.count(&rules.counts);
            let mut items: Vec<Value> = (0..count)
                .map(|_| self.single(field, &kind, &rules.values, depth))
                .collect();
            if self.shape == Shape::Plausible {
                let mut seen = Vec::new();
                items.retain(|item| {
                    let new = !seen.contains(item);
                    seen.push(item.clone());
                    new
                });
            } else if count > 1 && !self.plausible() {
                // Duplicates: every item the same, or the first again at
                // the end, as far as the budget allows.
                let first = items[0].clone();
                let copies = if self.rng.one_in(2) { count - 1 } else { 1 };
                let cost = weight(&first) * copies;
                if cost <= self.budget {
                    self.budget -= cost;
                    items[count - copies..].fill(first);
                }
            }
            Value::List(items)
        } else {
            self.single(field, &kind, &rules.values, depth)
        }
    }

    /// How many items a list gets.
    fn count(&mut self, bounds: &[i64]) -> usize {
        if self.plausible() {
            return 1 + self.rng.below(3);
        }
        match self.rng.below(5) {
            0 => 0,
            1 => 1,
            2 => 150,
            3 if !bounds.is_empty() => {
                let bound = *self.rng.pick(bounds);
                usize::try_from(bound - 1 + self.rng.below(3) as i64).unwrap_or(0)
            }
            _ => 2 + self.rng.below(4),
        }
    }

    fn single(
        &mut self,
        field: &FieldDescriptor,
        kind: &Kind,
        bounds: &[i64],
        depth: usize,
    ) -> Value {
        match kind {
            Kind::String => Value::String(self.string(field.name(), bounds)),
            Kind::Bytes => {
                Value::Bytes(Bytes::from(self.string(field.name(), bounds).into_bytes()))
            }
            Kind::Bool => Value::Bool(self.rng.one_in(2)),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                let ids = self.known.ids_for(field);
                let n = self.integer((i64::MIN.into(), i64::MAX.into()), bounds, Some(&ids));
                Value::I64(i64::try_from(n).expect("within range"))
            }
            Kind::Uint64 | Kind::Fixed64 => {
                let ids = self.known.ids_for(field);
                let n = self.integer((0, u64::MAX.into()), bounds, Some(&ids));
                Value::U64(u64::try_from(n).expect("within range"))
            }
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let n = self.integer((i32::MIN.into(), i32::MAX.into()), bounds, None);
                Value::I32(i32::try_from(n).expect("within range"))
            }
            Kind::Uint32 | Kind::Fixed32 => {
                let n = self.integer((0, u32::MAX.into()), bounds, None);
                Value::U32(u32::try_from(n).expect("within range"))
            }
            Kind::Double => Value::F64(self.float()),
            Kind::Float => Value::F32(self.float() as f32),
            Kind::Enum(descriptor) => {
                let defined: Vec<i32> = descriptor.values().map(|v| v.number()).collect();
                let highest = defined.iter().copied().max().unwrap_or(0);
                if self.plausible() || self.rng.one_in(2) {
                    Value::EnumNumber(*self.rng.pick(&defined))
                } else {
                    let unknown = [highest.saturating_add(1), 7, -1, i32::MAX, i32::MIN];
                    Value::EnumNumber(*self.rng.pick(&unknown))
                }
            }
            Kind::Message(descriptor) => Value::Message(self.message(descriptor, depth + 1)),
        }
    }

    fn string(&mut self, field: &str, bounds: &[i64]) -> String {
        let value = if self.plausible() {
            self.real_string(field)
        } else {
            self.hostile_string(field, bounds)
        };
        self.budget = self.budget.saturating_sub(value.len());
        value
    }

    fn real_string(&mut self, field: &str) -> String {
        match self.rng.below(8) {
            0 => String::new(),
            // Names and emails nobody has taken yet, so that a request
            // may make something new.
            1 | 2 => {
                let fresh = format!("{:x}", self.rng.next() >> 24);
                if field.contains("email") {
                    format!("new-{fresh}@example.com")
                } else if field.contains("password") {
                    format!("{fresh} is long enough")
                } else {
                    format!("new-{fresh}")
                }
            }
            _ => {
                let known = self.known.strings_for(field);
                (*self.rng.pick(&known)).clone()
            }
        }
    }

    fn hostile_string(&mut self, field: &str, bounds: &[i64]) -> String {
        match self.rng.below(8) {
            0 => String::new(),
            1 => {
                let fill = *self.rng.pick(FILLS);
                let chars = *self.rng.pick(&[5_000, 100_000]);
                if chars * fill.len() <= self.budget {
                    fill.repeat(chars.div_ceil(fill.chars().count()))
                } else {
                    (*self.rng.pick(NASTY_STRINGS)).to_owned()
                }
            }
            2 => (*self.rng.pick(NASTY_STRINGS)).to_owned(),
            3 => {
                // A real value with one odd character at its start, middle
                // or end.
                let mut value: Vec<char> = self.real_string(field).chars().collect();
                let at = match self.rng.below(3) {
                    0 => 0,
                    1 => value.len() / 2,
                    _ => value.len(),
                };
                value.insert(at, *self.rng.pick(ODD_CHARS));
                value.into_iter().collect()
            }
            4 => {
                // Either side of a stated length, in characters of one,
                // two or four bytes.
                let base = match bounds {
                    [] => *self.rng.pick(LENGTHS),
                    bounds => *self.rng.pick(bounds),
                };
                let chars = usize::try_from(base - 1 + self.rng.below(3) as i64).unwrap_or(0);
                let fill = *self.rng.pick(&["x", "é", "😀"]);
                if chars * fill.len() <= self.budget {
                    fill.repeat(chars)
                } else {
                    String::new()
                }
            }
            5 => {
                // Random text, odd characters and plain ones.
                let chars = 1 + self.rng.below(64);
                (0..chars)
                    .map(|_| {
                        if self.rng.one_in(2) {
                            *self.rng.pick(ODD_CHARS)
                        } else {
                            char::from(b'a' + self.rng.below(26) as u8)
                        }
                    })
                    .collect()
            }
            6 => {
                let real = self.real_string(field);
                match self.rng.below(3) {
                    0 => format!(" {real} "),
                    1 => format!("\u{a0}{real}\u{3000}"),
                    _ => format!("{real}{real}"),
                }
            }
            _ => {
                let real = self.real_string(field);
                match self.rng.below(3) {
                    0 => real.to_uppercase(),
                    1 => real.replace('i', "İ"),
                    _ => real.replace('s', "ſ"),
                }
            }
        }
    }

    /// An integer within `min..=max`. A 64-bit one may be an id: then
    /// it is often one of `ids`, or next to one.
    fn integer(&mut self, (min, max): (i128, i128), bounds: &[i64], ids: Option<&[i64]>) -> i128 {
        let may_be_id = ids.is_some();
        let ids = ids.unwrap_or_default();
        let n = if self.plausible() {
            if !ids.is_empty() && !self.rng.one_in(4) {
                i128::from(*self.rng.pick(ids))
            } else {
                self.rng.below(101) as i128
            }
        } else {
            match self.rng.below(5) {
                0 | 1 => *self.rng.pick(EXTREMES),
                2 if !bounds.is_empty() => {
                    i128::from(*self.rng.pick(bounds)) - 1 + self.rng.below(3) as i128
                }
                // A neighbour of a real id: likely a thing that does not
                // exist, or somebody else's.
                3 if !ids.is_empty() => {
                    i128::from(*self.rng.pick(ids)) + self.rng.below(3) as i128 - 1
                }
                _ => i128::from(self.rng.next() as i64),
            }
        };
        let n = n.clamp(min, max);
        if may_be_id && self.protected.iter().any(|&id| i128::from(id) == n) {
            // Far past every id the sweep makes: aimed at nothing.
            n + (1 << 40)
        } else {
            n
        }
    }

    fn float(&mut self) -> f64 {
        *self.rng.pick(&[
            0.0,
            -0.0,
            1.5,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
        ])
    }
}

/// Roughly how many bytes a value takes on the wire.
fn weight(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
        Value::Message(message) => message.encoded_len(),
        Value::List(items) => items.iter().map(weight).sum(),
        Value::Map(entries) => entries.values().map(|value| weight(value) + 16).sum(),
        _ => 16,
    }
}

/// Requests and responses as bytes: tonic-prost's codec takes no
/// `DynamicMessage`.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// How a call ended.
enum Answer {
    /// OK, with the response (or the stream's first item, if it sent one
    /// in time).
    Ok(Option<Bytes>),
    Status(Status),
    Hung,
}

async fn call(channel: &Channel, method: &Method, body: Bytes, token: Option<&str>) -> Answer {
    fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        match token {
            Some(token) => with_token(message, token),
            None => tonic::Request::new(message),
        }
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let path: PathAndQuery = method.path.parse().expect("a method path");
    let descriptor = &method.descriptor;
    let answer = async {
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(format!("the channel is not ready: {error}")))?;
        let mut stream = match (
            descriptor.is_client_streaming(),
            descriptor.is_server_streaming(),
        ) {
            (false, false) => {
                let response = grpc.unary(request(body, token), path, RawCodec).await?;
                return Ok(Some(response.into_inner()));
            }
            (true, false) => {
                let messages = request(tokio_stream::once(body), token);
                let response = grpc.client_streaming(messages, path, RawCodec).await?;
                return Ok(Some(response.into_inner()));
            }
            (false, true) => {
                grpc.server_streaming(request(body, token), path, RawCodec)
                    .await?
            }
            (true, true) => {
                let messages = request(tokio_stream::once(body), token);
                grpc.streaming(messages, path, RawCodec).await?
            }
        }
        .into_inner();
        match tokio::time::timeout(FIRST_ITEM, stream.message()).await {
            // Open, with nothing to send yet: a live stream.
            Err(_) => Ok(None),
            Ok(first) => first,
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Err(_) => Answer::Hung,
        Ok(Ok(body)) => Answer::Ok(body),
        Ok(Err(status)) => Answer::Status(status),
    }
}

impl Answer {
    /// What is wrong with this answer, if anything.
    fn fault(&self, method: &Method, panics_before: usize) -> Option<String> {
        let panics = panics_since(panics_before);
        if !panics.is_empty() {
            return Some(format!("the service panicked: {}", panics.join("; ")));
        }
        match self {
            Answer::Hung => Some(format!("no answer within {CALL_TIMEOUT:?}")),
            Answer::Status(status) if FORBIDDEN.contains(&status.code()) => Some(format!(
                "answered {}: {:?}",
                code_name(status.code()),
                status.message()
            )),
            Answer::Ok(Some(body)) => {
                DynamicMessage::decode(method.descriptor.output(), body.clone())
                    .err()
                    .map(|error| {
                        format!(
                            "the response is not a {}: {error}",
                            method.descriptor.output().full_name()
                        )
                    })
            }
            Answer::Ok(None) | Answer::Status(_) => None,
        }
    }
}

/// A case that broke an invariant, with what it takes to turn it into a
/// regression test.
struct Failure {
    path: String,
    sender: Sender,
    seed: u64,
    what: String,
    request: String,
}

#[derive(Default)]
struct Tally {
    cases: usize,
    codes: BTreeMap<&'static str, usize>,
    failures: Vec<Failure>,
}

impl Tally {
    /// Counts the answer; its code, if it had one.
    fn record(&mut self, answer: &Answer) -> Option<Code> {
        self.cases += 1;
        let code = match answer {
            Answer::Ok(_) => Some(Code::Ok),
            Answer::Status(status) => Some(status.code()),
            Answer::Hung => None,
        };
        *self
            .codes
            .entry(code.map_or("NO ANSWER", code_name))
            .or_default() += 1;
        code
    }

    fn summary(&self) -> String {
        let mut codes: Vec<(&str, usize)> = self.codes.iter().map(|(c, n)| (*c, *n)).collect();
        codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let codes: Vec<String> = codes
            .iter()
            .map(|(code, n)| format!("{code} {}", thousands(*n)))
            .collect();
        format!("{} cases: {}", thousands(self.cases), codes.join(", "))
    }

    /// Fails with every broken invariant: the cases' (the first few in
    /// full) and those found `afterwards`.
    fn assert_held(&self, afterwards: &[String]) {
        if self.failures.is_empty() && afterwards.is_empty() {
            return;
        }
        let mut report = format!(
            "{} of {} cases broke an invariant{}\n",
            thousands(self.failures.len()),
            thousands(self.cases),
            if self.failures.is_empty() { "" } else { ":" },
        );
        for failure in self.failures.iter().take(SHOWN_FAILURES) {
            report.push_str(&format!(
                "\n{} with {}, seed {:#018x}: {}\n    request: {}\n",
                failure.path,
                failure.sender.name(),
                failure.seed,
                failure.what,
                failure.request
            ));
        }
        if self.failures.len() > SHOWN_FAILURES {
            report.push_str(&format!(
                "\n... and {} more\n",
                self.failures.len() - SHOWN_FAILURES
            ));
        }
        for broken in afterwards {
            report.push_str(&format!("\n{broken}\n"));
        }
        panic!("{report}");
    }
}

/// The request as JSON, huge strings cut short (their seed makes them
/// again in full).
fn request_json(request: &DynamicMessage) -> String {
    fn shorten(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) if text.chars().count() > 200 => {
                let head: String = text.chars().take(40).collect();
                *text = format!("{head}… ({} chars)", text.chars().count());
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(shorten),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(shorten),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(request).expect("a request as JSON");
    shorten(&mut json);
    let text = json.to_string();
    // A long list of short items is cut too.
    if text.chars().count() > 2_000 {
        let head: String = text.chars().take(2_000).collect();
        format!("{head}… ({} chars)", text.chars().count())
    } else {
        text
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `12096` as `12,096`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A number from the environment, decimal or `0x` hexadecimal.
fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim().replace(['_', ','], "");
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

/// Panics on the sweep's runtime threads, where the services run, as the
/// panic hook saw them.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Notes every panic on the sweep's threads; other threads' panics, other
/// tests' among them, go on to the hook as before.
fn watch_for_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with(WORKER_THREAD));
            if ours {
                PANICS
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

fn panic_count() -> usize {
    PANICS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .len()
}

fn panics_since(count: usize) -> Vec<String> {
    PANICS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(count..)
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}
