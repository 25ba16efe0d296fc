use api::auth::v1 as pb;

use crate::error::Error;

/// What a user may do. `Anonymous` is not a user's role: it names calls
/// without a token in the access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Anonymous,
    User,
    Admin,
}

impl Role {
    /// The name stored in the database (`users.role`, `access_rules.role`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn from_db(role: &str) -> Option<Role> {
        match role {
            "anonymous" => Some(Role::Anonymous),
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// A user's role from the wire; `ROLE_UNSPECIFIED` is `None`.
    pub fn from_proto(field: &'static str, role: i32) -> Result<Option<Role>, Error> {
        match pb::Role::try_from(role) {
            Ok(pb::Role::Unspecified) => Ok(None),
            Ok(pb::Role::User) => Ok(Some(Role::User)),
            Ok(pb::Role::Admin) => Ok(Some(Role::Admin)),
            Err(_) => Err(Error::invalid(field, "is not a known role")),
        }
    }

    pub fn to_proto(self) -> pb::Role {
        match self {
            Role::Anonymous => pb::Role::Unspecified,
            Role::User => pb::Role::User,
            Role::Admin => pb::Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_the_database_names() {
        for role in [Role::Anonymous, Role::User, Role::Admin] {
            assert_eq!(Role::from_db(role.as_str()), Some(role));
        }
        assert_eq!(Role::from_db("root"), None);
    }

    #[test]
    fn unknown_wire_roles_are_invalid() {
        assert!(Role::from_proto("role", 7).is_err());
        assert_eq!(Role::from_proto("role", 0).ok(), Some(None));
        assert_eq!(Role::from_proto("role", 2).ok(), Some(Some(Role::Admin)));
    }
}
