//! Borrowed JSON: RFC 6901 pointer lookups over [`RawValue`]s that parse only the objects and
//! arrays a pointer crosses, so record payloads stay slices of the bytes read from the feed.

use std::{borrow::Cow, collections::HashMap};

use serde_json::value::RawValue;

/// The value at `pointer` (RFC 6901, e.g. `/data/items/0/id`) inside `raw`; `""` is `raw`
/// itself. `None` when a member or index is missing, a token crosses a scalar, or the pointer
/// does not start with `/`.
pub fn lookup<'a>(raw: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(raw);
    }
    let mut current = raw;
    for token in pointer.strip_prefix('/')?.split('/') {
        current = child(current, &unescape(token))?;
    }
    Some(current)
}

/// The member `token` of an object, or the element at index `token` of an array.
pub fn child<'a>(raw: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    let text = raw.get();
    if text.starts_with('{') {
        let members: HashMap<Cow<'a, str>, &'a RawValue> = serde_json::from_str(text).ok()?;
        members.get(token).copied()
    } else if text.starts_with('[') {
        let elements: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
        elements.get(token.parse::<usize>().ok()?).copied()
    } else {
        None
    }
}

/// A pointer token with `~1` and `~0` decoded (RFC 6901 §4).
pub fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// A string value as is (unescaped), anything else as its JSON text.
pub fn text_of(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(text).unwrap_or(Cow::Borrowed(text))
    } else {
        Cow::Borrowed(text)
    }
}

/// True for JSON `null`.
pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The elements of a JSON array, each borrowed; `None` when `raw` is not an array.
pub fn elements(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if raw.get().starts_with('[') {
        serde_json::from_str(raw.get()).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn pointers_cross_objects_and_arrays() {
        let doc = raw(r#"{"a":{"b~c":[1,{"d/e":"x\"y"}]},"n":null}"#);
        assert_eq!(lookup(doc, "/a/b~0c/0").unwrap().get(), "1");
        assert_eq!(text_of(lookup(doc, "/a/b~0c/1/d~1e").unwrap()), "x\"y");
        assert!(is_null(lookup(doc, "/n").unwrap()));
        assert_eq!(lookup(doc, "").unwrap().get(), doc.get());
        for missing in ["/z", "/a/b~0c/7", "/a/b~0c/0/x", "a"] {
            assert!(lookup(doc, missing).is_none(), "{missing}");
        }
        assert_eq!(elements(lookup(doc, "/a/b~0c").unwrap()).unwrap().len(), 2);
        assert!(elements(doc).is_none());
    }
}
