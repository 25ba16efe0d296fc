use crate::error::Error;

/// A gRPC method's path, `/<package>.<Service>/<Method>`, as `Check` is
/// asked about it.
///
/// Checked by hand rather than by a `pattern` rule in the proto: the
/// validator prost-validate derives compiles a rule's regular expression on
/// every call, and `Check` is the hottest call there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointAddress<'a>(&'a str);

impl<'a> EndpointAddress<'a> {
    pub fn parse(field: &'static str, address: &'a str) -> Result<EndpointAddress<'a>, Error> {
        let invalid =
            || Error::invalid(field, "must be a method path like /package.Service/Method");
        let (service, method) = address
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .ok_or_else(invalid)?;
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if service.is_empty()
            || method.is_empty()
            || !service.chars().all(|c| word(c) || c == '.')
            || !method.chars().all(word)
        {
            return Err(invalid());
        }
        Ok(EndpointAddress(address))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_parse_and_others_do_not() {
        for good in ["/chat.v1.ChatService/Send", "/a/b", "/x_y.Z/Do_it2"] {
            assert!(
                EndpointAddress::parse("endpoint_address", good).is_ok(),
                "{good:?} was refused"
            );
        }
        for junk in [
            "",
            "/",
            "//",
            "/a/",
            "//b",
            "a/b",
            "/a/b/c",
            "/a/b.c",
            "/a b/c",
            "/a/b\n",
            "/a/\u{200b}b",
            "/ä/b",
        ] {
            assert!(
                EndpointAddress::parse("endpoint_address", junk).is_err(),
                "{junk:?} was accepted"
            );
        }
    }
}
