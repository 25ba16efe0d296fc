//! The caller's sessions, listed and ended: one per login, each a refresh
//! token family. Ending one revokes the family; the trigger on
//! `refresh_families` tells every replica, whose policy then refuses the
//! session's access tokens, and tells the services watching revocations,
//! which end the streams those tokens hold open.

use time::OffsetDateTime;
use uuid::Uuid;

use super::App;
use crate::access::{Caller, EndedSession};
use crate::db;
use crate::domain::UserId;
use crate::error::{Error, Result};

/// The most sessions listed.
pub const MAX_LISTED: i64 = 100;

/// A session as its owner is shown it.
pub struct SessionView {
    pub id: Uuid,
    pub started_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub client: String,
    pub address: String,
    /// The session of the caller's token.
    pub current: bool,
}

/// Who the session calls are for, and which session they come from.
fn signed_in(caller: &Caller) -> Result<(i64, Option<Uuid>)> {
    let principal = caller.signed_in("sessions are listed and ended with an access token")?;
    Ok((principal.user_id.0, principal.session))
}

impl App {
    /// The caller's usable sessions, most recently used first.
    pub async fn list_sessions(&self, caller: &Caller) -> Result<Vec<SessionView>> {
        let (user, current) = signed_in(caller)?;
        let sessions = db::refresh_families::usable_of(&self.pool, user, MAX_LISTED).await?;
        Ok(sessions
            .into_iter()
            .map(|session| SessionView {
                current: Some(session.id) == current,
                id: session.id,
                started_at: session.created_at,
                last_used_at: session.last_used_at,
                expires_at: session.expires_at,
                client: session.client,
                address: session.address,
            })
            .collect())
    }

    /// Ends one of the caller's sessions. Another user's session is
    /// `NOT_FOUND`, as one that never existed: ids are not confirmed to
    /// strangers.
    pub async fn revoke_session(&self, caller: &Caller, session: Uuid) -> Result<()> {
        let (user, _) = signed_in(caller)?;
        match db::refresh_families::revoke_owned(&self.pool, session, user).await? {
            None => Err(Error::NotFound(format!("no session {session}"))),
            Some(ended) => {
                self.session_ended(user, session);
                if ended {
                    tracing::info!(
                        security_event = "session_revoked",
                        session_id = %session,
                        "a session was ended by its owner"
                    );
                }
                Ok(())
            }
        }
    }

    /// Ends every session of the caller but the current one; how many.
    pub async fn revoke_other_sessions(&self, caller: &Caller) -> Result<u64> {
        let (user, current) = signed_in(caller)?;
        let current = current.ok_or_else(|| {
            Error::FailedPrecondition(
                "this access token names no session; log in again to end the others".into(),
            )
        })?;
        let ended = db::refresh_families::revoke_all_but(&self.pool, user, current).await?;
        for session in &ended {
            self.session_ended(user, session.id);
        }
        // Counted as listed: families with no usable refresh token left
        // are ended too, for any access token of theirs, but were not shown.
        let listed = ended.iter().filter(|session| session.usable).count();
        tracing::info!(
            security_event = "other_sessions_revoked",
            sessions = listed,
            "a user ended their other sessions"
        );
        Ok(listed as u64)
    }

    /// Refuses the ended session's access tokens here at once; other
    /// replicas hear of it from the database (see `access::sync`).
    pub(super) fn session_ended(&self, user: i64, session: Uuid) {
        self.policy.end_session(
            session,
            EndedSession {
                user: UserId(user),
                at: OffsetDateTime::now_utc(),
            },
        );
    }
}
