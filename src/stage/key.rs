//! The record key rule every source kind shares: a JSON pointer (`/meta/id`) or a template
//! (`{/repo/id}-{/number}`, several pointers joined), compiled once at config time.
//!
//! A pointer's value is the key as is when it is a string, else its JSON text; a template
//! joins its values the same way. A missing or `null` value gives no key: the stage then
//! dead-letters the record with `key_not_found` (SSE keys, and the key templates of SSE and
//! WebSocket sources); a polled or webhook record goes without a key and an event id.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::template::{Template, Unfilled};
use crate::json::{is_null, text_of, Pointer};

/// A compiled key rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// The value at a JSON pointer (RFC 6901).
    Pointer(Pointer),
    /// A template with `{/pointer}` placeholders.
    Template(Template),
}

impl Key {
    /// Parses `text`: a template when it holds a `{`, else a JSON pointer.
    ///
    /// # Errors
    /// A sentence naming the text: an empty rule (a key is never the whole record), a pointer
    /// that does not start with `/` or has a bad `~` escape, a malformed template, or a
    /// template with two placeholders side by side (`{/a}{/b}` gives `123` for both `1`,`23`
    /// and `12`,`3`: keys are also event ids and deduplication keys, so the values must be
    /// separated).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err(
                "the key is empty; point at the field that identifies each record".to_owned(),
            );
        }
        if Template::is_template(text) {
            if text.contains("}{") {
                return Err(format!(
                    "`{text}` has two placeholders side by side, so different records could get \
                     the same key; put a separator between them (e.g. `{{/a}}:{{/b}}`) that the \
                     values do not contain"
                ));
            }
            Template::parse(text).map(Key::Template)
        } else {
            Pointer::parse(text).map(Key::Pointer)
        }
    }

    /// The rule as written.
    pub fn as_str(&self) -> &str {
        match self {
            Key::Pointer(pointer) => pointer.as_str(),
            Key::Template(template) => template.as_str(),
        }
    }

    /// True for a template (it may be filled from the record after the transform).
    pub fn is_template(&self) -> bool {
        matches!(self, Key::Template(_))
    }

    /// The key of `record` (`None`: the record is not JSON).
    ///
    /// # Errors
    /// [`Unfilled`]: the record is not JSON, or has no value (or `null`) where the rule points.
    pub fn of<'a>(&self, record: Option<&'a RawValue>) -> Result<Cow<'a, str>, Unfilled> {
        match self {
            Key::Pointer(pointer) => {
                let record = record.ok_or(Unfilled::NotJson)?;
                pointer
                    .lookup(record)
                    .filter(|value| !is_null(value))
                    .map(text_of)
                    .ok_or_else(|| Unfilled::Missing(pointer.as_str().to_owned()))
            }
            Key::Template(template) => template.fill(record).map(Cow::Owned),
        }
    }

    /// The key of `record` as an event id: like [`Key::of`], but a pointer to an object, an
    /// array or a boolean gives no id (ids are strings or numbers; `true` would make every
    /// event after the first a duplicate).
    ///
    /// # Errors
    /// [`Unfilled`], as for [`Key::of`], and `Missing` for a value that is not a string or a
    /// number.
    pub fn id_of<'a>(&self, record: Option<&'a RawValue>) -> Result<Cow<'a, str>, Unfilled> {
        if let Key::Pointer(pointer) = self {
            let scalar = record
                .and_then(|record| pointer.lookup(record))
                .is_some_and(|value| {
                    value
                        .get()
                        .starts_with(|c: char| c == '"' || c == '-' || c.is_ascii_digit())
                });
            if !scalar {
                return Err(Unfilled::Missing(pointer.as_str().to_owned()));
            }
        }
        self.of(record)
    }

    /// Why no key could be had, as a sentence (the `key_not_found` reason).
    pub fn describe(&self, unfilled: &Unfilled) -> String {
        match self {
            Key::Pointer(pointer) => format!(
                "the key pointer `{}` matches nothing (or `null`) in the event data",
                pointer.as_str()
            ),
            Key::Template(template) => format!(
                "the key template `{}` cannot be filled: {}",
                template.as_str(),
                super::route::describe(unfilled)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn pointers_and_templates_read_strings_and_other_values() {
        let doc = raw(r#"{"meta":{"id":"abc","n":7},"nil":null}"#);
        let key = |text: &str| Key::parse(text).unwrap();
        assert_eq!(key("/meta/id").of(Some(doc)).unwrap(), "abc");
        assert_eq!(key("/meta/n").of(Some(doc)).unwrap(), "7");
        assert_eq!(key("{/meta/id}-{/meta/n}").of(Some(doc)).unwrap(), "abc-7");
        assert!(key("{/meta/id}").is_template());
        assert!(!key("/meta/id").is_template());
        for missing in ["/nope", "/nil", "{/nil}"] {
            let rule = key(missing);
            let unfilled = rule.of(Some(doc)).unwrap_err();
            assert!(matches!(unfilled, Unfilled::Missing(_)), "{missing}");
            assert!(rule.describe(&unfilled).contains(missing), "{missing}");
        }
        assert_eq!(key("/meta/id").of(None), Err(Unfilled::NotJson));
    }

    #[test]
    fn malformed_rules_are_refused() {
        assert!(Key::parse("meta.id")
            .unwrap_err()
            .contains("must start with `/`"));
        assert!(Key::parse("{/a").unwrap_err().contains("not closed"));
        assert!(Key::parse("").unwrap_err().contains("empty"));
        assert!(Key::parse("{/a}{/b}").unwrap_err().contains("side by side"));
        assert!(Key::parse("{/a}:{/b}").is_ok());
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        let doc = raw(r#"{"s":"x","n":-7,"o":{"a":1},"l":[1],"b":true}"#);
        let id = |text: &str| Key::parse(text).unwrap().id_of(Some(doc));
        assert_eq!(id("/s").unwrap(), "x");
        assert_eq!(id("/n").unwrap(), "-7");
        for not_an_id in ["/o", "/l", "/b", "/nope"] {
            assert!(id(not_an_id).is_err(), "{not_an_id}");
        }
    }
}
