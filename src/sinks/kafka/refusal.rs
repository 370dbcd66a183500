//! What follows a refusal: a record fault turns the record into a dead-letter record (a stub
//! when it is too large), a batch fault sends it again alone, a pipeline fault stops the
//! source (see `fault.rs` for how each is judged).
//!
//! **Order.** A record sent again alone reaches its partition after records the source
//! produced later to the same partition: a batch fault reorders the batch-mates of the refused
//! record, and only them. Every other record keeps the order of its partition (the idempotent
//! producer keeps it across librdkafka's own retries).

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

use super::{
    fault::{Evidence, FaultClass},
    producer::{FailedDelivery, SourceSink},
    pump::{Halt, Pump},
};
use crate::record::{DeadLetter, OriginalRecord, Record};

/// Bytes of the original value a dead-letter stub keeps.
const STUB_BYTES: usize = 4 * 1024;

impl Pump {
    /// Takes back a record whose delivery failed, judges the refusal by what its delivery
    /// report can say about it (a record batched with others, or sent alone), and sends it
    /// again: alone (a batch fault, with the headers and timestamp it had), or to the
    /// dead-letter topic (a record fault). The record keeps its place in the acknowledgement
    /// window and its share of the budget.
    ///
    /// # Errors
    /// [`Halt`]: a pipeline fault (the source stops), or the shutdown deadline passed.
    pub(super) async fn retry(&mut self, failed: Box<FailedDelivery>) -> Result<(), Halt> {
        if self.txn.is_some() {
            return self.refused_in_transaction(failed);
        }
        let FailedDelivery {
            ticket,
            topic,
            key,
            payload,
            headers,
            event_id,
            event_type,
            dead_letter,
            error,
        } = *failed;
        let evidence = if ticket.alone {
            Evidence::Alone
        } else {
            Evidence::Batched
        };
        let class = FaultClass::judge(&error, evidence);
        let text = |bytes: Vec<u8>| Arc::from(String::from_utf8_lossy(&bytes).as_ref());
        let ticket = *ticket;
        let mut record = Record {
            topic: ticket.topic,
            event_time: ticket.timestamp.filter(|_| dead_letter.is_none()),
            key: key.map(Into::into),
            payload: payload.into(),
            event_id: event_id.map(text),
            event_type: event_type.map(text),
            ack: ticket.ack,
            page: None,
            marker: false,
            position: None,
            fetched_at: SystemTime::now(),
            dead_letter,
        };
        let (seq, queued) = (ticket.seq, ticket.queued);
        if class == FaultClass::Batch {
            tracing::warn!(source = %self.sink.name, topic, %error, "Kafka refused a batch this record was part of; sending it again alone");
            let headers = match headers {
                Some(headers) => headers,
                None => self.headers(&record),
            };
            return self.send(record, headers, seq, queued, true).await;
        }
        if !dead_letter_after_refusal(&self.sink, &mut record, &topic, &error, class) {
            return Err(Halt::Faulted);
        }
        let headers = self.headers(&record);
        self.send(record, headers, seq, queued, false).await
    }
}

/// Decides what follows once `topic` refused `record` with `error`, judged as `class`. A
/// record fault turns the record into a dead-letter record (a stub when it is too large) and
/// returns true: send it again. A pipeline fault, or a dead-letter record the dead-letter topic
/// refused for any reason but its size, stops the source and returns false: the record is not
/// acknowledged, so no position moves past it.
pub(super) fn dead_letter_after_refusal(
    sink: &SourceSink,
    record: &mut Record,
    topic: &str,
    error: &KafkaError,
    class: FaultClass,
) -> bool {
    let unknown_topic = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    // A topic a template chose from the record is the record's own doing, not the pipeline's:
    // the record goes to the dead-letter topic with the reason, and the others flow on.
    if unknown_topic && record.dead_letter.is_none() && record.topic.is_some() {
        tracing::warn!(source = %sink.name, topic, "a record was routed to a topic that does not exist; sending it to the dead-letter topic");
        record.topic = None;
        record.dead_letter = Some(DeadLetter::new(
            "unknown_topic",
            format!(
                "the topic template routed this record to topic `{topic}`, which does not exist; \
                 create it (Tributary never creates topics): {error}"
            ),
        ));
        return true;
    }
    if class != FaultClass::Record {
        sink.pipeline_fault(topic, error);
        return false;
    }
    let too_large = error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge);
    let dead_letter = match record.dead_letter.take() {
        None => {
            tracing::warn!(source = %sink.name, topic, %error, "Kafka refused a record; sending it to the dead-letter topic");
            DeadLetter::new(
                super::error_kind(error),
                format!("producing to topic `{topic}` failed: {error}"),
            )
        }
        // A dead-letter record too large for the dead-letter topic: send its stub instead.
        Some(dead_letter) if too_large && dead_letter.original.is_none() => dead_letter,
        Some(dead_letter) => {
            record.dead_letter = Some(dead_letter);
            sink.pipeline_fault(topic, error);
            return false;
        }
    };
    record.dead_letter = Some(if too_large {
        stub(record, dead_letter)
    } else {
        dead_letter
    });
    true
}

/// Cuts `record`'s value down to its first [`STUB_BYTES`] bytes, and records the original's
/// size and SHA-256 in its dead-letter reason (`tributary.original_*` headers), so that a record
/// too large for Kafka still leaves a trace an operator can match with the feed.
fn stub(record: &mut Record, mut dead_letter: DeadLetter) -> DeadLetter {
    use sha2::Digest as _;
    let size = record.payload.len();
    dead_letter.original = Some(OriginalRecord {
        size: size.to_string(),
        sha256: hex::encode(sha2::Sha256::digest(&record.payload)),
    });
    // A copy: the stub must not keep the large original buffer alive until its delivery.
    record.payload = Bytes::copy_from_slice(&record.payload[..size.min(STUB_BYTES)]);
    dead_letter
}
