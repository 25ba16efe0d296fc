//! `auth.v1.UserService`: each handler converts its request at the
//! boundary, delegates to [`crate::app::accounts`] and converts the answer.

use std::sync::Arc;

use api::auth::v1 as pb;
use tonic::{Request, Response, Status};

use super::caller;
use super::convert::{self, LookedUpIds, LookedUpNames};
use crate::app::App;
use crate::app::accounts::{AccountChange, NewUser, PasswordChange, UsersPage};
use crate::domain::UserId;

pub struct UserApi {
    app: Arc<App>,
}

impl UserApi {
    pub fn new(app: Arc<App>) -> UserApi {
        UserApi { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserApi {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn create(&self, request: Request<pb::CreateRequest>) -> Reply<pb::CreateResponse> {
        let caller = caller(&request)?;
        let address = self.app.quotas.client_of(&request);
        let new = NewUser {
            address,
            ..NewUser::try_from(request.into_inner())?
        };
        let id = self.app.create_user(&caller, new).await?;
        Ok(Response::new(pb::CreateResponse { id: id.0 }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn get(&self, request: Request<pb::GetRequest>) -> Reply<pb::GetResponse> {
        let caller = caller(&request)?;
        let id = UserId::try_from(request.into_inner())?;
        let user = self.app.get_user(&caller, id).await?;
        Ok(Response::new(pb::GetResponse {
            user: Some(convert::user(user)?),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn update(&self, request: Request<pb::UpdateRequest>) -> Reply<pb::UpdateResponse> {
        let caller = caller(&request)?;
        let change = AccountChange::try_from(request.into_inner())?;
        let user = self.app.update_user(&caller, change).await?;
        Ok(Response::new(pb::UpdateResponse {
            user: Some(convert::user(user)?),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Reply<pb::DeleteResponse> {
        let caller = caller(&request)?;
        let (id, proof) = convert::deletion(request.into_inner())?;
        self.app.delete_user(&caller, id, proof).await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, request: Request<pb::ListRequest>) -> Reply<pb::ListResponse> {
        let page = UsersPage::try_from(request.into_inner())?;
        let (rows, more) = self.app.list_users(page).await?;
        Ok(Response::new(convert::users(rows, more)?))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().id))]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        let caller = caller(&request)?;
        let change = PasswordChange::try_from(request.into_inner())?;
        self.app.change_password(&caller, change).await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().usernames.len()))]
    async fn lookup_usernames(
        &self,
        request: Request<pb::LookupUsernamesRequest>,
    ) -> Reply<pb::LookupUsernamesResponse> {
        let LookedUpNames(names) = LookedUpNames::try_from(request.into_inner())?;
        let found = self.app.lookup_names(&names).await?;
        Ok(Response::new(pb::LookupUsernamesResponse {
            users: found
                .users
                .into_iter()
                .map(|(id, name)| pb::UserRef { id, name })
                .collect(),
            missing_usernames: found.missing,
        }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn lookup_user_ids(
        &self,
        request: Request<pb::LookupUserIdsRequest>,
    ) -> Reply<pb::LookupUserIdsResponse> {
        let LookedUpIds(ids) = LookedUpIds::try_from(request.into_inner())?;
        let (found, missing_ids) = self.app.lookup_ids(&ids).await?;
        Ok(Response::new(pb::LookupUserIdsResponse {
            users: found
                .into_iter()
                .map(|(id, name)| pb::UserRef { id, name })
                .collect(),
            missing_ids,
        }))
    }
}
