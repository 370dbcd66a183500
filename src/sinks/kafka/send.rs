//! Handing one record to librdkafka: its lineage headers, its share of the queue budget, its
//! delivery ticket, and the wait while the producer queue is full.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use rdkafka::{
    error::KafkaError,
    message::{Headers as _, OwnedHeaders},
    producer::BaseRecord,
    types::RDKafkaErrorCode,
};

use super::{
    fault::{Evidence, FaultClass},
    producer::DeliveryTicket,
    pump::{Halt, Pump},
    queue_budget::{record_cost, QueuedBytes},
    refusal::dead_letter_after_refusal,
};
use crate::{record::Record, router::lineage_headers};

/// How long to wait before retrying a record the full producer queue refused.
const QUEUE_FULL_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// A record librdkafka did not take.
pub(super) enum NotSent {
    /// The shutdown deadline passed while the producer queue was full.
    Abandoned,
    /// The producer refused it at once; its ticket comes back with the error.
    Refused(KafkaError, Box<DeliveryTicket>),
}

/// The memory `record` takes in the producer queue with `headers` (bytes; see
/// [`record_cost`]).
pub(super) fn cost(record: &Record, headers: &OwnedHeaders) -> usize {
    let header_bytes = (0..headers.count())
        .map(|i| {
            let header = headers.get(i);
            header.key.len() + header.value.map_or(0, <[u8]>::len)
        })
        .sum();
    record_cost(
        record.payload.len(),
        record.key.as_ref().map_or(0, Bytes::len),
        header_bytes,
        headers.count(),
    )
}

impl Pump {
    /// The lineage headers of `record` (and its dead-letter reason, if it has one).
    pub(super) fn headers(&mut self, record: &Record) -> OwnedHeaders {
        lineage_headers(
            &self.sink.name,
            &self.sink.url,
            record,
            &mut self.timestamps,
            self.sink.stage.headers(),
        )
    }

    /// Sends `record` (registered as `seq`, holding `queued` of the budget) with `headers`
    /// to its topic, or, when it is a dead-letter record, to the dead-letter topic; `alone`
    /// sends it through the single-record producer. A refusal at send time concerns the record
    /// alone: a record fault dead-letters it (a stub when it is too large) and sends that; a
    /// pipeline fault stops the source.
    ///
    /// # Errors
    /// [`Halt`]: the shutdown deadline passed with the queue full, or a pipeline fault.
    pub(super) async fn send(
        &mut self,
        mut record: Record,
        mut headers: OwnedHeaders,
        seq: u64,
        mut queued: QueuedBytes,
        alone: bool,
    ) -> Result<(), Halt> {
        loop {
            let topic: &str = match (&record.dead_letter, &record.topic) {
                (Some(_), _) => &self.sink.dead_letter_topic,
                (None, Some(routed)) => routed,
                (None, None) => &self.sink.topic,
            };
            let ticket_timestamp = record.event_time.filter(|_| record.dead_letter.is_none());
            let ticket = Box::new(DeliveryTicket {
                sink: Arc::clone(&self.sink),
                seq,
                enqueued_at: Instant::now(),
                payload_bytes: record.payload.len(),
                dead_letter_kind: record.dead_letter.as_ref().map(|d| d.kind),
                ack: record.ack.take(),
                topic: record.topic.clone(),
                timestamp: ticket_timestamp,
                alone,
                queued,
                position_record: false,
            });
            let mut base: BaseRecord<'_, [u8], [u8], Box<DeliveryTicket>> =
                BaseRecord::with_opaque_to(topic, ticket)
                    .payload(record.payload.as_ref())
                    .headers(headers);
            if let Some(key) = &record.key {
                base = base.key(key.as_ref());
            }
            if let Some(millis) = ticket_timestamp {
                base = base.timestamp(millis);
            }
            let (error, ticket) = match self.submit(base, alone).await {
                Ok(()) => return Ok(()),
                Err(NotSent::Abandoned) => return Err(Halt::Abandoned),
                Err(NotSent::Refused(error, ticket)) => (error, ticket),
            };
            if let Some(halt) = self.refused_at_send(&error) {
                return Err(halt);
            }
            let topic = topic.to_owned();
            let DeliveryTicket {
                ack, queued: back, ..
            } = *ticket;
            record.ack = ack;
            queued = back;
            self.sink.metrics.kafka_error(super::error_kind(&error));
            let class = FaultClass::judge(&error, Evidence::Send);
            if !dead_letter_after_refusal(&self.sink, &mut record, &topic, &error, class) {
                return Err(Halt::Faulted);
            }
            headers = self.headers(&record);
        }
    }

    /// Hands `base` to the main producer, or to the single-record one when `alone`, waiting
    /// while the producer queue is full (that is backpressure, not an error).
    ///
    /// # Errors
    /// [`NotSent`]: the shutdown deadline passed, or the producer refused the record.
    pub(super) async fn submit(
        &self,
        base: BaseRecord<'_, [u8], [u8], Box<DeliveryTicket>>,
        alone: bool,
    ) -> Result<(), NotSent> {
        let solo;
        let producer = if alone {
            solo = match self.producer.solo() {
                Ok(producer) => producer,
                Err(error) => return Err(NotSent::Refused(error, base.delivery_opaque)),
            };
            &solo
        } else {
            &self.producer.inner
        };
        let mut pending = base;
        loop {
            match producer.send(pending) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(NotSent::Abandoned),
                        _ = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
                    }
                }
                Err((error, back)) => return Err(NotSent::Refused(error, back.delivery_opaque)),
            }
        }
    }
}
