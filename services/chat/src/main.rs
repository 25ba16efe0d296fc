use chat::config::Config;
use chat::startup::Application;
use clap::{Parser, Subcommand};

/// The chat service. Configured by CHAT_* environment variables (see the README).
#[derive(Parser)]
#[command(version)]
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = serving::telemetry::init();
    match Cli::parse().command.unwrap_or(Command::Serve) {
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
