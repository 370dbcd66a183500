//! From one execution result (a `next` message's payload) to records: the records pointer,
//! each record's key and position, and GraphQL `errors` to the dead-letter topic. Pure logic.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::{
    json::{child, elements, is_null, text_of, Pointer},
    record::{DeadLetter, Position, Record},
};

/// Where the records, keys and positions are in each execution result.
#[derive(Clone, Debug)]
pub struct RecordRules {
    /// JSON pointer into the execution result: an object (one record) or an array (one record
    /// per element).
    pub records: Pointer,
    /// JSON pointer into each record: its Kafka key.
    pub key: Option<Pointer>,
    /// JSON pointer into each record: its position (the value the subscription resumes after).
    pub position: Option<Pointer>,
}

/// The records of one execution result `payload`, a slice of `message` (the payloads stay
/// slices of it). A result with `errors` gives a dead-letter record holding them (kind
/// `graphql_errors`), next to whatever data it has; a result with neither errors nor a value
/// at `records` gives a dead-letter record of the whole message (`records_not_found`).
pub fn extract(
    rules: &RecordRules,
    message: &Bytes,
    payload: &RawValue,
    fetched_at: SystemTime,
) -> Vec<Record> {
    let mut out = Vec::new();
    let errors = child(payload, "errors").filter(|errors| !is_null(errors));
    if let Some(errors) = errors {
        let mut record = Record::new(message.slice_ref(errors.get().as_bytes()), fetched_at);
        record.dead_letter = Some(DeadLetter::new(
            "graphql_errors",
            "the subscription's result carried GraphQL errors".to_owned(),
        ));
        out.push(record);
    }
    let found = rules
        .records
        .lookup(payload)
        .filter(|found| !is_null(found));
    let values = match found {
        Some(found) if found.get().starts_with('[') => elements(found).unwrap_or_default(),
        Some(found) => vec![found],
        None => {
            if errors.is_none() {
                let mut record = Record::new(message.clone(), fetched_at);
                record.dead_letter = Some(DeadLetter::new(
                    "records_not_found",
                    format!(
                        "the subscription's result has no records at `{}`",
                        rules.records.as_str()
                    ),
                ));
                out.push(record);
            }
            return out;
        }
    };
    for value in values {
        let mut record = Record::new(message.slice_ref(value.get().as_bytes()), fetched_at);
        if let Some(key) = rules
            .key
            .as_ref()
            .and_then(|key| key.lookup(value))
            .filter(|key| !is_null(key))
        {
            let key = text_of(key);
            record.key = Some(Bytes::copy_from_slice(key.as_bytes()));
            record.event_id = Some(Arc::from(key.as_ref()));
        }
        if let Some(position) = rules
            .position
            .as_ref()
            .and_then(|position| position.lookup(value))
            .filter(|position| !is_null(position))
        {
            // Stored as JSON text, so that it goes back into the variables as the same type.
            record.position = Some(Position(Arc::from(position.get())));
            if record.event_id.is_none() {
                record.event_id = Some(Arc::from(text_of(position).as_ref()));
            }
        }
        out.push(record);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RecordRules {
        RecordRules {
            records: Pointer::parse("/data/events").unwrap(),
            key: Some(Pointer::parse("/id").unwrap()),
            position: Some(Pointer::parse("/seq").unwrap()),
        }
    }

    fn run(text: &str) -> Vec<Record> {
        let message = Bytes::copy_from_slice(text.as_bytes());
        let envelope: &RawValue = serde_json::from_slice(&message).unwrap();
        let payload = child(envelope, "payload").unwrap();
        extract(&rules(), &message, payload, SystemTime::now())
    }

    #[test]
    fn an_object_is_one_record_with_its_key_and_position() {
        let records =
            run(r#"{"id":"1","type":"next","payload":{"data":{"events":{"seq":7,"id":"evt-7"}}}}"#);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].payload, r#"{"seq":7,"id":"evt-7"}"#);
        assert_eq!(records[0].key.as_deref(), Some(&b"evt-7"[..]));
        assert_eq!(records[0].event_id.as_deref(), Some("evt-7"));
        assert_eq!(records[0].position.as_ref().unwrap().as_str(), "7");
    }

    #[test]
    fn an_array_is_a_record_per_element_and_string_positions_keep_their_quotes() {
        let records = run(
            r#"{"type":"next","payload":{"data":{"events":[{"seq":"a1"},{"seq":"a2","id":null}]}}}"#,
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].position.as_ref().unwrap().as_str(), "\"a2\"");
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].event_id.as_deref(), Some("a2"));
    }

    #[test]
    fn errors_are_dead_lettered_beside_the_partial_data() {
        let records = run(
            r#"{"type":"next","payload":{"errors":[{"message":"boom"}],"data":{"events":{"seq":1}}}}"#,
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].payload, r#"[{"message":"boom"}]"#);
        assert_eq!(
            records[0].dead_letter.as_ref().unwrap().kind,
            "graphql_errors"
        );
        assert!(records[1].dead_letter.is_none());
        let only_errors =
            run(r#"{"type":"next","payload":{"errors":[{"message":"x"}],"data":null}}"#);
        assert_eq!(only_errors.len(), 1);
        let nothing = run(r#"{"type":"next","payload":{"data":{"other":1}}}"#);
        assert_eq!(
            nothing[0].dead_letter.as_ref().unwrap().kind,
            "records_not_found"
        );
    }
}
