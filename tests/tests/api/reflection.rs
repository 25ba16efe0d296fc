//! Server reflection: tools such as grpcurl list and call every RPC
//! without the proto files, over reflection v1 and v1alpha.

use tests::services::TestAuth;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

async fn ask(auth: &TestAuth, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(auth.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    responses
        .next()
        .await
        .expect("an answer")
        .expect("a good answer")
        .message_response
        .expect("a message")
}

#[tokio::test]
async fn reflection_lists_the_three_auth_services_and_health() {
    let auth = TestAuth::spawn().await;
    let MessageResponse::ListServicesResponse(list) =
        ask(&auth, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "auth.v1.AccessService",
            "auth.v1.AuthService",
            "auth.v1.UserService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
}

#[tokio::test]
async fn reflection_serves_the_files_a_service_imports() {
    let auth = TestAuth::spawn().await;
    for file in [
        "validate/validate.proto",
        "google/api/annotations.proto",
        "google/protobuf/timestamp.proto",
    ] {
        let answer = ask(&auth, MessageRequest::FileByFilename(file.into())).await;
        assert!(
            matches!(answer, MessageResponse::FileDescriptorResponse(ref files) if !files.file_descriptor_proto.is_empty()),
            "{file} is not served: {answer:?}"
        );
    }
}
