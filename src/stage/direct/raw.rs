//! The event's JSON text as the direct path reads it: an object's members without parsing their
//! values, and whether jaq would write a value exactly as the event writes it.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Bail;

/// Copies `text` (valid JSON) to `out` when jaq would write its value as exactly that text.
///
/// # Errors
/// [`Bail`]: jaq writes it otherwise (white space, a string escape jaq writes differently or a
/// DEL written raw, `-0`, a key twice in one object); nothing was written then.
pub(super) fn canonical(text: &str, out: &mut Vec<u8>) -> Result<(), Bail> {
    let bytes = text.as_bytes();
    // The keys of each open object, or `None` for an array.
    let mut open: Vec<Option<Vec<&[u8]>>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i + 1)?;
                if expect_key {
                    let Some(Some(keys)) = open.last_mut() else {
                        return Err(Bail);
                    };
                    keys.push(&bytes[i..end]);
                    expect_key = false;
                }
                i = end;
            }
            b'{' => {
                open.push(Some(Vec::new()));
                expect_key = true;
                i += 1;
            }
            b'[' => {
                open.push(None);
                i += 1;
            }
            b'}' | b']' => {
                // Canonical keys are equal exactly when their texts are.
                if let Some(Some(mut keys)) = open.pop() {
                    if keys.len() > 1 {
                        keys.sort_unstable();
                        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
                            return Err(Bail);
                        }
                    }
                }
                i += 1;
            }
            b',' => {
                expect_key = matches!(open.last(), Some(Some(_)));
                i += 1;
            }
            b':' => i += 1,
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |len| i + len);
                // jaq reads `-0` as the integer 0.
                if &bytes[i..end] == b"-0" {
                    return Err(Bail);
                }
                i = end;
            }
            b't' | b'n' => i += 4,
            b'f' => i += 5,
            // White space, which jaq does not write.
            _ => return Err(Bail),
        }
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// The index after the closing quote of the string whose text starts at `start`, when jaq
/// writes the string as it is written here.
fn string_end(bytes: &[u8], mut i: usize) -> Result<usize, Bail> {
    loop {
        let at = i + memchr::memchr3(b'"', b'\\', 0x7f, &bytes[i..]).ok_or(Bail)?;
        match bytes[at] {
            b'"' => return Ok(at + 1),
            b'\\' => {
                i = at + 2;
                match bytes.get(at + 1) {
                    Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        let hex = bytes.get(at + 2..at + 6).ok_or(Bail)?;
                        let lower = hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                        let code = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                            .ok_or(Bail)?;
                        let jaq_escapes = matches!(code, 0x00..=0x1f | 0x7f)
                            && !matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d);
                        if !(lower && jaq_escapes) {
                            return Err(Bail);
                        }
                        i = at + 6;
                    }
                    _ => return Err(Bail),
                }
            }
            // DEL, which jaq escapes.
            _ => return Err(Bail),
        }
    }
}

/// An object's members as written: keys (borrowed unless they hold escapes) and value texts.
pub(super) struct Members<'e>(pub(super) Vec<(Cow<'e, str>, &'e RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// A key, borrowed from the text unless it holds escapes.
struct Key<'e>(Cow<'e, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
