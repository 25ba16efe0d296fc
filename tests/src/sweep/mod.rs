//! The hostile-input sweep's machinery: the methods it finds in the
//! descriptors, the senders and users it calls as, the bystanders whose
//! state must survive it, the values it mixes into requests, and its
//! seeded random numbers. The test itself is `tests/api/sweep.rs`.
//!
//! # Layout
//! - [`generator`]: makes one request from a seed.
//! - [`codec`]: calls a method with raw bytes, and how the call ended.
//! - [`tally`]: counts answers and keeps the failures, with what it takes
//!   to replay each.
//! - [`panics`]: panics on the threads the services run on.

mod codec;
mod generator;
mod panics;
mod tally;

pub use self::codec::*;
pub use self::generator::*;
pub use self::panics::*;
pub use self::tally::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, Once};
use std::time::Duration;

use crate::services::{TestAuth, TestChat, TestUser, with_token};
use api::auth::v1 as auth_pb;
use api::chat::v1 as chat_pb;
use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Cases per (method, sender) pair unless `SWEEP_CASES` says otherwise.
pub const DEFAULT_CASES: usize = 6;
pub const DEFAULT_SEED: u64 = 0x5EED_CA5E;
/// The packages swept, and whose descriptor set describes them.
pub const SWEPT: [(&str, &[u8], Service); 2] = [
    ("auth.v1", api::auth::v1::FILE_DESCRIPTOR_SET, Service::Auth),
    ("chat.v1", api::chat::v1::FILE_DESCRIPTOR_SET, Service::Chat),
];
/// Codes no request may get while every dependency is up: they mean the
/// service failed, not the request.
pub const FORBIDDEN: [Code; 4] = [
    Code::Internal,
    Code::Unknown,
    Code::Unavailable,
    Code::Unimplemented,
];
/// A call unanswered this long has hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stream is watched for its first item or status.
pub const FIRST_ITEM: Duration = Duration::from_millis(300);
/// Bytes of strings a request may carry: well under tonic's limit on
/// decoded messages, so that no case is refused for its size alone.
pub const REQUEST_BUDGET: usize = 3 << 20;
/// tonic's default limit on a decoded message.
pub const TONIC_LIMIT: usize = 4 << 20;
/// Tokens kept from responses for later requests.
pub const HARVESTED_TOKENS: usize = 16;
/// Threads of the runtime the services run on, so that a panic in them is
/// told apart from one in another test.
pub const WORKER_THREAD: &str = "sweep-worker";
/// Failures shown in full; the rest are counted.
pub const SHOWN_FAILURES: usize = 20;
/// Which process serves a method.
#[derive(Clone, Copy, Debug)]
pub enum Service {
    Auth,
    Chat,
}

/// One RPC, as its descriptor tells it.
pub struct Method {
    pub service: Service,
    /// `/package.Service/Method`.
    pub path: String,
    pub input: MessageDescriptor,
    pub descriptor: MethodDescriptor,
}

/// Every method of every service in the swept packages, nothing else
/// (health and reflection are not the services' own).
pub fn methods() -> Vec<Method> {
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
pub enum Sender {
    Anonymous,
    User,
    Admin,
}

impl Sender {
    pub const ALL: [Sender; 3] = [Sender::Anonymous, Sender::User, Sender::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Sender::Anonymous => "no token",
            Sender::User => "a user's token",
            Sender::Admin => "an admin's token",
        }
    }
}

pub fn case_seed(base: u64, method: usize, sender: Sender, case: usize) -> u64 {
    let mut rng = Rng(base ^ ((method as u64) << 40) ^ ((sender as u64) << 32) ^ case as u64);
    rng.next_u64()
}

/// splitmix64: small, seedable and the same everywhere, so that a seed
/// names a request.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The users, admin and chat one method is swept with. Made afresh for
/// each method, and again whenever a case broke them (a deleted account,
/// revoked tokens, a deleted chat), so that one case's damage does not
/// hide what the next would find.
pub struct Actors {
    pub user: TestUser,
    /// Another member of the user's chat: someone to act on.
    pub peer: TestUser,
    pub admin: TestUser,
    /// Made by the user, with the peer and the admin as members.
    pub chat_id: i64,
    pub message_ids: Vec<i64>,
}

impl Actors {
    pub async fn arrange(
        auth: &TestAuth,
        chat: &TestChat,
        root: &TestUser,
        method: usize,
    ) -> Actors {
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
    pub async fn intact(&self, auth: &TestAuth, chat: &TestChat) -> bool {
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
pub async fn promoted(auth: &TestAuth, root: &TestUser, name: &str) -> TestUser {
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
pub struct Bystanders {
    pub ada: TestUser,
    pub grace: TestUser,
    pub chat_id: i64,
    pub message_ids: Vec<i64>,
}

/// What the bystanders see of themselves and their chat.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub ada: Option<auth_pb::User>,
    pub grace: Option<auth_pb::User>,
    pub messages: Vec<chat_pb::Message>,
}

impl Bystanders {
    pub async fn arrange(auth: &TestAuth, chat: &TestChat) -> Bystanders {
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

    pub async fn observe(&self, auth: &TestAuth, chat: &TestChat) -> Result<Observed, Status> {
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
    pub fn ids(&self, root: &TestUser) -> Vec<i64> {
        let mut ids = vec![root.id, self.ada.id, self.grace.id, self.chat_id];
        ids.extend(&self.message_ids);
        ids
    }
}

/// Real values for the generator to mix with hostile ones.
pub struct Known {
    pub user_ids: Vec<i64>,
    pub chat_ids: Vec<i64>,
    pub message_ids: Vec<i64>,
    pub names: Vec<String>,
    pub emails: Vec<String>,
    pub passwords: Vec<String>,
    pub tokens: Vec<String>,
    pub endpoints: Vec<String>,
    /// Session ids: the senders' own and the bystanders'.
    pub sessions: Vec<String>,
}

impl Known {
    pub fn gather(
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
        let mut sessions: Vec<String> = people
            .iter()
            .filter_map(|p| session_of(&p.access_token))
            .collect();
        sessions.push(uuid::Uuid::nil().to_string());
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
            sessions,
        }
    }

    /// The real ids a field is likely to take, by its name, or else by
    /// its package's.
    pub fn ids_for(&self, field: &FieldDescriptor) -> Vec<i64> {
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
    pub fn strings_for(&self, field: &str) -> Vec<&String> {
        let by_name: &[&Vec<String>] = if field.contains("email") {
            &[&self.emails]
        } else if field.contains("password") {
            &[&self.passwords]
        } else if field.contains("session") {
            &[&self.sessions]
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
pub fn harvest_tokens(message: &DynamicMessage, tokens: &mut Vec<String>) {
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

/// The session an access token names (its `sid` claim), read without
/// checking the signature.
pub fn session_of(access_token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = access_token.split('.').nth(1)?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    Some(claims.get("sid")?.as_str()?.to_owned())
}

/// Unpadded base64url, as the services write page tokens.
pub fn base64_url(bytes: &[u8]) -> String {
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
