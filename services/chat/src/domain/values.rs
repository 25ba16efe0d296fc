//! The values a request carries, each parsed once at the wire boundary.

use crate::error::Error;

/// A chat's title: one line of text.
#[derive(Debug, Clone)]
pub(crate) struct ChatTitle(String);

impl ChatTitle {
    pub(crate) fn parse(field: &'static str, title: String) -> Result<ChatTitle, Error> {
        if title.trim().is_empty() {
            return Err(Error::invalid(field, "must not be blank"));
        }
        if title.chars().any(char::is_control) {
            return Err(Error::invalid(field, "must not contain control characters"));
        }
        // A title that hides a character could pass for another chat's.
        if let Some(hidden) = host::text::hidden_char(&title) {
            return Err(Error::invalid(
                field,
                host::text::hidden_char_description(hidden),
            ));
        }
        Ok(ChatTitle(title))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message's text: not blank; line breaks and tabs allowed, other
/// control characters not.
#[derive(Debug, Clone)]
pub(crate) struct MessageText(String);

impl MessageText {
    pub(crate) fn parse(field: &'static str, text: String) -> Result<MessageText, Error> {
        if text.trim().is_empty() {
            return Err(Error::invalid(field, "must not be blank"));
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(Error::invalid(
                field,
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        // Joiners stay (emoji, Persian); a bidi control left open would
        // reorder whatever a client shows after the message.
        if host::text::unbalanced_bidi(&text) {
            return Err(Error::invalid(
                field,
                "must close every bidi embedding, override and isolate it opens",
            ));
        }
        Ok(MessageText(text))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sender's idempotency key for one message: printable text.
#[derive(Debug, Clone)]
pub(crate) struct ClientMessageId(String);

impl ClientMessageId {
    /// `None` for an empty key (no idempotency asked for).
    pub(crate) fn parse(field: &'static str, id: String) -> Result<Option<ClientMessageId>, Error> {
        if id.is_empty() {
            return Ok(None);
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid(field, "must not contain control characters"));
        }
        Ok(Some(ClientMessageId(id)))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The names of users to add to a chat, checked before auth is asked: text
/// no name can hold (control characters, NUL among them) is refused here,
/// naming the item. Auth decides whether each names a user.
#[derive(Debug, Clone)]
pub(crate) struct Usernames(Vec<String>);

impl Usernames {
    pub(crate) fn parse(field: &'static str, names: Vec<String>) -> Result<Usernames, Error> {
        match names
            .iter()
            .position(|name| name.chars().any(char::is_control))
        {
            Some(i) => Err(Error::invalid_owned(
                format!("{field}[{i}]"),
                "must not contain control characters",
            )),
            None => Ok(Usernames(names)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_refuse_control_characters() {
        assert!(
            ClientMessageId::parse("client_message_id", String::new())
                .expect("empty is none")
                .is_none()
        );
        assert!(
            ClientMessageId::parse("client_message_id", "m-1".into())
                .expect("valid")
                .is_some()
        );
        assert!(ClientMessageId::parse("client_message_id", "m\0".into()).is_err());
        assert!(Usernames::parse("usernames", vec!["ada".into(), "grace".into()]).is_ok());
        let error =
            Usernames::parse("usernames", vec!["ada".into(), "gr\0ace".into()]).expect_err("a NUL");
        assert!(error.to_string().contains("usernames[1]"), "{error}");
    }

    #[test]
    fn titles_must_be_one_line_of_text() {
        assert!(ChatTitle::parse("title", "Team".into()).is_ok());
        for bad in ["", "   ", "two\nlines", "Team\u{200B}", "\u{202E}maeT"] {
            assert!(
                ChatTitle::parse("title", bad.into()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn texts_may_span_lines_but_not_be_blank_or_binary() {
        assert!(MessageText::parse("text", "hello\nworld\t!".into()).is_ok());
        assert!(MessageText::parse("text", "👩\u{200D}💻 \u{202E}ok\u{202C}".into()).is_ok());
        for bad in ["", " \n ", "bell\u{7}", "runs \u{202E}past the end"] {
            assert!(
                MessageText::parse("text", bad.into()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
