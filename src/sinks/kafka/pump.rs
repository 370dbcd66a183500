//! The pump: moves one source's records from its channel into the producer.
//!
//! Records are registered with the source's AckTracker in channel order, then sent. When the
//! producer queue is full (`QueueFull`) the pump waits and retries the same record: that is
//! backpressure, not an error, and it stops the pump from pulling more. A record librdkafka
//! refuses outright (too large, unknown topic) goes to the dead-letter topic with the reason in
//! its headers; so does a record whose delivery failed after it was queued.
//!
//! Shutdown: the pump drains its channel, then returns. If the producer queue stays full
//! (brokers down) until the shutdown deadline, the `abandon` token makes it return at once:
//! the records it still held are not acknowledged, so their positions are not stored and they
//! are read again after a restart.

use std::{sync::Arc, time::Instant};

use rdkafka::{error::KafkaError, producer::BaseRecord, types::RDKafkaErrorCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::producer::{
    error_kind_name, release, DeliveryTicket, FailedDelivery, KafkaProducer, SourceSink,
};
use crate::{
    channel::{Envelope, RecordReceiver},
    record::{DeadLetter, DeliveryOutcome, Record},
    router::{lineage_headers, TimestampCache},
};

/// Records pulled from the channel per batch.
const BATCH: usize = 1024;

/// How long to wait before retrying a record the full producer queue refused.
const QUEUE_FULL_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Runs until the channel is closed and drained (the source has stopped), or until `abandon`
/// is cancelled while the producer queue is full, then returns. Failed deliveries that come
/// back while it runs are sent to the dead-letter topic.
pub async fn run_pump(
    producer: KafkaProducer,
    sink: Arc<SourceSink>,
    mut records: RecordReceiver,
    mut failures: mpsc::UnboundedReceiver<FailedDelivery>,
    abandon: CancellationToken,
) {
    let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH);
    let mut timestamps = TimestampCache::default();
    loop {
        tokio::select! {
            biased;
            // Past the shutdown deadline: a sender still held (a slow webhook request) must
            // not keep the pump, and so the shutdown, waiting.
            _ = abandon.cancelled() => return,
            Some(failed) = failures.recv() => {
                if dead_letter_failed_delivery(&producer, &sink, failed, &mut timestamps, &abandon).await == Sent::Abandoned {
                    return;
                }
            }
            received = records.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                for envelope in batch.drain(..) {
                    let Envelope { record, permit } = envelope;
                    let seq = sink.tracker.register(record.position.clone());
                    if record.marker {
                        sink.acknowledge(seq);
                        continue;
                    }
                    let sent = produce(&producer, &sink, record, seq, &mut timestamps, &abandon).await;
                    drop(permit);
                    if sent == Sent::Abandoned {
                        tracing::warn!(source = %sink.name, "shutdown deadline passed with the producer queue full; unsent records will be read again after restart");
                        return;
                    }
                }
            }
        }
    }
    // Deliveries that fail from here on are logged by the callback and read again after restart.
    while let Ok(failed) = failures.try_recv() {
        if dead_letter_failed_delivery(&producer, &sink, failed, &mut timestamps, &abandon).await
            == Sent::Abandoned
        {
            return;
        }
    }
}

/// What became of a record handed to [`produce`].
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// In the producer queue (or skipped after both topics refused it, loudly).
    Queued,
    /// Not sent: the shutdown deadline passed while the producer queue was full.
    Abandoned,
}

async fn produce(
    producer: &KafkaProducer,
    sink: &Arc<SourceSink>,
    mut record: Record,
    seq: u64,
    timestamps: &mut TimestampCache,
    abandon: &CancellationToken,
) -> Sent {
    loop {
        let topic = if record.dead_letter.is_some() {
            &sink.dead_letter_topic
        } else {
            &sink.topic
        };
        let ticket = Box::new(DeliveryTicket {
            sink: Arc::clone(sink),
            seq,
            enqueued_at: Instant::now(),
            payload_bytes: record.payload.len(),
            dead_letter_kind: record.dead_letter.as_ref().map(|d| d.kind),
            ack: record.ack.take(),
        });
        let headers = lineage_headers(&sink.name, &sink.url, &record, timestamps);
        let mut base: BaseRecord<'_, [u8], [u8], Box<DeliveryTicket>> =
            BaseRecord::with_opaque_to(topic, ticket)
                .payload(record.payload.as_ref())
                .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_ref());
        }
        let mut pending = base;
        let refused = loop {
            match producer.inner.send(pending) {
                Ok(()) => return Sent::Queued,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
                    tokio::select! {
                        _ = abandon.cancelled() => return Sent::Abandoned,
                        _ = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
                    }
                }
                Err((error, back)) => break (error, back.delivery_opaque),
            }
        };
        let (error, mut ticket) = refused;
        let kind = error.rdkafka_error_code().map_or("other", error_kind_name);
        sink.metrics.kafka_error(kind);
        if record.dead_letter.is_some() {
            give_up(sink, ticket, &error);
            return Sent::Queued;
        }
        record.ack = ticket.ack.take();
        tracing::warn!(source = %sink.name, topic = %sink.topic, %error, "producer refused a record; sending it to the dead-letter topic");
        record.dead_letter = Some(DeadLetter {
            kind,
            reason: format!("producing to topic `{}` failed: {error}", sink.topic),
        });
    }
}

/// A dead-letter record that could not be produced either: logged loudly, counted under
/// `tributary_kafka_errors_total{kind="dead_letter_failed"}`, and released so the source's
/// position can move on.
fn give_up(sink: &SourceSink, mut ticket: Box<DeliveryTicket>, error: &KafkaError) {
    tracing::error!(
        source = %sink.name,
        dead_letter_topic = %sink.dead_letter_topic,
        %error,
        "a record could not be produced to its topic nor to the dead-letter topic; it is skipped"
    );
    sink.metrics.kafka_error("dead_letter_failed");
    release(&ticket);
    if let Some(ack) = ticket.ack.take() {
        let _ = ack.send(DeliveryOutcome::Skipped);
    }
}

async fn dead_letter_failed_delivery(
    producer: &KafkaProducer,
    sink: &Arc<SourceSink>,
    failed: FailedDelivery,
    timestamps: &mut TimestampCache,
    abandon: &CancellationToken,
) -> Sent {
    let FailedDelivery {
        ticket,
        key,
        payload,
        event_id,
        event_type,
        error,
    } = failed;
    let mut ticket = ticket;
    if ticket.dead_letter_kind.is_some() {
        give_up(sink, ticket, &error);
        return Sent::Queued;
    }
    let kind = error.rdkafka_error_code().map_or("other", error_kind_name);
    let record = Record {
        key: key.map(Into::into),
        payload: payload.into(),
        event_id: event_id.map(|id| Arc::from(String::from_utf8_lossy(&id).as_ref())),
        event_type: event_type.map(|t| Arc::from(String::from_utf8_lossy(&t).as_ref())),
        ack: ticket.ack.take(),
        page: None,
        marker: false,
        position: None,
        fetched_at: std::time::SystemTime::now(),
        dead_letter: Some(DeadLetter {
            kind,
            reason: format!("delivery to topic `{}` failed: {error}", sink.topic),
        }),
    };
    produce(producer, sink, record, ticket.seq, timestamps, abandon).await
}
