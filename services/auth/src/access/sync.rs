//! Keeps an [`AccessPolicy`] current with the database, across replicas:
//! PostgreSQL notifies every listening replica when a rule or a revocation
//! changes (see the triggers in `migrations/auth`).
//!
//! Listening starts before the first load, so no change can fall between
//! the two. After a lost connection everything is loaded again, and a full
//! reload every minute covers any notification lost in between.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use super::AccessPolicy;
use crate::db;
use crate::domain::{Role, UserId};

const RULES_CHANNEL: &str = "access_rules_changed";
const REVOCATIONS_CHANNEL: &str = "token_revocations";
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(60);

/// Loads the policy and keeps it current until the returned tasks are
/// aborted.
pub async fn start(pool: PgPool, policy: Arc<AccessPolicy>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener
        .listen_all([RULES_CHANNEL, REVOCATIONS_CHANNEL])
        .await?;
    reload(&pool, &policy).await?;

    let listening = tokio::spawn({
        let (pool, policy) = (pool.clone(), policy.clone());
        async move { listen(listener, pool, policy).await }
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

async fn listen(mut listener: PgListener, pool: PgPool, policy: Arc<AccessPolicy>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.channel() {
                REVOCATIONS_CHANNEL => match parse_revocation(notification.payload()) {
                    Some((user, min_version)) => policy.revoke(user, min_version),
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "unreadable revocation notice"
                    ),
                },
                _ => {
                    if let Err(error) = reload_rules(&pool, &policy).await {
                        tracing::warn!(%error, "reloading the access rules failed");
                    }
                }
            },
            // The connection was lost; the next call reconnects and listens
            // again. What changed meanwhile is loaded anew.
            Ok(None) => {
                tracing::warn!("lost the policy notification connection; reloading");
                while let Err(error) = reload(&pool, &policy).await {
                    tracing::warn!(%error, "reloading the access policy failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "listening for policy changes failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn reload(pool: &PgPool, policy: &AccessPolicy) -> anyhow::Result<()> {
    reload_rules(pool, policy).await?;
    for revocation in db::revocations::all(pool).await? {
        policy.revoke(UserId(revocation.user_id), revocation.min_token_version);
    }
    Ok(())
}

async fn reload_rules(pool: &PgPool, policy: &AccessPolicy) -> anyhow::Result<()> {
    let rules = db::access_rules::all(pool).await?;
    let count = rules.len();
    policy.replace_rules(
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

/// `user_id:min_version`, as the trigger writes it.
fn parse_revocation(payload: &str) -> Option<(UserId, i64)> {
    let (user, version) = payload.split_once(':')?;
    Some((UserId(user.parse().ok()?), version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_notices_parse() {
        assert_eq!(parse_revocation("42:3"), Some((UserId(42), 3)));
        assert_eq!(parse_revocation("42"), None);
        assert_eq!(parse_revocation("x:3"), None);
    }
}
