//! Keeps an [`AccessPolicy`] current with the database, across replicas:
//! PostgreSQL notifies every listening replica when a rule or a revocation
//! changes (see the triggers in `migrations/auth`).
//!
//! [`Notifications`] says when listening (re)starts, after which
//! everything is loaded anew, and confirms the policy's freshness with its
//! heartbeats; while it cannot, checks fail closed. A full reload every
//! minute also forgets revocations older than every token they refuse.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use host::notifications::{Event, Notifications};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::task::JoinHandle;

use super::{AccessPolicy, EndedSession, Revocation};
use crate::db;
use crate::domain::{Role, UserId};

const RULES_CHANNEL: &str = "access_rules_changed";
const REVOCATIONS_CHANNEL: &str = "token_revocations";
const SESSIONS_CHANNEL: &str = "sessions_ended";
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(60);
/// How long start-up waits to be listening and loaded.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Listens, loads the policy, and keeps it current until the returned
/// tasks are aborted.
pub async fn start(
    pool: PgPool,
    connect: PgConnectOptions,
    policy: Arc<AccessPolicy>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut notifications = Notifications::new(
        connect,
        &[RULES_CHANNEL, REVOCATIONS_CHANNEL, SESSIONS_CHANNEL],
        policy.freshness().clone(),
    );
    tokio::time::timeout(START_WITHIN, async {
        loop {
            if let Event::Listening { since } = notifications.next().await {
                reload(&pool, &policy).await?;
                policy.freshness().confirm(since);
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("listening for access policy changes")??;

    let listening = tokio::spawn({
        let (pool, policy) = (pool.clone(), policy.clone());
        async move { listen(notifications, pool, policy).await }
    });
    let reloading = tokio::spawn(async move {
        let mut every = tokio::time::interval(FULL_RELOAD_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(error) = reload(&pool, &policy).await {
                tracing::warn!(%error, "reloading the access policy failed");
            }
        }
    });
    Ok(vec![listening, reloading])
}

async fn listen(mut notifications: Notifications, pool: PgPool, policy: Arc<AccessPolicy>) {
    loop {
        match notifications.next().await {
            Event::Listening { since } => {
                // Until this reload is done the policy's freshness is not
                // confirmed, so checks fail closed once it is too old.
                while let Err(error) = reload(&pool, &policy).await {
                    tracing::warn!(%error, "reloading the access policy failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                policy.freshness().confirm(since);
                policy.announce_resync();
                tracing::info!("listening for access policy changes; policy reloaded");
            }
            Event::Notification(notification) => match notification.channel() {
                REVOCATIONS_CHANNEL => match parse_revocation(notification.payload()) {
                    Some((user, revocation)) => policy.merge(user, revocation),
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "unreadable revocation notice"
                    ),
                },
                SESSIONS_CHANNEL => match parse_session_ended(notification.payload()) {
                    Some((session, ended)) => policy.end_session(session, ended),
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "unreadable session ending notice"
                    ),
                },
                _ => {
                    while let Err(error) = reload_rules(&pool, &policy).await {
                        tracing::warn!(%error, "reloading the access rules failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    // A rule gone may refuse what services allowed and
                    // kept: they check again.
                    policy.announce_resync();
                }
            },
        }
    }
}

async fn reload(pool: &PgPool, policy: &AccessPolicy) -> anyhow::Result<()> {
    reload_rules(pool, policy).await?;
    for row in db::revocations::all(pool).await? {
        policy.merge(
            UserId(row.user_id),
            Revocation {
                min_version: row.min_token_version,
                current_name: row.current_name,
                name_version: row.name_version,
                at: row.revoked_at,
            },
        );
    }
    for ended in db::refresh_families::ended_within(pool, policy.revocation_lifetime()).await? {
        policy.end_session(
            ended.id,
            EndedSession {
                user: UserId(ended.user_id),
                at: ended.revoked_at,
            },
        );
    }
    let kept = policy.forget_expired();
    tracing::debug!(revocations = kept, "revocations loaded");
    Ok(())
}

async fn reload_rules(pool: &PgPool, policy: &AccessPolicy) -> anyhow::Result<()> {
    let generation = policy.next_generation();
    let rules = db::access_rules::all(pool).await?;
    let count = rules.len();
    policy.replace_rules(
        generation,
        rules
            .into_iter()
            .filter_map(|rule| match Role::from_db(&rule.role) {
                Some(role) => Some((rule.endpoint, role)),
                None => {
                    tracing::warn!(
                        role = rule.role,
                        endpoint = rule.endpoint,
                        "access rule with an unknown role ignored"
                    );
                    None
                }
            }),
    );
    tracing::debug!(rules = count, "access rules loaded");
    Ok(())
}

/// `user_id:min_version:name_version[:current_name]`, as the trigger
/// writes it.
fn parse_revocation(payload: &str) -> Option<(UserId, Revocation)> {
    let mut parts = payload.splitn(4, ':');
    let user = UserId(parts.next()?.parse().ok()?);
    let min_version = parts.next()?.parse().ok()?;
    let name_version = parts.next()?.parse().ok()?;
    Some((
        user,
        Revocation {
            min_version,
            current_name: parts.next().map(str::to_owned),
            name_version,
            at: time::OffsetDateTime::now_utc(),
        },
    ))
}

/// `user_id:session_id`, as the trigger writes it.
fn parse_session_ended(payload: &str) -> Option<(uuid::Uuid, EndedSession)> {
    let (user, session) = payload.split_once(':')?;
    Some((
        session.parse().ok()?,
        EndedSession {
            user: UserId(user.parse().ok()?),
            at: time::OffsetDateTime::now_utc(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_notices_parse() {
        let (user, revocation) = parse_revocation("42:3:0").expect("a notice");
        assert_eq!((user, revocation.min_version), (UserId(42), 3));
        assert_eq!(revocation.current_name, None);
        let (_, renamed) = parse_revocation("42:3:9:ada:lovelace").expect("a notice");
        assert_eq!(renamed.current_name.as_deref(), Some("ada:lovelace"));
        assert_eq!(renamed.name_version, 9);
        assert!(parse_revocation("42").is_none());
        assert!(parse_revocation("42:3").is_none());
        assert!(parse_revocation("x:3").is_none());
    }

    #[test]
    fn session_ending_notices_parse() {
        let session = uuid::Uuid::new_v4();
        let (parsed, ended) = parse_session_ended(&format!("42:{session}")).expect("a notice");
        assert_eq!((parsed, ended.user), (session, UserId(42)));
        assert!(parse_session_ended("42").is_none());
        assert!(parse_session_ended("42:not-a-uuid").is_none());
        assert!(parse_session_ended(&format!("x:{session}")).is_none());
    }
}
