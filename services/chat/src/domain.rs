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

#[cfg(test)]
mod tests {
    use super::*;

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
