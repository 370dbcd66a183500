//! Liveness and readiness as the HTTP server reports them.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only when the Kafka
//! brokers are reachable, checkpoint commits succeed (or have failed for less than
//! [`CHECKPOINT_FAILURE_GRACE`]), no essential task has died, and no source has failed permanently or is stuck
//! reconnecting; its
//! body lists every source's state so an operator sees which one is unhealthy and why.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

/// What a source is doing now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum SourceState {
    /// Not connected yet.
    Starting,
    /// Holding an open feed connection (a polled source: its last poll succeeded).
    Connected,
    /// A push source (webhooks) serving its route.
    Listening,
    /// Waiting to reconnect after `attempts` failed attempts (the last error in `error`).
    Reconnecting {
        /// Failed attempts since the last healthy connection.
        attempts: u32,
        /// The last error, secrets stripped.
        error: String,
    },
    /// Polling, but the last `polls` polls failed (the last error in `error`): an HTTP error
    /// that retries did not cure. The next poll comes at the interval.
    Failing {
        /// Failed polls in a row.
        polls: u32,
        /// The last error, secrets stripped.
        error: String,
    },
    /// Stopped for good on a permanent error; needs an operator.
    Failed(String),
    /// The feed said it has nothing more (e.g. SSE HTTP 204); not an error.
    Finished(String),
    /// Stopped by shutdown.
    Stopped,
}

impl SourceState {
    fn is_ready(&self) -> bool {
        match self {
            SourceState::Failed(_) | SourceState::Failing { .. } => false,
            // One failed reconnect is normal churn; several in a row are an outage.
            SourceState::Reconnecting { attempts, .. } => *attempts < 3,
            _ => true,
        }
    }
}

/// A source's state and the instance that reports it.
#[derive(Clone, Debug)]
struct Entry {
    /// Which start of the source this is (see [`Health::begin`]); 0 for states set by the
    /// daemon itself (e.g. a source that could not start).
    instance: u64,
    state: SourceState,
    /// The last error any instance reported (a state that carries one), and when: kept after
    /// the source recovers, for `GET /api/v1/sources`.
    last_error: Option<(String, SystemTime)>,
}

impl SourceState {
    /// The state's word, as `/readyz` spells it.
    pub fn word(&self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Connected => "connected",
            SourceState::Listening => "listening",
            SourceState::Reconnecting { .. } => "reconnecting",
            SourceState::Failing { .. } => "failing",
            SourceState::Failed(_) => "failed",
            SourceState::Finished(_) => "finished",
            SourceState::Stopped => "stopped",
        }
    }

    /// The error this state carries, if any.
    pub fn error(&self) -> Option<&str> {
        match self {
            SourceState::Reconnecting { error, .. } | SourceState::Failing { error, .. } => {
                Some(error)
            }
            SourceState::Failed(error) => Some(error),
            _ => None,
        }
    }
}

/// The state of every source, shared by the sources and the HTTP server.
///
/// A handle returned by [`Health::begin`] belongs to one instance (one start) of a source: it
/// only changes that source's state while that instance is the one listed, so a task of an
/// instance that was stopped (handed off, restarted by a reload) cannot mark a newer instance
/// of the same source failed, nor bring a source that moved away back into `/readyz`.
#[derive(Clone, Default)]
pub struct Health {
    sources: Arc<Mutex<BTreeMap<String, Entry>>>,
    /// The last instance number handed out by [`Health::begin`].
    instances: Arc<AtomicU64>,
    /// The instance this handle belongs to (`None`: the daemon's own handle).
    instance: Option<u64>,
    /// Since when, and why, checkpoint commits have been failing (`None`: the last succeeded).
    checkpoint_failing: Arc<Mutex<Option<(Instant, String)>>>,
    /// Why an essential task (a pump, the committer) died; the daemon is stopping.
    internal_failure: Arc<Mutex<Option<String>>>,
}

/// How long checkpoint commits may keep failing before `/readyz` reports it: a short hiccup
/// (a slow disk) is retried quietly, a full or read-only disk is not.
pub const CHECKPOINT_FAILURE_GRACE: Duration = Duration::from_secs(5);

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// True when every check passes.
    pub ready: bool,
    /// True when the Kafka brokers answered recently.
    pub kafka_reachable: bool,
    /// Each source's state.
    pub sources: BTreeMap<String, SourceState>,
    /// Why checkpoint commits have been failing for longer than [`CHECKPOINT_FAILURE_GRACE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_error: Option<String>,
    /// Why an essential task (a Kafka pump, the checkpoint committer) died: the daemon is
    /// stopping and exits 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_error: Option<String>,
}

impl Health {
    fn sources(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new instance of `source` starts: its state is `Starting` (whatever an earlier
    /// instance left, `Failed` included), and the returned handle reports for this instance
    /// only (see [`Health`]).
    pub fn begin(&self, source: &str) -> Health {
        let instance = self.instances.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sources = self.sources();
        let last_error = sources
            .get(source)
            .and_then(|entry| entry.last_error.clone());
        sources.insert(
            source.to_owned(),
            Entry {
                instance,
                state: SourceState::Starting,
                last_error,
            },
        );
        drop(sources);
        Health {
            instance: Some(instance),
            ..self.clone()
        }
    }

    /// The instance this handle belongs to (`None`: the daemon's own handle).
    pub fn instance(&self) -> Option<u64> {
        self.instance
    }

    /// Sets the state of `source`. `Failed` is final: a failed source keeps its first reason,
    /// whatever its task reports while it stops (e.g. the closed channel after the sink stopped
    /// it on a pipeline fault), until a new instance [begins](Health::begin). A handle of an
    /// instance that is no longer listed changes nothing.
    pub fn set(&self, source: &str, state: SourceState) {
        let mut sources = self.sources();
        match (sources.get_mut(source), self.instance) {
            (Some(Entry { instance, .. }), Some(own)) if *instance != own => {}
            (None, Some(_)) => {}
            (
                Some(Entry {
                    state: SourceState::Failed(_),
                    ..
                }),
                _,
            ) => {}
            (Some(entry), _) => {
                if let Some(error) = state.error() {
                    entry.last_error = Some((error.to_owned(), SystemTime::now()));
                }
                entry.state = state;
            }
            (None, None) => {
                let last_error = state
                    .error()
                    .map(|error| (error.to_owned(), SystemTime::now()));
                sources.insert(
                    source.to_owned(),
                    Entry {
                        instance: 0,
                        state,
                        last_error,
                    },
                );
            }
        }
    }

    /// Forgets `source` (a cluster replica handed it to another replica, a reload removed
    /// it): `/readyz` no longer lists it. A handle of an instance that is no longer listed
    /// changes nothing.
    pub fn remove(&self, source: &str) {
        let mut sources = self.sources();
        let listed = sources.get(source).map(|entry| entry.instance);
        if self.instance.is_none() || listed == self.instance {
            sources.remove(source);
        }
    }

    /// The last error `source` reported, and when (kept after it recovered).
    pub fn last_error(&self, source: &str) -> Option<(String, SystemTime)> {
        self.sources()
            .get(source)
            .and_then(|entry| entry.last_error.clone())
    }

    /// The state of `source`, if it is known.
    pub fn get(&self, source: &str) -> Option<SourceState> {
        self.sources().get(source).map(|entry| entry.state.clone())
    }

    /// Records the outcome of a checkpoint commit: `Err(reason)` starts (or continues) a
    /// failing spell, `Ok` ends it.
    pub fn checkpoint_commit(&self, outcome: Result<(), String>) {
        let mut failing = self
            .checkpoint_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => *failing = None,
            Err(reason) => {
                let since = failing
                    .as_ref()
                    .map_or_else(Instant::now, |(since, _)| *since);
                *failing = Some((since, reason));
            }
        }
    }

    /// Records that an essential task died (see [`crate::runtime::supervise`]): readiness is false from
    /// now on. The first reason is kept.
    pub fn internal_failure(&self, reason: String) {
        let mut failure = self
            .internal_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(reason);
    }

    /// Readiness given whether Kafka is reachable.
    pub fn readiness(&self, kafka_reachable: bool) -> Readiness {
        let sources: BTreeMap<String, SourceState> = self
            .sources()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.state.clone()))
            .collect();
        let checkpoint_error = self
            .checkpoint_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(since, _)| since.elapsed() >= CHECKPOINT_FAILURE_GRACE)
            .map(|(since, reason)| {
                format!(
                    "checkpoint commits have failed for {} s: {reason}",
                    since.elapsed().as_secs()
                )
            });
        let internal_error = self
            .internal_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ready = kafka_reachable
            && checkpoint_error.is_none()
            && internal_error.is_none()
            && sources.values().all(SourceState::is_ready);
        Readiness {
            ready,
            kafka_reachable,
            sources,
            checkpoint_error,
            internal_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_instance_clears_failed_and_a_stale_one_changes_nothing() {
        let health = Health::default();
        let first = health.begin("wiki");
        first.set("wiki", SourceState::Failed("acquire failed".into()));
        assert!(!health.readiness(true).ready);
        let second = health.begin("wiki");
        assert_eq!(health.get("wiki"), Some(SourceState::Starting));
        assert!(health.readiness(true).ready);
        // The first instance's late reports touch neither the second's state nor its entry.
        first.set("wiki", SourceState::Failed("late".into()));
        first.remove("wiki");
        assert_eq!(health.get("wiki"), Some(SourceState::Starting));
        second.set("wiki", SourceState::Connected);
        assert_eq!(health.get("wiki"), Some(SourceState::Connected));
        // Once removed, an instance cannot bring the source back into `/readyz`.
        second.remove("wiki");
        second.set("wiki", SourceState::Failed("after the handoff".into()));
        assert_eq!(health.get("wiki"), None);
        assert!(health.readiness(true).ready);
    }

    #[test]
    fn the_daemons_handle_keeps_failed_final_and_removes_any_instance() {
        let health = Health::default();
        health.set("wiki", SourceState::Failed("cannot build".into()));
        health.set("wiki", SourceState::Stopped);
        assert!(matches!(health.get("wiki"), Some(SourceState::Failed(_))));
        let instance = health.begin("other");
        health.remove("other");
        instance.set("other", SourceState::Connected);
        assert_eq!(health.get("other"), None);
    }
}
