//! Conversion at the boundary: each request becomes the domain value its
//! capability takes (`TryFrom`, refusing bad input with `INVALID_ARGUMENT`
//! and the field's name), and accounts become the wire's `User`.

use api::auth::v1 as pb;
use host::page_token::PageToken;
use tonic::Status;

use crate::app::accounts::{AccountChange, NewUser, PasswordChange, UsersPage};
use crate::app::proof::Proof;
use crate::app::session_control::SessionView;
use crate::app::sessions::{Credentials, PresentedToken};
use crate::db::users::UserRow;
use crate::domain::{Email, LoginName, NewPassword, Password, Role, UserId, UserName};
use crate::error::{Error, Result};
use crate::tokens::refresh;

const DEFAULT_PAGE_SIZE: i64 = 50;

/// `List`'s page token: the last id of the page.
const USERS_AFTER: PageToken = PageToken::new("users-after:");

impl TryFrom<pb::CreateRequest> for NewUser {
    type Error = Status;

    fn try_from(request: pb::CreateRequest) -> Result<NewUser, Status> {
        host::invalid::validate(&request)?;
        Ok(NewUser {
            name: UserName::parse("name", request.name)?,
            email: Email::parse("email", request.email)?,
            password: NewPassword::parse(
                ("password", request.password),
                ("password_confirm", request.password_confirm),
            )?,
            role: Role::from_proto("role", request.role)?.unwrap_or(Role::User),
            // The handler knows the connection.
            address: None,
        })
    }
}

impl TryFrom<pb::GetRequest> for UserId {
    type Error = Status;

    fn try_from(request: pb::GetRequest) -> Result<UserId, Status> {
        host::invalid::validate(&request)?;
        Ok(UserId(request.id))
    }
}

/// The account a `Delete` names, and the proof it presents.
pub(super) fn deletion(request: pb::DeleteRequest) -> Result<(UserId, Proof), Status> {
    host::invalid::validate(&request)?;
    Ok((
        UserId(request.id),
        proof(request.current_password, request.code)?,
    ))
}

/// What a call presents as proof of the account's owner; empty fields
/// present nothing.
fn proof(current_password: String, code: String) -> Result<Proof, Status> {
    Ok(Proof {
        password: (!current_password.is_empty())
            .then(|| Password::parse("current_password", current_password))
            .transpose()?,
        code: (!code.is_empty()).then_some(code),
    })
}

impl TryFrom<pb::UpdateRequest> for AccountChange {
    type Error = Status;

    fn try_from(request: pb::UpdateRequest) -> Result<AccountChange, Status> {
        host::invalid::validate(&request)?;
        let role = match request.role {
            Some(role) => Some(
                Role::from_proto("role", role)?
                    .ok_or_else(|| Error::invalid("role", "must be a role"))?,
            ),
            None => None,
        };
        Ok(AccountChange {
            id: UserId(request.id),
            name: request
                .name
                .map(|name| UserName::parse("name", name))
                .transpose()?,
            email: request
                .email
                .map(|email| Email::parse("email", email))
                .transpose()?,
            role,
            proof: proof(request.current_password, request.code)?,
        })
    }
}

impl TryFrom<pb::ListRequest> for UsersPage {
    type Error = Status;

    fn try_from(request: pb::ListRequest) -> Result<UsersPage, Status> {
        host::invalid::validate(&request)?;
        let after = match request.page_token.as_str() {
            "" => 0,
            token => USERS_AFTER
                .decode(token)
                .ok_or_else(|| Error::invalid("page_token", "is not a page token of this list"))?,
        };
        Ok(UsersPage {
            size: match i64::from(request.page_size) {
                0 => DEFAULT_PAGE_SIZE,
                size => size,
            },
            after,
        })
    }
}

impl TryFrom<pb::ChangePasswordRequest> for PasswordChange {
    type Error = Status;

    fn try_from(request: pb::ChangePasswordRequest) -> Result<PasswordChange, Status> {
        host::invalid::validate(&request)?;
        Ok(PasswordChange {
            id: UserId(request.id),
            new_password: NewPassword::parse(
                ("new_password", request.new_password),
                ("new_password_confirm", request.new_password_confirm),
            )?,
            current_password: request.current_password,
        })
    }
}

/// The names a lookup asks for, each a possible login name.
pub(super) struct LookedUpNames(pub(super) Vec<String>);

impl TryFrom<pb::LookupUsernamesRequest> for LookedUpNames {
    type Error = Status;

    fn try_from(request: pb::LookupUsernamesRequest) -> Result<LookedUpNames, Status> {
        host::invalid::validate(&request)?;
        let names = request
            .usernames
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                LoginName::parse(format!("usernames[{i}]"), name).map(LoginName::into_inner)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LookedUpNames(names))
    }
}

/// The ids a lookup asks for.
pub(super) struct LookedUpIds(pub(super) Vec<i64>);

impl TryFrom<pb::LookupUserIdsRequest> for LookedUpIds {
    type Error = Status;

    fn try_from(request: pb::LookupUserIdsRequest) -> Result<LookedUpIds, Status> {
        host::invalid::validate(&request)?;
        Ok(LookedUpIds(request.ids))
    }
}

impl TryFrom<pb::LoginRequest> for Credentials {
    type Error = Status;

    fn try_from(request: pb::LoginRequest) -> Result<Credentials, Status> {
        host::invalid::validate(&request)?;
        Ok(Credentials {
            name: LoginName::parse("username", request.username)?,
            password: Password::parse("password", request.password)?,
            device: (!request.device_token.is_empty())
                .then(|| refresh::digest(&request.device_token)),
            // The handler knows the connection.
            address: None,
            client: String::new(),
            accepts_second_factor: request.accepts_second_factor,
        })
    }
}

macro_rules! presented_token {
    ($request:ty) => {
        impl TryFrom<$request> for PresentedToken {
            type Error = Status;

            fn try_from(request: $request) -> Result<PresentedToken, Status> {
                host::invalid::validate(&request)?;
                Ok(PresentedToken(refresh::digest(&request.refresh_token)))
            }
        }
    };
}

presented_token!(pb::GetRefreshTokenRequest);
presented_token!(pb::GetAccessTokenRequest);
presented_token!(pb::LogoutRequest);

pub(super) fn user(user: UserRow) -> Result<pb::User> {
    let role = Role::from_db(&user.role)
        .ok_or_else(|| anyhow::anyhow!("user {} has unknown role {:?}", user.id, user.role))?;
    Ok(pb::User {
        id: user.id,
        name: user.name,
        email: user.email,
        role: role.to_proto().into(),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
        email_verified: user.email_verified_at.is_some(),
    })
}

/// A page of accounts, and the token of the next.
pub(super) fn users(rows: Vec<UserRow>, more: bool) -> Result<pb::ListResponse> {
    let next_page_token = match rows.last() {
        Some(last) if more => USERS_AFTER.encode(last.id),
        _ => String::new(),
    };
    Ok(pb::ListResponse {
        users: rows.into_iter().map(user).collect::<Result<_>>()?,
        next_page_token,
    })
}

/// The longest client description a session keeps.
const CLIENT_CHARS: usize = 200;

/// What a client calls itself (its `user-agent`), as a session keeps it:
/// printable characters only, at most [`CLIENT_CHARS`] of them.
pub(super) fn client_of<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(CLIENT_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A session id, as `field` carries it.
pub(super) fn session_id(field: &'static str, value: &str) -> Result<uuid::Uuid, Status> {
    uuid::Uuid::try_parse(value)
        .map_err(|_| Error::invalid(field, "must be a session id (a UUID)").into())
}

pub(super) fn session(session: SessionView) -> pb::Session {
    pb::Session {
        id: session.id.to_string(),
        started_at: Some(timestamp(session.started_at)),
        last_used_at: Some(timestamp(session.last_used_at)),
        expires_at: Some(timestamp(session.expires_at)),
        client: session.client,
        address: session.address,
        current: session.current,
    }
}

pub(crate) fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}
