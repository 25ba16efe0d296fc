//! What each mail says. docs/auth.md quotes these; a change here is a
//! change there.

use std::time::Duration;

/// One mail, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// What it is about: `verify_email`, `reset_password` or
    /// `email_changed`.
    pub kind: &'static str,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// Mails of these kinds carry a token: a newer one replaces an unsent
/// older one of the same user.
pub const VERIFY_EMAIL: &str = "verify_email";
pub const RESET_PASSWORD: &str = "reset_password";
pub const EMAIL_CHANGED: &str = "email_changed";
pub const PASSWORD_CHANGED: &str = "password_changed";

fn lifetime(ttl: Duration) -> String {
    let minutes = ttl.as_secs() / 60;
    match minutes {
        0 => format!("{} seconds", ttl.as_secs()),
        1 => "1 minute".to_owned(),
        m if m % (24 * 60) == 0 && m >= 24 * 60 => match m / (24 * 60) {
            1 => "24 hours".to_owned(),
            days => format!("{days} days"),
        },
        m if m % 60 == 0 => match m / 60 {
            1 => "1 hour".to_owned(),
            hours => format!("{hours} hours"),
        },
        m => format!("{m} minutes"),
    }
}

/// The link a token is followed by: the web client's address with the
/// token in its fragment, which browsers send to no server.
fn link(base: &str, what: &str, token: &str) -> String {
    let base = base.split('#').next().unwrap_or(base);
    format!("{base}#{what}={token}")
}

pub fn verify_email(recipient: &str, base: &str, token: &str, ttl: Duration) -> Mail {
    Mail {
        kind: VERIFY_EMAIL,
        recipient: recipient.to_owned(),
        subject: "Confirm your email address".to_owned(),
        body: format!(
            "Someone, hopefully you, gave this address to a chat account.\n\
             To confirm that it is yours, open this link:\n\
             \n\
             {link}\n\
             \n\
             or give this code to `chatctl verify-email`:\n\
             \n\
             {token}\n\
             \n\
             It works once, for {lifetime}. If this was not you, ignore this\n\
             mail: the address stays unconfirmed.\n",
            link = link(base, "verify", token),
            lifetime = lifetime(ttl),
        ),
    }
}

pub fn reset_password(recipient: &str, base: &str, token: &str, ttl: Duration) -> Mail {
    Mail {
        kind: RESET_PASSWORD,
        recipient: recipient.to_owned(),
        subject: "Reset your password".to_owned(),
        body: format!(
            "Someone, hopefully you, asked to reset the password of the chat\n\
             account with this address. To choose a new one, open this link:\n\
             \n\
             {link}\n\
             \n\
             or give this code to `chatctl reset-password complete`:\n\
             \n\
             {token}\n\
             \n\
             It works once, for {lifetime}. A new password ends every session\n\
             of the account. If this was not you, ignore this mail: your\n\
             password stays as it is.\n",
            link = link(base, "reset", token),
            lifetime = lifetime(ttl),
        ),
    }
}

pub fn email_changed(old_address: &str, new_address: &str) -> Mail {
    Mail {
        kind: EMAIL_CHANGED,
        recipient: old_address.to_owned(),
        subject: "Your email address was changed".to_owned(),
        body: format!(
            "The email address of your chat account was changed from this\n\
             address to {new_address}.\n\
             \n\
             If you did this, there is nothing more to do. If you did not,\n\
             someone else can use your account: log in, change your password\n\
             and end your other sessions, or ask an administrator for help.\n"
        ),
    }
}

/// After a reset by mail or a change of the password.
pub fn password_changed(recipient: &str) -> Mail {
    Mail {
        kind: PASSWORD_CHANGED,
        recipient: recipient.to_owned(),
        subject: "Your password was changed".to_owned(),
        body: "The password of your chat account was changed, and every\n\
               session of the account has ended.\n\
               \n\
               If you did this, there is nothing more to do. If you did not,\n\
               reset your password from the login page, or ask an\n\
               administrator for help.\n"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_people_say_them() {
        assert_eq!(lifetime(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(lifetime(Duration::from_secs(24 * 60 * 60)), "24 hours");
        assert_eq!(lifetime(Duration::from_secs(2 * 60 * 60)), "2 hours");
        assert_eq!(lifetime(Duration::from_secs(3 * 24 * 60 * 60)), "3 days");
        assert_eq!(lifetime(Duration::from_secs(45)), "45 seconds");
    }

    #[test]
    fn links_put_the_token_in_the_fragment() {
        let mail = reset_password(
            "a@example.com",
            "https://chat.example/app/",
            "pr_x",
            Duration::from_secs(60),
        );
        assert!(mail.body.contains("https://chat.example/app/#reset=pr_x\n"));
        let mail = verify_email(
            "a@example.com",
            "https://chat.example/#old",
            "ev_y",
            Duration::from_secs(60),
        );
        assert!(mail.body.contains("https://chat.example/#verify=ev_y\n"));
    }
}
