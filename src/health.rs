//! Liveness and readiness as the HTTP server reports them.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only when the Kafka
//! brokers are reachable and no source has failed permanently or is stuck reconnecting; its
//! body lists every source's state so an operator sees which one is unhealthy and why.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde::Serialize;

/// What a source is doing now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum SourceState {
    /// Not connected yet.
    Starting,
    /// Holding an open feed connection.
    Connected,
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

/// The state of every source, shared by the sources and the HTTP server.
#[derive(Clone, Default)]
pub struct Health {
    sources: Arc<Mutex<BTreeMap<String, SourceState>>>,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// True when every check passes.
    pub ready: bool,
    /// True when the Kafka brokers answered recently.
    pub kafka_reachable: bool,
    /// Each source's state.
    pub sources: BTreeMap<String, SourceState>,
}

impl Health {
    /// Sets the state of `source`. `Failed` is final: a failed source keeps its first reason,
    /// whatever its task reports while it stops (e.g. the closed channel after the sink stopped
    /// it on a pipeline fault).
    pub fn set(&self, source: &str, state: SourceState) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(SourceState::Failed(_)) = sources.get(source) {
            return;
        }
        sources.insert(source.to_owned(), state);
    }

    /// The state of `source`, if it is known.
    pub fn get(&self, source: &str) -> Option<SourceState> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.get(source).cloned()
    }

    /// Readiness given whether Kafka is reachable.
    pub fn readiness(&self, kafka_reachable: bool) -> Readiness {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ready = kafka_reachable && sources.values().all(SourceState::is_ready);
        Readiness {
            ready,
            kafka_reachable,
            sources,
        }
    }
}
