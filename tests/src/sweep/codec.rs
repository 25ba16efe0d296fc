//! Calls a method with raw bytes, and how the call ended.

use super::*;

/// Requests and responses as bytes: tonic-prost's codec takes no
/// `DynamicMessage`.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// How a call ended.
pub enum Answer {
    /// OK, with the response (or the stream's first item, if it sent one
    /// in time).
    Ok(Option<Bytes>),
    Status(Status),
    Hung,
}

pub async fn call(channel: &Channel, method: &Method, body: Bytes, token: Option<&str>) -> Answer {
    fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
        match token {
            Some(token) => with_token(message, token),
            None => tonic::Request::new(message),
        }
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let path: PathAndQuery = method.path.parse().expect("a method path");
    let descriptor = &method.descriptor;
    let answer = async {
        grpc.ready()
            .await
            .map_err(|error| Status::unavailable(format!("the channel is not ready: {error}")))?;
        let mut stream = match (
            descriptor.is_client_streaming(),
            descriptor.is_server_streaming(),
        ) {
            (false, false) => {
                let response = grpc.unary(request(body, token), path, RawCodec).await?;
                return Ok(Some(response.into_inner()));
            }
            (true, false) => {
                let messages = request(tokio_stream::once(body), token);
                let response = grpc.client_streaming(messages, path, RawCodec).await?;
                return Ok(Some(response.into_inner()));
            }
            (false, true) => {
                grpc.server_streaming(request(body, token), path, RawCodec)
                    .await?
            }
            (true, true) => {
                let messages = request(tokio_stream::once(body), token);
                grpc.streaming(messages, path, RawCodec).await?
            }
        }
        .into_inner();
        match tokio::time::timeout(FIRST_ITEM, stream.message()).await {
            // Open, with nothing to send yet: a live stream.
            Err(_) => Ok(None),
            Ok(first) => first,
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Err(_) => Answer::Hung,
        Ok(Ok(body)) => Answer::Ok(body),
        Ok(Err(status)) => Answer::Status(status),
    }
}

impl Answer {
    /// What is wrong with this answer, if anything.
    pub fn fault(&self, method: &Method, panics_before: usize) -> Option<String> {
        let panics = panics_since(panics_before);
        if !panics.is_empty() {
            return Some(format!("the service panicked: {}", panics.join("; ")));
        }
        match self {
            Answer::Hung => Some(format!("no answer within {CALL_TIMEOUT:?}")),
            Answer::Status(status) if FORBIDDEN.contains(&status.code()) => Some(format!(
                "answered {}: {:?}",
                code_name(status.code()),
                status.message()
            )),
            Answer::Ok(Some(body)) => {
                DynamicMessage::decode(method.descriptor.output(), body.clone())
                    .err()
                    .map(|error| {
                        format!(
                            "the response is not a {}: {error}",
                            method.descriptor.output().full_name()
                        )
                    })
            }
            Answer::Ok(None) | Answer::Status(_) => None,
        }
    }
}
