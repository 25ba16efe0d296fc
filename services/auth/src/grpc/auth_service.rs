//! `auth.v1.AuthService`: logins, refresh token rotation with reuse
//! detection (RFC 9700, section 4.14.2), access tokens and logout.

use std::sync::Arc;

use api::auth::v1 as pb;
use secrecy::ExposeSecret as _;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::State;
use crate::db;
use crate::domain::{LoginName, Password, Role, UserId};
use crate::error::Limit;
use crate::error::{Error, Result};
use crate::lockout::Verdict;
use crate::tokens::access::Principal;
use crate::tokens::refresh;

/// The same words for an unknown name and a wrong password, so that
/// neither tells which names exist.
const BAD_CREDENTIALS: &str = "wrong user name or password";

pub struct AuthApi {
    state: Arc<State>,
}

impl AuthApi {
    pub fn new(state: Arc<State>) -> AuthApi {
        AuthApi { state }
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let name = LoginName::parse("username", request.username)?;
        let password = Password::parse("password", request.password)?;
        let state = self.state.clone();

        // Known name or not, the same statements, the same hash work and
        // the same count against the name's limit.
        let check = {
            let (state, name) = (state.clone(), name.clone());
            async move {
                let user = db::users::login_candidate(&state.pool, name.as_str()).await?;
                let right = state
                    .passwords
                    .verify(
                        &password,
                        user.as_ref().map(|user| user.password_hash.as_str()),
                    )
                    .await?;
                Ok(match user {
                    Some(user) if right => Verdict::Right(user),
                    _ => Verdict::Wrong,
                })
            }
        };
        let user = match state.lockout.attempt(name.as_str(), check).await {
            Ok(Verdict::Right(user)) => user,
            Ok(Verdict::Wrong) => {
                tracing::warn!(
                    security_event = "login_failed",
                    "login refused: wrong user name or password"
                );
                state
                    .metrics
                    .logins
                    .with_label_values(&["wrong_credentials"])
                    .inc();
                return Err(Error::unauthenticated(BAD_CREDENTIALS).into());
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
                state.metrics.logins.with_label_values(&["locked"]).inc();
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        };
        tracing::Span::current().record("user_id", user.id);

        // The family starts only if the user's token version is still the
        // one read before the hash: a password change, role change or
        // deletion meanwhile ends the login here.
        let family_id = Uuid::new_v4();
        let (token, digest) = refresh::generate();
        let mut tx = state.pool.begin().await.map_err(Error::from)?;
        let Some(started) = db::refresh_families::start(
            &mut *tx,
            family_id,
            user.id,
            user.token_version,
            self.family_expiry()?,
        )
        .await?
        else {
            return Err(Error::unauthenticated(
                "the account changed while logging in; log in again",
            )
            .into());
        };
        db::refresh_tokens::insert(&mut *tx, &digest, family_id, self.refresh_expiry()?).await?;
        tx.commit().await.map_err(Error::from)?;

        let principal = principal(user.id, started.name, &started.role, user.token_version)?;
        let access_token = state.policy.tokens().issue(&principal)?;
        state.metrics.logins.with_label_values(&["success"]).inc();
        tracing::info!("logged in");
        Ok(Response::new(pb::LoginResponse {
            refresh_token: token.expose_secret().to_owned(),
            access_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_refresh_token(
        &self,
        request: Request<pb::GetRefreshTokenRequest>,
    ) -> Result<Response<pb::GetRefreshTokenResponse>, Status> {
        host::invalid::validate(request.get_ref())?;
        let presented = refresh::digest(&request.get_ref().refresh_token);

        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let Some(retired) = db::refresh_tokens::retire_if_usable(&mut *tx, &presented).await?
        else {
            drop(tx);
            return Err(self.refuse_inactive(&presented).await.into());
        };
        tracing::Span::current().record("user_id", retired.user_id);
        let (token, digest) = refresh::generate();
        db::refresh_tokens::insert(&mut *tx, &digest, retired.family_id, self.refresh_expiry()?)
            .await?;
        tx.commit().await.map_err(Error::from)?;
        self.state.metrics.refresh_tokens_rotated.inc();
        Ok(Response::new(pb::GetRefreshTokenResponse {
            refresh_token: token.expose_secret().to_owned(),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_access_token(
        &self,
        request: Request<pb::GetAccessTokenRequest>,
    ) -> Result<Response<pb::GetAccessTokenResponse>, Status> {
        host::invalid::validate(request.get_ref())?;
        let presented = refresh::digest(&request.get_ref().refresh_token);
        let Some(owner) = db::refresh_tokens::usable_owner(&self.state.pool, &presented).await?
        else {
            return Err(self.refuse_inactive(&presented).await.into());
        };
        tracing::Span::current().record("user_id", owner.user_id);
        // The user's role and version as they are now, not at login.
        let principal = principal(owner.user_id, owner.name, &owner.role, owner.token_version)?;
        Ok(Response::new(pb::GetAccessTokenResponse {
            access_token: self.state.policy.tokens().issue(&principal)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        host::invalid::validate(request.get_ref())?;
        let presented = refresh::digest(&request.get_ref().refresh_token);
        let token = db::refresh_tokens::state(&self.state.pool, &presented)
            .await?
            .ok_or_else(|| Error::unauthenticated("refresh token is invalid"))?;
        tracing::Span::current().record("user_id", token.user_id);
        db::refresh_families::revoke(&self.state.pool, token.family_id).await?;
        tracing::info!("logged out");
        Ok(Response::new(pb::LogoutResponse {}))
    }
}

impl AuthApi {
    /// When a family started now must end, however often it rotates.
    fn family_expiry(&self) -> Result<OffsetDateTime> {
        let ttl =
            time::Duration::try_from(self.state.tokens.family_ttl).map_err(anyhow::Error::from)?;
        Ok(OffsetDateTime::now_utc() + ttl)
    }

    fn refresh_expiry(&self) -> Result<OffsetDateTime> {
        let ttl =
            time::Duration::try_from(self.state.tokens.refresh_ttl).map_err(anyhow::Error::from)?;
        Ok(OffsetDateTime::now_utc() + ttl)
    }

    /// Why a refresh token that is not active is refused. A retired token
    /// presented again means it leaked, or its successor did: the whole
    /// family is revoked.
    async fn refuse_inactive(&self, presented: &[u8]) -> Error {
        let state = match db::refresh_tokens::state(&self.state.pool, presented).await {
            Ok(state) => state,
            Err(error) => return error,
        };
        match state {
            None => Error::unauthenticated("refresh token is invalid"),
            Some(token) if token.retired && !token.revoked => {
                if let Err(error) =
                    db::refresh_families::revoke(&self.state.pool, token.family_id).await
                {
                    return error;
                }
                self.state.metrics.refresh_token_reuse.inc();
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

fn principal(user_id: i64, name: String, role: &str, token_version: i64) -> Result<Principal> {
    Ok(Principal {
        user_id: UserId(user_id),
        name,
        role: Role::from_db(role)
            .ok_or_else(|| anyhow::anyhow!("user {user_id} has unknown role {role:?}"))?,
        token_version,
        expires_at: 0,
    })
}
