//! Project chores, run as `cargo xtask <command>`.
//!
//! - `sqlx-prepare [--check]`: refreshes `.sqlx/` (or checks that it is
//!   current). Each service's queries are checked against its own schema:
//!   two databases are made, one per service, each migrated with that
//!   service's migrations only, and each service's query macros read the
//!   URL of its own (`AUTH_DATABASE_URL`, `CHAT_DATABASE_URL`, as named in
//!   the service's `sqlx.toml`). A query naming another service's table
//!   fails to prepare. The databases live on a private PostgreSQL started
//!   from the machine's binaries, unless `XTASK_DATABASE_URL` names a server.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use sqlx::Connection as _;

#[derive(Parser)]
#[command(about = "Project chores")]
struct Cli {
    #[command(subcommand)]
    command: Chore,
}

#[derive(Subcommand)]
enum Chore {
    /// Refresh .sqlx/ from the services' queries and their own schemas.
    SqlxPrepare {
        /// Only check that .sqlx/ is current; fail if it is not.
        #[arg(long)]
        check: bool,
    },
}

/// The services that own a database: (service, migrations, URL variable).
const SERVICES: &[(&str, &str, &str)] = &[
    ("auth", "migrations/auth", "AUTH_DATABASE_URL"),
    ("chat", "migrations/chat", "CHAT_DATABASE_URL"),
];

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Chore::SqlxPrepare { check } => sqlx_prepare(check),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

fn sqlx_prepare(check: bool) -> anyhow::Result<()> {
    let root = workspace_root();
    // Cargo's target directory, wherever CARGO_TARGET_DIR puts it.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let scratch = target.join("xtask-postgres");
    let (base_url, _server) = match std::env::var("XTASK_DATABASE_URL") {
        Ok(url) => (url.trim_end_matches('/').to_owned(), None),
        Err(_) => {
            let _ = std::fs::remove_dir_all(&scratch);
            let server = local_postgres::LocalPostgres::start(
                &scratch.join("data"),
                0,
                local_postgres::Durability::Scratch,
            )
            .context("starting a private PostgreSQL for the schemas")?;
            (
                server.url("").trim_end_matches('/').to_owned(),
                Some(server),
            )
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cargo
        .current_dir(&root)
        .args(["sqlx", "prepare", "--workspace"]);
    if check {
        cargo.arg("--check");
    }
    cargo.args(["--", "--all-targets"]);

    // sqlx-cli insists on DATABASE_URL; it gets an empty database, so a
    // crate whose sqlx.toml names no database of its own prepares nothing.
    let unowned = "sqlx_unowned";
    runtime.block_on(recreate_and_migrate(&base_url, unowned, None))?;
    cargo.env("DATABASE_URL", format!("{base_url}/{unowned}"));

    for (service, migrations, variable) in SERVICES {
        let database = format!("sqlx_{service}");
        let url = format!("{base_url}/{database}");
        runtime
            .block_on(recreate_and_migrate(
                &base_url,
                &database,
                Some(&root.join(migrations)),
            ))
            .with_context(|| format!("preparing the {service} schema"))?;
        cargo.env(variable, url);
    }

    let status = cargo
        .status()
        .context("running cargo sqlx (cargo install sqlx-cli)")?;
    if !status.success() {
        bail!(
            "cargo sqlx prepare{} failed",
            if check { " --check" } else { "" }
        );
    }
    Ok(())
}

async fn recreate_and_migrate(
    base_url: &str,
    database: &str,
    migrations: Option<&Path>,
) -> anyhow::Result<()> {
    let mut admin = sqlx::PgConnection::connect(&format!("{base_url}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"drop database if exists "{database}" with (force)"#
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"create database "{database}""#
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;

    if let Some(migrations) = migrations {
        let mut db = sqlx::PgConnection::connect(&format!("{base_url}/{database}")).await?;
        sqlx::migrate::Migrator::new(migrations)
            .await?
            .run(&mut db)
            .await?;
        db.close().await?;
    }
    Ok(())
}
