//! Delivers the outbox: claims due mails, sends each over SMTP (or writes
//! it to the log when no SMTP server is configured), and deletes it once
//! the server took it. A failed try waits 1 s, 2 s, 4 s, … up to the
//! configured longest wait, until the mail's deliver-by time; a server's
//! permanent refusal (a 5xx answer) drops it at once. Every replica sends;
//! a claim keeps two from sending one mail. A replica that stops between
//! handing a mail over and deleting it leaves it to be sent again: mail is
//! delivered at least once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::header::ContentType;
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::config::{MailConfig, SmtpConfig, SmtpSecurity};
use crate::db;
use crate::db::mail_outbox::Claimed;
use crate::metrics::AuthMetrics;

/// Mails claimed at once: one, so that a claim covers one send's time.
const BATCH: i64 = 1;
/// How often the outbox is looked at when nothing wakes the sender: mail
/// written by other replicas, and retries coming due.
const POLL: Duration = Duration::from_secs(1);

/// Where mail goes.
enum Delivery {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP server: each mail is written to the log.
    Log,
}

/// Wakes the sender when a call has queued mail.
#[derive(Clone, Default)]
pub struct MailQueued(Arc<Notify>);

impl MailQueued {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

pub struct Sender {
    pool: PgPool,
    delivery: Delivery,
    from: Mailbox,
    retry_max: Duration,
    /// A try may take this long before another sender may take the mail.
    lease: Duration,
    metrics: AuthMetrics,
    queued: MailQueued,
}

impl Sender {
    pub fn new(
        pool: PgPool,
        config: &MailConfig,
        metrics: AuthMetrics,
        queued: MailQueued,
    ) -> anyhow::Result<Sender> {
        let from: Mailbox = config.from.parse().context("AUTH_MAIL_FROM")?;
        let (delivery, timeout) = match &config.smtp {
            Some(smtp) => (Delivery::Smtp(transport(smtp)?), smtp.timeout),
            None => {
                tracing::warn!(
                    "AUTH_SMTP_HOST is not set: mail (email verification, password resets) \
                     is written to this log, NOT sent. Set AUTH_SMTP_HOST to send it."
                );
                (Delivery::Log, Duration::from_secs(1))
            }
        };
        Ok(Sender {
            pool,
            delivery,
            from,
            retry_max: config.retry_max,
            // Far beyond what one send's steps may take together.
            lease: timeout * 10,
            metrics,
            queued,
        })
    }

    /// Sends until the task is aborted.
    pub fn start(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match db::mail_outbox::claim(&self.pool, BATCH, self.lease).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        for mail in claimed {
                            self.deliver(mail).await;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "could not read the mail outbox"),
                }
                tokio::select! {
                    () = self.queued.0.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        })
    }

    async fn deliver(&self, mail: Claimed) {
        let outcome = match &self.delivery {
            Delivery::Log => {
                tracing::warn!(
                    mail.to = mail.recipient,
                    mail.subject = mail.subject,
                    mail.body = mail.body,
                    "mail NOT sent (AUTH_SMTP_HOST is not set); it reads:"
                );
                Ok("logged")
            }
            Delivery::Smtp(transport) => match self.message(&mail) {
                Err(error) => Err((true, error)),
                Ok(message) => match transport.send(message).await {
                    Ok(_) => Ok("sent"),
                    Err(error) => Err((refused_for_good(&error), error.to_string())),
                },
            },
        };
        let settled = match outcome {
            Ok(outcome) => {
                self.metrics.mails.with_label_values(&[outcome]).inc();
                tracing::info!(mail.id = mail.id, mail.kind = mail.kind, "mail delivered");
                db::mail_outbox::settle(&self.pool, mail.id, mail.attempts).await
            }
            Err((permanent, error)) => {
                let wait = backoff(mail.attempts, self.retry_max);
                let out_of_time = time::OffsetDateTime::now_utc() + wait >= mail.deliver_by;
                if permanent || out_of_time {
                    self.metrics.mails.with_label_values(&["dropped"]).inc();
                    tracing::error!(
                        mail.id = mail.id,
                        mail.kind = mail.kind,
                        mail.attempts = mail.attempts,
                        %error,
                        "mail dropped: {}",
                        if permanent { "the mail server refused it for good" } else { "not sent in time" }
                    );
                    db::mail_outbox::settle(&self.pool, mail.id, mail.attempts).await
                } else {
                    self.metrics.mails.with_label_values(&["retried"]).inc();
                    tracing::warn!(
                        mail.id = mail.id,
                        mail.kind = mail.kind,
                        mail.attempts = mail.attempts,
                        %error,
                        retry_in_ms = wait.as_millis() as u64,
                        "mail not sent; it waits"
                    );
                    db::mail_outbox::retry_later(&self.pool, mail.id, mail.attempts, wait, &error)
                        .await
                }
            }
        };
        if let Err(error) = settled {
            // The claim runs out and the mail is tried again.
            tracing::warn!(mail.id = mail.id, %error, "could not settle a mail");
        }
    }

    fn message(&self, mail: &Claimed) -> Result<Message, String> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|error| format!("recipient {:?}: {error}", mail.recipient))?;
        // Seven-bit text where it fits, quoted-printable or base64 where not.
        let body = Body::new(mail.body.clone());
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|error| error.to_string())
    }
}

/// Whether the server refused the mail itself, for good: a mailbox that
/// does not exist or an address it will not take (550, 551, 553). Any
/// other refusal, permanent ones included (a wrong login, a relay that
/// will not relay), is the configuration's, and is tried again once that
/// is fixed, rather than dropping every mail in the outbox.
fn refused_for_good(error: &lettre::transport::smtp::Error) -> bool {
    error.is_permanent()
        && error
            .status()
            .is_some_and(|code| matches!(u16::from(code), 550 | 551 | 553))
}

/// The wait after the `attempts`th failed try: 1 s, doubling, at most `max`.
fn backoff(attempts: i32, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    Duration::from_secs(1u64 << doublings).min(max)
}

fn transport(smtp: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut builder = TlsParameters::builder(smtp.host.clone());
        if let Some(path) = &smtp.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading AUTH_SMTP_CA_FILE {}", path.display()))?;
            builder = builder.add_root_certificate(
                Certificate::from_pem(&pem).context("AUTH_SMTP_CA_FILE holds no certificate")?,
            );
        }
        builder.build_rustls().context("TLS settings for SMTP")
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(smtp.timeout));
    builder = match smtp.security {
        SmtpSecurity::StartTls => builder.tls(Tls::Required(tls()?)),
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        SmtpSecurity::None => builder.tls(Tls::None),
    };
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=11).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(i32::MAX, max), max);
    }
}
