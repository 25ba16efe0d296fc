//! Valid values only: each type parses its raw input once, at the wire
//! boundary, and the rest of the service trusts it.

mod email;
mod endpoint;
mod password;
mod role;
mod user_name;

pub use email::Email;
pub use endpoint::EndpointAddress;
pub use password::{NewPassword, Password};
pub use role::Role;
pub use user_name::{LoginName, UserName, skeleton};

/// A user's id, as the database assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
