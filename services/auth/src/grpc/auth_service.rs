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
use crate::domain::{Password, Role, UserId};
use crate::error::{Error, Result};
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
        serving::invalid::validate(&request)?;
        let password = Password::parse("password", request.password)?;
        let state = &self.state;
        let lockout = &state.lockout;

        let candidate = db::users::reserve_login_attempt(
            &state.pool,
            &request.username,
            lockout.max_failures,
            lockout.wait_increment,
            lockout.max_wait,
            lockout.failure_reset,
        )
        .await?;
        let Some(user) = candidate else {
            if let Some(Some(until)) =
                db::users::locked_until(&state.pool, &request.username).await?
            {
                tracing::warn!(
                    security_event = "login_locked",
                    "login refused: account locked"
                );
                state.metrics.logins.with_label_values(&["locked"]).inc();
                let retry_after = (until - OffsetDateTime::now_utc()).max(time::Duration::SECOND);
                return Err(Error::Locked {
                    retry_after: retry_after.try_into().unwrap_or_default(),
                }
                .into());
            }
            state.passwords.verify(&password, None).await?;
            tracing::info!("login refused: unknown user name");
            state
                .metrics
                .logins
                .with_label_values(&["wrong_credentials"])
                .inc();
            return Err(Error::unauthenticated(BAD_CREDENTIALS).into());
        };
        tracing::Span::current().record("user_id", user.id);
        if !state
            .passwords
            .verify(&password, Some(&user.password_hash))
            .await?
        {
            tracing::warn!(
                security_event = "login_failed",
                "login refused: wrong password"
            );
            state
                .metrics
                .logins
                .with_label_values(&["wrong_credentials"])
                .inc();
            return Err(Error::unauthenticated(BAD_CREDENTIALS).into());
        }
        db::users::clear_failed_logins(&state.pool, user.id).await?;

        let principal = principal(user.id, user.name, &user.role, user.token_version)?;
        let refresh_token = self.start_family(principal.user_id).await?;
        let access_token = state.policy.tokens().issue(&principal)?;
        state.metrics.logins.with_label_values(&["success"]).inc();
        tracing::info!("logged in");
        Ok(Response::new(pb::LoginResponse {
            refresh_token,
            access_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_refresh_token(
        &self,
        request: Request<pb::GetRefreshTokenRequest>,
    ) -> Result<Response<pb::GetRefreshTokenResponse>, Status> {
        serving::invalid::validate(request.get_ref())?;
        let presented = refresh::digest(&request.get_ref().refresh_token);

        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let Some(retired) = db::refresh_tokens::retire_if_active(&mut *tx, &presented).await?
        else {
            drop(tx);
            return Err(self.refuse_inactive(&presented).await.into());
        };
        tracing::Span::current().record("user_id", retired.user_id);
        let (token, digest) = refresh::generate();
        db::refresh_tokens::insert(
            &mut *tx,
            &digest,
            retired.family_id,
            retired.user_id,
            self.refresh_expiry()?,
        )
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
        serving::invalid::validate(request.get_ref())?;
        let presented = refresh::digest(&request.get_ref().refresh_token);
        let Some(owner) = db::refresh_tokens::active_owner(&self.state.pool, &presented).await?
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
        serving::invalid::validate(request.get_ref())?;
        let presented = refresh::digest(&request.get_ref().refresh_token);
        let token = db::refresh_tokens::state(&self.state.pool, &presented)
            .await?
            .ok_or_else(|| Error::unauthenticated("refresh token is invalid"))?;
        tracing::Span::current().record("user_id", token.user_id);
        db::refresh_tokens::revoke_family(&self.state.pool, token.family_id).await?;
        tracing::info!("logged out");
        Ok(Response::new(pb::LogoutResponse {}))
    }
}

impl AuthApi {
    /// A new token family for a fresh login; its first refresh token.
    async fn start_family(&self, user: UserId) -> Result<String> {
        let (token, digest) = refresh::generate();
        db::refresh_tokens::insert(
            &self.state.pool,
            &digest,
            Uuid::new_v4(),
            user.0,
            self.refresh_expiry()?,
        )
        .await?;
        Ok(token.expose_secret().to_owned())
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
                    db::refresh_tokens::revoke_family(&self.state.pool, token.family_id).await
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
    })
}
