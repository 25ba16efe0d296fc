//! `chatctl chat ...`: chats, their members and messages, and a live
//! stream that resumes where it left off.

use std::time::Duration;

use anyhow::Context as _;
use api::chat::v1 as chat_pb;
use clap::Subcommand;
use tokio::io::AsyncBufReadExt as _;
use tokio_stream::StreamExt as _;

use crate::session::{self, Client};
use crate::{chat_role_name, display, print_message};

#[derive(Subcommand)]
pub(crate) enum ChatCommand {
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
    /// Mark a chat read up to a message (its newest by default).
    Read {
        chat_id: i64,
        #[arg(long)]
        message: Option<i64>,
    },
    /// Tell the chat's other members you are typing (for the next 6 s).
    Typing { chat_id: i64 },
    /// Print messages as they arrive, who read how far and who is typing,
    /// and send each line typed on standard input.
    Connect {
        chat_id: i64,
        /// Replay the messages after this id first (0: all of them).
        #[arg(long)]
        since: Option<i64>,
    },
}

pub(crate) async fn chat(client: &mut Client, command: ChatCommand) -> anyhow::Result<()> {
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
                    "{}\t{}\t{} members\t{} unread\t{}{last}",
                    listed.id,
                    display::safe(&listed.title),
                    listed.member_count,
                    listed.unread_count,
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
                let read = match member.read_message_id {
                    0 => "read nothing".to_owned(),
                    id => format!("read up to #{id}"),
                };
                println!(
                    "  {}\t{}\t{read}{creator}",
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
            let me = client.whoami().await?.id;
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
        ChatCommand::Read { chat_id, message } => {
            let message_id = match message {
                Some(id) => id,
                None => newest_message_id(client, chat_id).await?,
            };
            anyhow::ensure!(message_id > 0, "chat {chat_id} has no messages to read");
            let request = client
                .authorized(chat_pb::MarkReadRequest {
                    chat_id,
                    message_id,
                })
                .await?;
            let read = client.chats().mark_read(request).await?.into_inner();
            println!(
                "chat {chat_id} read up to #{}; {} unread",
                read.read_message_id, read.unread_count
            );
        }
        ChatCommand::Typing { chat_id } => {
            let request = client
                .authorized(chat_pb::SetTypingRequest { chat_id })
                .await?;
            client.chats().set_typing(request).await?;
            println!("chat {chat_id} shows you typing");
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
                // The server's word on when to come back, if it gave one.
                let wait = retry_delay(&status).unwrap_or(backoff);
                eprintln!(
                    "send failed ({}); retrying in {} ms with the same message id",
                    display::safe(&session::describe(&status.into())),
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
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
    let mut names = std::collections::HashMap::new();
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
                                } else if let Some(marker) = event.read_marker {
                                    let name = member_name(client, &mut names, chat_id, marker.user_id).await;
                                    println!("* {name} read up to #{}", marker.message_id);
                                } else if let Some(typing) = event.typing {
                                    let name = member_name(client, &mut names, chat_id, typing.user_id).await;
                                    match typing.for_ms {
                                        0 => println!("* {name} stopped typing"),
                                        _ => println!("* {name} is typing"),
                                    }
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
        let wait = retry_delay(&ended).unwrap_or(backoff);
        eprintln!(
            "stream ended ({}); resuming after {from} in {} ms",
            display::safe(&session::describe(&ended.into())),
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
        backoff *= 2;
    }
}

/// A member's name, safe to print, as the chat shows it: read again when
/// an unknown member appears (one who joined since), and kept.
async fn member_name(
    client: &mut Client,
    names: &mut std::collections::HashMap<i64, String>,
    chat_id: i64,
    user_id: i64,
) -> String {
    if !names.contains_key(&user_id)
        && let Ok(shown) = show(client, chat_id).await
    {
        for member in shown.chat.iter().flat_map(|chat| &chat.members) {
            names.insert(member.user_id, display::safe(&member.username));
        }
        // Not a member (any more): asked once, not with every event of theirs.
        names.entry(user_id).or_default();
    }
    names
        .get(&user_id)
        .filter(|name| !name.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("user {user_id}"))
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
        // A quota used up: the server says when to come back.
        tonic::Code::ResourceExhausted => retry_delay(status).is_some(),
        tonic::Code::Unknown | tonic::Code::Internal => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// The longest a client waits because a server asked it to.
const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(60);

/// When the server asked to be tried again (`google.rpc.RetryInfo`), at
/// most [`LONGEST_RETRY_DELAY`] away.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt as _;
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .map(|delay| delay.min(LONGEST_RETRY_DELAY))
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
