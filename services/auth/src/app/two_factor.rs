//! Two-factor login with TOTP: enrolling a secret, confirming it with a
//! code (which shows ten recovery codes once), finishing a login whose
//! password was right with a code, and turning it off with the password
//! and a code.
//!
//! A login's codes count toward the same lockout as its password (the
//! scope the password was checked against is kept in the challenge), and
//! a right password of a user with two-factor login on clears nothing: only
//! a finished login does. So guessing codes is as limited as guessing
//! passwords, and knowing the password does not reset the count. Each
//! challenge also ends after [`CHALLENGE_FAILURES`] wrong codes.

use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;

use super::App;
use super::proof::{Evidence, Proof, now_step, proof_scope, use_code};
use super::sessions::{Session, SessionStart, expiry};
use crate::access::Caller;
use crate::db;
use crate::domain::{Password, UserId};
use crate::error::{Error, Result};
use crate::lockout::{Attempt, Scope, Verdict};
use crate::tokens::{refresh, totp};

/// How long a login may wait for its second factor.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes that end a challenge.
pub const CHALLENGE_FAILURES: i32 = 5;
/// How the secret is labelled in authenticator apps.
pub const ISSUER: &str = "chat";
/// Challenges are told apart from other tokens by this.
const CHALLENGE_PREFIX: &str = "lc_";

/// A new secret, to be confirmed.
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// What finishing a login presents.
pub struct SecondFactor {
    pub challenge: String,
    pub code: String,
    /// The client's address, if known.
    pub address: Option<std::net::IpAddr>,
}

/// The caller's own account, for changes only its owner may make.
fn owner(caller: &Caller) -> Result<(i64, String)> {
    let principal = caller.signed_in("two-factor login is set up with an access token")?;
    Ok((principal.user_id.0, principal.name.clone()))
}

impl App {
    /// A challenge for a login whose password was right, kept for
    /// [`CHALLENGE_TTL`]; its codes count against `throttle_key`.
    pub(super) async fn second_factor_challenge(
        &self,
        start: SessionStart,
        throttle_key: String,
    ) -> Result<(SecretString, OffsetDateTime)> {
        let (challenge, digest) = refresh::generate_with(CHALLENGE_PREFIX);
        let expires_at = expiry(CHALLENGE_TTL)?;
        db::login_challenges::insert(
            &self.pool,
            &digest,
            &db::login_challenges::Challenge {
                user_id: start.user_id,
                token_version: start.token_version,
                throttle_key,
                device: start.device,
                client: start.client,
                address: start.address,
            },
            expires_at,
        )
        .await?;
        Ok((challenge, expires_at))
    }

    /// Finishes a login with its second factor.
    pub async fn complete_login(&self, presented: SecondFactor) -> Result<Session> {
        let refused = || {
            Error::unauthenticated(
                "the login challenge is unknown, expired or used up; log in again",
            )
        };
        let digest = refresh::digest(&presented.challenge);
        let challenge = db::login_challenges::find(&self.pool, &digest)
            .await?
            .ok_or_else(refused)?;
        tracing::Span::current().record("user_id", challenge.user_id);
        let attempt = Attempt {
            scope: Scope::Kept(challenge.throttle_key.clone()),
            address: presented.address,
        };
        let check = {
            let (pool, user_id, code) = (self.pool.clone(), challenge.user_id, presented.code);
            async move {
                Ok(if use_code(&pool, user_id, &code).await? {
                    Verdict::Right(())
                } else {
                    Verdict::Wrong
                })
            }
        };
        match self.lockout.attempt(attempt, check).await? {
            Verdict::Right(()) => {}
            Verdict::Wrong | Verdict::Halfway(()) => {
                db::login_challenges::count_failure(&self.pool, &digest, CHALLENGE_FAILURES)
                    .await?;
                tracing::warn!(
                    security_event = "second_factor_failed",
                    "login refused: wrong second-factor code"
                );
                self.metrics
                    .logins
                    .with_label_values(&["wrong_second_factor"])
                    .inc();
                return Err(Error::unauthenticated("wrong code"));
            }
        }
        // Single-use: of two calls with one challenge, one goes on.
        if !db::login_challenges::take(&self.pool, &digest).await? {
            return Err(refused());
        }
        let session = self
            .start_session(SessionStart {
                user_id: challenge.user_id,
                token_version: challenge.token_version,
                device: challenge.device,
                client: challenge.client,
                address: challenge.address,
            })
            .await?;
        self.metrics.logins.with_label_values(&["success"]).inc();
        tracing::info!("logged in with a second factor");
        Ok(session)
    }

    /// A new pending secret for the caller.
    pub async fn enroll_totp(&self, caller: &Caller) -> Result<Enrolment> {
        let (user, name) = owner(caller)?;
        let secret = totp::new_secret();
        if !db::totp::enroll(&self.pool, user, &secret).await? {
            return Err(Error::FailedPrecondition(
                "two-factor login is on already; turn it off first to enrol a new secret".into(),
            ));
        }
        Ok(Enrolment {
            secret: totp::base32(&secret),
            otpauth_uri: totp::otpauth_uri(ISSUER, &name, &secret),
        })
    }

    /// Turns two-factor login on with a code from the pending secret; the
    /// recovery codes, shown this once.
    pub async fn confirm_totp(
        &self,
        caller: &Caller,
        code: &str,
        password: Option<Password>,
    ) -> Result<Vec<String>> {
        let (user, _) = owner(caller)?;
        let credential = db::totp::credential(&self.pool, user).await?;
        let Some(credential) = credential.filter(|credential| !credential.confirmed) else {
            return Err(Error::FailedPrecondition(
                "no secret is waiting to be confirmed: enrol first".into(),
            ));
        };
        let after = u64::try_from(credential.last_step).unwrap_or(0);
        let Some(step) = totp::matching_step(&credential.secret, code, now_step(), after) else {
            return Err(Error::invalid(
                "code",
                "is not the authenticator's current code",
            ));
        };
        self.prove_owner(
            caller,
            UserId(user),
            Proof {
                password,
                code: None,
            },
            "turn two-factor login on",
        )
        .await?;
        let codes = totp::new_recovery_codes();
        let digests: Vec<Vec<u8>> = codes
            .iter()
            .filter_map(|code| totp::normalize_recovery_code(code))
            .map(|code| refresh::digest(&code))
            .collect();
        let mut tx = self.pool.begin().await?;
        if !db::totp::confirm(&mut tx, user, &credential.secret, step as i64, &digests).await? {
            return Err(Error::FailedPrecondition(
                "the secret changed or was confirmed meanwhile; enrol again".into(),
            ));
        }
        tx.commit().await?;
        tracing::info!(
            security_event = "totp_enabled",
            "two-factor login turned on"
        );
        Ok(codes)
    }

    /// Turns two-factor login off, with the password and a code. The
    /// password counts toward the session's lockout, as `ChangePassword`'s.
    pub async fn disable_totp(
        &self,
        caller: &Caller,
        password: Password,
        code: &str,
    ) -> Result<()> {
        let (user, _) = owner(caller)?;
        let on = db::totp::credential(&self.pool, user)
            .await?
            .is_some_and(|credential| credential.confirmed);
        if !on {
            return Err(Error::FailedPrecondition(
                "two-factor login is not on".into(),
            ));
        }
        // Password and code are one attempt: a wrong code counts as a
        // wrong password would, so knowing the password gives no
        // unlimited guesses at codes.
        self.check_evidence(
            proof_scope(caller, user),
            user,
            vec![
                Evidence::Password {
                    field: "password",
                    password,
                },
                Evidence::Code(code.to_owned()),
            ],
        )
        .await?;
        let mut tx = self.pool.begin().await?;
        db::totp::remove(&mut tx, user).await?;
        tx.commit().await?;
        tracing::info!(
            security_event = "totp_disabled",
            user_id = UserId(user).0,
            "two-factor login turned off"
        );
        Ok(())
    }
}
