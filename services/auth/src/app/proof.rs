//! Proof of the account's owner within a call: the current password, a
//! TOTP code or a recovery code, checked as one attempt against the
//! caller's session's lockout, so that guessing is limited and a stolen
//! access token cannot lock its owner out of logging in.
//!
//! `ChangePassword` takes the current password; deleting one's own
//! account, renaming it or changing its email take the password or, where
//! two-factor login is on, a code ([`App::prove_owner`]); turning
//! two-factor login on or off takes the password, and off a code too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::PgPool;

use super::App;
use crate::access::Caller;
use crate::db;
use crate::domain::{Password, UserId};
use crate::error::{Error, Result};
use crate::lockout::{Attempt, Scope, Verdict};
use crate::passwords::PasswordHasher;
use crate::tokens::{refresh, totp};

/// What a call presents to prove it is the account's owner.
#[derive(Default)]
pub struct Proof {
    pub password: Option<Password>,
    /// A TOTP code or a recovery code.
    pub code: Option<String>,
}

/// One piece of proof, and the request field it came in.
pub(super) enum Evidence {
    Password {
        field: &'static str,
        password: Password,
    },
    /// A TOTP code or a recovery code, in the field `code`.
    Code(String),
}

impl Evidence {
    fn field(&self) -> &'static str {
        match self {
            Evidence::Password { field, .. } => field,
            Evidence::Code(_) => "code",
        }
    }

    fn refusal(&self) -> &'static str {
        match self {
            Evidence::Password { .. } => "is not the account's password",
            Evidence::Code(_) => {
                "is neither the authenticator's current code nor an unused recovery code"
            }
        }
    }

    /// Whether it proves `user`; a code that does is used up.
    async fn holds(&self, pool: &PgPool, passwords: &PasswordHasher, user: i64) -> Result<bool> {
        match self {
            Evidence::Password { password, .. } => {
                let stored = db::users::password_hash(pool, user)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("user {user} not found")))?;
                passwords.verify(password, Some(&stored)).await
            }
            Evidence::Code(code) => use_code(pool, user, code).await,
        }
    }
}

/// The TOTP step now.
pub(super) fn now_step() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    totp::step_at(now)
}

/// Whether `code` is the user's current TOTP code (never one used
/// before) or one of their unused recovery codes; a code that is is used
/// up by this call.
pub(super) async fn use_code(pool: &PgPool, user_id: i64, code: &str) -> Result<bool> {
    let Some(credential) = db::totp::credential(pool, user_id).await? else {
        return Ok(false);
    };
    if !credential.confirmed {
        return Ok(false);
    }
    if totp::parse_code(code).is_some() {
        let after = u64::try_from(credential.last_step).unwrap_or(0);
        return Ok(
            match totp::matching_step(&credential.secret, code, now_step(), after) {
                Some(step) => db::totp::use_step(pool, user_id, step as i64).await?,
                None => false,
            },
        );
    }
    match totp::normalize_recovery_code(code) {
        Some(normalized) => {
            db::totp::use_recovery_code(pool, user_id, &refresh::digest(&normalized)).await
        }
        None => Ok(false),
    }
}

/// Whom a proof by `caller` about `user` counts against: the caller's
/// session, never the name, so a stolen access token cannot lock its
/// owner out of logging in; the user, for a token that names no session.
pub(super) fn proof_scope(caller: &Caller, user: i64) -> Scope {
    match caller.principal().and_then(|principal| principal.session) {
        Some(session) => Scope::Session(session),
        None => Scope::User(user),
    }
}

impl App {
    /// Demands `proof` when the caller acts on their own account (`what`
    /// says what for); others acting (admins) need none.
    pub(super) async fn prove_owner(
        &self,
        caller: &Caller,
        user: UserId,
        proof: Proof,
        what: &str,
    ) -> Result<()> {
        if !caller.principal().is_some_and(|p| p.user_id == user) {
            return Ok(());
        }
        let evidence = match proof {
            Proof {
                code: Some(code), ..
            } => Evidence::Code(code),
            Proof {
                password: Some(password),
                ..
            } => Evidence::Password {
                field: "current_password",
                password,
            },
            Proof { .. } => {
                return Err(Error::invalid(
                    "current_password",
                    format!("is needed to {what} (or code, where two-factor login is on)"),
                ));
            }
        };
        self.check_evidence(proof_scope(caller, user.0), user.0, vec![evidence])
            .await
    }

    /// Checks every piece of `evidence` about `user`, in order, as one
    /// attempt against `scope`'s lockout: `INVALID_ARGUMENT` naming the
    /// field of the first that does not hold.
    pub(super) async fn check_evidence(
        &self,
        scope: Scope,
        user: i64,
        evidence: Vec<Evidence>,
    ) -> Result<()> {
        let refusals: Vec<(&'static str, &'static str)> = evidence
            .iter()
            .map(|piece| (piece.field(), piece.refusal()))
            .collect();
        let failed = Arc::new(AtomicUsize::new(0));
        let check = {
            let (pool, passwords, failed) =
                (self.pool.clone(), self.passwords.clone(), failed.clone());
            async move {
                for (index, piece) in evidence.iter().enumerate() {
                    if !piece.holds(&pool, &passwords, user).await? {
                        failed.store(index, Ordering::Release);
                        return Ok(Verdict::Wrong);
                    }
                }
                Ok(Verdict::Right(()))
            }
        };
        let attempt = Attempt {
            scope,
            address: None,
        };
        match self.lockout.attempt(attempt, check).await? {
            Verdict::Right(()) => Ok(()),
            Verdict::Wrong | Verdict::Halfway(()) => {
                let (field, refusal) = refusals
                    .get(failed.load(Ordering::Acquire))
                    .copied()
                    .unwrap_or(("current_password", "is not the account's password"));
                Err(Error::invalid(field, refusal))
            }
        }
    }
}
