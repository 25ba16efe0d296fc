//! Sessions: logins, refresh token rotation with reuse detection (RFC
//! 9700, section 4.14.2), access tokens and logout.

use std::net::IpAddr;

use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use super::App;
use crate::db;
use crate::domain::{LoginName, Password, Role, UserId};
use crate::error::{Error, Limit, Result};
use crate::lockout::{Attempt, Scope, Verdict};
use crate::tokens::access::Principal;
use crate::tokens::refresh;

/// The same words for an unknown name and a wrong password, so that
/// neither tells which names exist.
const BAD_CREDENTIALS: &str = "wrong user name or password";

/// What a login presents.
pub struct Credentials {
    pub name: LoginName,
    pub password: Password,
    /// The digest of the device token presented, if any.
    pub device: Option<Vec<u8>>,
    /// Where the login came from, if known.
    pub address: Option<IpAddr>,
    /// What the client calls itself (its user agent), cut to length; empty
    /// if it said nothing.
    pub client: String,
    /// The client can finish a login with a second factor.
    pub accepts_second_factor: bool,
}

/// A refresh token as presented, kept only as its digest.
pub struct PresentedToken(pub Vec<u8>);

/// The tokens a login starts a session with, and the device token for the
/// next login.
pub struct Session {
    pub refresh_token: SecretString,
    pub access_token: String,
    pub device_token: SecretString,
}

/// What a right password gets.
pub enum LoginOutcome {
    /// A session.
    Session(Session),
    /// A challenge for the second factor (see [`super::two_factor`]).
    SecondFactorDue {
        challenge: SecretString,
        expires_at: OffsetDateTime,
    },
}

/// Whom a session is started for, and where from.
pub(super) struct SessionStart {
    pub user_id: i64,
    /// The user's token version the login read; a change since ends it.
    pub token_version: i64,
    /// The digest of the device token the login presented, if valid.
    pub device: Option<Vec<u8>>,
    pub client: String,
    pub address: String,
}

impl App {
    /// Logs in: a new refresh token family, an access token and a device
    /// token. Known name or not, the same statements, the same hash work
    /// and the same count against the limit: the device's, if the client
    /// presents a valid device token for that user, else the name's and
    /// the client address's.
    pub async fn login(&self, credentials: Credentials) -> Result<LoginOutcome> {
        let Credentials {
            name,
            password,
            device,
            address,
            client,
            accepts_second_factor,
        } = credentials;
        let normalized = name.normalized();
        let (device, device_user) = match device {
            Some(digest) => {
                match db::device_tokens::is_bound_to(
                    &self.pool,
                    &digest,
                    name.as_str(),
                    &normalized,
                )
                .await?
                {
                    Some(user) => (Some(digest), Some(user)),
                    None => (None, None),
                }
            }
            None => (None, None),
        };
        let attempt = match &device {
            Some(digest) => Attempt {
                scope: Scope::Device(digest.clone()),
                address: None,
            },
            None => Attempt {
                scope: Scope::Name(normalized.clone()),
                address,
            },
        };
        let check = {
            let (pool, passwords, name) = (self.pool.clone(), self.passwords.clone(), name.clone());
            async move {
                let user = db::users::login_candidate(&pool, name.as_str(), &normalized).await?;
                // A device's guesses are counted for the device only while
                // they are at its own user's password: a name that reaches
                // another user (a grandfathered look-alike) gets no answer.
                let user = user.filter(|user| device_user.is_none_or(|owner| owner == user.id));
                let right = passwords
                    .verify(
                        &password,
                        user.as_ref().map(|user| user.password_hash.as_str()),
                    )
                    .await?;
                Ok(match user {
                    Some(user) if right && user.totp => Verdict::Halfway(user),
                    Some(user) if right => Verdict::Right(user),
                    _ => Verdict::Wrong,
                })
            }
        };
        let throttle_key = attempt.scope.key();
        let (user, halfway) = match self.lockout.attempt(attempt, check).await {
            Ok(Verdict::Right(user)) => (user, false),
            Ok(Verdict::Halfway(user)) => (user, true),
            Ok(Verdict::Wrong) => {
                tracing::warn!(
                    security_event = "login_failed",
                    "login refused: wrong user name or password"
                );
                self.metrics
                    .logins
                    .with_label_values(&["wrong_credentials"])
                    .inc();
                return Err(Error::unauthenticated(BAD_CREDENTIALS));
            }
            Err(
                error @ Error::ResourceExhausted {
                    limit: Limit::Lockout,
                    ..
                },
            ) => {
                tracing::warn!(
                    security_event = "login_locked",
                    "login refused: too many failures"
                );
                self.metrics.logins.with_label_values(&["locked"]).inc();
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        tracing::Span::current().record("user_id", user.id);
        let start = SessionStart {
            user_id: user.id,
            token_version: user.token_version,
            device,
            client,
            address: shown(address),
        };
        if halfway {
            if !accepts_second_factor {
                return Err(Error::FailedPrecondition(
                    "this account has two-factor login on: log in with a client that can finish it with a code (CompleteLogin)".into(),
                ));
            }
            let (challenge, expires_at) = self.second_factor_challenge(start, throttle_key).await?;
            self.metrics
                .logins
                .with_label_values(&["second_factor_due"])
                .inc();
            tracing::info!("password right; second factor due");
            return Ok(LoginOutcome::SecondFactorDue {
                challenge,
                expires_at,
            });
        }
        let session = self.start_session(start).await?;
        self.metrics.logins.with_label_values(&["success"]).inc();
        tracing::info!("logged in");
        Ok(LoginOutcome::Session(session))
    }

    /// Starts a session: a new refresh token family, an access token and a
    /// device token. The family starts only if the user's token version is
    /// still the one read before the password check: a password change,
    /// role change or deletion meanwhile ends the login here.
    pub(super) async fn start_session(&self, start: SessionStart) -> Result<Session> {
        let family_id = Uuid::new_v4();
        let (token, digest) = refresh::generate();
        let mut tx = self.pool.begin().await?;
        let Some(started) = db::refresh_families::start(
            &mut *tx,
            family_id,
            start.user_id,
            start.token_version,
            self.family_expiry()?,
            db::refresh_families::Origin {
                client: &start.client,
                address: &start.address,
            },
            i64::from(self.tokens.sessions_per_user),
        )
        .await?
        else {
            return Err(Error::unauthenticated(
                "the account changed while logging in; log in again",
            ));
        };
        db::refresh_tokens::insert(&mut *tx, &digest, family_id, self.refresh_expiry()?).await?;
        let (device_token, device_digest) = refresh::generate_device();
        db::device_tokens::issue(
            &mut *tx,
            &device_digest,
            start.user_id,
            expiry(self.devices.ttl)?,
            start.device.as_deref(),
            self.devices.per_user,
        )
        .await?;
        tx.commit().await?;
        for evicted in &started.evicted {
            self.session_ended(start.user_id, *evicted);
        }

        let principal = principal(
            start.user_id,
            started.name,
            &started.role,
            start.token_version,
            family_id,
        )?;
        let access_token = self.policy.tokens().issue(&principal)?;
        Ok(Session {
            refresh_token: token,
            access_token,
            device_token,
        })
    }

    /// Retires the presented refresh token and issues its successor in the
    /// same family. `address` is the client's, if known.
    pub async fn rotate(
        &self,
        presented: PresentedToken,
        address: Option<IpAddr>,
    ) -> Result<SecretString> {
        let mut tx = self.pool.begin().await?;
        let Some(retired) = db::refresh_tokens::retire_if_usable(&mut *tx, &presented.0).await?
        else {
            drop(tx);
            return Err(self.refuse_inactive(&presented.0).await);
        };
        tracing::Span::current().record("user_id", retired.user_id);
        let (token, digest) = refresh::generate();
        db::refresh_tokens::insert(&mut *tx, &digest, retired.family_id, self.refresh_expiry()?)
            .await?;
        db::refresh_families::touch(&mut *tx, retired.family_id, &shown(address)).await?;
        tx.commit().await?;
        self.metrics.refresh_tokens_rotated.inc();
        Ok(token)
    }

    /// An access token for the owner of a usable refresh token, with the
    /// user's role and version as they are now, not at login. `address` is
    /// the client's, if known.
    pub async fn access_token(
        &self,
        presented: PresentedToken,
        address: Option<IpAddr>,
    ) -> Result<String> {
        let Some(owner) = db::refresh_tokens::usable_owner(&self.pool, &presented.0).await? else {
            return Err(self.refuse_inactive(&presented.0).await);
        };
        tracing::Span::current().record("user_id", owner.user_id);
        db::refresh_families::touch(&self.pool, owner.family_id, &shown(address)).await?;
        let principal = principal(
            owner.user_id,
            owner.name,
            &owner.role,
            owner.token_version,
            owner.family_id,
        )?;
        self.policy.tokens().issue(&principal)
    }

    /// Ends the presented token's family.
    pub async fn logout(&self, presented: PresentedToken) -> Result<()> {
        let token = db::refresh_tokens::state(&self.pool, &presented.0)
            .await?
            .ok_or_else(|| Error::unauthenticated("refresh token is invalid"))?;
        tracing::Span::current().record("user_id", token.user_id);
        db::refresh_families::revoke(&self.pool, token.family_id).await?;
        self.session_ended(token.user_id, token.family_id);
        tracing::info!("logged out");
        Ok(())
    }

    /// When a family started now must end, however often it rotates.
    fn family_expiry(&self) -> Result<OffsetDateTime> {
        expiry(self.tokens.family_ttl)
    }

    fn refresh_expiry(&self) -> Result<OffsetDateTime> {
        expiry(self.tokens.refresh_ttl)
    }

    /// Why a refresh token that is not active is refused. A retired token
    /// presented again means it leaked, or its successor did: the whole
    /// family is revoked.
    async fn refuse_inactive(&self, presented: &[u8]) -> Error {
        let state = match db::refresh_tokens::state(&self.pool, presented).await {
            Ok(state) => state,
            Err(error) => return error,
        };
        match state {
            None => Error::unauthenticated("refresh token is invalid"),
            Some(token) if token.retired && !token.revoked => {
                if let Err(error) = db::refresh_families::revoke(&self.pool, token.family_id).await
                {
                    return error;
                }
                self.session_ended(token.user_id, token.family_id);
                self.metrics.refresh_token_reuse.inc();
                tracing::warn!(
                    security_event = "refresh_token_reuse",
                    user_id = token.user_id,
                    family_id = %token.family_id,
                    "a retired refresh token was presented again; its family is revoked"
                );
                Error::unauthenticated(
                    "refresh token was already used; the session has been revoked",
                )
            }
            Some(token) if token.revoked => {
                Error::unauthenticated("refresh token has been revoked")
            }
            Some(_) => Error::unauthenticated("refresh token expired"),
        }
    }
}

/// An address as a session shows it; empty if unknown.
fn shown(address: Option<IpAddr>) -> String {
    address
        .map(|address| address.to_string())
        .unwrap_or_default()
}

/// `ttl` from now.
pub(super) fn expiry(ttl: std::time::Duration) -> Result<OffsetDateTime> {
    let ttl = time::Duration::try_from(ttl).map_err(anyhow::Error::from)?;
    Ok(OffsetDateTime::now_utc() + ttl)
}

fn principal(
    user_id: i64,
    name: String,
    role: &str,
    token_version: i64,
    session: Uuid,
) -> Result<Principal> {
    Ok(Principal {
        user_id: UserId(user_id),
        name,
        role: Role::from_db(role)
            .ok_or_else(|| anyhow::anyhow!("user {user_id} has unknown role {role:?}"))?,
        token_version,
        expires_at: 0,
        session: Some(session),
    })
}

/// The secret of a refresh token, as the wire carries it.
pub fn expose(token: &SecretString) -> String {
    token.expose_secret().to_owned()
}
