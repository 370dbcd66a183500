//! The handles hot paths hold: per source and per HTTP listener, label lookups done once.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus::{Histogram, IntCounter, IntGauge};

use super::{
    lazy::{LazyCounter, LazyFloatCounter, LazyGauge},
    Metrics, SourceKind,
};

/// What `GET /api/v1/sources` reports of a source beyond its exported series (see
/// [`crate::status`]): set per batch or per commit, never per record.
#[derive(Debug)]
pub struct StatusSlots {
    /// The source's kind.
    pub kind: SourceKind,
    /// When the pump last took events from the source (milliseconds since the Unix epoch; 0:
    /// never).
    last_events_ms: AtomicU64,
    /// The last position stored, and when.
    committed: Mutex<Option<(Arc<str>, SystemTime)>>,
    /// Records sent to the dead-letter topic, every kind together.
    dead_letters: AtomicU64,
}

impl StatusSlots {
    pub(super) fn new(kind: SourceKind) -> Self {
        StatusSlots {
            kind,
            last_events_ms: AtomicU64::new(0),
            committed: Mutex::new(None),
            dead_letters: AtomicU64::new(0),
        }
    }

    /// The pump took a batch of events from the source now.
    pub fn events_taken(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_events_ms.store(
            u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// When the pump last took events from the source (`None`: never).
    pub fn last_events(&self) -> Option<SystemTime> {
        match self.last_events_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// `position` was stored now.
    pub fn committed(&self, position: &str) {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::from(position), SystemTime::now()));
    }

    /// The last position stored by this process, and when (`None`: none yet).
    pub fn last_commit(&self) -> Option<(Arc<str>, SystemTime)> {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records sent to the dead-letter topic by this process, every kind together.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }
}

/// Handles of one HTTP listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// `tributary_http_connections{listener}`.
    pub connections: IntGauge,
    /// `tributary_http_connections_rejected_total{listener}`.
    pub connections_rejected: IntCounter,
}

/// Per-source handles for the hot path.
#[derive(Clone)]
pub struct SourceMetrics {
    pub(super) name: Arc<str>,
    pub(super) metrics: Arc<Metrics>,
    /// `tributary_records_received_total{source}`.
    pub records_received: IntCounter,
    /// `tributary_records_produced_total{source}`.
    pub records_produced: IntCounter,
    /// `tributary_record_bytes_total{source}`.
    pub record_bytes: IntCounter,
    /// `tributary_reconnects_total{source}`.
    pub reconnects: LazyCounter,
    /// `tributary_channel_records{source}`.
    pub channel_records: LazyGauge,
    /// `tributary_channel_bytes{source}`.
    pub channel_bytes: LazyGauge,
    /// `tributary_kafka_delivery_seconds{kind}` (shared by the sources of a kind), or
    /// `{source, kind}` with `[metrics] per_source_histograms`.
    pub kafka_delivery_seconds: Histogram,
    /// `tributary_event_lag_seconds{kind}` (or `{source, kind}`): fetch time − event time, for
    /// sources with a `timestamp` field.
    pub event_lag_seconds: Histogram,
    /// `tributary_checkpoint_commits_total{source}`.
    pub checkpoint_commits: LazyCounter,
    /// `tributary_checkpoint_age_seconds{source}`: made once the source has read a record
    /// (before that there is nothing a checkpoint could trail).
    pub checkpoint_age_seconds: LazyGauge,
    /// `tributary_records_filtered_total{source}`.
    pub records_filtered: LazyCounter,
    /// `tributary_sequence_gaps_total{source}`.
    pub sequence_gaps: LazyCounter,
    /// `tributary_retries_total{source}`.
    pub retries: LazyCounter,
    /// `tributary_rate_limit_wait_seconds_total{source}`.
    pub rate_limit_wait_seconds: LazyFloatCounter,
    /// `tributary_rate_limit_waiting{source}`.
    pub rate_limit_waiting: LazyGauge,
    /// `tributary_pages_total{source}`.
    pub pages: LazyCounter,
    /// `tributary_http_not_modified_total{source}`.
    pub not_modified: LazyCounter,
    /// `tributary_records_duplicate_total{source}`.
    pub records_duplicate: LazyCounter,
    /// `tributary_invalid_event_ids_total{source}`.
    pub invalid_event_ids: LazyCounter,
    /// `tributary_oversized_events_total{source}`.
    pub oversized_events: LazyCounter,
    /// `tributary_oversized_lines_total{source}`.
    pub oversized_lines: LazyCounter,
    /// `tributary_truncated_records_total{source}`.
    pub truncated_records: LazyCounter,
    /// `tributary_relists_total{source}`.
    pub relists: LazyCounter,
    /// `tributary_checkpoint_commit_failures_total{source}`.
    pub checkpoint_commit_failures: LazyCounter,
    /// `tributary_connected{source}`, set from readiness at each scrape.
    pub(super) connected: IntGauge,
    /// `tributary_finished{source}`, set from readiness at each scrape (made when first 1).
    pub(super) finished: LazyGauge,
    /// Cleared when the source is removed: no series of it is made after that.
    pub(super) live: super::lazy::Live,
    /// What the status endpoint reports beyond the series.
    pub status: Arc<StatusSlots>,
}

/// The `kind` values of `tributary_schema_drift_total`: `unknown_field`, a field the schema
/// does not name.
pub const SCHEMA_DRIFT_KINDS: [&str; 1] = ["unknown_field"];

impl SourceMetrics {
    /// Adds 1 to `family`'s series for this source and `value` (its second label), made now if
    /// it was not, unless the source was removed.
    fn count(&self, family: &prometheus::IntCounterVec, value: &str) {
        if self.live.load(Ordering::Acquire) {
            family.with_label_values(&[&self.name, value]).inc();
        }
    }

    /// Counts one record that drifted from its schema in `kind` (one of
    /// [`SCHEMA_DRIFT_KINDS`]).
    pub fn schema_drift(&self, kind: &str) {
        self.count(&self.metrics.schema_drift, kind);
    }
    /// Counts one record sent to the dead-letter topic for `kind` (a short, fixed word).
    pub fn dead_lettered(&self, kind: &str) {
        self.count(&self.metrics.records_dead_lettered, kind);
        self.status.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Awaits `wait` (a wait for a host's budget that returns how long it waited) with
    /// `tributary_rate_limit_waiting` at 1 meanwhile (back to 0 also when the wait is dropped,
    /// e.g. by shutdown), then adds the time waited to `tributary_rate_limit_wait_seconds_total`.
    /// A budget that is there at once counts nothing: an idle source makes neither series.
    pub async fn wait_for_budget(
        &self,
        wait: impl std::future::Future<Output = std::time::Duration>,
    ) -> std::time::Duration {
        struct Waiting<'a>(&'a LazyGauge);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let mut wait = std::pin::pin!(wait);
        if let std::task::Poll::Ready(waited) = futures::poll!(wait.as_mut()) {
            return waited;
        }
        self.rate_limit_waiting.inc();
        let waiting = Waiting(&self.rate_limit_waiting);
        let waited = wait.await;
        drop(waiting);
        if !waited.is_zero() {
            self.rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
        }
        waited
    }

    /// Counts one finished poll by its `outcome` (a fixed word).
    pub fn poll(&self, outcome: &str) {
        self.count(&self.metrics.polls, outcome);
    }

    /// Counts one webhook request by its `outcome` (a fixed word).
    pub fn webhook_request(&self, outcome: &str) {
        self.count(&self.metrics.webhook_requests, outcome);
    }

    /// Counts one HTTP response (or transport error) by its status class.
    pub fn http_request(&self, status: Option<u16>) {
        let class = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        self.count(&self.metrics.http_requests, class);
    }

    /// Counts one producer error of `kind` (a librdkafka error code name).
    pub fn kafka_error(&self, kind: &str) {
        self.count(&self.metrics.kafka_errors, kind);
    }

    /// Counts one transaction of an exactly-once source that ended with `outcome`
    /// (`committed` or `aborted`). The series exist only for sources that use transactions.
    pub fn transaction(&self, outcome: &str) {
        self.count(&self.metrics.transactions, outcome);
    }

    /// Counts one pipeline fault of `kind` (a short, fixed word): the source stopped.
    pub fn pipeline_fault(&self, kind: &str) {
        self.count(&self.metrics.pipeline_faults, kind);
    }
}
