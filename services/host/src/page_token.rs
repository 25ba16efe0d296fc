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

    /// A position of two parts, such as a time and an id.
    pub fn encode_pair(&self, first: i64, second: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{first}:{second}", self.0))
    }

    /// The two-part position, if `token` is one of ours.
    pub fn decode_pair(&self, token: &str) -> Option<(i64, i64)> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (first, second) = text.strip_prefix(self.0)?.split_once(':')?;
        let (first, second): (i64, i64) = (first.parse().ok()?, second.parse().ok()?);
        (first >= 0 && second >= 0).then_some((first, second))
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
    fn pairs_round_trip_and_junk_pairs_are_refused() {
        assert_eq!(USERS.decode_pair(&USERS.encode_pair(7, 42)), Some((7, 42)));
        assert_eq!(USERS.decode_pair(&USERS.encode(42)), None);
        assert_eq!(USERS.decode(&USERS.encode_pair(7, 42)), None);
        for junk in ["users-after:1:-2", "users-after:1:2:3", "users-after::2"] {
            assert_eq!(
                USERS.decode_pair(&URL_SAFE_NO_PAD.encode(junk)),
                None,
                "{junk}"
            );
        }
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
