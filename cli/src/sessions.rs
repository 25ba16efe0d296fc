//! `chatctl sessions`: where the user is logged in, and ending a session
//! or all the others.

use api::auth::v1 as auth_pb;
use clap::Subcommand;

use crate::display;
use crate::session::Client;

#[derive(Subcommand)]
pub(crate) enum SessionsCommand {
    /// List the sessions that can still be used, most recently used first
    /// (the default).
    List,
    /// End one session: its tokens and open streams end at once.
    Revoke { id: String },
    /// End every session but this one.
    RevokeOthers,
}

pub(crate) async fn sessions(
    client: &mut Client,
    command: Option<SessionsCommand>,
) -> anyhow::Result<()> {
    match command.unwrap_or(SessionsCommand::List) {
        SessionsCommand::List => {
            let request = client.authorized(auth_pb::ListSessionsRequest {}).await?;
            let sessions = client
                .sessions()
                .list_sessions(request)
                .await?
                .into_inner()
                .sessions;
            for session in &sessions {
                print_session(session);
            }
        }
        SessionsCommand::Revoke { id } => {
            let request = client
                .authorized(auth_pb::RevokeSessionRequest {
                    session_id: id.clone(),
                })
                .await?;
            client.sessions().revoke_session(request).await?;
            println!("ended session {}", display::safe(&id));
        }
        SessionsCommand::RevokeOthers => {
            let request = client
                .authorized(auth_pb::RevokeOtherSessionsRequest {})
                .await?;
            let revoked = client
                .sessions()
                .revoke_other_sessions(request)
                .await?
                .into_inner()
                .revoked;
            println!("ended {revoked} other session(s)");
        }
    }
    Ok(())
}

fn print_session(session: &auth_pb::Session) {
    let at = |seconds: Option<i64>| {
        seconds
            .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
            .and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    let client = if session.client.is_empty() {
        "unknown client"
    } else {
        session.client.as_str()
    };
    let address = if session.address.is_empty() {
        "unknown address"
    } else {
        session.address.as_str()
    };
    println!(
        "{}{}  started {}  last used {}  {}  {}",
        session.id,
        if session.current { " (this one)" } else { "" },
        at(session.started_at.map(|at| at.seconds)),
        at(session.last_used_at.map(|at| at.seconds)),
        display::safe(address),
        display::safe(client),
    );
}
