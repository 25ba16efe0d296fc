//! Opaque page tokens for keyset pagination: clients pass them back
//! unchanged; the server reads the position the previous page ended at.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A kind of page token, told apart from others by its prefix, so that a
/// token of one list is refused by another.
pub struct PageToken(&'static str);

impl PageToken {
    pub const fn new(prefix: &'static str) -> PageToken {
        PageToken(prefix)
    }

    pub fn encode(&self, position: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{position}", self.0))
    }

    /// The position, if `token` is one of ours.
    pub fn decode(&self, token: &str) -> Option<i64> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        text.strip_prefix(self.0)?
            .parse()
            .ok()
            .filter(|position: &i64| *position >= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: PageToken = PageToken::new("users-after:");
    const MESSAGES: PageToken = PageToken::new("messages-before:");

    #[test]
    fn tokens_round_trip() {
        assert_eq!(USERS.decode(&USERS.encode(42)), Some(42));
    }

    #[test]
    fn junk_negative_and_foreign_tokens_are_refused() {
        for junk in [
            "",
            "42",
            "!!!",
            &URL_SAFE_NO_PAD.encode("users-after:-1"),
            &MESSAGES.encode(42),
        ] {
            assert_eq!(USERS.decode(junk), None, "{junk:?} was accepted");
        }
    }
}
