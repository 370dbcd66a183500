//! From WebSocket message to records: JSON parsing, array splitting, the filter, the key, the
//! sequence number (the source's position) and gap detection. Pure logic, no I/O.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::{
    json::{child, members, text_of, MemberList, Pointer},
    record::{DeadLetter, Position, Record},
    sources::PayloadFormat,
};

/// Only frames whose value at `pointer` is one of `values` become records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameFilter {
    /// A JSON pointer (RFC 6901).
    pub pointer: Pointer,
    /// Accepted values, compared with the value's text (a string as is, anything else as JSON).
    pub values: Vec<String>,
}

/// How messages become records.
#[derive(Clone, Debug)]
pub struct FrameRules {
    /// `json` (messages must be JSON; anything else is dead-lettered) or `text`.
    pub format: PayloadFormat,
    /// A JSON array message becomes one record per element.
    pub split_arrays: bool,
    /// Which messages become records.
    pub filter: Option<FrameFilter>,
    /// JSON pointer of the record key.
    pub key: Option<Pointer>,
    /// JSON pointer of the sequence number (an unsigned integer, or a string of digits).
    pub sequence: Option<Pointer>,
    /// JSON pointer of the stream a sequence belongs to (e.g. `/product_id` when each product
    /// has its own sequence); gaps are tracked per stream.
    pub sequence_scope: Option<Pointer>,
}

/// A jump in a sequence: the feed skipped `first..=last`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The stream (the `sequence_scope` value), empty when there is one sequence.
    pub scope: String,
    /// The first missing sequence number.
    pub first: u64,
    /// The last missing sequence number.
    pub last: u64,
    /// Index (in [`Decoded::records`]) of the record that revealed the gap.
    pub record: usize,
}

/// What one message gave.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Records to send, in order.
    pub records: Vec<Record>,
    /// Elements left out by the filter.
    pub filtered: u64,
    /// Sequence gaps found.
    pub gaps: Vec<Gap>,
}

/// Decodes messages of one source, remembering the last sequence number of each stream.
#[derive(Debug)]
pub struct FrameDecoder {
    rules: FrameRules,
    last_sequence: HashMap<String, u64>,
    /// Recent keys, shared by the records that have them (feeds repeat a few keys — products,
    /// channels — so most records take a reference instead of a copy).
    keys: HashMap<Box<str>, Bytes>,
}

/// Keys remembered at most; the cache starts over when it is full.
const KEY_CACHE: usize = 1024;
/// Longer keys are not remembered (a feed of huge keys must not pin memory).
const KEY_CACHE_MAX_BYTES: usize = 128;

impl FrameDecoder {
    /// A decoder that applies `rules`.
    pub fn new(rules: FrameRules) -> Self {
        FrameDecoder {
            rules,
            last_sequence: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// Forgets the sequences seen, e.g. after a resubscribe that starts from a snapshot.
    pub fn reset_sequences(&mut self) {
        self.last_sequence.clear();
    }

    /// Turns one message (its payload bytes) into records.
    pub fn decode(&mut self, message: Bytes, fetched_at: SystemTime) -> Decoded {
        let mut decoded = Decoded::default();
        if self.rules.format == PayloadFormat::Text {
            decoded
                .records
                .push(record(message, None, None, fetched_at));
            return decoded;
        }
        // Borrowed JSON: the message is checked in full, but only the levels a pointer crosses
        // are parsed, and payloads stay slices of the message.
        let raw: &RawValue = match serde_json::from_slice(&message) {
            Ok(raw) => raw,
            Err(error) => {
                let mut record = record(message.clone(), None, None, fetched_at);
                record.dead_letter = Some(DeadLetter::new(
                    "invalid_json",
                    format!("the message is not valid JSON: {error}"),
                ));
                decoded.records.push(record);
                return decoded;
            }
        };
        let elements: Option<Vec<&RawValue>> = (self.rules.split_arrays
            && raw.get().starts_with('['))
        .then(|| serde_json::from_str(raw.get()).ok())
        .flatten();
        match elements {
            Some(elements) => {
                for element in elements {
                    let payload = message.slice_ref(element.get().as_bytes());
                    self.element(Doc::new(element), payload, fetched_at, &mut decoded);
                }
            }
            None => self.element(Doc::new(raw), message.clone(), fetched_at, &mut decoded),
        }
        decoded
    }

    fn element(
        &mut self,
        mut doc: Doc<'_>,
        payload: Bytes,
        fetched_at: SystemTime,
        decoded: &mut Decoded,
    ) {
        if let Some(filter) = &self.rules.filter {
            let accepted = doc
                .pointer(&filter.pointer)
                .is_some_and(|found| filter.values.iter().any(|v| *v == text_of(found)));
            if !accepted {
                decoded.filtered += 1;
                return;
            }
        }
        let key = self
            .rules
            .key
            .as_ref()
            .and_then(|pointer| doc.pointer(pointer))
            .map(|found| text_of(found));
        let key = key.map(|text| self.key_bytes(&text));
        let sequence = self
            .rules
            .sequence
            .as_ref()
            .and_then(|pointer| doc.pointer(pointer))
            .and_then(sequence_number);
        let mut position = None;
        let event_id =
            sequence.map(|sequence| Arc::<str>::from(itoa::Buffer::new().format(sequence)));
        if let (Some(sequence), Some(id)) = (sequence, &event_id) {
            let scope = self
                .rules
                .sequence_scope
                .as_ref()
                .and_then(|pointer| doc.pointer(pointer))
                .map(text_of)
                .unwrap_or_default();
            let last = self.last_sequence.get(scope.as_ref()).copied();
            // A repeated or older number (a replay) neither moves the position back nor is a gap.
            if last.is_none_or(|last| sequence > last) {
                if let Some(last) = last.filter(|last| sequence > last.saturating_add(1)) {
                    decoded.gaps.push(Gap {
                        scope: scope.clone().into_owned(),
                        first: last + 1,
                        last: sequence - 1,
                        record: decoded.records.len(),
                    });
                }
                match self.last_sequence.get_mut(scope.as_ref()) {
                    Some(last) => *last = sequence,
                    None => {
                        self.last_sequence.insert(scope.into_owned(), sequence);
                    }
                }
                position = Some(Position(Arc::clone(id)));
            }
        }
        let mut record = record(payload, key, position, fetched_at);
        record.event_id = event_id;
        decoded.records.push(record);
    }
}

impl FrameDecoder {
    /// The key bytes for `text`, shared with earlier records of the same key.
    fn key_bytes(&mut self, text: &str) -> Bytes {
        if let Some(bytes) = self.keys.get(text) {
            return bytes.clone();
        }
        if self.keys.len() >= KEY_CACHE {
            self.keys.clear();
        }
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        if text.len() <= KEY_CACHE_MAX_BYTES {
            self.keys.insert(text.into(), bytes.clone());
        }
        bytes
    }
}

/// A JSON document read without building it: a pointer lookup (RFC 6901) parses only the
/// objects and arrays it crosses, borrowing everything else; the top level is parsed once.
struct Doc<'a> {
    raw: &'a RawValue,
    /// The top-level members, parsed on the first pointer lookup (keys borrowed).
    top: Option<Option<MemberList<'a>>>,
}

impl<'a> Doc<'a> {
    fn new(raw: &'a RawValue) -> Self {
        Doc { raw, top: None }
    }

    fn pointer(&mut self, pointer: &Pointer) -> Option<&'a RawValue> {
        let mut tokens = pointer.tokens().iter();
        let Some(first) = tokens.next() else {
            return Some(self.raw);
        };
        let raw = self.raw;
        let mut current = if raw.get().starts_with('{') {
            let top = self.top.get_or_insert_with(|| members(raw));
            // The last of duplicate members wins, as in `json::lookup`.
            top.as_ref()?
                .iter()
                .rev()
                .find(|(key, _)| key == first)
                .map(|(_, value)| *value)?
        } else {
            child(raw, first)?
        };
        for token in tokens {
            current = child(current, token)?;
        }
        Some(current)
    }
}

fn record(
    payload: Bytes,
    key: Option<Bytes>,
    position: Option<Position>,
    fetched_at: SystemTime,
) -> Record {
    Record {
        key,
        payload,
        event_id: None,
        event_type: None,
        position,
        fetched_at,
        dead_letter: None,
        ack: None,
        page: None,
        marker: false,
        topic: None,
        event_time: None,
    }
}

/// An unsigned integer, or a string of ASCII digits.
fn sequence_number(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    text.strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .unwrap_or(text)
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    fn rules() -> FrameRules {
        FrameRules {
            format: PayloadFormat::Json,
            split_arrays: false,
            filter: None,
            key: None,
            sequence: None,
            sequence_scope: None,
        }
    }

    fn decode(decoder: &mut FrameDecoder, text: &str) -> Decoded {
        decoder.decode(Bytes::copy_from_slice(text.as_bytes()), SystemTime::now())
    }

    #[test]
    fn invalid_json_is_dead_lettered_with_the_original_bytes() {
        let mut decoder = FrameDecoder::new(rules());
        let decoded = decode(&mut decoder, "{oops");
        assert_eq!(decoded.records.len(), 1);
        let record = &decoded.records[0];
        assert_eq!(record.payload, "{oops");
        assert_eq!(record.dead_letter.as_ref().unwrap().kind, "invalid_json");
    }

    #[test]
    fn text_format_keeps_anything() {
        let mut decoder = FrameDecoder::new(FrameRules {
            format: PayloadFormat::Text,
            ..rules()
        });
        let decoded = decode(&mut decoder, "not json");
        assert!(decoded.records[0].dead_letter.is_none());
    }

    #[test]
    fn arrays_split_filters_and_keys_apply_per_element() {
        let mut decoder = FrameDecoder::new(FrameRules {
            split_arrays: true,
            filter: Some(FrameFilter {
                pointer: p("/type"),
                values: vec!["ticker".into(), "match".into()],
            }),
            key: Some(p("/product_id")),
            ..rules()
        });
        let decoded = decode(
            &mut decoder,
            r#"[{"type":"ticker","product_id":"A"},{"type":"heartbeat"},{"type":"match","product_id":"B"}]"#,
        );
        assert_eq!(decoded.filtered, 1);
        let keys: Vec<&[u8]> = decoded
            .records
            .iter()
            .map(|r| r.key.as_deref().unwrap())
            .collect();
        assert_eq!(keys, [&b"A"[..], b"B"]);
        assert_eq!(
            decoded.records[1].payload, r#"{"type":"match","product_id":"B"}"#,
            "an element's record is its original text"
        );
    }

    #[test]
    fn pointers_cross_objects_and_arrays_and_decode_escapes() {
        let mut decoder = FrameDecoder::new(FrameRules {
            key: Some(p("/data/items/1/a~1b")),
            sequence: Some(p("/meta/seq")),
            ..rules()
        });
        let decoded = decode(
            &mut decoder,
            r#" {"meta":{"seq":"42"},"data":{"items":[{},{"a/b":"caf\u00e9"}]}}"#,
        );
        let record = &decoded.records[0];
        assert_eq!(record.key.as_deref(), Some("café".as_bytes()));
        assert_eq!(record.position.as_ref().unwrap().as_str(), "42");
        let missing = decode(&mut decoder, r#"{"data":{"items":[]}}"#);
        assert_eq!(missing.records[0].key, None);
    }

    #[test]
    fn filter_values_compare_numbers_by_their_text() {
        let mut decoder = FrameDecoder::new(FrameRules {
            filter: Some(FrameFilter {
                pointer: p("/channel"),
                values: vec!["7".into()],
            }),
            ..rules()
        });
        assert_eq!(decode(&mut decoder, r#"{"channel":7}"#).records.len(), 1);
        assert_eq!(decode(&mut decoder, r#"{"channel":8}"#).filtered, 1);
        assert_eq!(decode(&mut decoder, r#"{}"#).filtered, 1);
    }

    #[test]
    fn sequences_set_the_position_and_jumps_are_gaps_per_scope() {
        let mut decoder = FrameDecoder::new(FrameRules {
            sequence: Some(p("/sequence")),
            sequence_scope: Some(p("/product_id")),
            ..rules()
        });
        let mut gaps = Vec::new();
        for (product, sequence) in [
            ("A", 1),
            ("B", 10),
            ("A", 2),
            ("B", 11),
            ("A", 5),
            ("B", 12),
        ] {
            let decoded = decode(
                &mut decoder,
                &format!(r#"{{"product_id":"{product}","sequence":{sequence}}}"#),
            );
            assert_eq!(
                decoded.records[0].position.as_ref().unwrap().as_str(),
                sequence.to_string()
            );
            gaps.extend(decoded.gaps);
        }
        assert_eq!(
            gaps,
            vec![Gap {
                scope: "A".into(),
                first: 3,
                last: 4,
                record: 0
            }]
        );
    }

    #[test]
    fn repeated_or_older_sequences_are_not_gaps() {
        let mut decoder = FrameDecoder::new(FrameRules {
            sequence: Some(p("/seq")),
            ..rules()
        });
        for seq in ["1", "2", "2", "1", "\"3\""] {
            assert!(decode(&mut decoder, &format!(r#"{{"seq":{seq}}}"#))
                .gaps
                .is_empty());
        }
        decoder.reset_sequences();
        assert!(decode(&mut decoder, r#"{"seq":100}"#).gaps.is_empty());
    }
}
