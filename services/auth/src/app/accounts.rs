//! Accounts: registration, reading, changing and deleting them, passwords,
//! and the name lookups other services make. Users act on their own
//! account; admins on anyone's. Every change that takes a user's rights
//! away revokes their tokens in the same transaction.

use sqlx::PgConnection;

use super::App;
use super::proof::{Evidence, Proof, proof_scope};
use crate::access::{Caller, Revocation};
use crate::db;
use crate::db::users::UserRow;
use crate::domain::{Email, NewPassword, Password, Role, UserId, UserName};
use crate::error::{Error, Result};
use crate::mail::messages;

/// How long the notices of an email or password change are tried for.
const EMAIL_CHANGED_DELIVER_WITHIN: std::time::Duration =
    std::time::Duration::from_secs(3 * 24 * 60 * 60);

/// An account to create.
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
    pub password: NewPassword,
    pub role: Role,
    /// Where a registration came from, if known.
    pub address: Option<std::net::IpAddr>,
}

/// What to change of an account; what is `None` stays.
pub struct AccountChange {
    pub id: UserId,
    pub name: Option<UserName>,
    pub email: Option<Email>,
    pub role: Option<Role>,
    /// Needed to rename one's own account or change its email.
    pub proof: Proof,
}

/// A new password for an account.
pub struct PasswordChange {
    pub id: UserId,
    pub new_password: NewPassword,
    /// Asked for, and checked, only when users change their own: an admin
    /// setting someone's password need not know the old one.
    pub current_password: String,
}

/// Which accounts to list: `size` of them, after an id.
pub struct UsersPage {
    pub size: i64,
    pub after: i64,
}

/// What a lookup of names found: each user once, and the names that name
/// nobody.
#[derive(Default)]
pub struct Found {
    pub users: Vec<(i64, String)>,
    pub missing: Vec<String>,
}

impl App {
    /// Registers a user; admins alone may create admins.
    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> Result<UserId> {
        if new.role == Role::Admin {
            caller.confirmed()?;
            if !caller.is_admin() {
                return Err(Error::permission_denied("only admins may create admins"));
            }
        }
        // Registrations are limited per client address, whoever makes
        // them (a user's own token vouches for nothing); admins creating
        // accounts are not.
        if !caller.is_admin() {
            self.quotas.registration(new.address)?;
        }
        let hash = self.passwords.hash(new.password.as_password()).await?;
        let mut tx = self.pool.begin().await?;
        let id = db::users::insert(
            &mut *tx,
            &new.name,
            new.email.as_str(),
            &hash,
            new.role.as_str(),
        )
        .await?;
        db::released_names::ensure_claimable(&mut *tx, new.name.as_str(), id).await?;
        self.queue_verification(&mut tx, id, new.email.as_str())
            .await?;
        tx.commit().await?;
        self.mail_queued.notify();
        tracing::Span::current().record("user_id", id);
        tracing::info!(role = new.role.as_str(), "user created");
        Ok(UserId(id))
    }

    pub async fn get_user(&self, caller: &Caller, id: UserId) -> Result<UserRow> {
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied(
                "users may only read their own account",
            ));
        }
        db::users::get(&self.pool, id.0)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Changes an account; admins alone may change roles. A role change
    /// revokes the user's tokens; a rename holds the old name for the
    /// tokens that carry it, and `Check` answers the new one for them.
    pub async fn update_user(&self, caller: &Caller, change: AccountChange) -> Result<UserRow> {
        let AccountChange {
            id,
            name,
            email,
            role,
            proof,
        } = change;
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied(
                "users may only change their own account",
            ));
        }
        if role.is_some() && !caller.is_admin() {
            return Err(Error::permission_denied("only admins may change roles"));
        }
        if email.is_some() && !caller.is_admin() {
            self.quotas.email_change(id.0)?;
        }
        if name.is_some() || email.is_some() {
            self.prove_owner(
                caller,
                id,
                proof,
                "rename one's own account or change its email",
            )
            .await?;
        }

        // The row stays locked from this read to the commit, so that the
        // role compared is the role replaced: of a concurrent promotion and
        // demotion, each sees the other's result and each revokes.
        let mut tx = self.pool.begin().await?;
        let current = db::users::get_for_update(&mut *tx, id.0)
            .await?
            .ok_or_else(|| not_found(id))?;
        if name.is_none() && email.is_none() && role.is_none() {
            return Ok(current);
        }
        let mut updated = db::users::update(
            &mut *tx,
            id.0,
            name.as_ref(),
            email.as_ref().map(Email::as_str),
            role.map(Role::as_str),
        )
        .await?
        .ok_or_else(|| not_found(id))?;
        let role_changed = updated.role != current.role;
        let renamed = updated.name != current.name;
        // Any change of the address, case included, is verified anew: what
        // was shown to be the owner's is the address as written.
        let email_changed = updated.email != current.email;
        if email_changed {
            // The new address is unverified until its owner says so; the
            // old one hears of the change, in case it was not its owner's.
            self.queue_verification(&mut tx, id.0, &updated.email)
                .await?;
            db::mail_outbox::enqueue(
                &mut *tx,
                Some(id.0),
                &messages::email_changed(&current.email, &updated.email),
                false,
                super::sessions::expiry(EMAIL_CHANGED_DELIVER_WITHIN)?,
            )
            .await?;
        }
        if role_changed {
            updated.token_version = revoke_all_tokens(&mut tx, id).await?;
        }
        let mut name_version = 0;
        if renamed {
            // Nobody else may take the new name while it is held for a
            // previous holder, nor the old one until the tokens that carry
            // it have expired.
            db::released_names::ensure_claimable(&mut *tx, &updated.name, id.0).await?;
            db::released_names::release(
                &mut *tx,
                &current.name,
                id.0,
                self.policy.revocation_lifetime(),
            )
            .await?;
            // Tokens issued before carry the old name; `Check` answers the
            // new one for them.
            name_version = db::revocations::rename(&mut *tx, id.0, &updated.name).await?;
        }
        tx.commit().await?;
        if email_changed {
            self.mail_queued.notify();
            tracing::info!(
                security_event = "email_changed",
                "email changed; the old address is told"
            );
        }
        if role_changed {
            self.policy.revoke(id, updated.token_version);
            tracing::info!(
                role = updated.role,
                "role changed; the user's tokens are revoked"
            );
        }
        if renamed {
            self.policy.merge(
                id,
                Revocation {
                    min_version: 0,
                    current_name: Some(updated.name.clone()),
                    name_version,
                    at: time::OffsetDateTime::now_utc(),
                },
            );
        }
        Ok(updated)
    }

    /// Deletes an account; its access tokens are revoked for good.
    pub async fn delete_user(&self, caller: &Caller, id: UserId, proof: Proof) -> Result<()> {
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied(
                "users may only delete their own account",
            ));
        }
        self.prove_owner(caller, id, proof, "delete one's own account")
            .await?;
        let mut tx = self.pool.begin().await?;
        if !db::users::delete(&mut *tx, id.0).await? {
            return Err(not_found(id));
        }
        // The refresh tokens went with the user; the access tokens are
        // revoked for good.
        db::revocations::raise(&mut *tx, id.0, i64::MAX).await?;
        tx.commit().await?;
        self.policy.revoke(id, i64::MAX);
        tracing::info!("user deleted");
        Ok(())
    }

    /// A page of accounts, by id; whether more follow.
    pub async fn list_users(&self, page: UsersPage) -> Result<(Vec<UserRow>, bool)> {
        let mut rows = db::users::list_after(&self.pool, page.after, page.size + 1).await?;
        let more = rows.len() as i64 > page.size;
        rows.truncate(page.size.max(0) as usize);
        Ok((rows, more))
    }

    /// Sets a new password and revokes every token issued before. Users
    /// changing their own must give the current one, and guessing it is
    /// limited per session as logins are per name.
    pub async fn change_password(&self, caller: &Caller, change: PasswordChange) -> Result<()> {
        let id = change.id;
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied(
                "users may only change their own password",
            ));
        }
        let own_account = caller.principal().is_some_and(|p| p.user_id == id);
        if own_account {
            let current = Password::parse("current_password", change.current_password)?;
            self.check_evidence(
                proof_scope(caller, id.0),
                id.0,
                vec![Evidence::Password {
                    field: "current_password",
                    password: current,
                }],
            )
            .await?;
        }

        let hash = self
            .passwords
            .hash(change.new_password.as_password())
            .await?;
        let mut tx = self.pool.begin().await?;
        let version = db::users::set_password(&mut *tx, id.0, &hash)
            .await?
            .ok_or_else(|| not_found(id))?;
        // The new version ends every refresh token family started before,
        // and reset tokens asked for before it end with them.
        db::revocations::raise(&mut *tx, id.0, version).await?;
        db::email_tokens::end(&mut *tx, id.0, db::email_tokens::Purpose::ResetPassword).await?;
        // The owner hears of it, whoever changed it.
        if let Some(user) = db::users::get(&mut *tx, id.0).await? {
            db::mail_outbox::enqueue(
                &mut *tx,
                Some(id.0),
                &messages::password_changed(&user.email),
                false,
                super::sessions::expiry(EMAIL_CHANGED_DELIVER_WITHIN)?,
            )
            .await?;
        }
        tx.commit().await?;
        self.mail_queued.notify();
        self.policy.revoke(id, version);
        tracing::info!("password changed; the user's tokens are revoked");
        Ok(())
    }

    /// The users `names` name, each once, and the names that name nobody.
    pub async fn lookup_names(&self, names: &[String]) -> Result<Found> {
        let matches = db::users::match_names(&self.pool, names).await?;
        let mut found = Found::default();
        for row in matches {
            match (row.id, row.name) {
                (Some(id), Some(name)) => {
                    if !found.users.iter().any(|(known, _)| *known == id) {
                        found.users.push((id, name));
                    }
                }
                _ => found.missing.push(row.requested),
            }
        }
        Ok(found)
    }

    /// The names of the users `ids` name, and the ids that name nobody.
    pub async fn lookup_ids(&self, ids: &[i64]) -> Result<(Vec<(i64, String)>, Vec<i64>)> {
        let found = db::users::names_by_id(&self.pool, ids).await?;
        let known: std::collections::HashSet<i64> = found.iter().map(|(id, _)| *id).collect();
        let missing = ids
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        Ok((found, missing))
    }
}

/// Revokes every token the user holds: bumps the token version, so that
/// access tokens issued before are refused and refresh token families
/// started before are over. Returns the new version.
async fn revoke_all_tokens(tx: &mut PgConnection, id: UserId) -> Result<i64> {
    let version = db::users::bump_token_version(&mut *tx, id.0)
        .await?
        .ok_or_else(|| not_found(id))?;
    db::revocations::raise(&mut *tx, id.0, version).await?;
    Ok(version)
}

fn not_found(id: UserId) -> Error {
    Error::NotFound(format!("user {id} not found"))
}
