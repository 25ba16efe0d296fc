//! How replicas tell each other what they committed: each chat's newest
//! message id, deleted chats and removed members; and what is never
//! stored or only coalesced: read markers that moved, and who is typing.
//!
//! Two buses, chosen by [`Fanout`]:
//! - **PostgreSQL** (the default, nothing else to run): announcements are
//!   `NOTIFY`s on the `chat_events` channel, sent in a transaction of their
//!   own after the messages' commits; deleted chats are announced by the
//!   delete's own transaction (a trigger). Every replica listens on one
//!   connection of its own ([`Notifications`]).
//! - **NATS** (`CHAT_FANOUT_URL=nats://...`): announcements are published on
//!   one subject per chat, `chat.events.<chat_id>`, and every replica
//!   subscribes to them all. No notification is sent by the database, so
//!   the number of replicas and of sends costs PostgreSQL nothing more.
//!
//! Either way announcements are at-most-once: a replica that dies after a
//! commit, a NATS server that restarts, a subscriber that falls behind all
//! lose some. The hub's poll of the database, and its comparison each time
//! the bus (re)connects ([`Heard::Ready`]), find what was lost.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use host::notifications::{Event as Notice, Freshness, Notifications};
use prometheus::{IntCounter, IntGauge};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;

use crate::config::{Fanout, FanoutAuth};
use crate::db;

const CHANNEL: &str = "chat_events";
const SUBJECTS: &str = "chat.events.*";
/// How long a publication or a round trip to NATS may take before the
/// announcement is retried.
const NATS_WITHIN: Duration = Duration::from_secs(2);
/// Announcements read but not yet handled, per replica, before NATS drops
/// the oldest (the poll then finds what they announced).
const NATS_BACKLOG: usize = 8192;

/// What another replica (or this one) announced.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Announcement {
    /// The chat's messages up to this id are committed.
    Message { chat_id: i64, message_id: i64 },
    /// The chat is gone.
    Deleted { chat_id: i64 },
    /// The user is no longer a member of the chat, as of its members
    /// version `version`.
    Removed {
        chat_id: i64,
        user_id: i64,
        version: i64,
    },
    /// The user's read marker in the chat moved to this message, whose
    /// sequence number is `seq`.
    Read {
        chat_id: i64,
        user_id: i64,
        message_id: i64,
        seq: i64,
    },
    /// The user is typing in the chat for the next `for_ms` milliseconds
    /// (0: stopped).
    Typing {
        chat_id: i64,
        user_id: i64,
        for_ms: u32,
    },
}

impl Announcement {
    /// `message:<chat_id>:<message_id>`, `deleted:<chat_id>`,
    /// `removed:<chat_id>:<user_id>:<members_version>`,
    /// `read:<chat_id>:<user_id>:<message_id>:<seq>` or
    /// `typing:<chat_id>:<user_id>:<for_ms>`.
    fn payload(&self) -> String {
        match self {
            Announcement::Message {
                chat_id,
                message_id,
            } => format!("message:{chat_id}:{message_id}"),
            Announcement::Deleted { chat_id } => format!("deleted:{chat_id}"),
            Announcement::Removed {
                chat_id,
                user_id,
                version,
            } => format!("removed:{chat_id}:{user_id}:{version}"),
            Announcement::Read {
                chat_id,
                user_id,
                message_id,
                seq,
            } => format!("read:{chat_id}:{user_id}:{message_id}:{seq}"),
            Announcement::Typing {
                chat_id,
                user_id,
                for_ms,
            } => format!("typing:{chat_id}:{user_id}:{for_ms}"),
        }
    }

    fn parse(payload: &str) -> Option<Announcement> {
        let mut parts = payload.split(':');
        let announcement = match (parts.next()?, parts.next()?.parse().ok()?, parts.next()) {
            ("message", chat_id, Some(message_id)) => Announcement::Message {
                chat_id,
                message_id: message_id.parse().ok()?,
            },
            ("deleted", chat_id, None) => Announcement::Deleted { chat_id },
            ("removed", chat_id, Some(user_id)) => Announcement::Removed {
                chat_id,
                user_id: user_id.parse().ok()?,
                version: parts.next()?.parse().ok()?,
            },
            ("read", chat_id, Some(user_id)) => Announcement::Read {
                chat_id,
                user_id: user_id.parse().ok()?,
                message_id: parts.next()?.parse().ok()?,
                seq: parts.next()?.parse().ok()?,
            },
            ("typing", chat_id, Some(user_id)) => Announcement::Typing {
                chat_id,
                user_id: user_id.parse().ok()?,
                for_ms: parts.next()?.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(announcement)
    }
}

/// What listening to the bus yields.
pub(crate) enum Heard {
    /// Listening (re)started: whatever was announced before may have been
    /// missed, and what is announced from now on will be heard.
    Ready,
    Announcement(Announcement),
}

/// The sending half.
#[derive(Clone)]
pub(crate) enum Announcer {
    Postgres(PgPool),
    Nats(async_nats::Client),
}

/// The listening half.
pub(crate) enum Listener {
    Postgres(Box<Notifications>, Malformed),
    Nats {
        client: async_nats::Client,
        subscriber: async_nats::Subscriber,
        /// Told on every (re)connection.
        connected: Arc<Notify>,
        malformed: Malformed,
    },
}

/// How often a malformed payload is logged at most; the others are only
/// counted, and the next line says how many there were.
const MALFORMED_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How much of a malformed payload a log line shows.
const MALFORMED_SHOWN_CHARS: usize = 64;

/// What is heard on the bus that is no announcement: counted, and logged
/// at most once per [`MALFORMED_LOG_INTERVAL`], truncated, so that a flood
/// of junk floods no log.
pub(crate) struct Malformed {
    counter: IntCounter,
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Malformed {
    fn new(counter: IntCounter) -> Malformed {
        Malformed {
            counter,
            last_logged: None,
            unlogged: 0,
        }
    }

    fn heard(&mut self, payload: &str, why: &'static str) {
        self.counter.inc();
        let now = std::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < MALFORMED_LOG_INTERVAL)
        {
            self.unlogged += 1;
            return;
        }
        let shown: String = payload.chars().take(MALFORMED_SHOWN_CHARS).collect();
        tracing::warn!(
            payload = shown,
            truncated = shown.len() < payload.len(),
            unlogged_since_last = self.unlogged,
            "{why} on the fan-out bus; ignored"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}

/// Connects to the bus `fanout` names. PostgreSQL's is listening when this
/// returns (or it fails within `start_within`); NATS's connects, and
/// reconnects, in the background, `connected` telling which it is.
pub(crate) async fn open(
    fanout: &Fanout,
    fanout_auth: &FanoutAuth,
    pool: PgPool,
    connect: PgConnectOptions,
    start_within: Duration,
    connected: IntGauge,
    malformed: IntCounter,
) -> anyhow::Result<(Announcer, Listener)> {
    let malformed = Malformed::new(malformed);
    match fanout {
        Fanout::Postgres => {
            let mut notifications = Notifications::new(connect, &[CHANNEL], Freshness::new());
            tokio::time::timeout(start_within, async {
                while !matches!(notifications.next().await, Notice::Listening { .. }) {}
            })
            .await
            .context("listening for chat events")?;
            connected.set(1);
            Ok((
                Announcer::Postgres(pool),
                // The first `Listening` is consumed above: the hub starts
                // with nothing to catch up on.
                Listener::Postgres(Box::new(notifications), malformed),
            ))
        }
        Fanout::Nats(url) => {
            let ready = Arc::new(Notify::new());
            let mut options = async_nats::ConnectOptions::new();
            if let (Some(user), Some(password)) = (&fanout_auth.user, &fanout_auth.password) {
                use secrecy::ExposeSecret as _;
                options =
                    options.user_and_password(user.clone(), password.expose_secret().to_owned());
            }
            if let Some(ca_file) = &fanout_auth.ca_file {
                options = options
                    .add_root_certificates(ca_file.clone())
                    .require_tls(true);
            }
            let client = options
                .name("chat")
                .retry_on_initial_connect()
                .max_reconnects(None)
                .subscription_capacity(NATS_BACKLOG)
                .connection_timeout(NATS_WITHIN)
                .event_callback({
                    let ready = ready.clone();
                    move |event| {
                        let ready = ready.clone();
                        let connected = connected.clone();
                        async move { on_nats_event(event, &ready, &connected) }
                    }
                })
                .connect(url.as_str())
                .await
                .with_context(|| format!("the NATS fan-out's address {}", fanout.redacted()))?;
            let subscriber = client
                .subscribe(SUBJECTS)
                .await
                .context("subscribing to chat events on NATS")?;
            Ok((
                Announcer::Nats(client.clone()),
                Listener::Nats {
                    client,
                    subscriber,
                    connected: ready,
                    malformed,
                },
            ))
        }
    }
}

fn on_nats_event(event: async_nats::Event, ready: &Notify, connected: &IntGauge) {
    match event {
        async_nats::Event::Connected => {
            connected.set(1);
            tracing::info!("connected to the NATS fan-out");
            ready.notify_one();
        }
        async_nats::Event::Disconnected => {
            connected.set(0);
            tracing::warn!(
                "lost the NATS fan-out; streams get other replicas' messages from the database poll until it is back"
            );
        }
        async_nats::Event::SlowConsumer(_) => {
            tracing::warn!(
                "chat events from NATS came faster than they were handled; the database poll finds the dropped ones"
            );
        }
        other => tracing::warn!(event = %other, "NATS fan-out"),
    }
}

impl Announcer {
    /// Tells every replica (this one included) of `announcements`, in
    /// order, in one statement or one burst of publications.
    pub(crate) async fn announce(&self, announcements: &[Announcement]) -> anyhow::Result<()> {
        match self {
            Announcer::Postgres(pool) => {
                // Deletions are announced by the delete's own transaction.
                let payloads: Vec<String> = announcements
                    .iter()
                    .filter(|announcement| !matches!(announcement, Announcement::Deleted { .. }))
                    .map(Announcement::payload)
                    .collect();
                if !payloads.is_empty() {
                    db::announcements::notify(pool, &payloads).await?;
                }
                Ok(())
            }
            Announcer::Nats(client) => tokio::time::timeout(NATS_WITHIN, async {
                for announcement in announcements {
                    client
                        .publish(subject_of(announcement), announcement.payload().into())
                        .await?;
                }
                anyhow::Ok(())
            })
            .await
            .context("publishing to NATS timed out")?,
        }
    }

    /// Whether deletions need announcing by the replica that deleted.
    pub(crate) fn announces_deletions(&self) -> bool {
        matches!(self, Announcer::Nats(_))
    }
}

impl Listener {
    /// The next thing heard; `None` once the bus is closed for good, which
    /// only a bug does.
    pub(crate) async fn next(&mut self) -> Option<Heard> {
        match self {
            Listener::Postgres(notifications, malformed) => loop {
                match notifications.next().await {
                    Notice::Listening { .. } => return Some(Heard::Ready),
                    Notice::Notification(notification) => {
                        match Announcement::parse(notification.payload()) {
                            Some(announcement) => return Some(Heard::Announcement(announcement)),
                            None => {
                                malformed.heard(notification.payload(), "an unreadable chat event")
                            }
                        }
                    }
                }
            },
            Listener::Nats {
                client,
                subscriber,
                connected,
                malformed,
            } => loop {
                tokio::select! {
                    biased;
                    () = connected.notified() => {
                        // Subscriptions are renewed on reconnecting, before
                        // this round trip ends: from then on nothing
                        // announced is missed.
                        if let Err(error) = tokio::time::timeout(NATS_WITHIN, client.flush()).await {
                            tracing::warn!(%error, "NATS did not answer after reconnecting");
                        }
                        return Some(Heard::Ready);
                    }
                    message = subscriber.next() => {
                        let message = message?;
                        let payload = String::from_utf8_lossy(&message.payload);
                        match std::str::from_utf8(&message.payload).ok().and_then(Announcement::parse) {
                            // The payload's chat must be its subject's: a
                            // subject is what NATS permissions can limit.
                            Some(announcement)
                                if message.subject.as_str() == subject_of(&announcement) =>
                            {
                                return Some(Heard::Announcement(announcement));
                            }
                            Some(_) => malformed.heard(&payload, "a chat event under another chat's subject"),
                            None => malformed.heard(&payload, "an unreadable chat event"),
                        }
                    }
                }
            },
        }
    }
}

/// The NATS subject an announcement is published on.
fn subject_of(announcement: &Announcement) -> String {
    format!("chat.events.{}", announcement.chat_id())
}

impl Announcement {
    fn chat_id(&self) -> i64 {
        match *self {
            Announcement::Message { chat_id, .. }
            | Announcement::Deleted { chat_id }
            | Announcement::Removed { chat_id, .. }
            | Announcement::Read { chat_id, .. }
            | Announcement::Typing { chat_id, .. } => chat_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back_what_they_write() {
        for announcement in [
            Announcement::Message {
                chat_id: 3,
                message_id: 42,
            },
            Announcement::Deleted { chat_id: 3 },
            Announcement::Removed {
                chat_id: 3,
                user_id: 7,
                version: 2,
            },
            Announcement::Read {
                chat_id: 3,
                user_id: 7,
                message_id: 42,
                seq: 9,
            },
            Announcement::Typing {
                chat_id: 3,
                user_id: 7,
                for_ms: 6000,
            },
        ] {
            assert_eq!(
                Announcement::parse(&announcement.payload()),
                Some(announcement)
            );
        }
        assert_eq!(
            Announcement::parse("message:3:42"),
            Some(Announcement::Message {
                chat_id: 3,
                message_id: 42
            })
        );
        for junk in [
            "",
            "message:3",
            "deleted:x",
            "message:3:4:5",
            "other:1",
            "removed:3",
            "removed:3:7",
            "removed:3:7:2:1",
            "read:3:7:42",
            "read:3:7:42:9:1",
            "typing:3:7",
            "typing:3:7:-1",
            "typing:3:7:6000:1",
        ] {
            assert_eq!(Announcement::parse(junk), None, "{junk:?}");
        }
    }
}
