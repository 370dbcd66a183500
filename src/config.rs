//! Configuration: a TOML file plus `TRIBUTARY__…` environment overrides (the `config` crate),
//! checked into plain values before anything starts.
//!
//! Two stages, as in ripgrep: [`load`] parses (unknown keys are errors, with their path), then
//! [`RawConfig::validate`] (in `config/validate.rs`) checks every value and resolves secrets,
//! collecting *all* problems so `tributary check` can print them at once. Environment variables
//! override file keys with `__` as the separator: `TRIBUTARY__KAFKA__BROKERS=host:9092` sets
//! `kafka.brokers`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use explain::describe;

use crate::{
    error::{ConfigError, ConfigErrors},
    http::RateLimitConfig,
    sinks::kafka::KafkaSinkConfig,
    sources::{Source, SourceConfig, SourceInfo},
};

pub use crate::state::cluster::ClusterSection;

pub(crate) mod explain;
mod validate;

/// The whole config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The Kafka cluster.
    pub kafka: KafkaSection,
    /// Where positions are stored.
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    /// The HTTP server (metrics, health).
    #[serde(default)]
    pub server: ServerSection,
    /// The shape of the exported metrics (`[metrics]`).
    #[serde(default)]
    pub metrics: crate::metrics::MetricsOptions,
    /// Request budgets per host (`host` or `host:port`), shared by every polled source that
    /// calls it.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    /// Replicas that share the sources (optional; needs `checkpoint.store = "kafka"`).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// The sources, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
}

/// `[kafka]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`, e.g. `"kafka-0:9092,kafka-1:9092"`.
    pub brokers: String,
    /// Any librdkafka producer property, e.g. `"compression.type" = "zstd"`,
    /// `"sasl.password" = "${env:KAFKA_PASSWORD}"`. `enable.idempotence` and `acks` are fixed
    /// (`true`, `all`) by the delivery guarantee.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// How long shutdown waits for in-flight records to be acknowledged. Default `30s`.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Exactly-once sources: longest time between transaction commits. Default `1s`.
    #[serde(default = "default_transaction_interval", with = "humantime_serde")]
    pub transaction_interval: Duration,
    /// Exactly-once sources: a transaction also commits once its source has sent nothing for
    /// this long (the feed paused or a burst ended), so that `read_committed` readers and
    /// webhook senders do not wait out the interval. Default `100ms`; at most
    /// `transaction_interval` (equal turns it off).
    #[serde(default = "default_transaction_idle", with = "humantime_serde")]
    pub transaction_idle: Duration,
    /// Exactly-once sources: commit as soon as a transaction holds this many records.
    /// Default 100000 (each commit stops the source's pump for a flush and a round trip to
    /// the transaction coordinator, so a fast feed should commit on the interval).
    #[serde(default = "default_transaction_max_records")]
    pub transaction_max_records: u64,
}

fn default_transaction_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_transaction_idle() -> Duration {
    Duration::from_millis(100)
}
fn default_transaction_max_records() -> u64 {
    100_000
}

fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[checkpoint]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Which store keeps the positions: `"file"` (default) or `"kafka"`.
    #[serde(default)]
    pub store: StoreKind,
    /// Directory of the file store (`checkpoints.json`). Default `./state`. A relative path is
    /// resolved against the working directory when the config is validated.
    #[serde(default = "default_state_dir", deserialize_with = "explain::directory")]
    pub dir: PathBuf,
    /// The Kafka store's compacted topic. Default `tributary.positions`.
    #[serde(default = "default_positions_topic")]
    pub topic: String,
    /// Partitions of the Kafka store's topic when Tributary creates it. Default 1.
    #[serde(default = "default_positions_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of the Kafka store's topic when Tributary creates it. Default `-1`
    /// (the brokers' `default.replication.factor`).
    #[serde(default = "default_replication_factor")]
    pub topic_replication_factor: i32,
    /// Longest time between commits of acknowledged positions. Default `1s`.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Commit as soon as this many records were acknowledged since the last commit.
    /// Default 10000.
    #[serde(default = "default_commit_every_records")]
    pub commit_every_records: u64,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            store: StoreKind::default(),
            dir: default_state_dir(),
            topic: default_positions_topic(),
            topic_partitions: default_positions_partitions(),
            topic_replication_factor: default_replication_factor(),
            commit_interval: default_commit_interval(),
            commit_every_records: default_commit_every_records(),
        }
    }
}

/// `checkpoint.store`: where positions are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One JSON file in `checkpoint.dir` (single node).
    #[default]
    File,
    /// A compacted Kafka topic, `checkpoint.topic` (needed by `[cluster]`).
    Kafka,
}

fn default_positions_topic() -> String {
    "tributary.positions".into()
}
fn default_positions_partitions() -> i32 {
    1
}
pub(crate) fn default_replication_factor() -> i32 {
    -1
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("./state")
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_commit_every_records() -> u64 {
    10_000
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address of `/metrics`, `/healthz` and `/readyz`. Default `0.0.0.0:9464`.
    #[serde(
        default = "default_listen",
        deserialize_with = "explain::socket_address"
    )]
    pub listen: SocketAddr,
    /// A separate address for the webhook sources' routes (e.g. the only port exposed to the
    /// internet). Default: none, webhooks are served on `listen`.
    #[serde(default, deserialize_with = "explain::optional_socket_address")]
    pub webhook_listen: Option<SocketAddr>,
    /// Longest time a client may take to send a request's line and headers (from the
    /// connection's start or the previous response); then it is disconnected. Default `10s`.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time one write of an answer may wait for the client to read (its socket buffer
    /// full); then the connection is closed, so a client that never reads cannot hold a
    /// connection slot. Default `30s`.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Most connections open at once on each listener; more are closed at once and counted.
    /// Default 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            webhook_listen: None,
            header_read_timeout: default_header_read_timeout(),
            write_timeout: default_write_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl ServerSection {
    /// The bounds every listener applies.
    pub fn limits(&self) -> crate::runtime::server::listener::ConnectionLimits {
        crate::runtime::server::listener::ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9464))
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    512
}

/// A validated configuration, ready to run.
pub struct Config {
    /// The producer settings.
    pub kafka: KafkaSinkConfig,
    /// The checkpoint settings.
    pub checkpoint: CheckpointSection,
    /// The HTTP server settings.
    pub server: ServerSection,
    /// The shape of the exported metrics.
    pub metrics: crate::metrics::MetricsOptions,
    /// Request budgets per host.
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    /// The cluster settings, with `checkpoint.store = "kafka"`: the cluster of `[cluster]`,
    /// or a cluster of one named `default`. `None` with the file store.
    pub cluster: Option<ClusterSection>,
    /// The sources, in name order.
    pub sources: Vec<(SourceInfo, Box<dyn Source>)>,
    /// The sources' settings, by name: a cluster replica builds a source again each time it
    /// is assigned to it.
    pub source_configs: BTreeMap<String, SourceConfig>,
}

/// Reads `path` and the `TRIBUTARY__…` environment into a [`RawConfig`].
///
/// # Errors
/// The file cannot be read, is not TOML, has an unknown key or a value of the wrong type; the
/// error names the key path (the line and column of a TOML syntax error), never a value.
pub fn load(path: &Path) -> Result<RawConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "config",
            &origin,
            format!("cannot read the file: {e}"),
            "check the path and its permissions",
        )])
    })?;
    deserialize(&text, &origin)
}

/// Parses TOML text (plus the `TRIBUTARY__…` environment) into a [`RawConfig`].
///
/// # Errors
/// As [`load`].
pub fn parse_toml(text: &str) -> Result<RawConfig, ConfigErrors> {
    deserialize(text, "<inline>")
}

fn deserialize(text: &str, origin: &str) -> Result<RawConfig, ConfigErrors> {
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("TRIBUTARY")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "config",
                origin,
                describe(&e, text),
                "fix the file (TOML) or the TRIBUTARY__… variables",
            )])
        })?;
    serde_path_to_error::deserialize(built.clone()).map_err(|e| {
        ConfigErrors(vec![explain::explain(
            e.path().to_string(),
            describe(e.inner(), text),
            &built,
            &explain::tributary_env(),
        )])
    })
}

/// True when `topic` is a legal Kafka topic name: 1 to 249 characters from
/// `a-z A-Z 0-9 . _ -`, neither `.` nor `..` (Kafka's `Topic.validate`).
pub(crate) fn legal_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reports whether `topic` is a legal Kafka topic name.
pub(crate) fn check_topic(errors: &mut Vec<ConfigError>, scope: &str, field: &str, topic: &str) {
    if !legal_topic(topic) {
        errors.push(ConfigError::new(
            scope,
            field,
            format!("`{topic}` is not a legal Kafka topic name"),
            "use 1 to 249 characters from `a-z A-Z 0-9 . _ -`",
        ));
    }
}

#[cfg(test)]
mod tests;
