//! Borrowed JSON: RFC 6901 pointer lookups over [`RawValue`]s that parse only the objects and
//! arrays a pointer crosses, so record payloads stay slices of the bytes read from the feed.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

/// A JSON pointer (RFC 6901) parsed once, at config time: its text and its decoded tokens, so
/// that looking it up on each record neither splits nor unescapes it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `text` (`""` for the whole document, else `/`-separated tokens with `~0` and
    /// `~1` escapes, RFC 6901 §3–4).
    ///
    /// # Errors
    /// The text is neither empty nor starts with `/`, or holds a `~` not followed by `0` or `1`
    /// (the message says which).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON pointer: it must start with `/` (e.g. `/meta/id`)"
            ));
        };
        let mut tokens = Vec::new();
        for token in rest.split('/') {
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                    return Err(format!(
                        "`{text}` is not a JSON pointer: `~` must be followed by `0` or `1`"
                    ));
                }
            }
            tokens.push(unescape(token).into_owned());
        }
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The decoded reference tokens, in order (none for the whole document).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The value this pointer names in `raw`, as [`lookup`] finds it.
    pub fn lookup<'a>(&self, raw: &'a RawValue) -> Option<&'a RawValue> {
        let mut current = raw;
        for token in &self.tokens {
            current = child(current, token)?;
        }
        Some(current)
    }
}

/// The member `token` of an object, or the element at index `token` of an array. The value
/// is scanned once, without building a map and without allocating its keys.
pub fn child<'a>(raw: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    let text = raw.get();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    if text.starts_with('{') {
        deserializer.deserialize_map(Member(token)).ok()?
    } else if text.starts_with('[') {
        let index = token.parse::<usize>().ok()?;
        deserializer.deserialize_seq(Element(index)).ok()?
    } else {
        None
    }
}

/// An object's members in order: each name (borrowed unless it holds escapes) and value.
pub type MemberList<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// The members of an object in order, keys borrowed unless they hold escapes; `None` when
/// `raw` is not an object.
pub fn members(raw: &RawValue) -> Option<MemberList<'_>> {
    let text = raw.get();
    if !text.starts_with('{') {
        return None;
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Members)
        .ok()
}

/// Finds one member while scanning an object.
struct Member<'t>(&'t str);

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The last of duplicate members wins, as with `serde_json::Value` and JavaScript.
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.0))? {
            if matches {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a key with the wanted one without keeping it.
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Finds one element while scanning an array.
struct Element(usize);

impl<'de> Visitor<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut index = 0;
        loop {
            if index == self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(value) => found = Some(value),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }
}

/// Collects an object's members with borrowed keys.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = MemberList<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(members)
    }
}

/// A member name, borrowed from the document unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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
        // Escaped member names match their decoded text; the last of duplicates wins.
        let escaped = raw(r#"{"a\u0062":1,"ab":2,"x":[[0],[1,2]]}"#);
        assert_eq!(lookup(escaped, "/ab").unwrap().get(), "2");
        assert_eq!(lookup(escaped, "/x/1/1").unwrap().get(), "2");
        let names: Vec<String> = members(escaped)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key.into_owned())
            .collect();
        assert_eq!(names, ["ab", "ab", "x"]);
        assert!(matches!(members(doc).unwrap()[0].0, Cow::Borrowed("a")));
    }

    #[test]
    fn parsed_pointers_find_what_lookup_finds() {
        let doc = raw(r#"{"a":{"b~c":[1,{"d/e":"x"}]}}"#);
        for text in ["", "/a", "/a/b~0c/1/d~1e", "/a/b~0c/0", "/z"] {
            let pointer = Pointer::parse(text).unwrap();
            assert_eq!(pointer.as_str(), text);
            assert_eq!(
                pointer.lookup(doc).map(RawValue::get),
                lookup(doc, text).map(RawValue::get),
                "{text}"
            );
        }
        assert!(Pointer::parse("a/b")
            .unwrap_err()
            .contains("must start with `/`"));
        assert!(Pointer::parse("/a~2").unwrap_err().contains("`~`"));
    }
}
