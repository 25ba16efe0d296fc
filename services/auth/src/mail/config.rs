//! Where mail goes and how it is written (`AUTH_SMTP_*`, `AUTH_MAIL_*`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use host::config::{Vars, var_or};
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The SMTP server; `None` writes every mail to the log instead
    /// (development), with a warning at start-up and with each mail.
    pub smtp: Option<SmtpConfig>,
    /// The sender, `Name <address>` or an address (`AUTH_MAIL_FROM`).
    pub from: String,
    /// Where the web client lives: links in mails are this followed by
    /// `#verify=<token>` or `#reset=<token>` (`AUTH_MAIL_LINK_BASE`).
    pub link_base: String,
    /// How long a verification token works (`AUTH_EMAIL_VERIFICATION_TTL_SECS`).
    pub verification_ttl: Duration,
    /// How long a password reset token works (`AUTH_PASSWORD_RESET_TTL_SECS`).
    pub reset_ttl: Duration,
    /// The longest wait between two tries of one mail
    /// (`AUTH_MAIL_RETRY_MAX_SECS`); waits double from one second.
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `AUTH_SMTP_HOST`; also the name its certificate must carry.
    pub host: String,
    /// `AUTH_SMTP_PORT`: 587 for STARTTLS, 465 for TLS, 25 for none.
    pub port: u16,
    pub security: SmtpSecurity,
    /// `AUTH_SMTP_USERNAME` and `AUTH_SMTP_PASSWORD`, if it asks for them.
    pub credentials: Option<(String, SecretString)>,
    /// A CA to trust besides the system's (`AUTH_SMTP_CA_FILE`, PEM).
    pub ca_file: Option<PathBuf>,
    /// How long one delivery may take.
    pub timeout: Duration,
}

/// How the connection to the SMTP server is protected (`AUTH_SMTP_SECURITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `starttls`: plain, then upgraded; refused if the server cannot.
    StartTls,
    /// `tls`: TLS from the first byte (SMTPS).
    Tls,
    /// `none`: no TLS at all; for a relay on the same host.
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

impl std::str::FromStr for SmtpSecurity {
    type Err = String;

    fn from_str(text: &str) -> Result<SmtpSecurity, String> {
        match text {
            "starttls" => Ok(SmtpSecurity::StartTls),
            "tls" => Ok(SmtpSecurity::Tls),
            "none" => Ok(SmtpSecurity::None),
            _ => Err("must be starttls, tls or none".to_owned()),
        }
    }
}

impl Default for MailConfig {
    fn default() -> MailConfig {
        MailConfig {
            smtp: None,
            from: "chat <no-reply@localhost>".to_owned(),
            link_base: "http://localhost:8080/".to_owned(),
            verification_ttl: Duration::from_secs(24 * 60 * 60),
            reset_ttl: Duration::from_secs(30 * 60),
            retry_max: Duration::from_secs(5 * 60),
        }
    }
}

impl MailConfig {
    pub fn from_vars(var: &impl Vars) -> anyhow::Result<MailConfig> {
        let defaults = MailConfig::default();
        let seconds = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(Duration::from_secs(var_or(
                var,
                name,
                &default.as_secs().to_string(),
            )?))
        };
        let smtp = match var("AUTH_SMTP_HOST").filter(|host| !host.is_empty()) {
            None => None,
            Some(host) => {
                let security: SmtpSecurity = var_or(var, "AUTH_SMTP_SECURITY", "starttls")?;
                let port = var_or(var, "AUTH_SMTP_PORT", &security.default_port().to_string())?;
                let credentials = match var("AUTH_SMTP_USERNAME").filter(|u| !u.is_empty()) {
                    Some(user) => Some((
                        user,
                        var("AUTH_SMTP_PASSWORD")
                            .context(
                                "AUTH_SMTP_USERNAME is set, so AUTH_SMTP_PASSWORD must be too",
                            )?
                            .into(),
                    )),
                    None => None,
                };
                Some(SmtpConfig {
                    host,
                    port,
                    security,
                    credentials,
                    ca_file: var("AUTH_SMTP_CA_FILE")
                        .filter(|path| !path.is_empty())
                        .map(PathBuf::from),
                    timeout: Duration::from_secs(30),
                })
            }
        };
        let config = MailConfig {
            smtp,
            from: var("AUTH_MAIL_FROM").unwrap_or(defaults.from),
            link_base: var("AUTH_MAIL_LINK_BASE").unwrap_or(defaults.link_base),
            verification_ttl: seconds(
                "AUTH_EMAIL_VERIFICATION_TTL_SECS",
                defaults.verification_ttl,
            )?,
            reset_ttl: seconds("AUTH_PASSWORD_RESET_TTL_SECS", defaults.reset_ttl)?,
            retry_max: seconds("AUTH_MAIL_RETRY_MAX_SECS", defaults.retry_max)?,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            bail!(
                "AUTH_MAIL_FROM={:?} is not a mail address (`Name <address>` or `address`)",
                self.from
            );
        }
        for (name, ttl) in [
            ("AUTH_EMAIL_VERIFICATION_TTL_SECS", self.verification_ttl),
            ("AUTH_PASSWORD_RESET_TTL_SECS", self.reset_ttl),
            ("AUTH_MAIL_RETRY_MAX_SECS", self.retry_max),
        ] {
            if ttl.is_zero() || ttl > Duration::from_secs(30 * 24 * 60 * 60) {
                bail!("{name} must be more than zero and at most 30 days");
            }
        }
        if !(self.link_base.starts_with("https://") || self.link_base.starts_with("http://")) {
            bail!("AUTH_MAIL_LINK_BASE must be an http:// or https:// address");
        }
        Ok(())
    }
}
