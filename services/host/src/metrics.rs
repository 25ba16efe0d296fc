//! Prometheus metrics: per-RPC counters and latencies under the names
//! go-grpc-prometheus made common, a tower layer that records them for
//! every call, and the `/metrics` endpoint. Services register their own
//! domain metrics in the same [`Registry`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body as HttpBody;
use http_body::Frame;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument as _;

/// The RPC metrics every gRPC server of this project exposes.
#[derive(Clone)]
pub struct GrpcMetrics {
    /// For codes other than OK, whose series are made on first use.
    handled: IntCounterVec,
    /// Every RPC this server serves, by full method path, with its labels.
    /// A call to any other path is counted under one `unknown` series, so
    /// that random paths cannot create series without end.
    routes: Arc<HashMap<String, Arc<Route>>>,
    unknown: Arc<Route>,
}

/// What a call's metrics and log line are recorded under: its series,
/// resolved once, so that a call looks up no label.
struct Route {
    labels: [String; 3],
    /// Calls made so often that a line for each would drown the rest:
    /// those that succeed end with a DEBUG line, the others at INFO.
    quiet: bool,
    started: IntCounter,
    handling: Histogram,
    /// `handled` with code OK; other codes are looked up.
    handled_ok: IntCounter,
}

/// Services whose calls are quiet: probes and tools.
const QUIET_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The labels of calls to paths the server does not serve.
const UNKNOWN: [&str; 3] = ["unknown", "unknown", "unknown"];

impl GrpcMetrics {
    /// Registers the metrics for the RPCs of `descriptor_set`, and of the
    /// health and reflection services every server of this project has.
    /// Calls to health, reflection and `quiet_methods` (full paths) that
    /// succeed are logged at DEBUG.
    pub fn new(
        registry: &Registry,
        descriptor_set: &[u8],
        quiet_methods: &[&str],
    ) -> anyhow::Result<GrpcMetrics> {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let started = IntCounterVec::new(
            Opts::new("grpc_server_started_total", "RPCs started on the server."),
            &labels,
        )?;
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "RPCs completed on the server, whatever their status.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from the start of an RPC to its status, in seconds.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &labels,
        )?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(handling.clone()))?;
        let mut routes = HashMap::new();
        for set in [
            descriptor_set,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let pool = prost_reflect::DescriptorPool::decode(set)?;
            for method in pool
                .services()
                .flat_map(|service| service.methods().collect::<Vec<_>>())
            {
                let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
                    (false, false) => "unary",
                    (false, true) => "server_stream",
                    (true, false) => "client_stream",
                    (true, true) => "bidi_stream",
                };
                let service = method.parent_service().full_name().to_owned();
                let path = format!("/{service}/{}", method.name());
                let quiet = QUIET_SERVICES.contains(&service.as_str())
                    || quiet_methods.contains(&path.as_str());
                let labels = [kind.to_owned(), service, method.name().to_owned()];
                let route = Route::new(labels, quiet, &started, &handled, &handling);
                routes.insert(path, Arc::new(route));
            }
        }
        let unknown = Route::new(
            UNKNOWN.map(str::to_owned),
            false,
            &started,
            &handled,
            &handling,
        );
        Ok(GrpcMetrics {
            handled,
            routes: Arc::new(routes),
            unknown: Arc::new(unknown),
        })
    }

    fn route(&self, path: &str) -> Arc<Route> {
        self.routes.get(path).unwrap_or(&self.unknown).clone()
    }
}

impl Route {
    fn new(
        labels: [String; 3],
        quiet: bool,
        started: &IntCounterVec,
        handled: &IntCounterVec,
        handling: &HistogramVec,
    ) -> Route {
        let [kind, service, method] = &labels;
        let three = [kind.as_str(), service, method];
        Route {
            started: started.with_label_values(&three),
            handling: handling.with_label_values(&three),
            handled_ok: handled.with_label_values(&[
                kind.as_str(),
                service,
                method,
                code_name(Code::Ok),
            ]),
            labels,
            quiet,
        }
    }
}

/// Records [`GrpcMetrics`] for every call through the server, and runs
/// each call in an `rpc` span naming the method, the request id (taken
/// from `x-request-id`, or made up and added to the request so that calls
/// to other services carry it on), the caller's user id once a guard
/// records it, and the status code; a log line marks each call's end.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Recorded<S> {
    inner: S,
    metrics: GrpcMetrics,
}

/// What finishing a call records.
struct Call {
    metrics: GrpcMetrics,
    route: Arc<Route>,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: Code) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let name = code_name(code);
        self.span.record("grpc.code", name);
        let elapsed_ms = elapsed * 1000.0;
        self.span.in_scope(|| {
            if self.route.quiet && code == Code::Ok {
                tracing::debug!(elapsed_ms, "rpc finished");
            } else {
                tracing::info!(elapsed_ms, "rpc finished");
            }
        });
        if code == Code::Ok {
            self.route.handled_ok.inc();
        } else {
            let [kind, service, method] = &self.route.labels;
            self.metrics
                .handled
                .with_label_values(&[kind.as_str(), service, method, name])
                .inc();
        }
        self.route.handling.observe(elapsed);
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for Recorded<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RecordedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let route = self.metrics.route(request.uri().path());
        route.started.inc();
        let request_id = match request
            .headers()
            .get(REQUEST_ID)
            .and_then(|id| id.to_str().ok())
        {
            Some(id) if !id.is_empty() && id.len() <= 128 => id.to_owned(),
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                if let Ok(value) = http::HeaderValue::from_str(&id) {
                    request.headers_mut().insert(REQUEST_ID, value);
                }
                id
            }
        };
        let span = tracing::info_span!(
            "rpc",
            otel.name = %request.uri().path(),
            otel.kind = "server",
            rpc.method = %request.uri().path(),
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
            grpc.code = tracing::field::Empty,
        );
        crate::trace_context::adopt(&span, request.headers());
        let call = Call {
            metrics: self.metrics.clone(),
            route,
            started: Instant::now(),
            span: span.clone(),
        };
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = response.await?;
                // A trailers-only response carries its status in the headers.
                let call = match status_code(response.headers()) {
                    Some(code) => {
                        call.finish(code);
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|body| RecordedBody { inner: body, call }))
            }
            .instrument(span),
        )
    }
}

/// A status code as the `grpc_code` label and the log have always spelt
/// it (tonic's `Debug` names), without formatting one per call.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The metadata key a request id travels under, from service to service.
pub const REQUEST_ID: &str = "x-request-id";

fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the trailers pass (or,
    /// with none, when the body ends or is dropped: the client left).
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for RecordedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(Code::Cancelled);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code)
                    && let Some(call) = this.call.take()
                {
                    call.finish(code);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Unknown);
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Ok);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `GET /metrics` from `registry` on `listener`, if there is one,
/// until `shutdown` resolves.
pub async fn serve(
    listener: Option<TcpListener>,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(listener) = listener else {
        return Ok(());
    };
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut text = Vec::new();
                let _ = TextEncoder::new().encode(&registry.gather(), &mut text);
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, TextEncoder::new().format_type())
                    .body(HttpBody::from(text))
                    .unwrap_or_default()
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_rpcs_are_labelled_by_kind_and_unknown_paths_share_one_series() {
        let metrics = GrpcMetrics::new(
            &Registry::new(),
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            &["/grpc.health.v1.Health/Watch"],
        )
        .expect("metrics");
        let labels = |path: &str| metrics.route(path).labels.clone();
        assert_eq!(
            labels("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")[0],
            "bidi_stream"
        );
        assert_eq!(labels("/grpc.health.v1.Health/Watch")[0], "server_stream");
        assert_eq!(labels("/grpc.health.v1.Health/Check")[0], "unary");
        assert_eq!(labels("/random.Service/Method"), UNKNOWN.map(str::to_owned));
        assert_eq!(labels("not even a path"), UNKNOWN.map(str::to_owned));
        // Probes and tools are logged at DEBUG; the services' own calls,
        // and calls to paths nobody serves, at INFO.
        assert!(metrics.route("/grpc.health.v1.Health/Check").quiet);
        assert!(
            metrics
                .route("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
                .quiet
        );
        assert!(!metrics.route("/random.Service/Method").quiet);
        assert!(metrics.route("/grpc.health.v1.Health/Watch").quiet);
    }

    #[test]
    fn code_names_are_tonics_debug_names() {
        for code in 0..=16 {
            let code = Code::from_i32(code);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
