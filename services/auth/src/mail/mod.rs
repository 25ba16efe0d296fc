//! Mail: what auth sends (verification and password reset tokens, the
//! notice of an email change), the outbox it is written to in the
//! transaction that makes it due, and the sender that delivers it over
//! SMTP with retries. A mail server that is down delays mail; it neither
//! loses it nor fails the call that wrote it.

pub mod config;
pub mod messages;
pub mod sender;

pub use config::{MailConfig, SmtpConfig, SmtpSecurity};
pub use messages::Mail;
