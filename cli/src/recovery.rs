//! `chatctl verify-email`, `chatctl resend-verification` and `chatctl
//! reset-password`: showing an address is yours, and a forgotten password
//! replaced with the code a reset mail carries. None but the resend needs
//! a session.

use api::auth::v1 as auth_pb;
use clap::Subcommand;

use crate::session::Client;

#[derive(Subcommand)]
pub(crate) enum ResetCommand {
    /// Mail a reset code to the address, if an account has it and has
    /// verified it (the answer is the same either way).
    Request { email: String },
    /// Set a new password with the code from the mail; every session of
    /// the account ends. The new password comes from CHATCTL_NEW_PASSWORD
    /// or standard input.
    Complete { token: String },
}

pub(crate) async fn verify_email(client: &mut Client, token: String) -> anyhow::Result<()> {
    let verified = client
        .sessions()
        .verify_email(auth_pb::VerifyEmailRequest { token })
        .await?
        .into_inner();
    println!(
        "verified {} (user {})",
        crate::display::safe(&verified.email),
        verified.user_id
    );
    Ok(())
}

pub(crate) async fn resend_verification(client: &mut Client) -> anyhow::Result<()> {
    let request = client
        .authorized(auth_pb::ResendEmailVerificationRequest {})
        .await?;
    let answer = client
        .sessions()
        .resend_email_verification(request)
        .await?
        .into_inner();
    println!(
        "verification mail sent to {}",
        crate::display::safe(&answer.email)
    );
    Ok(())
}

pub(crate) async fn reset_password(
    client: &mut Client,
    command: ResetCommand,
) -> anyhow::Result<()> {
    match command {
        ResetCommand::Request { email } => {
            client
                .sessions()
                .request_password_reset(auth_pb::RequestPasswordResetRequest { email })
                .await?;
            println!("if an account has that verified address, a reset code is on its way");
        }
        ResetCommand::Complete { token } => {
            let password = crate::read_secret("CHATCTL_NEW_PASSWORD", "new password")?;
            client
                .sessions()
                .reset_password(auth_pb::ResetPasswordRequest {
                    token,
                    new_password: password.clone(),
                    new_password_confirm: password,
                })
                .await?;
            println!("password changed; every session of the account has ended: log in again");
        }
    }
    Ok(())
}
