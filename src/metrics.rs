//! Every metric family Tributary exports, registered once, with per-source handles.
//!
//! Names follow Prometheus conventions (prefix `tributary_`, `_total` for counters, base units
//! `_seconds` and `_bytes`). Labels are bounded: the configured source name, the HTTP listener
//! (`listen`, `webhook_listen`), a small fixed set of kinds and status classes — never a URL, a
//! peer address or free text. Hot paths hold a
//! [`SourceMetrics`] whose label lookups were done once, and add per batch.
//!
//! A source exports the families that apply to its kind ([`SourceKind`]): an SSE source has no
//! `tributary_polls_total`, a webhook source no checkpoint families. Families whose label values
//! form a small fixed set (poll outcomes, HTTP status classes, webhook outcomes, Kafka error
//! kinds) start every series at 0, so that `increase()` sees the first occurrence. Next to them
//! the registry holds `tributary_build_info` and the process collector's `process_*` families
//! (resident memory, CPU seconds, open file descriptors; Linux only).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus::{
    Counter, CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::runtime::health::{Readiness, SourceState};

mod handles;

use handles::detached_counter;
pub use handles::{ListenerMetrics, SourceMetrics, StatusSlots, SCHEMA_DRIFT_KINDS};

/// What a source is, for the metric families it exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `type = "sse"`.
    Sse,
    /// `type = "websocket"`.
    Websocket,
    /// `type = "webhook"`.
    Webhook,
    /// `type = "rest"`.
    Rest,
    /// `type = "graphql"`.
    Graphql,
}

impl SourceKind {
    /// The kind's `type` value in the config.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Sse => "sse",
            SourceKind::Websocket => "websocket",
            SourceKind::Webhook => "webhook",
            SourceKind::Rest => "rest",
            SourceKind::Graphql => "graphql",
        }
    }

    /// Whether sources of this kind are pushed to (webhooks): they serve HTTP routes instead
    /// of reading a feed, and in a cluster every replica runs them (no control topic, no
    /// single owner). The one test of it: the daemon's start, reloads, cluster membership,
    /// `check --connect`, `dev-broker` and `status` all ask here.
    pub fn is_pushed(self) -> bool {
        matches!(self, SourceKind::Webhook)
    }

    pub(crate) fn polled(self) -> bool {
        matches!(self, SourceKind::Rest | SourceKind::Graphql)
    }

    fn speaks_http(self) -> bool {
        matches!(
            self,
            SourceKind::Sse | SourceKind::Rest | SourceKind::Graphql
        )
    }

    fn streams(self) -> bool {
        matches!(self, SourceKind::Sse | SourceKind::Websocket)
    }
}

/// `outcome` values of `tributary_polls_total`.
pub const POLL_OUTCOMES: [&str; 5] = [
    "complete",
    "not_modified",
    "page_limit",
    "incomplete",
    "failed",
];

/// `status_class` values of `tributary_http_requests_total`.
pub const HTTP_STATUS_CLASSES: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "other", "error"];

/// `outcome` values of `tributary_webhook_requests_total`.
pub const WEBHOOK_OUTCOMES: [&str; 8] = [
    "accepted",
    "duplicate",
    "rejected_signature",
    "rejected_timestamp",
    "too_large",
    "bad_request",
    "overloaded",
    "delivery_timeout",
];

/// `kind` values of `tributary_kafka_errors_total` and `tributary_pipeline_faults_total`: the
/// librdkafka error codes Tributary names, and `other`.
pub const KAFKA_ERROR_KINDS: [&str; 10] = [
    "message_too_large",
    "unknown_topic",
    "topic_authorization_failed",
    "message_timed_out",
    "all_brokers_down",
    "invalid_record",
    "invalid_timestamp",
    "invalid_different_record",
    "queue_full",
    "other",
];

/// The revision the binary was built from (`git rev-parse HEAD` at build time, or the
/// `TRIBUTARY_REVISION` environment variable of the build), `unknown` without either.
pub const REVISION: &str = env!("TRIBUTARY_REVISION");

/// All metric families of one daemon, on their own [`Registry`].
pub struct Metrics {
    registry: Registry,
    sources: Mutex<HashMap<Arc<str>, SourceMetrics>>,
    ready: IntGauge,
    records_received: IntCounterVec,
    records_produced: IntCounterVec,
    record_bytes: IntCounterVec,
    records_dead_lettered: IntCounterVec,
    schema_drift: IntCounterVec,
    http_requests: IntCounterVec,
    reconnects: IntCounterVec,
    connected: IntGaugeVec,
    finished: IntGaugeVec,
    channel_records: IntGaugeVec,
    channel_bytes: IntGaugeVec,
    kafka_delivery_seconds: HistogramVec,
    event_lag_seconds: HistogramVec,
    kafka_errors: IntCounterVec,
    pipeline_faults: IntCounterVec,
    transactions: IntCounterVec,
    checkpoint_commits: IntCounterVec,
    checkpoint_age_seconds: IntGaugeVec,
    records_filtered: IntCounterVec,
    sequence_gaps: IntCounterVec,
    webhook_requests: IntCounterVec,
    retries: IntCounterVec,
    rate_limit_wait_seconds: CounterVec,
    rate_limit_waiting: IntGaugeVec,
    polls: IntCounterVec,
    pages: IntCounterVec,
    not_modified: IntCounterVec,
    records_duplicate: IntCounterVec,
    invalid_event_ids: IntCounterVec,
    oversized_events: IntCounterVec,
    checkpoint_commit_failures: IntCounterVec,
    http_connections: IntGaugeVec,
    http_connections_rejected: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    registry
        .register(Box::new(family.clone()))
        .expect("each metric is registered once");
    family
}

/// Removes every series of `family` whose `source` label is `source`, whatever its other
/// labels.
fn remove_series<T: prometheus::core::MetricVecBuilder>(
    family: &prometheus::core::MetricVec<T>,
    source: &str,
) {
    use prometheus::core::Collector;
    for metric_family in family.collect() {
        for metric in metric_family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            if labels.get("source") == Some(&source) {
                // Absent already (removed between the collect and now): nothing to do.
                let _ = family.remove(&labels);
            }
        }
    }
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let family = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric names and labels are static and valid");
    registry
        .register(Box::new(family.clone()))
        .expect("each metric is registered once");
    family
}

impl Metrics {
    /// Registers every family on a fresh registry, with `tributary_build_info` and (on Linux)
    /// the process collector.
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let build_info = gauge(
            &r,
            "tributary_build_info",
            "Always 1; the labels say which build runs (the crate version and the git revision).",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once");
        let ready = IntGauge::new(
            "tributary_ready",
            "1 while /readyz answers 200, else 0 (read at each scrape).",
        )
        .expect("static gauge definition");
        r.register(Box::new(ready.clone()))
            .expect("each metric is registered once");
        let kafka_delivery_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tributary_kafka_delivery_seconds",
                "Seconds from handing a record to the producer to Kafka's acknowledgement.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["source"],
        )
        .expect("static histogram definition");
        r.register(Box::new(kafka_delivery_seconds.clone()))
            .expect("each metric is registered once");
        let event_lag_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tributary_event_lag_seconds",
                "Seconds from a record's event time (its `timestamp` field) to when it was read \
                 from the feed.",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
                86400.0,
            ]),
            &["source"],
        )
        .expect("static histogram definition");
        r.register(Box::new(event_lag_seconds.clone()))
            .expect("each metric is registered once");
        Arc::new(Metrics {
            sources: Mutex::new(HashMap::new()),
            ready,
            records_received: counter(
                &r,
                "tributary_records_received_total",
                "Records read from the feed.",
                &["source"],
            ),
            records_produced: counter(
                &r,
                "tributary_records_produced_total",
                "Records acknowledged by Kafka on their own topic.",
                &["source"],
            ),
            record_bytes: counter(
                &r,
                "tributary_record_bytes_total",
                "Bytes of record payload acknowledged by Kafka.",
                &["source"],
            ),
            records_filtered: counter(
                &r,
                "tributary_records_filtered_total",
                "Events read from the feed and left out by the source's filter or transform.",
                &["source"],
            ),
            sequence_gaps: counter(
                &r,
                "tributary_sequence_gaps_total",
                "Jumps in the feed's sequence numbers (records the feed skipped).",
                &["source"],
            ),
            webhook_requests: counter(
                &r,
                "tributary_webhook_requests_total",
                "Webhook requests, by outcome (accepted, duplicate, rejected_signature, rejected_timestamp, too_large, bad_request, overloaded, delivery_timeout).",
                &["source", "outcome"],
            ),
            retries: counter(
                &r,
                "tributary_retries_total",
                "HTTP requests retried after a transient failure (connect error, timeout, 408, 425, 429, 5xx).",
                &["source"],
            ),
            rate_limit_wait_seconds: {
                let family = CounterVec::new(
                    Opts::new(
                        "tributary_rate_limit_wait_seconds_total",
                        "Seconds requests waited for the host's budget (token bucket, spent X-RateLimit/RateLimit budget, Retry-After).",
                    ),
                    &["source"],
                )
                .expect("static counter definition");
                r.register(Box::new(family.clone()))
                    .expect("each metric is registered once");
                family
            },
            rate_limit_waiting: gauge(
                &r,
                "tributary_rate_limit_waiting",
                "1 while the source's next request waits for the host's budget (token bucket, \
                 spent X-RateLimit/RateLimit budget, Retry-After), else 0.",
                &["source"],
            ),
            polls: counter(
                &r,
                "tributary_polls_total",
                "Polls of a REST or GraphQL source, by outcome (complete, not_modified, page_limit, incomplete, failed).",
                &["source", "outcome"],
            ),
            pages: counter(
                &r,
                "tributary_pages_total",
                "Pages fetched by a REST or GraphQL source.",
                &["source"],
            ),
            not_modified: counter(
                &r,
                "tributary_http_not_modified_total",
                "Conditional requests answered 304 Not Modified (nothing produced).",
                &["source"],
            ),
            records_duplicate: counter(
                &r,
                "tributary_records_duplicate_total",
                "Records left out because they were already produced (the watermark boundary).",
                &["source"],
            ),
            invalid_event_ids: counter(
                &r,
                "tributary_invalid_event_ids_total",
                "SSE event ids not taken as the position: they cannot be sent back in a \
                 Last-Event-ID header (control characters, non-ASCII).",
                &["source"],
            ),
            oversized_events: counter(
                &r,
                "tributary_oversized_events_total",
                "SSE connections ended because a line or an event passed the source's \
                 `max_event_bytes` (reconnected from the last event id).",
                &["source"],
            ),
            checkpoint_commit_failures: counter(
                &r,
                "tributary_checkpoint_commit_failures_total",
                "Checkpoint commits that failed for the source's position (retried on the next \
                 round; the stored position stays where it was).",
                &["source"],
            ),
            records_dead_lettered: counter(
                &r,
                "tributary_records_dead_lettered_total",
                "Records sent to the dead-letter topic, by reason.",
                &["source", "kind"],
            ),
            schema_drift: counter(
                &r,
                "tributary_schema_drift_total",
                "Records carrying a field their source's schema does not name, by kind of drift.",
                &["source", "kind"],
            ),
            http_requests: counter(
                &r,
                "tributary_http_requests_total",
                "HTTP requests made to the feed, by status class (2xx, 3xx, 4xx, 5xx, other; error when no response came).",
                &["source", "status_class"],
            ),
            reconnects: counter(
                &r,
                "tributary_reconnects_total",
                "Reconnect attempts after a feed connection ended or failed.",
                &["source"],
            ),
            connected: gauge(
                &r,
                "tributary_connected",
                "1 while /readyz reports the source `connected` (SSE, WebSocket: a feed connection \
                 is open; REST, GraphQL: the last poll succeeded) or `listening` (webhook: its \
                 route is served), else 0 (read at each scrape).",
                &["source"],
            ),
            finished: gauge(
                &r,
                "tributary_finished",
                "1 while /readyz reports the source `finished`: the feed said it has nothing more \
                 (SSE: HTTP 204), so it is not connected and does not try to be; else 0 (read at \
                 each scrape).",
                &["source"],
            ),
            channel_records: gauge(
                &r,
                "tributary_channel_records",
                "Records waiting in the source's channel to the sink.",
                &["source"],
            ),
            channel_bytes: gauge(
                &r,
                "tributary_channel_bytes",
                "Bytes waiting in the source's channel to the sink.",
                &["source"],
            ),
            kafka_delivery_seconds,
            event_lag_seconds,
            kafka_errors: counter(
                &r,
                "tributary_kafka_errors_total",
                "Errors from the Kafka producer, by kind.",
                &["source", "kind"],
            ),
            pipeline_faults: counter(
                &r,
                "tributary_pipeline_faults_total",
                "Producer errors that concern the producer or the topic, not one record: the \
                 source stopped with its position kept, by kind.",
                &["source", "kind"],
            ),
            transactions: counter(
                &r,
                "tributary_transactions_total",
                "Kafka transactions of exactly-once sources, by outcome (`committed`, or \
                 `aborted`: a refused record or a failed commit; the source rewound to its last \
                 committed position).",
                &["source", "outcome"],
            ),
            checkpoint_commits: counter(
                &r,
                "tributary_checkpoint_commits_total",
                "Positions written to the checkpoint store.",
                &["source"],
            ),
            checkpoint_age_seconds: gauge(
                &r,
                "tributary_checkpoint_age_seconds",
                "Seconds since the source's position was last committed.",
                &["source"],
            ),
            http_connections: gauge(
                &r,
                "tributary_http_connections",
                "Connections open on the daemon's HTTP listener (at most `server.max_connections`).",
                &["listener"],
            ),
            http_connections_rejected: counter(
                &r,
                "tributary_http_connections_rejected_total",
                "Connections to the daemon's HTTP listener closed at once because \
                 `server.max_connections` were open.",
                &["listener"],
            ),
            registry: r,
        })
    }

    /// The registry every family is on (for families registered elsewhere, e.g. the
    /// cluster's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers source `name` of `kind` and returns its handles, label lookups done once.
    ///
    /// Only the families that apply to `kind` get a series; the handles of the others are
    /// detached (counted nowhere, exported nowhere). Asking again for a registered name returns
    /// the handles registered first.
    pub fn source(self: &Arc<Self>, name: &str, kind: SourceKind) -> SourceMetrics {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = sources.get(name) {
            return existing.clone();
        }
        let l = &[name];
        let int = |family: &IntCounterVec, applies: bool| {
            if applies {
                family.with_label_values(l)
            } else {
                detached_counter()
            }
        };
        let each = |family: &IntCounterVec, values: &[&str], applies: bool| {
            if applies {
                for value in values {
                    family.with_label_values(&[name, value]);
                }
            }
        };
        let checkpointed = !kind.is_pushed();
        each(&self.polls, &POLL_OUTCOMES, kind.polled());
        each(
            &self.http_requests,
            &HTTP_STATUS_CLASSES,
            kind.speaks_http(),
        );
        each(
            &self.webhook_requests,
            &WEBHOOK_OUTCOMES,
            kind == SourceKind::Webhook,
        );
        each(&self.kafka_errors, &KAFKA_ERROR_KINDS, true);
        each(&self.schema_drift, &SCHEMA_DRIFT_KINDS, true);
        each(&self.pipeline_faults, &KAFKA_ERROR_KINDS, true);
        self.connected.with_label_values(l).set(0);
        self.finished.with_label_values(l).set(0);
        let handles = SourceMetrics {
            name: Arc::from(name),
            metrics: Arc::clone(self),
            records_received: self.records_received.with_label_values(l),
            records_produced: self.records_produced.with_label_values(l),
            record_bytes: self.record_bytes.with_label_values(l),
            reconnects: int(&self.reconnects, kind.streams()),
            channel_records: self.channel_records.with_label_values(l),
            channel_bytes: self.channel_bytes.with_label_values(l),
            kafka_delivery_seconds: self.kafka_delivery_seconds.with_label_values(l),
            event_lag_seconds: self.event_lag_seconds.with_label_values(l),
            checkpoint_commits: int(&self.checkpoint_commits, checkpointed),
            checkpoint_age_seconds: if checkpointed {
                self.checkpoint_age_seconds.with_label_values(l)
            } else {
                IntGauge::new("detached", "exported nowhere").expect("static gauge definition")
            },
            // Every kind: a `transform` may leave events out.
            records_filtered: int(&self.records_filtered, true),
            sequence_gaps: int(&self.sequence_gaps, kind == SourceKind::Websocket),
            retries: int(&self.retries, kind.polled()),
            rate_limit_wait_seconds: if kind.speaks_http() {
                self.rate_limit_wait_seconds.with_label_values(l)
            } else {
                Counter::new("detached", "exported nowhere").expect("static counter definition")
            },
            rate_limit_waiting: if kind.speaks_http() {
                self.rate_limit_waiting.with_label_values(l)
            } else {
                IntGauge::new("detached", "exported nowhere").expect("static gauge definition")
            },
            pages: int(&self.pages, kind.polled()),
            not_modified: int(&self.not_modified, kind == SourceKind::Rest),
            records_duplicate: int(&self.records_duplicate, kind.polled()),
            invalid_event_ids: int(&self.invalid_event_ids, kind == SourceKind::Sse),
            oversized_events: int(&self.oversized_events, kind == SourceKind::Sse),
            checkpoint_commit_failures: int(&self.checkpoint_commit_failures, checkpointed),
            status: Arc::new(handles::StatusSlots::new(kind)),
        };
        sources.insert(Arc::from(name), handles.clone());
        handles
    }

    /// Forgets source `name` (a reload removed it): every series labelled `source="<name>"`
    /// leaves the scrape, and a later [`Metrics::source`] of the same name starts its series
    /// anew. Handles still held by its stopped tasks count nowhere from now on.
    pub fn remove_source(&self, name: &str) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        remove_series(&self.records_received, name);
        remove_series(&self.records_produced, name);
        remove_series(&self.record_bytes, name);
        remove_series(&self.records_dead_lettered, name);
        remove_series(&self.schema_drift, name);
        remove_series(&self.http_requests, name);
        remove_series(&self.reconnects, name);
        remove_series(&self.connected, name);
        remove_series(&self.finished, name);
        remove_series(&self.channel_records, name);
        remove_series(&self.channel_bytes, name);
        remove_series(&self.kafka_delivery_seconds, name);
        remove_series(&self.event_lag_seconds, name);
        remove_series(&self.kafka_errors, name);
        remove_series(&self.pipeline_faults, name);
        remove_series(&self.transactions, name);
        remove_series(&self.checkpoint_commits, name);
        remove_series(&self.checkpoint_age_seconds, name);
        remove_series(&self.records_filtered, name);
        remove_series(&self.sequence_gaps, name);
        remove_series(&self.webhook_requests, name);
        remove_series(&self.retries, name);
        remove_series(&self.rate_limit_wait_seconds, name);
        remove_series(&self.rate_limit_waiting, name);
        remove_series(&self.polls, name);
        remove_series(&self.pages, name);
        remove_series(&self.not_modified, name);
        remove_series(&self.records_duplicate, name);
        remove_series(&self.invalid_event_ids, name);
        remove_series(&self.oversized_events, name);
        remove_series(&self.checkpoint_commit_failures, name);
    }

    /// The handles of every source [`Metrics::source`] registered, by name.
    pub fn sources(&self) -> Vec<SourceMetrics> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<SourceMetrics> = sources.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The handles of source `name`, if [`Metrics::source`] registered it.
    pub fn registered(&self, name: &str) -> Option<SourceMetrics> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.get(name).cloned()
    }

    /// Sets the gauges read from `/readyz`: `tributary_ready` and each registered source's
    /// `tributary_connected`, so that the scrape and `/readyz` never disagree.
    pub fn observe_readiness(&self, readiness: &Readiness) {
        self.ready.set(i64::from(readiness.ready));
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        for name in sources.keys() {
            let state = readiness.sources.get(&**name);
            let connected = matches!(state, Some(SourceState::Connected | SourceState::Listening));
            self.connected
                .with_label_values(&[&**name])
                .set(i64::from(connected));
            let finished = matches!(state, Some(SourceState::Finished(_)));
            self.finished
                .with_label_values(&[&**name])
                .set(i64::from(finished));
        }
    }

    /// Handles for the HTTP listener `listener` (`listen` or `webhook_listen`, the config key of
    /// its address); its series start at 0.
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let l = &[listener];
        ListenerMetrics {
            connections: self.http_connections.with_label_values(l),
            connections_rejected: self.http_connections_rejected.with_label_values(l),
        }
    }

    /// The scrape body in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding gathered metrics into a Vec cannot fail");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

#[cfg(test)]
mod tests;
