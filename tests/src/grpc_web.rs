//! The services' typed clients over gRPC-Web (binary), on HTTP/1.1, as a
//! browser calls them: every call goes through the servers' gRPC-Web
//! translation, unary and server streaming alike.

use std::net::SocketAddr;

use api::auth::v1::auth_service_client::AuthServiceClient;
use api::chat::v1::chat_service_client::ChatServiceClient;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic_web::{GrpcWebClientLayer, GrpcWebClientService};

/// An HTTP/1.1 client speaking gRPC-Web.
pub type WebChannel =
    GrpcWebClientService<Client<HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>>;

fn channel() -> WebChannel {
    let client = Client::builder(TokioExecutor::new()).build_http();
    tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(client)
}

fn origin(addr: SocketAddr) -> http::Uri {
    format!("http://{addr}").parse().expect("an origin")
}

/// Chat's `ChatService` at `addr` (its gRPC port), over gRPC-Web.
pub fn chats(addr: SocketAddr) -> ChatServiceClient<WebChannel> {
    ChatServiceClient::with_origin(channel(), origin(addr))
}

/// Auth's `AuthService` at `addr` (its gRPC port), over gRPC-Web.
pub fn sessions(addr: SocketAddr) -> AuthServiceClient<WebChannel> {
    AuthServiceClient::with_origin(channel(), origin(addr))
}
