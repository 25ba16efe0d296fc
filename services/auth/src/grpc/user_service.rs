//! `auth.v1.UserService`: registration and accounts. Users act on their own
//! account; admins on anyone's.

use std::sync::Arc;

use api::auth::v1 as pb;
use host::page_token::PageToken;
use sqlx::PgConnection;
use tonic::{Request, Response, Status};

use super::{State, caller};
use crate::access::Revocation;
use crate::db;
use crate::db::users::UserRow;
use crate::domain::{Email, LoginName, NewPassword, Password, Role, UserId, UserName};
use crate::error::{Error, Result};
use crate::lockout::Verdict;

const DEFAULT_PAGE_SIZE: i64 = 50;

pub struct UserApi {
    state: Arc<State>,
}

impl UserApi {
    pub fn new(state: Arc<State>) -> UserApi {
        UserApi { state }
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserApi {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let name = UserName::parse("name", request.name)?;
        let email = Email::parse("email", request.email)?;
        let password = NewPassword::parse(
            ("password", request.password),
            ("password_confirm", request.password_confirm),
        )?;
        let role = Role::from_proto("role", request.role)?.unwrap_or(Role::User);
        if role == Role::Admin {
            caller.confirmed()?;
            if !caller.is_admin() {
                return Err(Error::permission_denied("only admins may create admins").into());
            }
        }

        let hash = self.state.passwords.hash(password.as_password()).await?;
        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let id = db::users::insert(
            &mut *tx,
            name.as_str(),
            email.as_str(),
            &hash,
            role.as_str(),
        )
        .await?;
        db::released_names::ensure_claimable(&mut *tx, name.as_str(), id).await?;
        tx.commit().await.map_err(Error::from)?;
        tracing::Span::current().record("user_id", id);
        tracing::info!(role = role.as_str(), "user created");
        Ok(Response::new(pb::CreateResponse { id }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let id = UserId(request.get_ref().id);
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied("users may only read their own account").into());
        }
        let user = db::users::get(&self.state.pool, id.0)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(pb::GetResponse {
            user: Some(to_proto(user)?),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn update(
        &self,
        request: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let id = UserId(request.id);
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied("users may only change their own account").into());
        }
        let name = request
            .name
            .map(|name| UserName::parse("name", name))
            .transpose()?;
        let email = request
            .email
            .map(|email| Email::parse("email", email))
            .transpose()?;
        let role = match request.role {
            Some(role) => Some(
                Role::from_proto("role", role)?
                    .ok_or_else(|| Error::invalid("role", "must be a role"))?,
            ),
            None => None,
        };
        if role.is_some() && !caller.is_admin() {
            return Err(Error::permission_denied("only admins may change roles").into());
        }

        // The row stays locked from this read to the commit, so that the
        // role compared is the role replaced: of a concurrent promotion and
        // demotion, each sees the other's result and each revokes.
        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let current = db::users::get_for_update(&mut *tx, id.0)
            .await?
            .ok_or_else(|| not_found(id))?;
        if name.is_none() && email.is_none() && role.is_none() {
            return Ok(Response::new(pb::UpdateResponse {
                user: Some(to_proto(current)?),
            }));
        }
        let mut updated = db::users::update(
            &mut *tx,
            id.0,
            name.as_ref().map(UserName::as_str),
            email.as_ref().map(Email::as_str),
            role.map(Role::as_str),
        )
        .await?
        .ok_or_else(|| not_found(id))?;
        let role_changed = updated.role != current.role;
        let renamed = updated.name != current.name;
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
                self.state.policy.revocation_lifetime(),
            )
            .await?;
            // Tokens issued before carry the old name; `Check` answers the
            // new one for them.
            name_version = db::revocations::rename(&mut *tx, id.0, &updated.name).await?;
        }
        tx.commit().await.map_err(Error::from)?;
        if role_changed {
            self.state.policy.revoke(id, updated.token_version);
            tracing::info!(
                role = updated.role,
                "role changed; the user's tokens are revoked"
            );
        }
        if renamed {
            self.state.policy.merge(
                id,
                Revocation {
                    min_version: 0,
                    current_name: Some(updated.name.clone()),
                    name_version,
                    at: time::OffsetDateTime::now_utc(),
                },
            );
        }
        Ok(Response::new(pb::UpdateResponse {
            user: Some(to_proto(updated)?),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = caller(&request)?;
        host::invalid::validate(request.get_ref())?;
        let id = UserId(request.get_ref().id);
        if !caller.may_act_on(id) {
            return Err(Error::permission_denied("users may only delete their own account").into());
        }
        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        if !db::users::delete(&mut *tx, id.0).await? {
            return Err(not_found(id).into());
        }
        // The refresh tokens went with the user; the access tokens are
        // revoked for good.
        db::revocations::raise(&mut *tx, id.0, i64::MAX).await?;
        tx.commit().await.map_err(Error::from)?;
        self.state.policy.revoke(id, i64::MAX);
        tracing::info!("user deleted");
        Ok(Response::new(pb::DeleteResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let page_size = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size => size,
        };
        let after = if request.page_token.is_empty() {
            0
        } else {
            USERS_AFTER
                .decode(&request.page_token)
                .ok_or_else(|| Error::invalid("page_token", "is not a page token of this list"))?
        };
        let mut rows = db::users::list_after(&self.state.pool, after, page_size + 1).await?;
        let next_page_token = if rows.len() as i64 > page_size {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|last| USERS_AFTER.encode(last.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListResponse {
            users: rows.into_iter().map(to_proto).collect::<Result<_>>()?,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let id = UserId(request.id);
        if !caller.may_act_on(id) {
            return Err(
                Error::permission_denied("users may only change their own password").into(),
            );
        }
        let new_password = NewPassword::parse(
            ("new_password", request.new_password),
            ("new_password_confirm", request.new_password_confirm),
        )?;
        let own_account = caller.principal().is_some_and(|p| p.user_id == id);
        if own_account {
            // Whoever holds the access token must also know the password,
            // and guessing it counts against the same limit as logins.
            let current = Password::parse("current_password", request.current_password)?;
            let user = db::users::get(&self.state.pool, id.0)
                .await?
                .ok_or_else(|| not_found(id))?;
            let state = self.state.clone();
            let check = async move {
                let stored = db::users::password_hash(&state.pool, id.0)
                    .await?
                    .ok_or_else(|| not_found(id))?;
                Ok(if state.passwords.verify(&current, Some(&stored)).await? {
                    Verdict::Right(())
                } else {
                    Verdict::Wrong
                })
            };
            if let Verdict::Wrong = self.state.lockout.attempt(&user.name, check).await? {
                return Err(
                    Error::invalid("current_password", "is not the account's password").into(),
                );
            }
        }

        let hash = self
            .state
            .passwords
            .hash(new_password.as_password())
            .await?;
        let mut tx = self.state.pool.begin().await.map_err(Error::from)?;
        let version = db::users::set_password(&mut *tx, id.0, &hash)
            .await?
            .ok_or_else(|| not_found(id))?;
        // The new version ends every refresh token family started before.
        db::revocations::raise(&mut *tx, id.0, version).await?;
        tx.commit().await.map_err(Error::from)?;
        self.state.policy.revoke(id, version);
        tracing::info!("password changed; the user's tokens are revoked");
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().usernames.len()))]
    async fn lookup_usernames(
        &self,
        request: Request<pb::LookupUsernamesRequest>,
    ) -> Result<Response<pb::LookupUsernamesResponse>, Status> {
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let names = request
            .usernames
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                LoginName::parse(format!("usernames[{i}]"), name).map(LoginName::into_inner)
            })
            .collect::<Result<Vec<_>>>()?;
        let matches = db::users::match_names(&self.state.pool, &names).await?;
        let mut response = pb::LookupUsernamesResponse::default();
        for found in matches {
            match (found.id, found.name) {
                (Some(id), Some(name)) => {
                    if !response.users.iter().any(|user| user.id == id) {
                        response.users.push(pb::UserRef { id, name });
                    }
                }
                _ => response.missing_usernames.push(found.requested),
            }
        }
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn lookup_user_ids(
        &self,
        request: Request<pb::LookupUserIdsRequest>,
    ) -> Result<Response<pb::LookupUserIdsResponse>, Status> {
        let request = request.into_inner();
        host::invalid::validate(&request)?;
        let found = db::users::names_by_id(&self.state.pool, &request.ids).await?;
        let known: std::collections::HashSet<i64> = found.iter().map(|(id, _)| *id).collect();
        let missing_ids = request
            .ids
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        Ok(Response::new(pb::LookupUserIdsResponse {
            users: found
                .into_iter()
                .map(|(id, name)| pb::UserRef { id, name })
                .collect(),
            missing_ids,
        }))
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

fn to_proto(user: UserRow) -> Result<pb::User> {
    let role = Role::from_db(&user.role)
        .ok_or_else(|| anyhow::anyhow!("user {} has unknown role {:?}", user.id, user.role))?;
    Ok(pb::User {
        id: user.id,
        name: user.name,
        email: user.email,
        role: role.to_proto().into(),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
    })
}

pub(crate) fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// `List`'s page token: the last id of the page.
const USERS_AFTER: PageToken = PageToken::new("users-after:");
