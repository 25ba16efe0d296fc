//! `auth.v1.AccessService`: other services ask whether a caller may call
//! one of their endpoints.

use std::sync::Arc;

use api::auth::v1 as pb;
use tonic::{Request, Response, Status};

use super::State;

pub struct AccessApi {
    state: Arc<State>,
}

impl AccessApi {
    pub fn new(state: Arc<State>) -> AccessApi {
        AccessApi { state }
    }
}

#[tonic::async_trait]
impl pb::access_service_server::AccessService for AccessApi {
    #[tracing::instrument(skip_all, fields(endpoint = %request.get_ref().endpoint_address))]
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let checks = &self.state.metrics.access_checks;
        if let Err(status) = serving::invalid::validate(request.get_ref()) {
            checks.with_label_values(&["invalid_argument"]).inc();
            return Err(status);
        }
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or_default());
        let principal = match self
            .state
            .policy
            .check(authorization, &request.get_ref().endpoint_address)
        {
            Ok(principal) => {
                checks.with_label_values(&["allowed"]).inc();
                principal
            }
            Err(error) => {
                let status = Status::from(error);
                let result = match status.code() {
                    tonic::Code::PermissionDenied => "permission_denied",
                    tonic::Code::Unavailable => "unavailable",
                    _ => "unauthenticated",
                };
                checks.with_label_values(&[result]).inc();
                return Err(status);
            }
        };
        Ok(Response::new(pb::CheckResponse {
            user_id: principal.user_id.0,
            username: principal.name,
            role: principal.role.to_proto().into(),
        }))
    }
}
