//! Valid values only, parsed once at the wire boundary, and the caller
//! auth vouched for.

use crate::error::Error;

/// Who is calling, as auth's `Check` answered. Handlers trust this, never
/// a user id or name from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub username: String,
    pub is_admin: bool,
    /// When the caller's access token expires; a stream ends then.
    pub expires_at: Option<std::time::SystemTime>,
    /// The token's version: a revocation of the user above it ends the
    /// caller's streams.
    pub token_version: i64,
}

/// A chat's title: one line of text.
#[derive(Debug, Clone)]
pub struct ChatTitle(String);

impl ChatTitle {
    pub fn parse(title: String) -> Result<ChatTitle, Error> {
        if title.trim().is_empty() {
            return Err(Error::invalid("title", "must not be blank"));
        }
        if title.chars().any(char::is_control) {
            return Err(Error::invalid(
                "title",
                "must not contain control characters",
            ));
        }
        Ok(ChatTitle(title))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message's text: not blank; line breaks and tabs allowed, other
/// control characters not.
#[derive(Debug, Clone)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(text: String) -> Result<MessageText, Error> {
        if text.trim().is_empty() {
            return Err(Error::invalid("text", "must not be blank"));
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(Error::invalid(
                "text",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(MessageText(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sender's idempotency key for one message: printable text.
#[derive(Debug, Clone)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// `None` for an empty key (no idempotency asked for).
    pub fn parse(id: String) -> Result<Option<ClientMessageId>, Error> {
        if id.is_empty() {
            return Ok(None);
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "client_message_id",
                "must not contain control characters",
            ));
        }
        Ok(Some(ClientMessageId(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks the names a chat is created with before auth is asked: text no
/// name can hold (control characters, NUL among them) is refused here,
/// naming the item.
pub fn check_usernames(names: &[String]) -> Result<(), Error> {
    match names
        .iter()
        .position(|name| name.chars().any(char::is_control))
    {
        Some(i) => Err(Error::InvalidArgument {
            field: format!("usernames[{i}]").into(),
            description: "must not contain control characters".into(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_refuse_control_characters() {
        assert!(
            ClientMessageId::parse(String::new())
                .expect("empty is none")
                .is_none()
        );
        assert!(
            ClientMessageId::parse("m-1".into())
                .expect("valid")
                .is_some()
        );
        assert!(ClientMessageId::parse("m\0".into()).is_err());
        assert!(check_usernames(&["ada".into(), "grace".into()]).is_ok());
        let error = check_usernames(&["ada".into(), "gr\0ace".into()]).expect_err("a NUL");
        assert!(error.to_string().contains("usernames[1]"), "{error}");
    }

    #[test]
    fn titles_must_be_one_line_of_text() {
        assert!(ChatTitle::parse("Team".into()).is_ok());
        for bad in ["", "   ", "two\nlines"] {
            assert!(
                ChatTitle::parse(bad.into()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn texts_may_span_lines_but_not_be_blank_or_binary() {
        assert!(MessageText::parse("hello\nworld\t!".into()).is_ok());
        for bad in ["", " \n ", "bell\u{7}"] {
            assert!(
                MessageText::parse(bad.into()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
