//! Writes jaq's values as compact JSON text, byte for byte as jaq-json's `write::write` does
//! with its default settings, straight into a `Vec<u8>`: jaq-json's writer goes through
//! `dyn io::Write` and a formatting call per token, which cost about as much as reading the
//! event. A property test compares the two writers.

use std::io::Write as _;

use jaq_json::{Num, Val};

/// Appends `value` to `out` as jaq-json writes it: compact, object keys in the object's order,
/// numbers as jaq prints them (integers as digits, decimals as read, floats by `ryu`, `NaN`,
/// `Infinity`), text strings with [`write_text`]'s escapes, byte strings as `b"…"`. Returns
/// true when the text is known to be JSON; false when it may not be (NaN, infinities, byte
/// strings, keys that are not strings, invalid UTF-8, and decimals, which jaq writes as it read
/// them).
pub fn write_val(value: &Val, out: &mut Vec<u8>) -> bool {
    match value {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(Num::Int(int)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*int).as_bytes())
        }
        // Writing to a `Vec` cannot fail.
        Val::Num(number) => {
            drop(write!(out, "{number}"));
            return matches!(number, Num::BigInt(_))
                || matches!(number, Num::Float(float) if float.is_finite());
        }
        Val::TStr(text) => return write_text(text, out),
        Val::BStr(bytes) => {
            out.extend_from_slice(b"b\"");
            for &byte in bytes.iter() {
                match escape(byte) {
                    Some(escape) => out.extend_from_slice(escape),
                    None if matches!(byte, 0x00..=0x1f | 0x7f..=0xff) => {
                        drop(write!(out, "\\x{byte:02x}"))
                    }
                    None => out.push(byte),
                }
            }
            out.push(b'"');
            return false;
        }
        Val::Arr(items) => {
            let mut json = true;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json &= write_val(item, out);
            }
            out.push(b']');
            return json;
        }
        Val::Obj(members) => {
            let mut json = true;
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json &= matches!(key, Val::TStr(_)) & write_val(key, out);
                out.push(b':');
                json &= write_val(item, out);
            }
            out.push(b'}');
            return json;
        }
    }
    true
}

/// The short escape jaq-json writes for `byte`, if it has one.
fn escape(byte: u8) -> Option<&'static [u8]> {
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x0c => b"\\f",
        b'\t' => b"\\t",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        _ => return None,
    })
}

/// Appends `text` as a JSON string as jaq-json writes it: `"` and `\` escaped, `\b \f \t \n
/// \r` for those controls, `\u00xx` (lower-case hex) for the other controls and DEL, every other
/// byte as it is (invalid UTF-8 included, as jaq does). Returns true when `text` is UTF-8.
pub fn write_text(text: &[u8], out: &mut Vec<u8>) -> bool {
    out.push(b'"');
    // Printable ASCII without quotes or backslashes, the common case, is copied at once.
    if text
        .iter()
        .all(|&byte| matches!(byte, 0x20..=0x7e) && byte != b'"' && byte != b'\\')
    {
        out.extend_from_slice(text);
        out.push(b'"');
        return true;
    }
    let mut start = 0;
    for (i, &byte) in text.iter().enumerate() {
        if !matches!(byte, 0x00..=0x1f | b'"' | b'\\' | 0x7f) {
            continue;
        }
        out.extend_from_slice(&text[start..i]);
        match escape(byte) {
            Some(escape) => out.extend_from_slice(escape),
            None => drop(write!(out, "\\u{byte:04x}")),
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
    std::str::from_utf8(text).is_ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn jaq_json(value: &Val) -> Vec<u8> {
        let mut out = Vec::new();
        jaq_json::write::write(&mut out, &Default::default(), 0, value).unwrap();
        out
    }

    fn ours(value: &Val) -> Vec<u8> {
        let mut out = Vec::new();
        let json = write_val(value, &mut out);
        // What it calls JSON is JSON.
        assert!(
            !json || serde_json::from_slice::<serde_json::Value>(&out).is_ok(),
            "{}",
            String::from_utf8_lossy(&out)
        );
        out
    }

    #[test]
    fn special_values_are_written_as_jaq_writes_them() {
        let values = jaq_json::read::parse_many(
            br#"NaN Infinity -Infinity 1.50 -0 1e400 123456789012345678901234567890 "\u0000\u007f\u001f\b" "a\u007fb" "plain" "q\"" {"a":[1,{"b":null}]} b"\x00\xff\"a""#,
        )
        .map(Result::unwrap)
        .chain([
            Val::Num(Num::Float(0.1 + 0.2)),
            Val::Num(Num::Float(1e300 * 10.0)),
            Val::Num(Num::Float(-0.0)),
            Val::utf8_str(vec![b'a', 0xff, b'"']),
            Val::obj([(Val::from(1isize), Val::Null)].into_iter().collect()),
        ]);
        for value in values {
            assert_eq!(ours(&value), jaq_json(&value), "{value}");
        }
    }

    proptest! {
        #[test]
        fn any_json_is_written_as_jaq_writes_it(value in any_json()) {
            let value = jaq_json::read::parse_single(value.to_string().as_bytes()).unwrap();
            prop_assert_eq!(ours(&value), jaq_json(&value));
        }
    }

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
            "[a-z \"\\\\\u{7f}\u{1}\n\u{8}é]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..5)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }
}
