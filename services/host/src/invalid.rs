//! `INVALID_ARGUMENT` statuses that name the offending field, both for the
//! rules written in the protos (prost-validate) and for domain rules.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// An `INVALID_ARGUMENT` status for `field`, with a `BadRequest` detail
/// carrying the same field and description.
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {description}"),
        ErrorDetails::with_bad_request(vec![FieldViolation::new(field, description)]),
    )
}

/// Runs the rules from the message's `validate.rules` annotations.
pub fn validate<M: prost_validate::Validator>(message: &M) -> Result<(), Status> {
    message.validate().map_err(|error| {
        let field = short_field_name(&error.field);
        invalid_argument(field, without_field_prefix(&error.details.to_string()))
    })
}

/// Errors about items of repeated fields repeat the field's full name in
/// their description (`"chat.v1.CreateRequest.usernames": too short`);
/// the field is named already.
fn without_field_prefix(description: &str) -> &str {
    description
        .strip_prefix('"')
        .and_then(|rest| rest.split_once("\": "))
        .map_or(description, |(_, description)| description)
}

/// prost-validate names fields in full (`auth.v1.CreateRequest.name`);
/// clients know them by their own name (`name`).
fn short_field_name(full_name: &str) -> &str {
    full_name.rsplit('.').next().unwrap_or(full_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_lose_their_package_and_message() {
        assert_eq!(short_field_name("auth.v1.CreateRequest.name"), "name");
        assert_eq!(short_field_name("page_size"), "page_size");
    }

    #[test]
    fn item_descriptions_lose_the_repeated_field_name() {
        assert_eq!(
            without_field_prefix("\"chat.v1.CreateRequest.usernames\": too short"),
            "too short"
        );
        assert_eq!(without_field_prefix("too short"), "too short");
    }

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status = invalid_argument("email", "must be a valid email address");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid email: must be a valid email address"
        );
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("a BadRequest detail")
            .field_violations;
        assert_eq!(violations[0].field, "email");
    }
}
