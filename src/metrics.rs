//! Every metric family Tributary exports, registered once, with per-source handles.
//!
//! Names follow Prometheus conventions (prefix `tributary_`, `_total` for counters, base units
//! `_seconds` and `_bytes`). Labels are bounded: the configured source name, the HTTP listener
//! (`listen`, `webhook_listen`), a small fixed set of kinds and status classes — never a URL, a
//! peer address or free text. Hot paths hold a
//! [`SourceMetrics`] whose label lookups were done once, and add per batch.
//!
//! A source exports the families that apply to its kind ([`SourceKind`]): an SSE source has no
//! `tributary_polls_total`, a webhook source no checkpoint families. A source starts with its
//! core series (records, bytes, `connected`) at 0; every other series appears with its first
//! count (`lazy.rs`), so that a thousand idle sources do not export a thousand copies of every
//! zero. Next to them the registry holds `tributary_build_info` and the process collector's `process_*` families
//! (resident memory, CPU seconds, open file descriptors; Linux only).
//!
//! `families.rs` registers the families (and notes those labelled by source, for
//! [`Metrics::remove_source`]); `handles.rs` holds the handles hot paths count with.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use prometheus::{
    CounterVec, Encoder, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

use crate::runtime::health::{Readiness, SourceState};

mod families;
mod handles;
mod lazy;

pub use handles::{ListenerMetrics, SourceMetrics, StatusSlots, SCHEMA_DRIFT_KINDS};
pub use lazy::{LazyCounter, LazyFloatCounter, LazyGauge};

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
    /// `type = "graphql_subscription"`.
    GraphqlSubscription,
    /// `type = "http_stream"`.
    HttpStream,
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
            SourceKind::GraphqlSubscription => "graphql_subscription",
            SourceKind::HttpStream => "http_stream",
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
            SourceKind::Sse | SourceKind::Rest | SourceKind::Graphql | SourceKind::HttpStream
        )
    }

    fn streams(self) -> bool {
        matches!(
            self,
            SourceKind::Sse
                | SourceKind::Websocket
                | SourceKind::GraphqlSubscription
                | SourceKind::HttpStream
        )
    }
}

/// The revision the binary was built from (`git rev-parse HEAD` at build time, or the
/// `TRIBUTARY_REVISION` environment variable of the build), `unknown` without either.
pub const REVISION: &str = env!("TRIBUTARY_REVISION");

/// How the daemon's metrics are shaped: the `[metrics]` table of the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsOptions {
    /// Label `tributary_kafka_delivery_seconds` and `tributary_event_lag_seconds` by source
    /// (and kind) instead of by kind alone: 34 series more per source. Default `false`.
    #[serde(default)]
    pub per_source_histograms: bool,
}

/// All metric families of one daemon, on their own [`Registry`].
pub struct Metrics {
    registry: Registry,
    /// Every family with a `source` label, noted as it was registered.
    per_source: Vec<Box<dyn families::PerSource>>,
    /// The name of every family registered here, in registration order.
    family_names: Vec<String>,
    sources: Mutex<HashMap<Arc<str>, SourceMetrics>>,
    /// Latency histograms per source (`[metrics] per_source_histograms`), else per kind.
    per_source_histograms: bool,
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
    oversized_lines: IntCounterVec,
    truncated_records: IntCounterVec,
    relists: IntCounterVec,
    checkpoint_commit_failures: IntCounterVec,
    http_connections: IntGaugeVec,
    http_connections_rejected: IntCounterVec,
}

impl Metrics {
    /// The registry every family is on (for families registered elsewhere, e.g. the
    /// cluster's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The name of every family registered by [`Metrics::with_options`], whether or not it has
    /// a series yet (a family's series appear with their first count; see `lazy.rs`).
    pub fn family_names(&self) -> &[String] {
        &self.family_names
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
        let source: Arc<str> = Arc::from(name);
        let live: lazy::Live = Arc::new(AtomicBool::new(true));
        let l = &[name];
        let counter = |family: &IntCounterVec, applies: bool| {
            LazyCounter::new(family, &source, applies, &live)
        };
        let gauge =
            |family: &IntGaugeVec, applies: bool| LazyGauge::new(family, &source, applies, &live);
        let histogram = |family: &HistogramVec| {
            if self.per_source_histograms {
                family.with_label_values(&[name, kind.name()])
            } else {
                family.with_label_values(&[kind.name()])
            }
        };
        let checkpointed = !kind.is_pushed();
        let connected = self.connected.with_label_values(l);
        connected.set(0);
        let handles = SourceMetrics {
            name: Arc::clone(&source),
            metrics: Arc::clone(self),
            records_received: self.records_received.with_label_values(l),
            records_produced: self.records_produced.with_label_values(l),
            record_bytes: self.record_bytes.with_label_values(l),
            reconnects: counter(&self.reconnects, kind.streams()),
            channel_records: gauge(&self.channel_records, true),
            channel_bytes: gauge(&self.channel_bytes, true),
            kafka_delivery_seconds: histogram(&self.kafka_delivery_seconds),
            event_lag_seconds: histogram(&self.event_lag_seconds),
            checkpoint_commits: counter(&self.checkpoint_commits, checkpointed),
            checkpoint_age_seconds: gauge(&self.checkpoint_age_seconds, checkpointed),
            // Every kind: a `transform` may leave events out.
            records_filtered: counter(&self.records_filtered, true),
            sequence_gaps: counter(&self.sequence_gaps, kind == SourceKind::Websocket),
            retries: counter(
                &self.retries,
                kind.polled() || kind == SourceKind::HttpStream,
            ),
            rate_limit_wait_seconds: LazyFloatCounter::new(
                &self.rate_limit_wait_seconds,
                &source,
                kind.speaks_http(),
                &live,
            ),
            rate_limit_waiting: gauge(&self.rate_limit_waiting, kind.speaks_http()),
            pages: counter(&self.pages, kind.polled()),
            not_modified: counter(&self.not_modified, kind == SourceKind::Rest),
            records_duplicate: counter(&self.records_duplicate, kind.polled()),
            invalid_event_ids: counter(&self.invalid_event_ids, kind == SourceKind::Sse),
            oversized_events: counter(&self.oversized_events, kind == SourceKind::Sse),
            oversized_lines: counter(&self.oversized_lines, kind == SourceKind::HttpStream),
            truncated_records: counter(&self.truncated_records, kind == SourceKind::HttpStream),
            relists: counter(&self.relists, kind == SourceKind::HttpStream),
            checkpoint_commit_failures: counter(&self.checkpoint_commit_failures, checkpointed),
            connected,
            finished: gauge(&self.finished, true),
            live: Arc::clone(&live),
            status: Arc::new(handles::StatusSlots::new(kind)),
        };
        sources.insert(Arc::from(name), handles.clone());
        handles
    }

    /// Forgets source `name` (a reload removed it): every series labelled `source="<name>"`
    /// leaves the scrape, and a later [`Metrics::source`] of the same name starts its series
    /// anew. Handles still held by its stopped tasks count nowhere from now on.
    pub fn remove_source(&self, name: &str) {
        let removed = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(handles) = removed {
            handles.live.store(false, Ordering::Release);
        }
        for family in &self.per_source {
            family.remove_source(name);
        }
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
        for (name, handles) in sources.iter() {
            let state = readiness.sources.get(&**name);
            let connected = matches!(state, Some(SourceState::Connected | SourceState::Listening));
            handles.connected.set(i64::from(connected));
            let finished = matches!(state, Some(SourceState::Finished(_)));
            handles.finished.set(i64::from(finished));
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
