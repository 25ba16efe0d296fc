//! A REST/JSON gateway generated from the protos' `google.api.http`
//! annotations, like grpc-gateway, but in-process: each HTTP request is
//! transcoded into a gRPC request and handed to the very same tonic routes
//! (guards included) that serve gRPC, without a network hop.
//!
//! - Routes come from the descriptor set at start-up: annotating an RPC
//!   adds its route.
//! - JSON follows the proto3 JSON mapping (camelCase names, 64-bit integers
//!   as strings, RFC 3339 timestamps).
//! - The `Authorization` and `User-Agent` headers travel as gRPC metadata.
//! - gRPC statuses become HTTP statuses as grpc-gateway maps them, with a
//!   `{code, message, details}` JSON body.
//! - `/openapi.json` describes every route (see [`openapi`]).

mod openapi;
mod template;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::body::Body as HttpBody;
use axum::extract::ConnectInfo;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ReflectMessage as _, SerializeOptions, Value,
};
use serde_json::json;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use tower::ServiceExt as _;

use crate::client_address::FORWARDED_FOR;

pub use template::PathTemplate;

/// Request bodies larger than this are refused.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where an HTTP rule takes the request message from, besides the path.
#[derive(Debug, Clone)]
enum BodyRule {
    /// No body: the fields not in the path come from the query string.
    None,
    /// `body: "*"`: the whole message.
    Whole,
    /// `body: "field"`: one field of the message.
    Field(FieldDescriptor),
}

#[derive(Debug, Clone)]
struct Route {
    http_method: Method,
    template: PathTemplate,
    body: BodyRule,
    method: MethodDescriptor,
    /// The gRPC path, `/package.Service/Method`.
    grpc_path: String,
}

pub struct Gateway {
    routes: Vec<Route>,
    grpc: Routes,
    openapi: Bytes,
}

impl Gateway {
    /// Routes for every annotated method of `services` (full names) in the
    /// encoded, self-contained `descriptor_set`, served by `grpc`.
    pub fn new(
        descriptor_set: &[u8],
        services: &[&str],
        grpc: Routes,
        title: &str,
    ) -> anyhow::Result<Gateway> {
        let pool = DescriptorPool::decode(descriptor_set).context("decoding the descriptor set")?;
        let http = pool
            .get_extension_by_name("google.api.http")
            .context("the descriptor set lacks google/api/annotations.proto")?;
        let mut routes = Vec::new();
        for name in services {
            let service = pool
                .get_service_by_name(name)
                .with_context(|| format!("no service {name} in the descriptor set"))?;
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&http).into_owned() else {
                    bail!("{}: google.api.http is not an HttpRule", method.full_name());
                };
                routes.push(route(&method, &rule)?);
            }
        }
        let openapi = serde_json::to_vec_pretty(&openapi::document(title, &routes))?.into();
        Ok(Gateway {
            routes,
            grpc,
            openapi,
        })
    }

    /// `(HTTP method, path template, gRPC method)` of every route.
    pub fn routes(&self) -> impl Iterator<Item = (&Method, &str, &str)> {
        self.routes.iter().map(|route| {
            (
                &route.http_method,
                route.template.text.as_str(),
                route.grpc_path.as_str(),
            )
        })
    }

    /// An axum router answering every path through this gateway.
    pub fn into_router(self) -> axum::Router {
        let gateway = Arc::new(self);
        axum::Router::new().fallback(move |request: http::Request<HttpBody>| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request).await) }
        })
    }

    pub async fn handle(&self, request: http::Request<HttpBody>) -> http::Response<HttpBody> {
        let path = request.uri().path().to_owned();
        if path == "/openapi.json" && request.method() == Method::GET {
            return response(StatusCode::OK, self.openapi.clone());
        }
        let mut path_matched = false;
        for route in &self.routes {
            let Some(bound) = route.template.matches(&path) else {
                continue;
            };
            path_matched = true;
            if route.http_method == request.method() {
                return match self.call(route, bound, request).await {
                    Ok(response) | Err(response) => response,
                };
            }
        }
        if path_matched {
            let mut response = error_response(&Status::unimplemented(format!(
                "method {} not allowed on {path}",
                request.method()
            )));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        } else {
            error_response(&Status::not_found(format!("no route for {path}")))
        }
    }

    async fn call(
        &self,
        route: &Route,
        bound: Vec<(String, String)>,
        request: http::Request<HttpBody>,
    ) -> Result<http::Response<HttpBody>, http::Response<HttpBody>> {
        let bad_request = |message: String| error_response(&Status::invalid_argument(message));
        let (parts, body) = request.into_parts();
        let input = route.method.input();

        let mut message = match &route.body {
            BodyRule::None => DynamicMessage::new(input.clone()),
            rule => {
                let bytes = Limited::new(body, MAX_BODY_BYTES)
                    .collect()
                    .await
                    .map_err(|error| bad_request(format!("unreadable body: {error}")))?
                    .to_bytes();
                let json = if bytes.iter().all(u8::is_ascii_whitespace) {
                    &b"{}"[..]
                } else {
                    &bytes
                };
                match rule {
                    BodyRule::Field(field) => {
                        let Kind::Message(body_type) = field.kind() else {
                            return Err(bad_request(format!(
                                "body field {} is not a message",
                                field.name()
                            )));
                        };
                        let mut message = DynamicMessage::new(input.clone());
                        message.set_field(
                            field,
                            Value::Message(from_json(body_type, json).map_err(bad_request)?),
                        );
                        message
                    }
                    _ => from_json(input.clone(), json).map_err(bad_request)?,
                }
            }
        };
        if matches!(route.body, BodyRule::None)
            && let Some(query) = parts.uri.query()
        {
            for (field, value) in form_pairs(query) {
                if bound.iter().any(|(bound_field, _)| *bound_field == field) {
                    continue;
                }
                set_from_text(&mut message, &field, &value).map_err(bad_request)?;
            }
        }
        // The path wins, as in grpc-gateway: set last, whichever name (the
        // proto's or its JSON form) a query parameter gave the same field,
        // so that a proxy, an audit log or a firewall can trust the path.
        for (field, value) in &bound {
            set_from_text(&mut message, field, value).map_err(bad_request)?;
        }

        let mut grpc_request =
            grpc_request(&route.grpc_path, &parts.headers, &message.encode_to_vec())
                .map_err(|error| error_response(&Status::internal(error)))?;
        // The HTTP client is the gRPC peer: what a handler learns of its
        // caller's address is the same either way.
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            grpc_request.extensions_mut().insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(*peer),
            });
        }
        let grpc_response = match self.grpc.clone().oneshot(grpc_request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let (grpc_parts, grpc_body) = grpc_response.into_parts();
        let collected = grpc_body.collect().await.map_err(|error| {
            error_response(&Status::internal(format!(
                "reading the gRPC response: {error}"
            )))
        })?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status = Status::from_header_map(&grpc_parts.headers)
            .or_else(|| Status::from_header_map(&trailers))
            .unwrap_or_else(|| Status::internal("the gRPC response had no status"));
        if status.code() != Code::Ok {
            return Err(error_response(&status));
        }
        let data = collected.to_bytes();
        let payload = data.get(5..).unwrap_or_default();
        let output = DynamicMessage::decode(route.method.output(), payload).map_err(|error| {
            error_response(&Status::internal(format!(
                "decoding the gRPC response: {error}"
            )))
        })?;
        let mut json = serde_json::Serializer::new(Vec::new());
        output
            .serialize_with_options(&mut json, &SerializeOptions::new())
            .map_err(|error| {
                error_response(&Status::internal(format!("encoding JSON: {error}")))
            })?;
        Ok(response(StatusCode::OK, json.into_inner().into()))
    }
}

fn route(method: &MethodDescriptor, rule: &DynamicMessage) -> anyhow::Result<Route> {
    let text = |field: &str| match rule.get_field_by_name(field).as_deref() {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    };
    let (http_method, path) = [
        (Method::GET, "get"),
        (Method::PUT, "put"),
        (Method::POST, "post"),
        (Method::DELETE, "delete"),
        (Method::PATCH, "patch"),
    ]
    .into_iter()
    .find_map(|(http_method, field)| text(field).map(|path| (http_method, path)))
    .with_context(|| {
        format!(
            "{}: the HTTP rule has no supported pattern",
            method.full_name()
        )
    })?;
    let template = PathTemplate::parse(&path).map_err(anyhow::Error::msg)?;
    let input = method.input();
    for variable in template.variables() {
        if input.get_field_by_name(variable).is_none() {
            bail!(
                "{}: path variable {variable} is not a field of {}",
                method.full_name(),
                input.full_name()
            );
        }
    }
    let body = match text("body").as_deref() {
        None => BodyRule::None,
        Some("*") => BodyRule::Whole,
        Some(field) => BodyRule::Field(input.get_field_by_name(field).with_context(|| {
            format!("{}: body field {field} does not exist", method.full_name())
        })?),
    };
    Ok(Route {
        http_method,
        template,
        body,
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        method: method.clone(),
    })
}

fn from_json(descriptor: MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize_with_options(
        descriptor,
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .map_err(|error| format!("invalid JSON body: {error}"))?;
    deserializer
        .end()
        .map_err(|error| format!("invalid JSON body: {error}"))?;
    Ok(message)
}

/// Sets a top-level scalar field (by proto or JSON name) from a path
/// variable or query parameter.
fn set_from_text(message: &mut DynamicMessage, name: &str, text: &str) -> Result<(), String> {
    let descriptor = message.descriptor();
    let field = descriptor
        .get_field_by_name(name)
        .or_else(|| descriptor.get_field_by_json_name(name))
        .ok_or_else(|| format!("{} has no field {name}", descriptor.name()))?;
    let invalid = || {
        format!(
            "invalid {}: {text:?} is not a valid {:?}",
            field.name(),
            field.kind()
        )
    };
    let value = match field.kind() {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| invalid())?)
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| invalid())?)
        }
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| invalid())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| invalid())?),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| invalid())?),
        Kind::Double => Value::F64(text.parse().map_err(|_| invalid())?),
        Kind::Float => Value::F32(text.parse().map_err(|_| invalid())?),
        Kind::String => Value::String(text.to_owned()),
        Kind::Enum(values) => Value::EnumNumber(
            values
                .get_value_by_name(text)
                .map(|value| value.number())
                .or_else(|| text.parse().ok())
                .ok_or_else(invalid)?,
        ),
        Kind::Bytes | Kind::Message(_) => {
            return Err(format!(
                "{} cannot be given in a path or query",
                field.name()
            ));
        }
    };
    if field.is_list() {
        match message.get_field_mut(&field) {
            Value::List(list) => list.push(value),
            other => *other = Value::List(vec![value]),
        }
    } else {
        message.set_field(&field, value);
    }
    Ok(())
}

/// `a=1&b=x+y` as decoded pairs.
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(move |pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
}

fn grpc_request(
    path: &str,
    headers: &HeaderMap,
    message: &[u8],
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).map_err(|_| "message too large".to_owned())?);
    frame.put_slice(message);
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .version(http::Version::HTTP_2)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    for name in [
        header::AUTHORIZATION.as_str(),
        header::USER_AGENT.as_str(),
        "x-request-id",
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    // Believed only when the HTTP peer is a trusted proxy.
    for value in headers.get_all(FORWARDED_FOR) {
        request = request.header(FORWARDED_FOR, value);
    }
    request
        .body(Full::new(frame.freeze()))
        .map_err(|error| error.to_string())
}

fn response(status: StatusCode, json: Bytes) -> http::Response<HttpBody> {
    let mut response = http::Response::new(HttpBody::from(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{code, message, details}`, with the details clients act on
/// (`BadRequest`, `RetryInfo`) in their proto3 JSON form.
fn error_response(status: &Status) -> http::Response<HttpBody> {
    let error_details = status.get_error_details();
    let mut details = Vec::new();
    if let Some(bad_request) = error_details.bad_request() {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": bad_request.field_violations.iter().map(|violation| json!({
                "field": violation.field,
                "description": violation.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(delay) = error_details
        .retry_info()
        .and_then(|retry| retry.retry_delay)
    {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", delay.as_secs()),
        }));
    }
    let body = json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details,
    });
    let mut response = response(http_status(status.code()), body.to_string().into());
    if let Some(delay) = error_details
        .retry_info()
        .and_then(|retry| retry.retry_delay)
    {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(delay.as_secs().max(1)),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses_as_grpc_gateway_does() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }

    #[test]
    fn query_strings_decode() {
        let pairs: Vec<_> = form_pairs("page_size=2&page_token=a%2Bb+c&flag").collect();
        assert_eq!(
            pairs,
            [
                ("page_size".to_owned(), "2".to_owned()),
                ("page_token".to_owned(), "a+b c".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
    }
}
