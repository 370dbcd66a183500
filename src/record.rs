//! The unit that moves through the pipeline: one feed event on its way to one Kafka record.
//!
//! A [`Record`] carries only what differs from one record to the next; what is the same for a
//! whole source (its name, topic, URL) lives in [`crate::sources::SourceInfo`] and is attached
//! by the sink. Payloads are [`Bytes`] so that the path from socket to producer does not copy.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::SystemTime,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A source's resume point: an SSE `Last-Event-ID`, a WebSocket sequence, a REST cursor or
/// watermark. Opaque to everything but the source that made it. Shared (`Arc<str>`), so a
/// source can hand the same text to the record's key, its headers and its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub Arc<str>);

impl Position {
    /// The position as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a record goes to the dead-letter topic instead of its own topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// A short, stable kind (`invalid_json`, `key_not_found`, `message_too_large`), put in the
    /// `tributary.error_kind` header and the metric label.
    pub kind: &'static str,
    /// A human sentence, put in the `tributary.error` header.
    pub reason: String,
    /// Set when the payload is a stub of a record too large for Kafka: what the original was.
    pub original: Option<OriginalRecord>,
    /// More headers that say what went wrong (name, value), e.g. the failing instance path
    /// and keyword of a `schema_violation`.
    pub details: Vec<(&'static str, String)>,
}

impl DeadLetter {
    /// A dead-letter reason of `kind` (a short, fixed word) explained by `reason`.
    pub fn new(kind: &'static str, reason: String) -> Self {
        DeadLetter {
            kind,
            reason,
            original: None,
            details: Vec::new(),
        }
    }
}

/// The record a dead-letter stub stands for (`tributary.original_size` and
/// `tributary.original_sha256` headers): its value was too large for Kafka, so the stub carries
/// only the value's first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalRecord {
    /// The original value's size, in bytes, as text.
    pub size: String,
    /// The SHA-256 of the original value, lowercase hex.
    pub sha256: String,
}

/// What became of a record whose source asked to be told ([`Record::ack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Kafka acknowledged it on its own topic.
    Produced,
    /// Kafka acknowledged it on the dead-letter topic.
    DeadLettered,
    /// The source's transform kept nothing of it: nothing was produced.
    Filtered,
}

/// Where a polled record came from: the page's URL (secrets stripped) and its number in the
/// walk, shared by every record of the page (`tributary.url`, `tributary.page` headers).
#[derive(Debug)]
pub struct PageLineage {
    /// The URL of the request, secrets stripped.
    pub url: String,
    /// The page's number in its walk (1 for the first page), as text.
    pub page: String,
}

/// Told once what became of an event; dropped unsent when a record of it was abandoned at
/// shutdown or a pipeline fault stopped its source.
pub type DeliveryAck = tokio::sync::oneshot::Sender<DeliveryOutcome>;

/// The completion of one event whose source waits to hear what became of it (a webhook answers
/// its sender then). An event may become several records (a transform's split, a dead-letter
/// record, a marker for a filtered event): each carries a share of the event's `EventAck`
/// ([`EventAck::share`]), and the source is told only once **every** share is settled
/// ([`EventAck::settle`]): Kafka holds each record, on its topic or on the dead-letter topic.
/// A share dropped unsettled (a record abandoned at shutdown, or held back by a pipeline fault)
/// means the event is not complete: the source is never told, and its [`DeliveryAck`] is
/// dropped unsent once the last share is gone.
#[derive(Debug)]
pub struct EventAck(Arc<Completion>);

#[derive(Debug)]
struct Completion {
    /// Shares not settled yet.
    pending: AtomicUsize,
    /// Some share went to its own topic.
    produced: AtomicBool,
    /// Some share went to the dead-letter topic.
    dead_lettered: AtomicBool,
    sender: Mutex<Option<DeliveryAck>>,
}

impl EventAck {
    /// One share: the event's only record, until the record stage splits it.
    pub fn new(sender: DeliveryAck) -> Self {
        EventAck(Arc::new(Completion {
            pending: AtomicUsize::new(1),
            produced: AtomicBool::new(false),
            dead_lettered: AtomicBool::new(false),
            sender: Mutex::new(Some(sender)),
        }))
    }

    /// Another share of the same event, for one more record made from it: the event now
    /// completes only when this share is settled too.
    pub fn share(&self) -> Self {
        self.0.pending.fetch_add(1, Ordering::AcqRel);
        EventAck(Arc::clone(&self.0))
    }

    /// Settles this share with what became of its record. When it is the last, the source is
    /// told the event's outcome: [`DeliveryOutcome::Produced`] when any record reached its own
    /// topic, else [`DeliveryOutcome::DeadLettered`] when any reached the dead-letter topic, else
    /// [`DeliveryOutcome::Filtered`].
    pub fn settle(self, outcome: DeliveryOutcome) {
        let completion = &self.0;
        match outcome {
            DeliveryOutcome::Produced => completion.produced.store(true, Ordering::Release),
            DeliveryOutcome::DeadLettered => {
                completion.dead_lettered.store(true, Ordering::Release)
            }
            DeliveryOutcome::Filtered => {}
        }
        if completion.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let event = if completion.produced.load(Ordering::Acquire) {
            DeliveryOutcome::Produced
        } else if completion.dead_lettered.load(Ordering::Acquire) {
            DeliveryOutcome::DeadLettered
        } else {
            DeliveryOutcome::Filtered
        };
        let sender = completion
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            // The receiver may have given up waiting (a webhook's timeout): nothing to do then.
            let _ = sender.send(event);
        }
    }
}

/// One record on its way to Kafka.
#[derive(Debug)]
pub struct Record {
    /// The Kafka record key, if any.
    pub key: Option<Bytes>,
    /// The record value, exactly as read from the feed.
    pub payload: Bytes,
    /// The provider's event id (SSE `id:`), sent as the `tributary.event_id` header.
    pub event_id: Option<Arc<str>>,
    /// The feed's event type (SSE `event:`, `message` when absent), sent as the
    /// `tributary.event_type` header.
    pub event_type: Option<Arc<str>>,
    /// The source position to store once this record and every record before it is
    /// acknowledged by Kafka. `None` leaves the stored position as it is.
    pub position: Option<Position>,
    /// When the event was read from the feed.
    pub fetched_at: SystemTime,
    /// Set when the record must go to the dead-letter topic.
    pub dead_letter: Option<DeadLetter>,
    /// The record's share of its event's completion, when the source waits to hear what became
    /// of the event (webhooks answer their sender then).
    pub ack: Option<EventAck>,
    /// The page a polled record came from; `None` for streamed feeds.
    pub page: Option<Arc<PageLineage>>,
    /// A position marker: nothing is produced, and `position` is stored once every record
    /// before it has been acknowledged (a polled source's position after an empty page).
    pub marker: bool,
    /// The topic the record stage routed this record to (a `topic` template filled from the
    /// record); `None`: the source's topic.
    pub topic: Option<Arc<str>>,
    /// The record's event time, in milliseconds since the Unix epoch (the `timestamp` field):
    /// the Kafka record timestamp and the `tributary.event_time` header. `None`: Kafka stamps
    /// the time of sending.
    pub event_time: Option<i64>,
}

impl Record {
    /// A record of `payload` read at `fetched_at`, with no key, id, position or lineage.
    pub fn new(payload: Bytes, fetched_at: SystemTime) -> Self {
        Record {
            key: None,
            payload,
            event_id: None,
            event_type: None,
            position: None,
            fetched_at,
            dead_letter: None,
            ack: None,
            page: None,
            marker: false,
            topic: None,
            event_time: None,
        }
    }

    /// A position marker (see [`Record::marker`]).
    pub fn marker(position: Position) -> Self {
        Record::marker_at(Some(position))
    }

    /// A position marker that moves the position to `position` (`None`: leaves it), e.g. in
    /// place of an event the record stage's transform kept nothing of.
    pub fn marker_at(position: Option<Position>) -> Self {
        Record {
            position,
            marker: true,
            ..Record::new(Bytes::new(), SystemTime::now())
        }
    }

    /// Bytes this record holds in memory (key + payload), used by the channel's byte bound.
    pub fn size_bytes(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Bytes::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn an_event_completes_only_when_every_share_is_settled() {
        let (sender, mut told) = oneshot::channel();
        let first = EventAck::new(sender);
        let second = first.share();
        let third = first.share();
        second.settle(DeliveryOutcome::DeadLettered);
        first.settle(DeliveryOutcome::Filtered);
        assert!(
            told.try_recv().is_err(),
            "told before the third record was settled"
        );
        third.settle(DeliveryOutcome::Produced);
        assert_eq!(told.try_recv(), Ok(DeliveryOutcome::Produced));
    }

    #[test]
    fn the_outcome_is_dead_lettered_when_nothing_reached_its_topic() {
        let (sender, mut told) = oneshot::channel();
        let first = EventAck::new(sender);
        let second = first.share();
        first.settle(DeliveryOutcome::Filtered);
        second.settle(DeliveryOutcome::DeadLettered);
        assert_eq!(told.try_recv(), Ok(DeliveryOutcome::DeadLettered));
    }

    #[test]
    fn a_share_dropped_unsettled_leaves_the_event_incomplete() {
        let (sender, mut told) = oneshot::channel();
        let first = EventAck::new(sender);
        let second = first.share();
        first.settle(DeliveryOutcome::Produced);
        drop(second);
        assert_eq!(
            told.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "an abandoned record must never be answered as delivered"
        );
    }
}
