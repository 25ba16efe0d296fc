//! The `auth` command line: what `main` runs. It lives in the library so
//! that the test harness runs the very same entry point as a process of its
//! own, built with the rest of the test run.

use std::io::BufRead as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use host::cli::Common;

use crate::config::{BootstrapAdmin, Config};
use crate::startup::Application;

/// The auth service. Configured by AUTH_* environment variables (see docs/auth.md).
#[derive(Parser)]
#[command(name = "auth", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Common(Common),
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

/// Parses the command line and runs it to the end.
pub fn main() -> anyhow::Result<()> {
    let command = Cli::parse()
        .command
        .unwrap_or(Command::Common(Common::Serve));
    host::cli::main("auth", || run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Common(Common::Healthcheck) => {
            host::cli::healthcheck("AUTH", "0.0.0.0:50051").await
        }
        Command::Common(Common::Serve) => {
            Application::build(Config::from_env()?)
                .await?
                .run_until_stopped(host::shutdown::signal())
                .await
        }
        Command::CreateAdmin { name, email } => {
            let config = Config::from_env()?;
            let password = match std::env::var("AUTH_ADMIN_PASSWORD") {
                Ok(password) => password,
                Err(_) => std::io::stdin()
                    .lock()
                    .lines()
                    .next()
                    .context("no password on standard input")??,
            };
            let pool = crate::db::connect(&config.database)?;
            crate::MIGRATOR.run(&pool).await?;
            let passwords = crate::passwords::PasswordHasher::new(&config.passwords)?;
            let admin = BootstrapAdmin {
                name,
                email,
                password: password.into(),
            };
            if crate::bootstrap::ensure_admin(&pool, &passwords, &admin).await? {
                println!("admin {} created", admin.name);
            } else {
                anyhow::bail!("the name or email is already taken; nothing created");
            }
            Ok(())
        }
    }
}
