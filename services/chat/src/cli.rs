//! The `chat` command line: what `main` runs. It lives in the library so
//! that the test harness runs the very same entry point as a process of its
//! own, built with the rest of the test run.

use clap::Parser;
use host::cli::Common;

use crate::config::Config;
use crate::startup::Application;

/// The chat service. Configured by CHAT_* environment variables (see docs/chat.md).
#[derive(Parser)]
#[command(name = "chat", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Common>,
}

/// Parses the command line and runs it to the end.
pub fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or(Common::Serve);
    host::cli::main("chat", || async move {
        match command {
            Common::Healthcheck => host::cli::healthcheck("CHAT", "0.0.0.0:50052").await,
            Common::Serve => {
                Application::build(Config::from_env()?)
                    .await?
                    .run_until_stopped(host::shutdown::signal())
                    .await
            }
        }
    })
}
