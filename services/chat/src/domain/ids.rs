//! The ids that name a chat, a user and a message. Each is its own type, so
//! that a chat's id can never be passed where a user's is meant; the
//! database and the wire hold them as `i64`.

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) struct $name(i64);

        impl $name {
            pub(crate) const fn new(id: i64) -> $name {
                $name(id)
            }

            /// As the database and the wire hold it.
            pub(crate) const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A chat.
    ChatId
);
id!(
    /// A user, as auth numbers them.
    UserId
);
id!(
    /// A message; ids rise with the sequence within a chat.
    MessageId
);
