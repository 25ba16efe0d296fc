use clap::{Parser, Subcommand};

/// Serves the browser client. Configured by WEB_ADDR, WEB_AUTH_URL and
/// WEB_CHAT_URL (see docs/web-client.md).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the client (the default).
    Serve,
    /// Exit 0 if the server at WEB_ADDR answers (for container health checks).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = host::telemetry::init("web");
    let config = web::Config::from_env()?;
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Healthcheck => {
            let port = config.addr.port();
            tokio::time::timeout(
                std::time::Duration::from_secs(3),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await??;
            Ok(())
        }
        Command::Serve => {
            web::WebClient::bind(&config)
                .await?
                .run_until_stopped(host::shutdown::signal())
                .await
        }
    }
}
