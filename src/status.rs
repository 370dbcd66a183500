//! What each source of a daemon is doing, in one place: `GET /api/v1/sources` on the metrics
//! listener (JSON, versioned by its path), and `tributary status`, which prints it as a table.
//!
//! For each source the daemon runs: its kind, its state (as `/readyz` says it), the replica
//! that runs it, the last position this process stored and when, the age of the last events the
//! pump took from it, records per second over the last minute, and its dead letters,
//! reconnects and last error with its time. The figures are read from the handles the hot
//! path already updates (per batch or per commit, never per record); the rate comes from a
//! sampler that reads each source's received-records counter every
//! [`RATE_SAMPLE_INTERVAL`].
//!
//! For a cluster, [`cluster`] shows the whole of it from the brokers alone (members, owners,
//! stored positions); [`assignment`] reads the group members' assignments for it.

pub mod assignment;
pub mod cluster;
pub mod table;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{metrics::Metrics, runtime::health::Health};

/// The endpoint's path.
pub const API_PATH: &str = "/api/v1/sources";
/// How often the rate sampler reads each source's counter.
pub const RATE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// The window `records_per_second` is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The body of `GET /api/v1/sources`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// The replica that answered: its `cluster.replica_id`, or `single` without `[cluster]`.
    pub replica: String,
    /// Whether the Kafka brokers answered recently.
    pub kafka_reachable: bool,
    /// The sources this replica runs, by name.
    pub sources: Vec<SourceStatus>,
}

/// One source, as `GET /api/v1/sources` reports it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source's name (`[sources.<name>]`).
    pub name: String,
    /// Its `type` (`sse`, `websocket`, `webhook`, `rest`, `graphql`).
    pub kind: String,
    /// Its state, as `/readyz` spells it (`connected`, `reconnecting`, `failed`, …).
    pub state: String,
    /// What the state says besides its word (an error, a reason), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_detail: Option<String>,
    /// The replica that runs it.
    pub replica: String,
    /// The last position this process stored for it (`None`: none since the start).
    pub position: Option<String>,
    /// When that position was stored (RFC 3339, UTC).
    pub position_committed_at: Option<String>,
    /// Seconds since that position was stored.
    pub position_age_seconds: Option<f64>,
    /// Seconds since the pump last took events from the source (`None`: none yet).
    pub last_event_age_seconds: Option<f64>,
    /// Records received per second over the last minute (less after a start: over the time
    /// since).
    pub records_per_second: f64,
    /// Records received since the process started.
    pub records_received_total: u64,
    /// Records sent to the dead-letter topic since the process started.
    pub dead_letters_total: u64,
    /// Reconnections since the process started (streaming kinds; 0 for the others).
    pub reconnects_total: u64,
    /// The last error the source reported (kept after it recovered).
    pub last_error: Option<String>,
    /// When it reported it (RFC 3339, UTC).
    pub last_error_at: Option<String>,
}

/// Samples of each source's received-records counter, for `records_per_second`.
#[derive(Default)]
pub struct RateSampler {
    samples: Mutex<BTreeMap<String, VecDeque<(Instant, u64)>>>,
}

impl RateSampler {
    /// A sampler of `metrics`' sources, read every [`RATE_SAMPLE_INTERVAL`] by a task that
    /// ends when the sampler is dropped.
    pub fn start(metrics: Arc<Metrics>) -> Arc<Self> {
        let sampler = Arc::new(RateSampler::default());
        sampler.sample(&metrics, Instant::now());
        let weak: Weak<RateSampler> = Arc::downgrade(&sampler);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RATE_SAMPLE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(sampler) = weak.upgrade() else {
                    return;
                };
                sampler.sample(&metrics, Instant::now());
            }
        });
        sampler
    }

    /// Records each source's counter at `now`, keeping one window's worth.
    fn sample(&self, metrics: &Metrics, now: Instant) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        for source in metrics.sources() {
            let series = samples.entry(source.name().to_owned()).or_default();
            series.push_back((now, source.records_received.get()));
            while series
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
            {
                series.pop_front();
            }
        }
    }

    /// Records per second of `source` from its oldest sample in the window to `count` now.
    fn rate(&self, source: &str, count: u64, now: Instant) -> f64 {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some((at, then)) = samples.get(source).and_then(|series| series.front()) else {
            return 0.0;
        };
        rate_between(*then, count, now.duration_since(*at))
    }
}

/// Records per second from `then` to `now` records over `elapsed` (0 over no time).
fn rate_between(then: u64, now: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    now.saturating_sub(then) as f64 / elapsed.as_secs_f64()
}

/// RFC 3339 (UTC, seconds) of `time`.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Seconds from `time` to now (0 for a time in the future).
fn age_seconds(time: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(time)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The report of the sources `health` lists (the ones this replica runs).
pub fn report(
    metrics: &Metrics,
    health: &Health,
    rates: &RateSampler,
    replica: &str,
    kafka_reachable: bool,
) -> StatusReport {
    let readiness = health.readiness(kafka_reachable);
    let now = Instant::now();
    let sources = readiness
        .sources
        .iter()
        .map(|(name, state)| {
            let handles = metrics.registered(name);
            let received = handles.as_ref().map_or(0, |h| h.records_received.get());
            let commit = handles.as_ref().and_then(|h| h.status.last_commit());
            let last_events = handles.as_ref().and_then(|h| h.status.last_events());
            let last_error = health.last_error(name);
            let detail = serde_json::to_value(state)
                .ok()
                .and_then(|value| value.get("detail").cloned())
                .map(|detail| match detail {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                });
            SourceStatus {
                name: name.clone(),
                kind: handles
                    .as_ref()
                    .map_or("unknown", |h| h.status.kind.name())
                    .to_owned(),
                state: state.word().to_owned(),
                state_detail: detail,
                replica: replica.to_owned(),
                position: commit.as_ref().map(|(position, _)| position.to_string()),
                position_committed_at: commit.as_ref().map(|(_, at)| rfc3339(*at)),
                position_age_seconds: commit.as_ref().map(|(_, at)| age_seconds(*at)),
                last_event_age_seconds: last_events.map(age_seconds),
                records_per_second: rates.rate(name, received, now),
                records_received_total: received,
                dead_letters_total: handles.as_ref().map_or(0, |h| h.status.dead_letters()),
                reconnects_total: handles.as_ref().map_or(0, |h| h.reconnects.get()),
                last_error: last_error.as_ref().map(|(error, _)| error.clone()),
                last_error_at: last_error.as_ref().map(|(_, at)| rfc3339(*at)),
            }
        })
        .collect();
    StatusReport {
        replica: replica.to_owned(),
        kafka_reachable: readiness.kafka_reachable,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_increase_over_the_time_between_samples() {
        assert_eq!(rate_between(100, 700, Duration::from_secs(60)), 10.0);
        assert_eq!(rate_between(100, 100, Duration::from_secs(5)), 0.0);
        // A counter cannot go back; a restarted series reads as no records, not a negative rate.
        assert_eq!(rate_between(700, 100, Duration::from_secs(5)), 0.0);
        assert_eq!(rate_between(0, 100, Duration::ZERO), 0.0);
    }

    #[test]
    fn samples_older_than_the_window_are_dropped() {
        let metrics = Metrics::new();
        let source = metrics.source("wiki", crate::metrics::SourceKind::Sse);
        let sampler = RateSampler::default();
        let start = Instant::now();
        for step in 0..20u64 {
            source.records_received.inc_by(50);
            sampler.sample(&metrics, start + RATE_SAMPLE_INTERVAL * step as u32);
        }
        let end = start + RATE_SAMPLE_INTERVAL * 19;
        // 5 s samples of +50 records: 10 records/s, measured over the last minute only.
        let rate = sampler.rate("wiki", source.records_received.get(), end);
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        let kept = sampler.samples.lock().unwrap()["wiki"].len();
        assert_eq!(kept, 13);
    }
}
