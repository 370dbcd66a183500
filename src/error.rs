//! The one error type of the pipeline and the rule that decides what happens next.
//!
//! Every variant names the source it happened in and carries enough context (URL without
//! secrets, status, Kafka code) for an operator to act. [`SourceError::is_transient`] is the
//! single place that decides between "back off and retry" and "stop this source and say so in
//! `/readyz`".

use std::time::Duration;

/// An error raised while a source reads its feed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A failure that may go away by itself (network, timeout, 5xx, 429, broker unavailable).
    /// The source backs off and retries.
    #[error("source `{source_name}`: {message} (url `{url}`); retrying")]
    Transient {
        /// The configured source name.
        source_name: String,
        /// The feed URL, secrets stripped.
        url: String,
        /// What went wrong.
        message: String,
        /// A delay the server asked for (SSE `retry:` field, `Retry-After`), if any.
        retry_after: Option<Duration>,
    },
    /// A failure that retrying cannot cure (bad config, 401/403/404, a response that is not an
    /// event stream). The source stops and `/readyz` reports it. (HTTP 204 on an SSE stream is
    /// not an error: the source finishes.)
    #[error("source `{source_name}`: {message} (url `{url}`); {fix}")]
    Permanent {
        /// The configured source name.
        source_name: String,
        /// The feed URL, secrets stripped.
        url: String,
        /// What went wrong.
        message: String,
        /// What the operator should do about it.
        fix: String,
    },
}

impl SourceError {
    /// True when backing off and retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient { .. })
    }

    /// The delay the server asked for before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Transient { retry_after, .. } => *retry_after,
            SourceError::Permanent { .. } => None,
        }
    }
}

/// An error in the configuration, found before any data moves.
///
/// Rendered as `source \`name\`: field \`path\`: problem; fix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scope}: field `{field}`: {problem}; {fix}")]
pub struct ConfigError {
    /// `source \`name\`` for a source's field, or the section (`kafka`, `checkpoint`, `server`).
    pub scope: String,
    /// The dotted field path, e.g. `sources.wiki.url`.
    pub field: String,
    /// What is wrong with the value.
    pub problem: String,
    /// What to do to fix it.
    pub fix: String,
}

impl ConfigError {
    /// Builds an error for `field` within `scope`.
    pub fn new(
        scope: impl Into<String>,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError {
            scope: scope.into(),
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// A list of configuration errors; `check` prints all of them, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), render_list(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn render_list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error from the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the store's file failed.
    #[error("checkpoint store `{path}`: {operation} failed: {error}; check that the directory exists and is writable")]
    Io {
        /// The file or directory involved.
        path: String,
        /// What was being done (read, write, fsync, rename).
        operation: &'static str,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// Another process holds the state directory's lock: two daemons must never write the
    /// same positions.
    #[error("checkpoint store `{path}` is locked by another tributary process (pid {holder}); stop it, or give this daemon its own `checkpoint.dir`")]
    Locked {
        /// The lock file.
        path: String,
        /// The pid the holder wrote into the lock file (`unknown` when it cannot be read).
        holder: String,
    },
    /// A store task ended without an answer (it panicked, or the runtime is shutting down).
    #[error("checkpoint store: the store task failed: {0}")]
    Task(String),
    /// The brokers refused the Kafka store's credentials (a wrong SASL password, an
    /// untrusted certificate).
    #[error("checkpoint store topic `{topic}`: {failure}")]
    Refused {
        /// The positions topic.
        topic: String,
        /// What was refused, naming the mechanism.
        failure: Box<crate::kafka_auth::AuthFailure>,
    },
    /// A Kafka store request failed.
    #[error("checkpoint store topic `{topic}`: {operation} failed: {error}; check `kafka.brokers`, that the brokers answer, and the ACLs on the topic (the book: Cluster mode, \"The Kafka store\")")]
    Kafka {
        /// The positions topic.
        topic: String,
        /// What was being done (create the topic, read it, write a position).
        operation: &'static str,
        /// librdkafka's error.
        error: String,
    },
    /// An exactly-once source's transactional producer cannot be made or cannot initialize
    /// its transactions.
    #[error("source `{source_name}`: the transactional producer `{transactional_id}` cannot initialize transactions: {error}; check that `transaction.timeout.ms` (kafka.producer, default 60000) is at most the brokers' `transaction.max.timeout.ms`, that the brokers allow transactions (`transaction.state.log.replication.factor` brokers up), and that the principal has Write and Describe on TransactionalId `{transactional_id}` (the book: Concepts, \"Exactly-once\")")]
    Transactions {
        /// The source.
        source_name: String,
        /// Its `transactional.id`.
        transactional_id: String,
        /// librdkafka's error.
        error: String,
    },
    /// The positions topic exists with a `cleanup.policy` other than exactly `compact`
    /// (`delete`, `compact,delete`), so retention would delete positions.
    #[error("checkpoint store topic `{topic}` has `cleanup.policy={policy}`: retention would delete stored positions; set `cleanup.policy=compact` alone on it, without `delete` (`kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact` replaces the whole list), or choose another `checkpoint.topic`")]
    NotCompacted {
        /// The positions topic.
        topic: String,
        /// Its `cleanup.policy`.
        policy: String,
    },
    /// Another replica claimed the source in the Kafka store after this one: it owns it now.
    #[error("checkpoint store topic `{topic}`: source `{source_name}` was claimed by replica `{replica}` with owner epoch {epoch} while this replica claimed it; that replica owns it, and this one leaves it until the next rebalance")]
    Superseded {
        /// The positions topic.
        topic: String,
        /// The source.
        source_name: String,
        /// The replica whose claim holds.
        replica: String,
        /// Its owner epoch.
        epoch: u64,
    },
    /// Replicas of the cluster are running, so their positions must not be changed by hand.
    #[error("cluster group `{group}` has live members ({members}): a running replica owns these positions; stop every replica of the cluster, then run this again")]
    InUse {
        /// The consumer group of the cluster.
        group: String,
        /// The members' client ids.
        members: String,
    },
    /// The store's file exists but cannot be parsed.
    #[error("checkpoint store `{path}`: cannot parse: {error}; restore it from a backup or delete it to start every source from its configured start")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        error: serde_json::Error,
    },
}
