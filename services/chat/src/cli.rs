//! The `chat` command line: what `main` runs. It lives in the library so
//! that the test harness runs the very same entry point as a process of its
//! own, built with the rest of the test run.

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::Application;

/// The chat service. Configured by CHAT_* environment variables (see the README).
#[derive(Parser)]
#[command(name = "chat", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and metrics (the default).
    Serve,
    /// Exit 0 if the server at CHAT_GRPC_ADDR reports SERVING (for container health checks).
    Healthcheck,
}

/// Parses the command line and runs it to the end.
pub fn main() -> anyhow::Result<()> {
    let _logs = serving::telemetry::init();
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Healthcheck => {
            let addr =
                std::env::var("CHAT_GRPC_ADDR").unwrap_or_else(|_| "0.0.0.0:50052".to_owned());
            serving::health::probe(addr.parse()?).await
        }
        Command::Serve => {
            Application::build(Config::from_env()?)
                .await?
                .run_until_stopped(serving::shutdown::signal())
                .await
        }
    }
}
