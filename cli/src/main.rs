//! `chatctl`: a command-line client for the chat backend.
//!
//! `chatctl login NAME` keeps the session (tokens) in the user's config
//! directory; later commands use it and refresh the access token when it
//! is about to expire. Servers come from `--auth-url` and `--chat-url` (or
//! `CHATCTL_AUTH_URL`, `CHATCTL_CHAT_URL`). Every server error is one line
//! on standard error, and the exit status is 1.

mod display;
mod session;

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use api::auth::v1 as auth_pb;
use api::chat::v1 as chat_pb;
use clap::{Parser, Subcommand};
use session::Client;
use tokio::io::AsyncBufReadExt as _;
use tokio_stream::StreamExt as _;

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
    /// Log in and keep the session. The password comes from CHATCTL_PASSWORD or standard input.
    Login { name: String },
    /// End the session, here and on the server.
    Logout,
    /// Who the session belongs to.
    Whoami,
    /// Accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Chats and messages.
    #[command(subcommand)]
    Chat(ChatCommand),
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
    /// Change an account's name, email or (admins only) role.
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
    /// Delete an account.
    Delete { id: i64 },
}

#[derive(Subcommand)]
enum ChatCommand {
    /// Create a chat with the named users (you are always a member).
    Create {
        #[arg(long)]
        title: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// List your chats, most recent activity first.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Show a chat and its members.
    Show { chat_id: i64 },
    /// Add users to a chat (its creator or an admin).
    Add {
        chat_id: i64,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove a member, by name or (if no member has that name) id (the creator or an admin).
    Remove { chat_id: i64, member: String },
    /// Leave a chat.
    Leave { chat_id: i64 },
    /// Rename a chat (its creator or an admin).
    Rename { chat_id: i64, title: String },
    /// Send a message.
    Send { chat_id: i64, text: String },
    /// Show the latest messages, oldest first.
    History {
        chat_id: i64,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Print messages as they arrive, and send each line typed on standard input.
    Connect {
        chat_id: i64,
        /// Replay the messages after this id first (0: all of them).
        #[arg(long)]
        since: Option<i64>,
    },
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
    let mut client = Client::new(&cli.auth_url, &cli.chat_url, config_dir)?;
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
            client.login(&name, &read_password()?).await?;
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
                display::safe(&me.username),
                me.user_id,
                role_name(me.role())
            );
        }
        Command::Users(command) => users(&mut client, command).await?,
        Command::Chat(command) => chat(&mut client, command).await?,
    }
    Ok(())
}

async fn users(client: &mut Client, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Get { id } => {
            let id = match id {
                Some(id) => id,
                None => client.whoami().await?.user_id,
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
            let request = client
                .authorized(auth_pb::UpdateRequest {
                    id,
                    name,
                    email,
                    role,
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
            let request = client.authorized(auth_pb::DeleteRequest { id }).await?;
            client.users().delete(request).await?;
            println!("deleted user {id}");
        }
    }
    Ok(())
}

async fn chat(client: &mut Client, command: ChatCommand) -> anyhow::Result<()> {
    match command {
        ChatCommand::Create { title, users } => {
            let request = client
                .authorized(chat_pb::CreateRequest {
                    usernames: users,
                    title,
                })
                .await?;
            let id = client.chats().create(request).await?.into_inner().id;
            println!("created chat {id}");
        }
        ChatCommand::List {
            page_size,
            page_token,
        } => {
            let request = client
                .authorized(chat_pb::ListChatsRequest {
                    page_size,
                    page_token,
                })
                .await?;
            let page = client.chats().list_chats(request).await?.into_inner();
            for listed in &page.chats {
                let last = listed
                    .last_message
                    .as_ref()
                    .map_or_else(String::new, |message| {
                        format!(
                            "\t{}: {}",
                            display::safe(&message.from_username),
                            display::safe(&message.text)
                        )
                    });
                println!(
                    "{}\t{}\t{} members\t{}{last}",
                    listed.id,
                    display::safe(&listed.title),
                    listed.member_count,
                    chat_role_name(listed.role())
                );
            }
            if !page.next_page_token.is_empty() {
                println!(
                    "next page: --page-token {}",
                    display::safe(&page.next_page_token)
                );
            }
        }
        ChatCommand::Show { chat_id } => {
            let shown = show(client, chat_id).await?;
            let chat = shown.chat.as_ref().context("no chat in the answer")?;
            println!("{}\t{}", chat.id, display::safe(&chat.title));
            for member in &chat.members {
                let creator = if member.user_id == chat.creator_id {
                    "\tcreator"
                } else {
                    ""
                };
                println!(
                    "  {}\t{}{creator}",
                    member.user_id,
                    display::safe(&member.username)
                );
            }
        }
        ChatCommand::Add { chat_id, users } => {
            let request = client
                .authorized(chat_pb::AddMembersRequest {
                    chat_id,
                    usernames: users,
                })
                .await?;
            let added = client.chats().add_members(request).await?.into_inner();
            match added.added_user_ids.len() {
                0 => println!("no one added: all were members already"),
                count => println!("added {count} member(s) to chat {chat_id}"),
            }
        }
        ChatCommand::Remove { chat_id, member } => {
            // A member's name first (a name may be all digits), then an
            // id; names compare as auth's unique index does, lower-cased.
            let shown = show(client, chat_id).await?;
            let wanted = member.to_lowercase();
            let by_name = shown
                .chat
                .iter()
                .flat_map(|chat| &chat.members)
                .find(|found| found.username.to_lowercase() == wanted)
                .map(|found| found.user_id);
            let user_id = match (by_name, member.parse::<i64>()) {
                (Some(id), _) | (None, Ok(id)) => id,
                (None, Err(_)) => anyhow::bail!(
                    "{} is not a member of chat {chat_id}",
                    display::safe(&member)
                ),
            };
            remove(client, chat_id, user_id).await?;
        }
        ChatCommand::Leave { chat_id } => {
            let me = client.whoami().await?.user_id;
            remove(client, chat_id, me).await?;
        }
        ChatCommand::Rename { chat_id, title } => {
            let request = client
                .authorized(chat_pb::UpdateChatRequest { id: chat_id, title })
                .await?;
            let chat = client
                .chats()
                .update_chat(request)
                .await?
                .into_inner()
                .chat
                .context("no chat in the answer")?;
            println!("renamed chat {} to {}", chat.id, display::safe(&chat.title));
        }
        ChatCommand::Send { chat_id, text } => {
            let message = send(client, chat_id, text).await?;
            println!("sent message {}", message.id);
        }
        ChatCommand::History { chat_id, limit } => {
            let request = client
                .authorized(chat_pb::ListMessagesRequest {
                    chat_id,
                    page_size: limit,
                    page_token: String::new(),
                })
                .await?;
            let page = client.chats().list_messages(request).await?.into_inner();
            for message in page.messages.iter().rev() {
                print_message(message);
            }
        }
        ChatCommand::Connect { chat_id, since } => connect(client, chat_id, since).await?,
    }
    Ok(())
}

async fn show(client: &mut Client, chat_id: i64) -> anyhow::Result<chat_pb::GetChatResponse> {
    let request = client
        .authorized(chat_pb::GetChatRequest { id: chat_id })
        .await?;
    Ok(client.chats().get_chat(request).await?.into_inner())
}

async fn remove(client: &mut Client, chat_id: i64, user_id: i64) -> anyhow::Result<()> {
    let request = client
        .authorized(chat_pb::RemoveMemberRequest { chat_id, user_id })
        .await?;
    let removed = client.chats().remove_member(request).await?.into_inner();
    if removed.chat_deleted {
        println!("user {user_id} left chat {chat_id}, its last member: the chat is deleted");
    } else if removed.removed {
        println!("user {user_id} is no longer in chat {chat_id}");
    } else {
        println!("user {user_id} was not in chat {chat_id}");
    }
    Ok(())
}

/// Attempts at one send, and at resuming one stream without a message
/// in between.
const ATTEMPTS: u32 = 6;

/// The first wait before trying again; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Sends `text`, retrying while the service is unavailable or slow, with
/// the same `client_message_id` every time: a send that did commit before
/// its answer was lost is not stored twice.
async fn send(client: &mut Client, chat_id: i64, text: String) -> anyhow::Result<chat_pb::Message> {
    let client_message_id = uuid::Uuid::new_v4().to_string();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .authorized(chat_pb::SendMessageRequest {
                chat_id,
                text: text.clone(),
                client_message_id: client_message_id.clone(),
            })
            .await?;
        request.set_timeout(Duration::from_secs(10));
        match client.chats().send_message(request).await {
            Ok(answer) => {
                return answer
                    .into_inner()
                    .message
                    .context("no message in the answer");
            }
            Err(status) if attempt < ATTEMPTS && retryable(&status) => {
                eprintln!(
                    "send failed ({}); retrying in {} ms with the same message id",
                    display::safe(&session::describe(&status.into())),
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(status) => return Err(status.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// Prints a chat's messages as they come, resuming after the stream ends
/// for a reason a reconnection cures (the service restarting or
/// unavailable, the stream falling behind, the access token expiring)
/// from the last message printed, with a fresh token.
async fn connect(client: &mut Client, chat_id: i64, since: Option<i64>) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut typing = true;
    // Live only: the chat's newest message is where a resumption starts,
    // so that nothing sent while reconnecting is skipped.
    let mut last = match since {
        Some(since) => Some(since),
        None => Some(newest_message_id(client, chat_id).await?),
    };
    let mut failures = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let opened = match client
            .authorized(chat_pb::ConnectChatRequest {
                chat_id,
                since_message_id: last,
            })
            .await
        {
            Ok(request) => client.chats().connect_chat(request).await,
            Err(error) => return Err(error),
        };
        let ended = match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    tokio::select! {
                        event = stream.next() => match event {
                            Some(Ok(event)) => {
                                if let Some(message) = event.message {
                                    print_message(&message);
                                    last = Some(message.id);
                                    failures = 0;
                                    backoff = FIRST_BACKOFF;
                                }
                            }
                            Some(Err(status)) => break status,
                            None => return Ok(()),
                        },
                        line = lines.next_line(), if typing => match line? {
                            Some(line) if line.trim().is_empty() => {}
                            Some(line) => {
                                send(client, chat_id, line).await?;
                            }
                            None => typing = false,
                        },
                    }
                }
            }
            Err(status) => status,
        };
        failures += 1;
        if !resumable(&ended) || failures >= ATTEMPTS {
            return Err(ended.into());
        }
        let from = last.map_or_else(|| "now".to_owned(), |id| format!("message {id}"));
        eprintln!(
            "stream ended ({}); resuming after {from} in {} ms",
            display::safe(&session::describe(&ended.into())),
            backoff.as_millis()
        );
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// The id of the chat's newest message (0 for none).
async fn newest_message_id(client: &mut Client, chat_id: i64) -> anyhow::Result<i64> {
    let request = client
        .authorized(chat_pb::ListMessagesRequest {
            chat_id,
            page_size: 1,
            page_token: String::new(),
        })
        .await?;
    let page = client.chats().list_messages(request).await?.into_inner();
    Ok(page.messages.first().map_or(0, |message| message.id))
}

/// Whether a send may be tried again: the service unavailable or slow, or
/// the connection broken under it (whether the first try was stored or
/// not, the same message id makes the retry safe).
fn retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown | tonic::Code::Internal => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Whether reconnecting can cure what ended a stream: the service gone or
/// busy, a token that expired, or the connection breaking under it (a
/// status made here from a transport error, not sent by the server).
fn resumable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unknown | tonic::Code::Internal => std::error::Error::source(status).is_some(),
        tonic::Code::Unavailable
        | tonic::Code::ResourceExhausted
        | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unauthenticated => token_expired(status),
        _ => false,
    }
}

/// Whether the server said that the access token expired (a status detail,
/// `google.rpc.ErrorInfo` with reason `ACCESS_TOKEN_EXPIRED`), which a
/// fresh token cures; a revoked one is not.
fn token_expired(status: &tonic::Status) -> bool {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .is_some_and(|info| info.reason == "ACCESS_TOKEN_EXPIRED")
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("CHATCTL_PASSWORD") {
        return Ok(password);
    }
    eprint!("password: ");
    let line = std::io::stdin()
        .lock()
        .lines()
        .next()
        .context("no password on standard input")??;
    Ok(line)
}

fn role_name(role: auth_pb::Role) -> &'static str {
    match role {
        auth_pb::Role::Admin => "admin",
        auth_pb::Role::User => "user",
        auth_pb::Role::Unspecified => "no role",
    }
}

fn chat_role_name(role: chat_pb::ChatRole) -> &'static str {
    match role {
        chat_pb::ChatRole::Creator => "creator",
        chat_pb::ChatRole::Member => "member",
        chat_pb::ChatRole::Unspecified => "not a member",
    }
}

fn print_user(user: &auth_pb::User) {
    println!(
        "{}\t{}\t{}\t{}",
        user.id,
        display::safe(&user.name),
        display::safe(&user.email),
        role_name(user.role())
    );
}

fn print_message(message: &chat_pb::Message) {
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
