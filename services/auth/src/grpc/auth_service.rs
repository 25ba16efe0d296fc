//! `auth.v1.AuthService`: each handler converts its request at the
//! boundary, delegates to [`crate::app::sessions`] and converts the answer.

use std::sync::Arc;

use api::auth::v1 as pb;
use tonic::{Request, Response, Status};

use super::{caller, convert};
use crate::app::App;
use crate::app::sessions::{Credentials, LoginOutcome, PresentedToken, expose};
use crate::app::two_factor::SecondFactor;
use crate::domain::{Email, NewPassword, Password};

pub struct AuthApi {
    app: Arc<App>,
}

impl AuthApi {
    pub fn new(app: Arc<App>) -> AuthApi {
        AuthApi { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let address = self.app.quotas.client_of(&request);
        let client = convert::client_of(&request);
        let credentials = Credentials {
            address,
            client,
            ..Credentials::try_from(request.into_inner())?
        };
        Ok(Response::new(match self.app.login(credentials).await? {
            LoginOutcome::Session(session) => pb::LoginResponse {
                refresh_token: expose(&session.refresh_token),
                access_token: session.access_token,
                device_token: expose(&session.device_token),
                ..Default::default()
            },
            LoginOutcome::SecondFactorDue {
                challenge,
                expires_at,
            } => pb::LoginResponse {
                second_factor_challenge: expose(&challenge),
                second_factor_expires_at: Some(convert::timestamp(expires_at)),
                ..Default::default()
            },
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn complete_login(
        &self,
        request: Request<pb::CompleteLoginRequest>,
    ) -> Reply<pb::CompleteLoginResponse> {
        let address = self.app.quotas.client_of(&request);
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let session = self
            .app
            .complete_login(SecondFactor {
                challenge: request.challenge,
                code: request.code,
                address,
            })
            .await?;
        Ok(Response::new(pb::CompleteLoginResponse {
            refresh_token: expose(&session.refresh_token),
            access_token: session.access_token,
            device_token: expose(&session.device_token),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Reply<pb::EnrollTotpResponse> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let enrolment = self.app.enroll_totp(&caller).await?;
        Ok(Response::new(pb::EnrollTotpResponse {
            secret: enrolment.secret,
            otpauth_uri: enrolment.otpauth_uri,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Reply<pb::ConfirmTotpResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let password = (!request.current_password.is_empty())
            .then(|| Password::parse("current_password", request.current_password))
            .transpose()?;
        let recovery_codes = self
            .app
            .confirm_totp(&caller, &request.code, password)
            .await?;
        Ok(Response::new(pb::ConfirmTotpResponse { recovery_codes }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Reply<pb::DisableTotpResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let password = Password::parse("password", request.password)?;
        self.app
            .disable_totp(&caller, password, &request.code)
            .await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_refresh_token(
        &self,
        request: Request<pb::GetRefreshTokenRequest>,
    ) -> Reply<pb::GetRefreshTokenResponse> {
        let address = self.app.quotas.client_of(&request);
        let presented = PresentedToken::try_from(request.into_inner())?;
        let token = self.app.rotate(presented, address).await?;
        Ok(Response::new(pb::GetRefreshTokenResponse {
            refresh_token: expose(&token),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_access_token(
        &self,
        request: Request<pb::GetAccessTokenRequest>,
    ) -> Reply<pb::GetAccessTokenResponse> {
        let address = self.app.quotas.client_of(&request);
        let presented = PresentedToken::try_from(request.into_inner())?;
        Ok(Response::new(pb::GetAccessTokenResponse {
            access_token: self.app.access_token(presented, address).await?,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        let presented = PresentedToken::try_from(request.into_inner())?;
        self.app.logout(presented).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::ListSessionsResponse> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let sessions = self.app.list_sessions(&caller).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(convert::session).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Reply<pb::RevokeSessionResponse> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let session = convert::session_id("session_id", &request.get_ref().session_id)?;
        self.app.revoke_session(&caller, session).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn revoke_other_sessions(
        &self,
        request: Request<pb::RevokeOtherSessionsRequest>,
    ) -> Reply<pb::RevokeOtherSessionsResponse> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let revoked = self.app.revoke_other_sessions(&caller).await?;
        Ok(Response::new(pb::RevokeOtherSessionsResponse {
            revoked: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Reply<pb::VerifyEmailResponse> {
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let (user_id, email) = self.app.verify_email(&request.token).await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            user_id: user_id.0,
            email,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn resend_email_verification(
        &self,
        request: Request<pb::ResendEmailVerificationRequest>,
    ) -> Reply<pb::ResendEmailVerificationResponse> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let email = self.app.resend_verification(&caller).await?;
        Ok(Response::new(pb::ResendEmailVerificationResponse { email }))
    }

    #[tracing::instrument(skip_all)]
    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Reply<pb::RequestPasswordResetResponse> {
        let address = self.app.quotas.client_of(&request);
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let email = Email::parse("email", request.email)?;
        self.app.request_password_reset(email, address).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Reply<pb::ResetPasswordResponse> {
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let new_password = NewPassword::parse(
            ("new_password", request.new_password),
            ("new_password_confirm", request.new_password_confirm),
        )?;
        self.app
            .reset_password(&request.token, new_password)
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }
}
