//! Password reset by mail: a token mailed to a verified address, which
//! sets a new password and ends every session of the account, as a
//! password change does. Asking answers the same whether or not the
//! address has an account, and takes the same one statement either way.

use secrecy::ExposeSecret as _;

use super::App;
use super::sessions::expiry;
use crate::db;
use crate::db::email_tokens::Purpose;
use crate::domain::{Email, NewPassword, UserId};
use crate::error::{Error, Result};
use crate::mail::messages;
use crate::tokens::refresh;

/// Reset tokens are told apart from other tokens by this.
const TOKEN_PREFIX: &str = "pr_";
/// How long a notice of a new password is tried for.
const NOTICE_DELIVER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 60 * 60);

impl App {
    /// Mails a reset token to `email` if a user has it and has verified
    /// it. Limited per client and per address, for every address alike.
    pub async fn request_password_reset(
        &self,
        email: Email,
        address: Option<std::net::IpAddr>,
    ) -> Result<()> {
        self.quotas.password_reset(address, email.as_str())?;
        let (token, digest) = refresh::generate_with(TOKEN_PREFIX);
        let expires_at = expiry(self.mail.reset_ttl)?;
        let mail = messages::reset_password(
            email.as_str(),
            &self.mail.link_base,
            token.expose_secret(),
            self.mail.reset_ttl,
        );
        // Neither path waits for a flush to disk: a write that had to (an
        // address with an account) would answer later than a read alone
        // (one without). A reset mail lost to a crash is asked for again.
        let mut tx = self.pool.begin().await?;
        db::email_tokens::without_flush_wait(&mut *tx).await?;
        let queued = db::email_tokens::issue_reset_by_address(
            &mut *tx,
            email.as_str(),
            &digest,
            expires_at,
            mail.kind,
            &mail.subject,
            &mail.body,
        )
        .await?;
        tx.commit().await?;
        if queued {
            self.mail_queued.notify();
        }
        // Logged for the operator, never answered.
        tracing::info!(mail_queued = queued, "password reset asked for");
        Ok(())
    }

    /// Sets a new password with a reset token, and revokes every token
    /// the user held.
    pub async fn reset_password(&self, token: &str, new_password: NewPassword) -> Result<UserId> {
        let refused = || {
            Error::unauthenticated("the reset token is unknown, expired or used; ask for a new one")
        };
        let digest = refresh::digest(token);
        // Looked at before the hash, so that made-up tokens cost no hash;
        // taken after it, so that a refused hash (the queue is full) does
        // not use it up.
        db::email_tokens::owner(&self.pool, &digest, Purpose::ResetPassword)
            .await?
            .ok_or_else(refused)?;
        let hash = self.passwords.hash(new_password.as_password()).await?;
        let mut tx = self.pool.begin().await?;
        let taken = db::email_tokens::take(&mut *tx, &digest, Purpose::ResetPassword)
            .await?
            .ok_or_else(refused)?;
        let id = UserId(taken.user_id);
        tracing::Span::current().record("user_id", id.0);
        // The address must still be the account's, and verified.
        let user = db::users::get_for_update(&mut *tx, id.0)
            .await?
            .ok_or_else(refused)?;
        if user.email.to_lowercase() != taken.email.to_lowercase()
            || user.email_verified_at.is_none()
        {
            return Err(refused());
        }
        let version = db::users::set_password(&mut *tx, id.0, &hash)
            .await?
            .ok_or_else(refused)?;
        // The new version ends every session started before, and every
        // access token issued before.
        db::revocations::raise(&mut *tx, id.0, version).await?;
        // The owner hears of it, in case it was not them.
        db::mail_outbox::enqueue(
            &mut *tx,
            Some(id.0),
            &messages::password_changed(&user.email),
            false,
            expiry(NOTICE_DELIVER_WITHIN)?,
        )
        .await?;
        tx.commit().await?;
        self.mail_queued.notify();
        self.policy.revoke(id, version);
        tracing::info!(
            security_event = "password_reset",
            "password reset by mail; the user's tokens are revoked"
        );
        Ok(id)
    }
}
