use unicode_normalization::UnicodeNormalization as _;

use crate::error::Error;

/// A user's name: what they log in with and others find them by. Stored
/// in Unicode NFKC (so `ｆｉ` and `ﬁ` are `fi`), and unique by its
/// [`skeleton`]: regardless of case, and of letters that only look alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

/// What a name looks like, for uniqueness: Unicode TR #39's confusable
/// skeleton of its NFKC lower case, lowercased and taken again until it
/// stops changing, with every run of white space as one space, and `i`
/// counted as `l`; so that `аdmin` with a Cyrillic `а`, `ADMIN`,
/// `ａｄｍｉｎ`, `adrnin`, `aIice` with a capital `I` beside `alice`, and
/// `Ada  Lovelace` with two spaces are each one name with their
/// look-alike. A capital `I` looks like an `l` and is the same letter as
/// an `i`: so `i` and `l` are one, at the price of a few names that only
/// differ by them (`aiice`) being taken by each other.
pub fn skeleton(name: &str) -> String {
    let mut looks = one_space(&name.nfkc().collect::<String>().to_lowercase());
    // Each round maps more characters to their prototypes; a few suffice
    // for any text, and the bound keeps it so.
    for _ in 0..8 {
        let next = one_space(
            &unicode_security::skeleton(&looks)
                .collect::<String>()
                .to_lowercase()
                .replace('i', "l"),
        );
        if next == looks {
            break;
        }
        looks = next;
    }
    looks
}

/// `text` with every run of white space as one space.
fn one_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl UserName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(field: &'static str, name: String) -> Result<UserName, Error> {
        let name: String = name.nfkc().collect();
        let chars = name.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        if name.trim() != name {
            return Err(Error::invalid(
                field,
                "must not start or end with white space",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid(field, "must not contain control characters"));
        }
        // A name that hides a character could pass for another.
        if let Some(hidden) = host::text::hidden_char(&name) {
            return Err(Error::invalid(
                field,
                host::text::hidden_char_description(hidden),
            ));
        }
        Ok(UserName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// See [`skeleton`].
    pub fn skeleton(&self) -> String {
        skeleton(&self.0)
    }
}

/// A name as someone types it to log in or to find a user: any text a
/// name could be, not necessarily one that exists. Text no name can hold
/// (control characters, NUL among them) is refused up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName(String);

impl LoginName {
    pub fn parse(field: impl Into<String>, name: String) -> Result<LoginName, Error> {
        let chars = name.chars().count();
        if chars == 0 || chars > UserName::MAX_CHARS {
            return Err(Error::invalid_owned(
                field.into(),
                format!("must be 1 to {} characters", UserName::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid_owned(
                field.into(),
                "must not contain control characters",
            ));
        }
        Ok(LoginName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// In NFKC, as names are stored now: `ＡＤＡ` finds `ADA`.
    pub fn normalized(&self) -> String {
        self.0.nfkc().collect()
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_refuse_what_no_name_holds() {
        assert!(LoginName::parse("username", " Ada ".into()).is_ok());
        for name in ["", "a\0da", "a\u{1b}[2Jda"] {
            assert!(
                LoginName::parse("username", name.into()).is_err(),
                "{name:?} was accepted"
            );
        }
    }

    #[test]
    fn names_that_hide_characters_are_refused() {
        for name in ["admin\u{200B}", "grace\u{202E}", "ada\u{3164}"] {
            let error = UserName::parse("name", name.into()).expect_err(name);
            assert!(error.to_string().contains("invalid name"), "{error}");
        }
    }

    #[test]
    fn names_are_stored_in_nfkc() {
        let name = UserName::parse("name", "\u{FB01}sh ＡＤＡ".into()).expect("a name");
        assert_eq!(name.as_str(), "fish ADA");
    }

    /// A capital `I` passes for an `l` (and is an `i`), and a second
    /// space is not seen.
    #[test]
    fn capitals_and_runs_of_spaces_pass_for_their_look_alikes() {
        assert_eq!(skeleton("aIice"), skeleton("alice"));
        assert_eq!(skeleton("Ivan"), skeleton("lvan"));
        assert_eq!(skeleton("Ivan"), skeleton("ivan"));
        assert_eq!(skeleton("Ada  Lovelace"), skeleton("Ada Lovelace"));
        assert_eq!(skeleton("Ada\u{3000}Lovelace"), skeleton("Ada Lovelace"));
        assert_ne!(skeleton("Ada Lovelace"), skeleton("AdaLovelace"));
    }

    #[test]
    fn look_alikes_share_a_skeleton_and_others_do_not() {
        let admin = skeleton("admin");
        for alike in ["\u{430}dmin", "ADMIN", "Admin", "ａｄｍｉｎ", "adrnin"] {
            assert_eq!(skeleton(alike), admin, "{alike:?}");
        }
        for alike in ["MALLORY", "rnallory", "ma\u{217C}lory"] {
            assert_eq!(skeleton(alike), skeleton("mallory"), "{alike:?}");
        }
        for other in ["admins", "adm1n2", "grace"] {
            assert_ne!(skeleton(other), admin, "{other:?}");
        }
        assert_eq!(
            skeleton("paypal"),
            skeleton("\u{440}\u{430}y\u{440}\u{430}l")
        );
    }

    #[test]
    fn ordinary_names_parse() {
        assert_eq!(
            UserName::parse("name", "Ada Lovelace".into())
                .ok()
                .as_ref()
                .map(UserName::as_str),
            Some("Ada Lovelace")
        );
        assert!(UserName::parse("name", "ü".repeat(100)).is_ok());
    }

    #[test]
    fn empty_long_padded_and_control_names_are_refused() {
        for name in ["", " ada", "ada ", "a\u{7}da"] {
            assert!(
                UserName::parse("name", name.into()).is_err(),
                "{name:?} was accepted"
            );
        }
        assert!(UserName::parse("name", "a".repeat(101)).is_err());
    }
}
