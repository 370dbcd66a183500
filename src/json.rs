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

/// The deepest nesting of arrays and objects a feed's JSON may have: 127 levels.
///
/// serde_json's default recursion limit is 128: it refuses the 128th nested array or object.
/// Using the same bound means every value admitted here is one serde_json parses too, and
/// that jaq's reader and writer, which recurse once per level without a limit of their own,
/// never go deeper than this (a few hundred kilobytes of stack at most, far below the 2 MiB
/// of the threads the record stage runs on).
pub const MAX_NESTING: usize = 127;

/// JSON nested deeper than a limit (see [`check_nesting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooDeep {
    /// The limit that was passed, in levels of arrays and objects.
    pub limit: usize,
    /// Byte offset of the `[` or `{` that went past it.
    pub offset: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "arrays and objects are nested deeper than the limit of {} levels (at byte {})",
            self.limit, self.offset
        )
    }
}

impl std::error::Error for TooDeep {}

/// Checks that `text` nests arrays and objects at most `limit` levels deep, without parsing
/// it: one pass over the bytes that counts `[`, `{`, `]` and `}` outside strings (a `\"`
/// inside a string does not end it). It does not check that `text` is JSON: a parser still
/// must, and unbalanced brackets only make the count err on the safe side.
///
/// # Errors
/// [`TooDeep`], with the offset of the first bracket past `limit`.
pub fn check_nesting(text: &[u8], limit: usize) -> Result<(), TooDeep> {
    // Most events hold fewer brackets than the limit, strings included: counting them with
    // memchr costs a few percent of serde_json's own check, where the scan below costs about
    // as much as that check (measured on the recorded Wikimedia events).
    if memchr::memchr2_iter(b'[', b'{', text)
        .take(limit + 1)
        .count()
        <= limit
    {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => {
                // Jump from quote or backslash to the next one: strings are most of a feed's
                // bytes, and memchr crosses them many bytes at a time.
                at += 1;
                loop {
                    let Some(found) = text
                        .get(at..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        return Ok(());
                    };
                    at += found;
                    if text[at] == b'\\' {
                        at += 2;
                    } else {
                        break;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(TooDeep { limit, offset: at });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    Ok(())
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
    fn nesting_is_counted_outside_strings_only() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(check_nesting(nested(127).as_bytes(), MAX_NESTING), Ok(()));
        assert_eq!(
            check_nesting(nested(128).as_bytes(), MAX_NESTING),
            Err(TooDeep {
                limit: 127,
                offset: 127
            })
        );
        // serde_json agrees on the bound: it parses 127 levels and refuses 128.
        assert!(serde_json::from_str::<serde_json::Value>(&nested(127)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(128)).is_err());
        // Brackets in strings do not count, escaped quotes do not end a string, and levels
        // closed before others open do not add up.
        let text = r#"{"a":"[[[{{{","b":"\"[[[\\","c":[[1],[2],{"d":[3]}]}"#;
        assert_eq!(check_nesting(text.as_bytes(), 4), Ok(()));
        assert!(check_nesting(text.as_bytes(), 3).is_err());
        let mixed = format!("{}{}", r#"{"x":"#.repeat(200), "}".repeat(200));
        let error = check_nesting(mixed.as_bytes(), MAX_NESTING).unwrap_err();
        assert!(error.to_string().contains("127 levels"), "{error}");
        // Truncated input (an open string, a trailing backslash) ends the scan, never panics.
        for text in ["\"", "[\"\\", "[\"abc\\\\", "", "]]]]"] {
            assert_eq!(check_nesting(text.as_bytes(), 1), Ok(()), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn nesting_matches_serde_json_on_its_own_output(value in json_value()) {
            let text = serde_json::to_string(&value).unwrap();
            proptest::prop_assert_eq!(
                check_nesting(text.as_bytes(), MAX_NESTING).is_ok(),
                depth(&value) <= MAX_NESTING
            );
            let deepest = depth(&value);
            proptest::prop_assert!(check_nesting(text.as_bytes(), deepest).is_ok());
            if deepest > 0 {
                proptest::prop_assert!(check_nesting(text.as_bytes(), deepest - 1).is_err());
            }
        }

        #[test]
        fn any_bytes_are_scanned_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = check_nesting(&bytes, 4);
        }
    }

    /// Levels of arrays and objects in `value` (0 for a scalar).
    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(members) => {
                1 + members.values().map(depth).max().unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// JSON values with strings full of brackets, quotes and backslashes.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            "[\\[\\]{}\"\\\\a-z]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(8, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[\\[{\"a-z]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
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
