use std::io::BufRead as _;

use anyhow::Context as _;
use auth::config::{BootstrapAdmin, Config};
use auth::startup::Application;
use clap::{Parser, Subcommand};

/// The auth service. Configured by AUTH_* environment variables (see the README).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC, REST and metrics (the default).
    Serve,
    /// Exit 0 if the server at AUTH_GRPC_ADDR reports SERVING (for container health checks).
    Healthcheck,
    /// Create an admin, unless the name or email is taken. The password is
    /// read from AUTH_ADMIN_PASSWORD, or else from the first line of
    /// standard input.
    CreateAdmin {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = serving::telemetry::init();
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    if let Command::Healthcheck = command {
        let addr = std::env::var("AUTH_GRPC_ADDR").unwrap_or_else(|_| "0.0.0.0:50051".to_owned());
        return serving::health::probe(addr.parse()?).await;
    }
    let config = Config::from_env()?;
    match command {
        Command::Healthcheck => Ok(()),
        Command::Serve => {
            Application::build(config)
                .await?
                .run_until_stopped(serving::shutdown::signal())
                .await
        }
        Command::CreateAdmin { name, email } => {
            let password = match std::env::var("AUTH_ADMIN_PASSWORD") {
                Ok(password) => password,
                Err(_) => std::io::stdin()
                    .lock()
                    .lines()
                    .next()
                    .context("no password on standard input")??,
            };
            let pool = auth::db::connect(&config.database)?;
            auth::MIGRATOR.run(&pool).await?;
            let passwords = auth::passwords::PasswordHasher::new(&config.passwords)?;
            let admin = BootstrapAdmin {
                name,
                email,
                password: password.into(),
            };
            if auth::bootstrap::ensure_admin(&pool, &passwords, &admin).await? {
                println!("admin {} created", admin.name);
            } else {
                anyhow::bail!("the name or email is already taken; nothing created");
            }
            Ok(())
        }
    }
}
