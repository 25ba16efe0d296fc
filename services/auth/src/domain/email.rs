use crate::error::Error;

/// An email address: the proto's rules checked its form; here it is also
/// kept to one line of printable text. Unique regardless of case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(field: &'static str, email: String) -> Result<Email, Error> {
        let chars = email.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(Error::invalid(field, "must be an email address"));
        };
        if local.is_empty()
            || domain.is_empty()
            || email.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::invalid(field, "must be an email address"));
        }
        // An address mail can be sent to, as the SMTP client reads it.
        if email.parse::<lettre::Address>().is_err() {
            return Err(Error::invalid(field, "must be an email address"));
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_junk_does_not() {
        assert!(Email::parse("email", "ada@example.com".into()).is_ok());
        for junk in ["", "ada", "@example.com", "ada@", "a da@example.com"] {
            assert!(
                Email::parse("email", junk.into()).is_err(),
                "{junk:?} was accepted"
            );
        }
    }
}
