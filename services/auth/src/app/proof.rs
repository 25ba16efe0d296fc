//! Proof of the account's owner within a call: deleting one's own
//! account, renaming it or changing its email takes the current password,
//! or, where two-factor login is on, a code, besides the access token. A
//! stolen access token alone cannot take an account over or end it.
//!
//! Each proof is one attempt against the caller's session's lockout, as
//! `ChangePassword`'s current password is: guessing is limited, and a
//! stolen token cannot lock its owner out of logging in.

use super::App;
use super::two_factor::use_code;
use crate::access::Caller;
use crate::db;
use crate::domain::{Password, UserId};
use crate::error::{Error, Result};
use crate::lockout::{Attempt, Scope, Verdict};

/// What a call presents to prove it is the account's owner.
#[derive(Default)]
pub struct Proof {
    pub password: Option<Password>,
    /// A TOTP code or a recovery code.
    pub code: Option<String>,
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
        let Some(principal) = caller.principal().filter(|p| p.user_id == user) else {
            return Ok(());
        };
        let scope = match principal.session {
            Some(session) => Scope::Session(session),
            None => Scope::User(user.0),
        };
        let (pool, passwords) = (self.pool.clone(), self.passwords.clone());
        let (field, check) = match proof {
            Proof {
                code: Some(code), ..
            } => (
                "code",
                Box::pin(async move {
                    Ok(if use_code(&pool, user.0, &code).await? {
                        Verdict::Right(())
                    } else {
                        Verdict::Wrong
                    })
                })
                    as std::pin::Pin<Box<dyn Future<Output = Result<Verdict<()>>> + Send>>,
            ),
            Proof {
                password: Some(password),
                ..
            } => (
                "current_password",
                Box::pin(async move {
                    let stored = db::users::password_hash(&pool, user.0)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("no user {}", user.0)))?;
                    Ok(if passwords.verify(&password, Some(&stored)).await? {
                        Verdict::Right(())
                    } else {
                        Verdict::Wrong
                    })
                }) as _,
            ),
            Proof { .. } => {
                return Err(Error::invalid(
                    "current_password",
                    format!("is needed to {what} (or code, where two-factor login is on)"),
                ));
            }
        };
        let attempt = Attempt {
            scope,
            address: None,
        };
        match self.lockout.attempt(attempt, check).await? {
            Verdict::Right(()) => Ok(()),
            Verdict::Wrong | Verdict::Halfway(()) => Err(Error::invalid(
                field,
                if field == "code" {
                    "is neither the authenticator's current code nor an unused recovery code"
                } else {
                    "is not the account's password"
                },
            )),
        }
    }
}
