//! Log output: human-readable by default, JSON lines when `LOG_FORMAT=json`;
//! the level filter comes from `RUST_LOG` (default `info`).
//!
//! Lines are written to stdout by a thread of their own, so that a slow
//! terminal or pipe never holds up a call. Its queue is bounded: when it
//! is full, lines are dropped, not waited for.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines the writer thread holds before dropping new ones.
const QUEUED_LINES: usize = 64 * 1024;

/// Keeps the writer thread; dropping it writes out what is queued.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber; a second call does nothing.
pub fn init() -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed =
        if std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
            builder.json().flatten_event(true).try_init()
        } else {
            builder.try_init()
        };
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}
