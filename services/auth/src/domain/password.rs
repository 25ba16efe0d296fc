use secrecy::{ExposeSecret as _, SecretString};

use crate::error::Error;

/// A password as typed; never shown in logs or `Debug` output.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    pub const MAX_CHARS: usize = 72;

    /// Any password up to the maximum, for checking against a stored hash.
    pub fn parse(field: &'static str, password: String) -> Result<Password, Error> {
        if password.is_empty() || password.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Password(password.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A password being set: long enough, and typed the same twice.
#[derive(Debug, Clone)]
pub struct NewPassword(Password);

impl NewPassword {
    pub const MIN_CHARS: usize = 8;

    pub fn parse(
        (field, password): (&'static str, String),
        (confirm_field, confirm): (&'static str, String),
    ) -> Result<NewPassword, Error> {
        let chars = password.chars().count();
        if !(Self::MIN_CHARS..=Password::MAX_CHARS).contains(&chars) {
            return Err(Error::invalid(
                field,
                format!(
                    "must be {} to {} characters",
                    Self::MIN_CHARS,
                    Password::MAX_CHARS
                ),
            ));
        }
        if password != confirm {
            return Err(Error::invalid(confirm_field, format!("must equal {field}")));
        }
        Ok(NewPassword(Password(password.into())))
    }

    pub fn as_password(&self) -> &Password {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(password: &str, confirm: &str) -> Result<NewPassword, Error> {
        NewPassword::parse(
            ("password", password.into()),
            ("password_confirm", confirm.into()),
        )
    }

    #[test]
    fn matching_passwords_of_fitting_length_parse() {
        assert!(parse("correct horse", "correct horse").is_ok());
        assert!(parse(&"p".repeat(72), &"p".repeat(72)).is_ok());
    }

    #[test]
    fn a_mismatched_confirmation_names_the_confirmation_field() {
        match parse("correct horse", "correct hoarse") {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "password_confirm"),
            other => panic!("expected invalid password_confirm, got {other:?}"),
        }
    }

    #[test]
    fn short_and_long_passwords_name_the_password_field() {
        for password in ["short", &"p".repeat(73)] {
            match parse(password, password) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "password"),
                other => panic!("expected invalid password, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let password = Password::parse("password", "hunter2hunter2".into()).expect("valid");
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
