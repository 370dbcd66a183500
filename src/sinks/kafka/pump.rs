//! The pump: moves one source's records from its channel into the producer.
//!
//! Records are registered with the source's AckTracker in channel order, then sent. When the
//! producer queue is full (`QueueFull`) the pump waits and retries the same record: that is
//! backpressure, not an error, and it stops the pump from pulling more.
//!
//! A refusal, at send or in a delivery report, is judged by its fault class (`fault.rs`): a
//! record fault sends the record to the dead-letter topic with the reason in its headers (a
//! stub of its first bytes, size and SHA-256 when it is too large for Kafka); a pipeline fault
//! stops the source: the pump returns without acknowledging the record, its channel closes,
//! the source stops, `/readyz` names the cause, and the stored position stays before the record.
//!
//! Shutdown: the pump drains its channel, then returns. If the producer queue stays full
//! (brokers down) until the shutdown deadline, the `abandon` token makes it return at once:
//! the records it still held are not acknowledged, so their positions are not stored and they
//! are read again after a restart.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use rdkafka::{
    error::KafkaError, message::Headers as _, producer::BaseRecord, types::RDKafkaErrorCode,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    fault::FaultClass,
    producer::{error_kind_name, DeliveryTicket, FailedDelivery, KafkaProducer, SourceSink},
    queue_budget::record_cost,
};
use crate::{
    channel::{Envelope, RecordReceiver},
    record::{DeadLetter, DeliveryOutcome, OriginalRecord, Record},
    router::{lineage_headers, TimestampCache},
    stage::Stop,
};

/// Records pulled from the channel per batch.
const BATCH: usize = 1024;

/// How long to wait before retrying a record the full producer queue refused.
const QUEUE_FULL_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Runs until the channel is closed and drained (the source has stopped), until `abandon`
/// is cancelled while the producer queue is full, or until a pipeline fault stops the source,
/// then returns. Failed deliveries that come back while it runs are judged by their fault
/// class. Meanwhile a task asks the brokers whether the source's topics exist, so that a
/// missing one stops the source within seconds instead of when its first record times out.
pub async fn run_pump(
    producer: KafkaProducer,
    sink: Arc<SourceSink>,
    mut records: RecordReceiver,
    mut failures: mpsc::UnboundedReceiver<FailedDelivery>,
    abandon: CancellationToken,
) {
    // Cancelled at the shutdown deadline (with `abandon`), on a missing topic, or when the pump
    // returns (which ends the topic check).
    let stop = abandon.child_token();
    let _stop_on_return = stop.clone().drop_guard();
    tokio::spawn({
        let (producer, sink, stop) = (producer.clone(), Arc::clone(&sink), stop.clone());
        async move {
            if !topics_exist(&producer, &sink, &stop).await {
                stop.cancel();
            }
        }
    });
    let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH);
    let mut timestamps = TimestampCache::default();
    let mut staged: Vec<Record> = Vec::with_capacity(4);
    loop {
        tokio::select! {
            biased;
            // Past the shutdown deadline: a sender still held (a slow webhook request) must
            // not keep the pump, and so the shutdown, waiting.
            _ = stop.cancelled() => return,
            Some(failed) = failures.recv() => {
                if dead_letter_failed_delivery(&producer, &sink, failed, &mut timestamps, &stop).await != Sent::Queued {
                    return;
                }
            }
            received = records.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                // The record stage: one event becomes zero or more records, the last of which
                // carries the event's position (see `Stage::apply`). A transform or a schema
                // runs off the runtime, over every core (`shape.rs`); the rest inline.
                if sink.stage.is_costly() {
                    let (events, permits): (Vec<Record>, Vec<_>) = batch
                        .drain(..)
                        .map(|Envelope { record, permit }| (record, permit))
                        .unzip();
                    let shaped = super::shape::in_parallel(&sink.stage, &sink.metrics, events).await;
                    for (shaped, permit) in shaped.into_iter().zip(permits) {
                        match shaped {
                            Ok(records) => staged = records,
                            Err(reason) => return stage_stops(&sink, reason),
                        }
                        if !forward(&producer, &sink, &mut staged, &mut timestamps, &stop, &abandon).await {
                            return;
                        }
                        drop(permit);
                    }
                    continue;
                }
                for envelope in batch.drain(..) {
                    let Envelope { record, permit } = envelope;
                    if let Err(reason) = sink.stage.apply(record, &mut staged, &sink.metrics) {
                        return stage_stops(&sink, reason);
                    }
                    if !forward(&producer, &sink, &mut staged, &mut timestamps, &stop, &abandon).await {
                        return;
                    }
                    drop(permit);
                }
            }
        }
    }
    // Deliveries that fail from here on are logged by the callback and read again after restart.
    while let Ok(failed) = failures.try_recv() {
        if dead_letter_failed_delivery(&producer, &sink, failed, &mut timestamps, &stop).await
            != Sent::Queued
        {
            return;
        }
    }
}

/// The stage stopped the source (`on_drift = "fail"`, or the stage itself failed): the event
/// is not acknowledged, so the position stays before it.
fn stage_stops(sink: &SourceSink, reason: Stop) {
    tracing::error!(source = %sink.name, reason = %reason.0, "the record stage stops the source");
    sink.health
        .set(&sink.name, crate::health::SourceState::Failed(reason.0));
}

/// Registers the records one event became (`staged`, emptied) with the acknowledgement
/// tracker, in order, and sends them; a marker is acknowledged at once. False when the pump
/// must return: the shutdown deadline passed with the producer queue full, or a pipeline
/// fault stopped the source (dropping the channel stops it; what it held is read again after
/// the restart).
async fn forward(
    producer: &KafkaProducer,
    sink: &Arc<SourceSink>,
    staged: &mut Vec<Record>,
    timestamps: &mut TimestampCache,
    stop: &CancellationToken,
    abandon: &CancellationToken,
) -> bool {
    for mut record in staged.drain(..) {
        let seq = sink.acks.register(record.position.clone());
        if record.marker {
            sink.acknowledge(seq);
            if let Some(ack) = record.ack.take() {
                let _ = ack.send(DeliveryOutcome::Filtered);
            }
            continue;
        }
        match produce(producer, sink, record, seq, timestamps, stop).await {
            Sent::Queued => {}
            Sent::Abandoned => {
                if abandon.is_cancelled() {
                    tracing::warn!(source = %sink.name, "shutdown deadline passed with the producer queue full; unsent records will be read again after restart");
                }
                return false;
            }
            Sent::Faulted => return false,
        }
    }
    true
}

/// How long one metadata request of [`topics_exist`] waits for the brokers.
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long [`topics_exist`] waits before asking again.
const METADATA_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a topic must stay unknown before it counts as missing: a topic created a moment
/// ago may not have reached every broker's metadata yet (librdkafka waits for the same reason,
/// `topic.metadata.propagation.max.ms`).
const METADATA_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the brokers whether the source's topic and dead-letter topic exist, and waits while no
/// broker answers. A topic still unknown after [`METADATA_PROPAGATION`] is a pipeline fault,
/// reported then rather than when its first record times out. False when the source was
/// stopped (a missing topic) or `stop` fired first.
async fn topics_exist(
    producer: &KafkaProducer,
    sink: &SourceSink,
    stop: &CancellationToken,
) -> bool {
    // A templated topic names no topic until a record fills it: only the dead-letter topic is
    // known, and a record routed to a missing topic is dead-lettered (`unknown_topic`).
    let fixed = (!sink.stage.routes_topic()).then_some(&sink.topic);
    for topic in fixed.into_iter().chain([&sink.dead_letter_topic]) {
        let mut unknown_since = None;
        loop {
            match producer.topic_exists(topic, METADATA_TIMEOUT).await {
                Ok(true) => break,
                Ok(false) => {
                    let since = *unknown_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= METADATA_PROPAGATION {
                        let missing = KafkaError::MessageProduction(
                            RDKafkaErrorCode::UnknownTopicOrPartition,
                        );
                        sink.pipeline_fault(topic, &missing);
                        return false;
                    }
                }
                Err(error) => {
                    tracing::debug!(source = %sink.name, topic, %error, "no metadata yet; asking again");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(METADATA_RETRY) => {}
            }
        }
    }
    true
}

/// What became of a record handed to [`produce`].
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// In the producer queue.
    Queued,
    /// Not sent: the shutdown deadline passed while the producer queue was full.
    Abandoned,
    /// Not sent: a pipeline fault stopped the source (logged, counted, shown in `/readyz`).
    Faulted,
}

/// Bytes of the original value a dead-letter stub keeps.
const STUB_BYTES: usize = 4 * 1024;

async fn produce(
    producer: &KafkaProducer,
    sink: &Arc<SourceSink>,
    mut record: Record,
    seq: u64,
    timestamps: &mut TimestampCache,
    abandon: &CancellationToken,
) -> Sent {
    loop {
        let topic: &str = match (&record.dead_letter, &record.topic) {
            (Some(_), _) => &sink.dead_letter_topic,
            (None, Some(routed)) => routed,
            (None, None) => &sink.topic,
        };
        let headers = lineage_headers(
            &sink.name,
            &sink.url,
            &record,
            timestamps,
            sink.stage.headers(),
        );
        // The record's share of the producer queue, counted as librdkafka allocates it; given
        // back when its delivery report drops the ticket.
        let header_bytes = (0..headers.count())
            .map(|i| {
                let header = headers.get(i);
                header.key.len() + header.value.map_or(0, <[u8]>::len)
            })
            .sum();
        let cost = record_cost(
            record.payload.len(),
            record.key.as_ref().map_or(0, Bytes::len),
            header_bytes,
            headers.count(),
        );
        let queued = tokio::select! {
            queued = producer.queue_budget().take(cost) => queued,
            _ = abandon.cancelled() => return Sent::Abandoned,
        };
        let ticket = Box::new(DeliveryTicket {
            sink: Arc::clone(sink),
            seq,
            enqueued_at: Instant::now(),
            payload_bytes: record.payload.len(),
            dead_letter_kind: record.dead_letter.as_ref().map(|d| d.kind),
            ack: record.ack.take(),
            topic: record.topic.clone(),
            _queued: queued,
        });
        let mut base: BaseRecord<'_, [u8], [u8], Box<DeliveryTicket>> =
            BaseRecord::with_opaque_to(topic, ticket)
                .payload(record.payload.as_ref())
                .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_ref());
        }
        if let (Some(millis), None) = (record.event_time, &record.dead_letter) {
            base = base.timestamp(millis);
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
        sink.metrics.kafka_error(error_kind(&error));
        record.ack = ticket.ack.take();
        let topic = topic.to_owned();
        if !dead_letter_after_refusal(sink, &mut record, &topic, &error) {
            return Sent::Faulted;
        }
    }
}

/// The short, stable kind of a producer error (a metric label).
fn error_kind(error: &KafkaError) -> &'static str {
    error.rdkafka_error_code().map_or("other", error_kind_name)
}

/// Decides what follows once `topic` refused `record` with `error`. A record fault turns the
/// record into a dead-letter record (a stub when it is too large) and returns true: send it
/// again. A pipeline fault, or a dead-letter record the dead-letter topic refused for any reason
/// but its size, stops the source and returns false: the record is not acknowledged, so no
/// position moves past it.
fn dead_letter_after_refusal(
    sink: &SourceSink,
    record: &mut Record,
    topic: &str,
    error: &KafkaError,
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
    if FaultClass::of(error) == FaultClass::Pipeline {
        sink.pipeline_fault(topic, error);
        return false;
    }
    let too_large = error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge);
    let dead_letter = match record.dead_letter.take() {
        None => {
            tracing::warn!(source = %sink.name, topic, %error, "Kafka refused a record; sending it to the dead-letter topic");
            DeadLetter::new(
                error_kind(error),
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

async fn dead_letter_failed_delivery(
    producer: &KafkaProducer,
    sink: &Arc<SourceSink>,
    failed: FailedDelivery,
    timestamps: &mut TimestampCache,
    abandon: &CancellationToken,
) -> Sent {
    let FailedDelivery {
        mut ticket,
        key,
        payload,
        event_id,
        event_type,
        dead_letter,
        error,
    } = failed;
    let text = |bytes: Vec<u8>| Arc::from(String::from_utf8_lossy(&bytes).as_ref());
    let routed = ticket.topic.take();
    let mut record = Record {
        topic: routed,
        event_time: None,
        key: key.map(Into::into),
        payload: payload.into(),
        event_id: event_id.map(text),
        event_type: event_type.map(text),
        ack: ticket.ack.take(),
        page: None,
        marker: false,
        position: None,
        fetched_at: std::time::SystemTime::now(),
        dead_letter,
    };
    // The failed record no longer holds its share of the queue: its next attempt takes its own.
    let seq = ticket.seq;
    drop(ticket);
    let topic = match (&record.dead_letter, &record.topic) {
        (Some(_), _) => sink.dead_letter_topic.clone(),
        (None, Some(routed)) => routed.to_string(),
        (None, None) => sink.topic.clone(),
    };
    if !dead_letter_after_refusal(sink, &mut record, &topic, &error) {
        return Sent::Faulted;
    }
    produce(producer, sink, record, seq, timestamps, abandon).await
}
