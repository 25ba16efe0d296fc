//! Email verification: a token mailed to the address on registration, on
//! an email change and on request, which marks the address its owner's.
//! Unverified users may log in and chat; only password resets need a
//! verified address.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::App;
use super::sessions::expiry;
use crate::access::Caller;
use crate::db;
use crate::db::email_tokens::Purpose;
use crate::domain::UserId;
use crate::error::{Error, Limit, Result};
use crate::mail::messages;
use crate::tokens::refresh;

/// Verification tokens are told apart from other tokens by this.
const TOKEN_PREFIX: &str = "ev_";
/// The shortest time between two verification mails to one user.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(60);

impl App {
    /// Within the caller's transaction: a new verification token for the
    /// user's `email`, replacing any earlier one, and its mail.
    pub(super) async fn queue_verification(
        &self,
        tx: &mut PgConnection,
        user_id: i64,
        email: &str,
    ) -> Result<()> {
        let (token, digest) = refresh::generate_with(TOKEN_PREFIX);
        let expires_at = expiry(self.mail.verification_ttl)?;
        db::email_tokens::issue(
            &mut *tx,
            &digest,
            user_id,
            Purpose::VerifyEmail,
            email,
            expires_at,
        )
        .await?;
        let mail = messages::verify_email(
            email,
            &self.mail.link_base,
            token.expose_secret(),
            self.mail.verification_ttl,
        );
        db::mail_outbox::enqueue(&mut *tx, Some(user_id), &mail, true, expires_at).await
    }

    /// Marks the address a token was mailed to as verified: whose it was,
    /// and the address.
    pub async fn verify_email(&self, token: &str) -> Result<(UserId, String)> {
        let refused = || {
            Error::unauthenticated(
                "the verification token is unknown, expired, used, or for an address the account no longer has",
            )
        };
        let digest = refresh::digest(token);
        let owner = db::email_tokens::owner(&self.pool, &digest, Purpose::VerifyEmail)
            .await?
            .ok_or_else(refused)?;
        // The user's row first, as an email change locks it before its
        // token: the two wait in line, never for each other.
        let mut tx = self.pool.begin().await?;
        db::users::get_for_update(&mut *tx, owner)
            .await?
            .ok_or_else(refused)?;
        let taken = db::email_tokens::take(&mut *tx, &digest, Purpose::VerifyEmail)
            .await?
            .ok_or_else(refused)?;
        if !db::users::mark_email_verified(&mut *tx, taken.user_id, &taken.email).await? {
            return Err(refused());
        }
        tx.commit().await?;
        tracing::Span::current().record("user_id", taken.user_id);
        tracing::info!("email address verified");
        Ok((UserId(taken.user_id), taken.email))
    }

    /// Mails the caller's address a new verification token; where to.
    pub async fn resend_verification(&self, caller: &Caller) -> Result<String> {
        let principal = caller.signed_in("verification mail is asked for with an access token")?;
        let id = principal.user_id;
        let user = db::users::get(&self.pool, id.0)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id} not found")))?;
        if user.email_verified_at.is_some() {
            return Err(Error::FailedPrecondition(
                "the email address is verified already".into(),
            ));
        }
        if let Some(issued) =
            db::email_tokens::issued_at(&self.pool, id.0, Purpose::VerifyEmail).await?
        {
            let since = OffsetDateTime::now_utc() - issued;
            let wait =
                time::Duration::try_from(RESEND_INTERVAL).map_err(anyhow::Error::from)? - since;
            if wait.is_positive() {
                let retry_after = Duration::try_from(wait).unwrap_or(RESEND_INTERVAL);
                return Err(Error::ResourceExhausted {
                    limit: Limit::Quota,
                    message: format!(
                        "a verification mail went out less than a minute ago: try again in {} s",
                        retry_after.as_secs().max(1)
                    ),
                    retry_after: Some(retry_after),
                });
            }
        }
        let mut tx = self.pool.begin().await?;
        self.queue_verification(&mut tx, id.0, &user.email).await?;
        tx.commit().await?;
        self.mail_queued.notify();
        tracing::info!("verification mail queued");
        Ok(user.email)
    }
}
