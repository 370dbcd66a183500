//! The producer's context: the delivery callback (each record's report: acknowledged, or
//! handed back to its source's pump as a [`FailedDelivery`]) and the client's errors and log
//! lines. It runs on the producer's polling thread: it only takes short locks and bumps
//! counters, never waits on async code.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use rdkafka::{
    error::KafkaError,
    message::{Headers, Message},
    producer::{DeliveryResult, ProducerContext},
    ClientContext,
};
use tokio::sync::mpsc;

use super::{
    client_log::Origin,
    producer::{DeliveryTicket, FailedDelivery},
};
use crate::record::{DeadLetter, DeliveryOutcome, OriginalRecord};

/// The producer context: delivery reports and client errors.
pub struct DeliveryContext {
    /// A source's transactional producer: its fatal error (fencing) stops that source only.
    pub(super) transactional: bool,
    pub(super) brokers_reachable: Arc<AtomicBool>,
    pub(super) fatal: Arc<FatalError>,
    /// Deduplicates and rate-limits librdkafka's log lines and client errors.
    pub(super) log_limiter: super::client_log::LogLimiter,
    /// The settings the client was made from: they name the SASL mechanism or TLS
    /// credentials of an authentication failure.
    pub(super) client: Arc<rdkafka::config::ClientConfig>,
}

/// A fatal producer error (librdkafka's `ERR__FATAL`, e.g. the idempotent producer lost its
/// sequence), or the brokers refusing the producer's credentials (a
/// [`crate::kafka_auth::AuthFailure`], which librdkafka would retry forever): the producer can
/// do nothing more, so the daemon must stop and restart.
#[derive(Default)]
pub(super) struct FatalError {
    pub(super) reason: std::sync::OnceLock<String>,
    pub(super) raised: tokio_util::sync::CancellationToken,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(failure) =
            crate::kafka_auth::AuthFailure::from_event(&error, reason, &self.client)
        {
            // A wrong password or an untrusted certificate: librdkafka would try again
            // forever, and no record would ever be delivered. Runs on librdkafka's thread:
            // only record it and wake the daemon (or the source, for a transactional one).
            if self.fatal.reason.set(failure.to_string()).is_ok() {
                if self.transactional {
                    tracing::error!(error = %failure, "kafka: the brokers refused the credentials of a source's transactional producer; the source stops");
                } else {
                    tracing::error!(error = %failure, "kafka: the brokers refused the producer's credentials; the daemon stops");
                }
            }
            self.fatal.raised.cancel();
            return;
        }
        match error.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) => {
                self.brokers_reachable.store(false, Ordering::Relaxed);
            }
            Some(rdkafka::types::RDKafkaErrorCode::Fatal) => {
                // Runs on librdkafka's thread: only record it and wake the daemon.
                let _ = self.fatal.reason.set(format!("{error}: {reason}"));
                self.fatal.raised.cancel();
                if self.transactional {
                    tracing::error!(%error, reason, "fatal error of a source's transactional producer: the source stops or rewinds");
                } else {
                    tracing::error!(%error, reason, "fatal producer error: the daemon stops");
                }
                return;
            }
            _ => {}
        }
        if let Some(held_back) = self
            .log_limiter
            .admit(Origin::ErrorEvent, reason, Instant::now())
        {
            tracing::warn!(%error, reason, held_back, "kafka client error");
        }
    }

    /// librdkafka's log lines, as rdkafka's default does (target `librdkafka`), but each
    /// distinct message at most once a minute and at most 20 lines a minute in all; a line
    /// says how many were held back before it (`held_back`).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        if matches!(level, Level::Debug) {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
            return;
        }
        let Some(held_back) = self.log_limiter.admit(Origin::Log, message, Instant::now()) else {
            return;
        };
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                tracing::error!(target: "librdkafka", held_back, "librdkafka: {fac} {message}")
            }
            Level::Warning => {
                tracing::warn!(target: "librdkafka", held_back, "librdkafka: {fac} {message}")
            }
            Level::Notice | Level::Info | Level::Debug => {
                tracing::info!(target: "librdkafka", held_back, "librdkafka: {fac} {message}")
            }
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliveryTicket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<DeliveryTicket>) {
        match result {
            Ok(_) => {
                self.brokers_reachable.store(true, Ordering::Relaxed);
                let mut ticket = ticket;
                acknowledge(&mut ticket);
            }
            Err((error, message)) => {
                let sink = &ticket.sink;
                let kind = error.rdkafka_error_code().map_or("other", error_kind_name);
                sink.metrics.kafka_error(kind);
                let header = |name: &str| {
                    message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value.map(<[u8]>::to_vec))
                    })
                };
                let text = |name: &str| {
                    header(name).map(|value| String::from_utf8_lossy(&value).into_owned())
                };
                let dead_letter = ticket.dead_letter_kind.map(|kind| DeadLetter {
                    kind,
                    reason: text(crate::router::HEADER_ERROR).unwrap_or_default(),
                    original: text(crate::router::HEADER_ORIGINAL_SIZE)
                        .zip(text(crate::router::HEADER_ORIGINAL_SHA256))
                        .map(|(size, sha256)| OriginalRecord { size, sha256 }),
                    details: crate::router::DETAIL_HEADERS
                        .iter()
                        .filter_map(|name| text(name).map(|value| (*name, value)))
                        .collect(),
                });
                // Boxed: the channel's blocks then hold pointers, not records (a source that
                // never fails allocates a block of 32 slots all the same).
                let failed = Box::new(FailedDelivery {
                    topic: message.topic().to_owned(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: message.headers().map(|headers| headers.detach()),
                    event_id: header(crate::router::HEADER_EVENT_ID),
                    event_type: header(crate::router::HEADER_EVENT_TYPE),
                    dead_letter,
                    error: error.clone(),
                    ticket,
                });
                let failures = failed.ticket.sink.failures.clone();
                if let Err(mpsc::error::SendError(failed)) = failures.send(failed) {
                    // The pump is gone (shutdown, or a pipeline fault stopped the source): the
                    // record is not acknowledged, so its position is not stored and it is read
                    // again after restart.
                    tracing::error!(
                        source = %failed.ticket.sink.name,
                        error = %failed.error,
                        "delivery failed after the source's pump stopped; the record will be read again after restart"
                    );
                }
            }
        }
    }
}

/// Marks a ticket's record acknowledged: tracker, committer, metrics and the source's ack.
fn acknowledge(ticket: &mut DeliveryTicket) {
    if ticket.position_record {
        return;
    }
    ticket.sink.acknowledge(ticket.seq);
    if let Some(ack) = ticket.ack.take() {
        ticket.sink.settle(
            ack,
            match ticket.dead_letter_kind {
                Some(_) => DeliveryOutcome::DeadLettered,
                None => DeliveryOutcome::Produced,
            },
        );
    }
    let sink = &ticket.sink;
    sink.metrics
        .kafka_delivery_seconds
        .observe(ticket.enqueued_at.elapsed().as_secs_f64());
    if let Some(deferred) = &sink.deferred {
        // Exactly-once: counted when the transaction commits.
        let mut uncommitted = deferred.lock().unwrap_or_else(|e| e.into_inner());
        match ticket.dead_letter_kind {
            Some(kind) => uncommitted.dead_letters.push(kind),
            None => {
                uncommitted.records += 1;
                uncommitted.bytes += ticket.payload_bytes as u64;
            }
        }
        return;
    }
    match ticket.dead_letter_kind {
        Some(kind) => sink.metrics.dead_lettered(kind),
        None => {
            sink.metrics.records_produced.inc();
            sink.metrics
                .record_bytes
                .inc_by(ticket.payload_bytes as u64);
        }
    }
}

/// A short, stable name for a librdkafka error code (a bounded metric label).
pub(crate) fn error_kind_name(code: rdkafka::types::RDKafkaErrorCode) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode as C;
    match code {
        C::QueueFull => "queue_full",
        C::MessageSizeTooLarge => "message_too_large",
        C::UnknownTopicOrPartition | C::UnknownTopic => "unknown_topic",
        C::TopicAuthorizationFailed => "topic_authorization_failed",
        C::MessageTimedOut => "message_timed_out",
        C::AllBrokersDown => "all_brokers_down",
        C::InvalidRecord => "invalid_record",
        C::InvalidTimestamp => "invalid_timestamp",
        C::InvalidDifferentRecord => "invalid_different_record",
        _ => "other",
    }
}
