//! `google.api.http` path templates: literal segments, `{field}`
//! variables, and an optional `:verb` after the last segment.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A field path, as in `{id}` or `{user.id}`.
    Variable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    verb: Option<String>,
    /// As written in the proto, for errors and the OpenAPI document.
    pub text: String,
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let path = text
            .strip_prefix('/')
            .ok_or_else(|| format!("{text:?} does not start with /"))?;
        let (path, verb) = match path.rsplit_once(':') {
            Some((path, verb)) if !verb.contains('/') && !verb.contains('}') => {
                (path, Some(verb.to_owned()))
            }
            _ => (path, None),
        };
        let segments = path
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(variable) => {
                        let field = variable
                            .split_once('=')
                            .map_or(variable, |(field, _)| field);
                        Ok(Segment::Variable(field.to_owned()))
                    }
                    None if segment.is_empty() || segment.contains(['{', '}']) => {
                        Err(format!("bad segment in {text:?}"))
                    }
                    None => Ok(Segment::Literal(segment.to_owned())),
                },
            )
            .collect::<Result<_, _>>()?;
        Ok(PathTemplate {
            segments,
            verb,
            text: text.to_owned(),
        })
    }

    /// The variables' values if `path` matches, in template order.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut bound = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Variable(_) if part.is_empty() => return None,
                Segment::Variable(field) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?;
                    bound.push((field.clone(), value.into_owned()));
                }
            }
        }
        Some(bound)
    }

    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Variable(field) => Some(field.as_str()),
            Segment::Literal(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(template)
            .expect("a valid template")
            .matches(path)
    }

    #[test]
    fn literals_variables_and_verbs_match() {
        assert_eq!(bound("/v1/users", "/v1/users"), Some(vec![]));
        assert_eq!(
            bound("/v1/users/{id}", "/v1/users/42"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(
            bound("/v1/users/{id}/password", "/v1/users/42/password"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(bound("/v1/users:lookup", "/v1/users:lookup"), Some(vec![]));
        assert_eq!(
            bound("/v1/users/{name}", "/v1/users/a%20b"),
            Some(vec![("name".into(), "a b".into())])
        );
    }

    #[test]
    fn other_paths_do_not_match() {
        assert_eq!(bound("/v1/users/{id}", "/v1/users"), None);
        assert_eq!(bound("/v1/users/{id}", "/v1/users/"), None);
        assert_eq!(bound("/v1/users/{id}", "/v1/users/1/2"), None);
        assert_eq!(bound("/v1/users:lookup", "/v1/users"), None);
        assert_eq!(bound("/v1/users", "/v1/users:lookup"), None);
    }
}
