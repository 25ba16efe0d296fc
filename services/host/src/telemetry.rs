//! Log output and traces.
//!
//! Logs: human-readable by default, JSON lines when `LOG_FORMAT=json`; the
//! level filter comes from `RUST_LOG` (default `info`). Lines are written
//! to stdout by a thread of their own, so that a slow terminal or pipe
//! never holds up a call. Its queue is bounded: when it is full, lines are
//! dropped, not waited for.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set (gRPC OTLP, such as
//! `http://collector:4317`), spans are exported in batches, named by
//! `OTEL_SERVICE_NAME` (else the service's own name), and calls continue
//! the W3C trace context their callers send ([`crate::trace_context`]).
//! Unset, nothing is exported and nothing is paid for but the spans the
//! logs already keep. The standard `OTEL_BSP_*` variables tune batching.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Lines the writer thread holds before dropping new ones.
const QUEUED_LINES: usize = 64 * 1024;

/// Keeps the writer thread and the span exporter; dropping it writes out
/// what is queued and exports the spans still held.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
    traces: Option<SdkTracerProvider>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take() {
            let _ = traces.shutdown();
        }
    }
}

/// Installs the global subscriber, exporting spans of `service` when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set; a second call does nothing. The
/// exporter's connection needs a Tokio runtime: call this inside one.
pub fn init(service: &str) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .finish(std::io::stdout());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let (traces, exporter_error) = match tracer_provider(service) {
        Ok(traces) => (traces, None),
        Err(error) => (None, Some(error)),
    };
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()))
    });
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = if json {
        registry.with(fmt.json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if let Some(error) = exporter_error {
        tracing::warn!(%error, "traces are not exported");
    } else if traces.is_some() {
        tracing::info!("traces are exported over OTLP");
    }
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
        traces: if installed.is_ok() { traces } else { None },
    }
}

/// The provider exporting spans to `OTEL_EXPORTER_OTLP_ENDPOINT`, if set.
fn tracer_provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map_or(true, |endpoint| endpoint.trim().is_empty())
    {
        return Ok(None);
    }
    anyhow::ensure!(
        tokio::runtime::Handle::try_current().is_ok(),
        "OTEL_EXPORTER_OTLP_ENDPOINT needs the service's runtime, and this process started its logs without one"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}
