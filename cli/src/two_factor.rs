//! `chatctl totp`: turning two-factor login on (enrol, then confirm with a
//! code) and off.

use api::auth::v1 as auth_pb;
use clap::Subcommand;

use crate::session::Client;

#[derive(Subcommand)]
pub(crate) enum TotpCommand {
    /// Print a new secret for an authenticator app (nothing changes until
    /// it is confirmed).
    Enroll,
    /// Turn two-factor login on with a code from the app; prints the ten
    /// recovery codes, shown this once. The password comes from
    /// CHATCTL_PASSWORD or standard input.
    Confirm { code: String },
    /// Turn two-factor login off. The password comes from CHATCTL_PASSWORD
    /// or standard input, the code from CHATCTL_TOTP_CODE or standard
    /// input.
    Disable,
}

pub(crate) async fn totp(client: &mut Client, command: TotpCommand) -> anyhow::Result<()> {
    match command {
        TotpCommand::Enroll => {
            let request = client.authorized(auth_pb::EnrollTotpRequest {}).await?;
            let enrolment = client.sessions().enroll_totp(request).await?.into_inner();
            println!("secret: {}", enrolment.secret);
            println!("uri: {}", enrolment.otpauth_uri);
            println!("add it to an authenticator app, then run: chatctl totp confirm <code>");
        }
        TotpCommand::Confirm { code } => {
            let request = client
                .authorized(auth_pb::ConfirmTotpRequest {
                    code,
                    current_password: crate::read_secret("CHATCTL_PASSWORD", "password")?,
                })
                .await?;
            let codes = client
                .sessions()
                .confirm_totp(request)
                .await?
                .into_inner()
                .recovery_codes;
            println!("two-factor login is on. Recovery codes (each works once; keep them safe):");
            for code in codes {
                println!("{code}");
            }
        }
        TotpCommand::Disable => {
            let password = crate::read_secret("CHATCTL_PASSWORD", "password")?;
            let code = crate::read_secret("CHATCTL_TOTP_CODE", "two-factor code")?;
            let request = client
                .authorized(auth_pb::DisableTotpRequest { password, code })
                .await?;
            client.sessions().disable_totp(request).await?;
            println!("two-factor login is off");
        }
    }
    Ok(())
}
