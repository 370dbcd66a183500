//! Templates of topics and keys: literal text with `{/json/pointer}` placeholders filled from
//! each record, e.g. `github.{/type}` or `{/repo/id}-{/number}`.
//!
//! A placeholder is a JSON pointer (RFC 6901) between braces; its value is a string as is, any
//! other value as its JSON text. A template is parsed once, at config time.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::json::{text_of, Pointer};

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Literal(String),
    /// A value taken from the record.
    Value(Pointer),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

/// Why a template could not be filled from a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfilled {
    /// The record has no value (or `null`) at this pointer.
    Missing(String),
    /// The record is not JSON, so no pointer can be followed.
    NotJson,
}

impl Template {
    /// True when `text` holds a placeholder (`{`): it is a template, not a fixed value.
    pub fn is_template(text: &str) -> bool {
        text.contains('{')
    }

    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed `{`, a `}` without its `{`, or a placeholder that is not a JSON pointer
    /// starting with `/` (the message says which).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    break;
                }
                Some(at) if rest.as_bytes()[at] == b'}' => {
                    return Err(format!(
                        "`{text}` has a `}}` without its `{{`; write placeholders as `{{/pointer}}`"
                    ));
                }
                Some(at) => {
                    if at > 0 {
                        parts.push(Part::Literal(rest[..at].to_owned()));
                    }
                    let inner = &rest[at + 1..];
                    let Some(end) = inner.find('}') else {
                        return Err(format!(
                            "`{text}` has a `{{` that is not closed; write placeholders as `{{/pointer}}`"
                        ));
                    };
                    let pointer = &inner[..end];
                    if pointer.is_empty() || pointer.contains('{') {
                        return Err(format!(
                            "`{text}` has a placeholder that is not a JSON pointer; write `{{/field}}`"
                        ));
                    }
                    parts.push(Part::Value(Pointer::parse(pointer)?));
                    rest = &inner[end + 1..];
                }
            }
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal text of the template with every placeholder left out (what a topic name
    /// check can see at config time).
    pub fn literal_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Literal(text) => Some(text.as_str()),
                Part::Value(_) => None,
            })
            .collect()
    }

    /// The template filled from `record` (`None`: the record is not JSON).
    ///
    /// # Errors
    /// [`Unfilled`]: the record is not JSON, or has no value (or `null`) at a placeholder.
    pub fn fill(&self, record: Option<&RawValue>) -> Result<String, Unfilled> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Value(pointer) => {
                    let record = record.ok_or(Unfilled::NotJson)?;
                    let value = pointer
                        .lookup(record)
                        .filter(|value| !crate::json::is_null(value))
                        .ok_or_else(|| Unfilled::Missing(pointer.as_str().to_owned()))?;
                    let text: Cow<'_, str> = text_of(value);
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn placeholders_are_filled_from_the_record() {
        let doc = raw(r#"{"type":"IssuesEvent","repo":{"id":7},"n":null,"a/b":"x"}"#);
        let topic = Template::parse("github.{/type}").unwrap();
        assert_eq!(topic.fill(Some(doc)).unwrap(), "github.IssuesEvent");
        assert_eq!(topic.literal_text(), "github.");
        let key = Template::parse("{/repo/id}-{/a~1b}").unwrap();
        assert_eq!(key.fill(Some(doc)).unwrap(), "7-x");
        assert_eq!(
            Template::parse("{/n}").unwrap().fill(Some(doc)),
            Err(Unfilled::Missing("/n".into()))
        );
        assert_eq!(
            Template::parse("t.{/nope}").unwrap().fill(Some(doc)),
            Err(Unfilled::Missing("/nope".into()))
        );
        assert_eq!(topic.fill(None), Err(Unfilled::NotJson));
        assert_eq!(
            Template::parse("fixed").unwrap().fill(None).unwrap(),
            "fixed"
        );
    }

    #[test]
    fn malformed_templates_are_refused_with_the_reason() {
        for (text, reason) in [
            ("a.{/b", "not closed"),
            ("a.}b", "without its"),
            ("a.{}", "not a JSON pointer"),
            ("a.{b}", "must start with `/`"),
            ("a.{/b{/c}}", "not a JSON pointer"),
        ] {
            let error = Template::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
        assert!(Template::is_template("a.{/b}"));
        assert!(!Template::is_template("a.b"));
    }
}
