//! The registration of every metric family: names, help texts, labels and buckets.
//!
//! A family with a `source` label is noted as it is registered, and
//! [`Metrics::remove_source`] removes a source's series from each family noted: no second list
//! of families can fall behind the registration.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus::{
    core::{Collector, MetricVec, MetricVecBuilder},
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::{Metrics, MetricsOptions, REVISION};

/// A family with a `source` label: [`Metrics::remove_source`] removes a source's series from
/// it.
pub(super) trait PerSource: Collector {
    /// Removes every series whose `source` label is `source`, whatever its other labels.
    fn remove_source(&self, source: &str);
}

impl<T: MetricVecBuilder + 'static> PerSource for MetricVec<T> {
    fn remove_source(&self, source: &str) {
        remove_series(self, source);
    }
}

/// Removes every series of `family` whose `source` label is `source`, whatever its other
/// labels.
fn remove_series<T: MetricVecBuilder>(family: &MetricVec<T>, source: &str) {
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

/// Registers families on a registry, noting those with a `source` label.
struct Families {
    registry: Registry,
    per_source: Vec<Box<dyn PerSource>>,
    names: Vec<String>,
}

impl Families {
    /// Registers `family`, and notes it when it has a `source` label.
    fn family<T: MetricVecBuilder + 'static>(&mut self, family: MetricVec<T>) -> MetricVec<T> {
        self.register(Box::new(family.clone()));
        let per_source = family
            .desc()
            .iter()
            .any(|desc| desc.variable_labels.iter().any(|label| label == "source"));
        if per_source {
            self.per_source.push(Box::new(family.clone()));
        }
        family
    }

    /// Registers `collector` and notes its families' names.
    fn register(&mut self, collector: Box<dyn Collector>) {
        self.names
            .extend(collector.desc().iter().map(|desc| desc.fq_name.clone()));
        self.registry
            .register(collector)
            .expect("each metric is registered once");
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.family(
            IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are static and valid"),
        )
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.family(
            IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are static and valid"),
        )
    }
}

impl Metrics {
    /// Registers every family on a fresh registry, with the default options (latency
    /// histograms per kind): see [`Metrics::with_options`].
    pub fn new() -> Arc<Self> {
        Self::with_options(MetricsOptions::default())
    }

    /// Registers every family on a fresh registry, with `tributary_build_info` and (on Linux)
    /// the process collector.
    pub fn with_options(options: MetricsOptions) -> Arc<Self> {
        let histogram_labels: &[&str] = if options.per_source_histograms {
            &["source", "kind"]
        } else {
            &["kind"]
        };
        let mut f = Families {
            registry: Registry::new(),
            per_source: Vec::new(),
            names: Vec::new(),
        };
        let build_info = f.gauge(
            "tributary_build_info",
            "Always 1; the labels say which build runs (the crate version and the git revision).",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION])
            .set(1);
        #[cfg(target_os = "linux")]
        f.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let ready = IntGauge::new(
            "tributary_ready",
            "1 while /readyz answers 200, else 0 (read at each scrape).",
        )
        .expect("static gauge definition");
        f.register(Box::new(ready.clone()));
        let kafka_delivery_seconds = f.family(
            HistogramVec::new(
                HistogramOpts::new(
                    "tributary_kafka_delivery_seconds",
                    "Seconds from handing a record to the producer to Kafka's acknowledgement.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                histogram_labels,
            )
            .expect("static histogram definition"),
        );
        let event_lag_seconds = f.family(
            HistogramVec::new(
                HistogramOpts::new(
                    "tributary_event_lag_seconds",
                    "Seconds from a record's event time (its `timestamp` field) to when it was \
                     read from the feed.",
                )
                .buckets(vec![
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
                    86400.0,
                ]),
                histogram_labels,
            )
            .expect("static histogram definition"),
        );
        Arc::new(Metrics {
            sources: Mutex::new(HashMap::new()),
            per_source_histograms: options.per_source_histograms,
            ready,
            records_received: f.counter(
                "tributary_records_received_total",
                "Records read from the feed.",
                &["source"],
            ),
            records_produced: f.counter(
                "tributary_records_produced_total",
                "Records acknowledged by Kafka on their own topic.",
                &["source"],
            ),
            record_bytes: f.counter(
                "tributary_record_bytes_total",
                "Bytes of record payload acknowledged by Kafka.",
                &["source"],
            ),
            records_filtered: f.counter(
                "tributary_records_filtered_total",
                "Events read from the feed and left out by the source's filter or transform.",
                &["source"],
            ),
            sequence_gaps: f.counter(
                "tributary_sequence_gaps_total",
                "Jumps in the feed's sequence numbers (records the feed skipped).",
                &["source"],
            ),
            webhook_requests: f.counter(
                "tributary_webhook_requests_total",
                "Webhook requests, by outcome (accepted, duplicate, rejected_signature, rejected_timestamp, too_large, bad_request, overloaded, delivery_timeout).",
                &["source", "outcome"],
            ),
            retries: f.counter(
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
                f.family(family)
            },
            rate_limit_waiting: f.gauge(
                "tributary_rate_limit_waiting",
                "1 while the source's next request waits for the host's budget (token bucket, \
                 spent X-RateLimit/RateLimit budget, Retry-After), else 0.",
                &["source"],
            ),
            polls: f.counter(
                "tributary_polls_total",
                "Polls of a REST or GraphQL source, by outcome (complete, not_modified, page_limit, incomplete, failed).",
                &["source", "outcome"],
            ),
            pages: f.counter(
                "tributary_pages_total",
                "Pages fetched by a REST or GraphQL source.",
                &["source"],
            ),
            not_modified: f.counter(
                "tributary_http_not_modified_total",
                "Conditional requests answered 304 Not Modified (nothing produced).",
                &["source"],
            ),
            records_duplicate: f.counter(
                "tributary_records_duplicate_total",
                "Records left out because they were already produced (the watermark boundary).",
                &["source"],
            ),
            invalid_event_ids: f.counter(
                "tributary_invalid_event_ids_total",
                "SSE event ids not taken as the position: they cannot be sent back in a \
                 Last-Event-ID header (control characters, non-ASCII).",
                &["source"],
            ),
            oversized_events: f.counter(
                "tributary_oversized_events_total",
                "SSE connections ended because a line or an event passed the source's \
                 `max_event_bytes` (reconnected from the last event id).",
                &["source"],
            ),
            oversized_lines: f.counter(
                "tributary_oversized_lines_total",
                "Lines (or JSON text sequence records) of an http_stream source longer than its \
                 `max_line_bytes`: each is skipped and a stub of it dead-lettered.",
                &["source"],
            ),
            truncated_records: f.counter(
                "tributary_truncated_records_total",
                "Records of an http_stream source dropped as truncated: a JSON text sequence \
                 record not ended by LF (RFC 7464), or a line the connection cut before its LF \
                 (read again after the reconnect).",
                &["source"],
            ),
            relists: f.counter(
                "tributary_relists_total",
                "Kubernetes lists made by an http_stream source because its watch had no \
                 usable resourceVersion: none stored yet, or HTTP 410 Gone (expired).",
                &["source"],
            ),
            checkpoint_commit_failures: f.counter(
                "tributary_checkpoint_commit_failures_total",
                "Checkpoint commits that failed for the source's position (retried on the next \
                 round; the stored position stays where it was).",
                &["source"],
            ),
            records_dead_lettered: f.counter(
                "tributary_records_dead_lettered_total",
                "Records sent to the dead-letter topic, by reason.",
                &["source", "kind"],
            ),
            schema_drift: f.counter(
                "tributary_schema_drift_total",
                "Records carrying a field their source's schema does not name, by kind of drift.",
                &["source", "kind"],
            ),
            http_requests: f.counter(
                "tributary_http_requests_total",
                "HTTP requests made to the feed, by status class (2xx, 3xx, 4xx, 5xx, other; error when no response came).",
                &["source", "status_class"],
            ),
            reconnects: f.counter(
                "tributary_reconnects_total",
                "Reconnect attempts after a feed connection ended or failed.",
                &["source"],
            ),
            connected: f.gauge(
                "tributary_connected",
                "1 while /readyz reports the source `connected` (SSE, WebSocket: a feed connection \
                 is open; REST, GraphQL: the last poll succeeded) or `listening` (webhook: its \
                 route is served), else 0 (read at each scrape).",
                &["source"],
            ),
            finished: f.gauge(
                "tributary_finished",
                "1 while /readyz reports the source `finished`: the feed said it has nothing more \
                 (SSE: HTTP 204), so it is not connected and does not try to be; else 0 (read at \
                 each scrape).",
                &["source"],
            ),
            channel_records: f.gauge(
                "tributary_channel_records",
                "Records waiting in the source's channel to the sink.",
                &["source"],
            ),
            channel_bytes: f.gauge(
                "tributary_channel_bytes",
                "Bytes waiting in the source's channel to the sink.",
                &["source"],
            ),
            kafka_delivery_seconds,
            event_lag_seconds,
            kafka_errors: f.counter(
                "tributary_kafka_errors_total",
                "Errors from the Kafka producer, by kind.",
                &["source", "kind"],
            ),
            pipeline_faults: f.counter(
                "tributary_pipeline_faults_total",
                "Producer errors that concern the producer or the topic, not one record: the \
                 source stopped with its position kept, by kind.",
                &["source", "kind"],
            ),
            transactions: f.counter(
                "tributary_transactions_total",
                "Kafka transactions of exactly-once sources, by outcome (`committed`, or \
                 `aborted`: a refused record or a failed commit; the source rewound to its last \
                 committed position).",
                &["source", "outcome"],
            ),
            checkpoint_commits: f.counter(
                "tributary_checkpoint_commits_total",
                "Positions written to the checkpoint store.",
                &["source"],
            ),
            checkpoint_age_seconds: f.gauge(
                "tributary_checkpoint_age_seconds",
                "Seconds since the source's position was last committed.",
                &["source"],
            ),
            http_connections: f.gauge(
                "tributary_http_connections",
                "Connections open on the daemon's HTTP listener (at most `server.max_connections`).",
                &["listener"],
            ),
            http_connections_rejected: f.counter(
                "tributary_http_connections_rejected_total",
                "Connections to the daemon's HTTP listener closed at once because \
                 `server.max_connections` were open.",
                &["listener"],
            ),
            per_source: f.per_source,
            family_names: f.names,
            registry: f.registry,
        })
    }
}
