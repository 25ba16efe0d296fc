//! `chatctl`: a command-line client for the chat backend.
//!
//! `chatctl login NAME` keeps the session (tokens) in the user's config
//! directory; later commands use it and refresh the access token when it
//! is about to expire. Servers come from `--auth-url` and `--chat-url` (or
//! `CHATCTL_AUTH_URL`, `CHATCTL_CHAT_URL`). Every server error is one line
//! on standard error, and the exit status is 1.

mod chat;
mod display;
mod recovery;
mod session;
mod sessions;
mod two_factor;

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::Context as _;
use api::auth::v1 as auth_pb;
use api::chat::v1 as chat_pb;
use clap::{Parser, Subcommand};
use session::Client;

#[derive(Parser)]
#[command(version, about = "A command-line client for the chat backend")]
struct Cli {
    /// The auth service.
    #[arg(
        long,
        env = "CHATCTL_AUTH_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    auth_url: String,
    /// The chat service.
    #[arg(
        long,
        env = "CHATCTL_CHAT_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    chat_url: String,
    /// The CA to trust for `https://` services (the system's roots without
    /// it), such as the development stack's `.stack/tls/ca.pem`.
    #[arg(long, env = "CHATCTL_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Where the session is kept (default: the user's config directory).
    #[arg(long, env = "CHATCTL_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account. The password comes from CHATCTL_PASSWORD or standard input.
    Register { name: String, email: String },
    /// Log in and keep the session. The password comes from CHATCTL_PASSWORD or standard input, and a two-factor code, if the account needs one, from CHATCTL_TOTP_CODE or standard input.
    Login { name: String },
    /// End the session, here and on the server.
    Logout,
    /// Who the session belongs to.
    Whoami,
    /// Show that an email address is yours, with the code its verification mail carried.
    VerifyEmail { token: String },
    /// Mail your address a new verification code.
    ResendVerification,
    /// A forgotten password: ask for a reset mail, then set a new password with its code.
    #[command(subcommand)]
    ResetPassword(recovery::ResetCommand),
    /// Two-factor login with an authenticator app (TOTP).
    #[command(subcommand)]
    Totp(two_factor::TotpCommand),
    /// Where you are logged in; end a session, or all the others.
    Sessions {
        #[command(subcommand)]
        command: Option<sessions::SessionsCommand>,
    },
    /// Accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Chats and messages.
    #[command(subcommand)]
    Chat(chat::ChatCommand),
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Show an account (yours by default).
    Get { id: Option<i64> },
    /// List accounts (admins only).
    List {
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Change an account's name, email or (admins only) role. Your own name or email takes your password (CHATCTL_PASSWORD or standard input) or a two-factor code (CHATCTL_TOTP_CODE).
    Update {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// user or admin.
        #[arg(long)]
        role: Option<String>,
    },
    /// Delete an account. Your own takes your password or a two-factor code, as update does.
    Delete { id: i64 },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        eprintln!("error: {}", display::safe(&session::describe(&error)));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_dir = match cli.config_dir {
        Some(dir) => dir,
        None => session::default_config_dir()?,
    };
    let mut client = Client::new(
        &cli.auth_url,
        &cli.chat_url,
        cli.ca_file.as_deref(),
        config_dir,
    )?;
    match cli.command {
        Command::Register { name, email } => {
            let password = read_password()?;
            let id = client
                .users()
                .create(auth_pb::CreateRequest {
                    name: name.clone(),
                    email,
                    password: password.clone(),
                    password_confirm: password,
                    role: auth_pb::Role::Unspecified.into(),
                })
                .await?
                .into_inner()
                .id;
            println!("registered {name} (id {id})");
        }
        Command::Login { name } => {
            client
                .login(&name, &read_password()?, || {
                    read_secret("CHATCTL_TOTP_CODE", "two-factor code")
                })
                .await?;
            println!("logged in as {name}");
        }
        Command::Logout => {
            client.logout().await?;
            println!("logged out");
        }
        Command::Whoami => {
            let me = client.whoami().await?;
            println!(
                "{} (id {}, {})",
                display::safe(&me.name),
                me.id,
                role_name(me.role())
            );
        }
        Command::VerifyEmail { token } => recovery::verify_email(&mut client, token).await?,
        Command::ResendVerification => recovery::resend_verification(&mut client).await?,
        Command::ResetPassword(command) => recovery::reset_password(&mut client, command).await?,
        Command::Totp(command) => two_factor::totp(&mut client, command).await?,
        Command::Sessions { command } => sessions::sessions(&mut client, command).await?,
        Command::Users(command) => users(&mut client, command).await?,
        Command::Chat(command) => chat::chat(&mut client, command).await?,
    }
    Ok(())
}

async fn users(client: &mut Client, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Get { id } => {
            let id = match id {
                Some(id) => id,
                None => client.whoami().await?.id,
            };
            let request = client.authorized(auth_pb::GetRequest { id }).await?;
            let user = client
                .users()
                .get(request)
                .await?
                .into_inner()
                .user
                .context("no user in the answer")?;
            print_user(&user);
        }
        UsersCommand::List {
            page_size,
            page_token,
        } => {
            let request = client
                .authorized(auth_pb::ListRequest {
                    page_size,
                    page_token,
                })
                .await?;
            let page = client.users().list(request).await?.into_inner();
            for user in &page.users {
                print_user(user);
            }
            if !page.next_page_token.is_empty() {
                println!(
                    "next page: --page-token {}",
                    display::safe(&page.next_page_token)
                );
            }
        }
        UsersCommand::Update {
            id,
            name,
            email,
            role,
        } => {
            let role = match role.as_deref() {
                None => None,
                Some("user") => Some(auth_pb::Role::User.into()),
                Some("admin") => Some(auth_pb::Role::Admin.into()),
                Some(other) => anyhow::bail!("unknown role {other:?} (user or admin)"),
            };
            let (current_password, code) =
                if (name.is_some() || email.is_some()) && client.own_id() == Some(id) {
                    proof()?
                } else {
                    Default::default()
                };
            let request = client
                .authorized(auth_pb::UpdateRequest {
                    id,
                    name,
                    email,
                    role,
                    current_password,
                    code,
                })
                .await?;
            let user = client
                .users()
                .update(request)
                .await?
                .into_inner()
                .user
                .context("no user in the answer")?;
            print_user(&user);
        }
        UsersCommand::Delete { id } => {
            let (current_password, code) = if client.own_id() == Some(id) {
                proof()?
            } else {
                Default::default()
            };
            let request = client
                .authorized(auth_pb::DeleteRequest {
                    id,
                    current_password,
                    code,
                })
                .await?;
            client.users().delete(request).await?;
            println!("deleted user {id}");
        }
    }
    Ok(())
}

/// What proves the user owns the account they change: a two-factor code
/// from CHATCTL_TOTP_CODE if set, else the password (CHATCTL_PASSWORD or
/// standard input).
fn proof() -> anyhow::Result<(String, String)> {
    if let Ok(code) = std::env::var("CHATCTL_TOTP_CODE") {
        return Ok((String::new(), code));
    }
    Ok((read_password()?, String::new()))
}

fn read_password() -> anyhow::Result<String> {
    read_secret("CHATCTL_PASSWORD", "password")
}

/// `variable`'s value, or else a line of standard input, asked for as
/// `what`.
pub(crate) fn read_secret(variable: &str, what: &str) -> anyhow::Result<String> {
    if let Ok(value) = std::env::var(variable) {
        return Ok(value);
    }
    eprint!("{what}: ");
    let line = std::io::stdin()
        .lock()
        .lines()
        .next()
        .with_context(|| format!("no {what} on standard input"))??;
    Ok(line)
}

fn role_name(role: auth_pb::Role) -> &'static str {
    match role {
        auth_pb::Role::Admin => "admin",
        auth_pb::Role::User => "user",
        auth_pb::Role::Unspecified => "no role",
    }
}

pub(crate) fn chat_role_name(role: chat_pb::ChatRole) -> &'static str {
    match role {
        chat_pb::ChatRole::Creator => "creator",
        chat_pb::ChatRole::Member => "member",
        chat_pb::ChatRole::Unspecified => "not a member",
    }
}

fn print_user(user: &auth_pb::User) {
    println!(
        "{}\t{}\t{}\t{}\t{}",
        user.id,
        display::safe(&user.name),
        display::safe(&user.email),
        role_name(user.role()),
        if user.email_verified {
            "verified"
        } else {
            "unverified"
        }
    );
}

pub(crate) fn print_message(message: &chat_pb::Message) {
    let at = message
        .created_at
        .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at.seconds).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    println!(
        "[{}] #{} {}: {}",
        at,
        message.id,
        display::safe(&message.from_username),
        display::safe(&message.text)
    );
}
