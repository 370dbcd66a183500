//! Configuration: a TOML file plus `TRIBUTARY__…` environment overrides (the `config` crate),
//! checked into plain values before anything starts.
//!
//! Two stages, as in ripgrep: [`load`] parses (unknown keys are errors, with their path), then
//! [`RawConfig::validate`] checks every value and resolves secrets, collecting *all* problems so
//! `tributary check` can print them at once. Environment variables override file keys with `__`
//! as the separator: `TRIBUTARY__KAFKA__BROKERS=host:9092` sets `kafka.brokers`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;
use serde::Deserialize;

use crate::{
    config_explain::{self, describe},
    error::{ConfigError, ConfigErrors},
    http::RateLimitConfig,
    secret,
    sinks::kafka::KafkaSinkConfig,
    sources::{Source, SourceConfig, SourceInfo},
};

pub use crate::cluster::ClusterSection;

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
    #[serde(
        default = "default_state_dir",
        deserialize_with = "config_explain::directory"
    )]
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
        deserialize_with = "config_explain::socket_address"
    )]
    pub listen: SocketAddr,
    /// A separate address for the webhook sources' routes (e.g. the only port exposed to the
    /// internet). Default: none, webhooks are served on `listen`.
    #[serde(default, deserialize_with = "config_explain::optional_socket_address")]
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
    pub fn limits(&self) -> crate::server::listener::ConnectionLimits {
        crate::server::listener::ConnectionLimits {
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
        ConfigErrors(vec![config_explain::explain(
            e.path().to_string(),
            describe(e.inner(), text),
            &built,
            &config_explain::tributary_env(),
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

fn legal_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl RawConfig {
    /// Checks every value, resolves secrets and builds the sources.
    ///
    /// # Errors
    /// Every problem found, each naming its scope, field and fix.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        if self.kafka.brokers.trim().is_empty() {
            errors.push(ConfigError::new(
                "kafka",
                "kafka.brokers",
                "is empty",
                "list the bootstrap servers, e.g. `\"kafka-0:9092,kafka-1:9092\"`",
            ));
        }
        let mut properties: BTreeMap<String, SecretString> = BTreeMap::new();
        for (key, value) in &self.kafka.producer {
            let field = format!("kafka.producer.{key}");
            if key == "bootstrap.servers" {
                errors.push(ConfigError::new(
                    "kafka",
                    field,
                    "is set twice",
                    "set `kafka.brokers` instead",
                ));
                continue;
            }
            if let Some((_, fixed)) = crate::sinks::kafka::ENFORCED_PROPERTIES
                .iter()
                .find(|(name, _)| name == key)
            {
                let allowed = value == fixed || (key == "acks" && value == "-1");
                if !allowed {
                    errors.push(ConfigError::new(
                        "kafka",
                        field,
                        format!("must be `{fixed}` for at-least-once delivery"),
                        format!("remove it or set it to `{fixed}`"),
                    ));
                }
                continue;
            }
            if let Some((problem, fix)) = refused_producer_property(key, value) {
                errors.push(ConfigError::new("kafka", field, problem, fix));
                continue;
            }
            match secret::resolve(value) {
                Ok(resolved) => {
                    properties.insert(key.clone(), resolved);
                }
                Err(e) => errors.push(ConfigError::new("kafka", field, e.to_string(), e.fix())),
            }
        }
        if self.kafka.transaction_interval.is_zero() {
            errors.push(ConfigError::new(
                "kafka",
                "kafka.transaction_interval",
                "must be greater than zero",
                "use e.g. `\"1s\"`",
            ));
        }
        if self.kafka.transaction_idle > self.kafka.transaction_interval {
            errors.push(ConfigError::new(
                "kafka",
                "kafka.transaction_idle",
                "must not be longer than `kafka.transaction_interval`",
                "use e.g. `\"100ms\"`, or the interval itself to commit on the interval only",
            ));
        }
        if self.kafka.transaction_max_records == 0 {
            errors.push(ConfigError::new(
                "kafka",
                "kafka.transaction_max_records",
                "must be at least 1",
                "use e.g. `10000`",
            ));
        }
        for (name, source) in &self.sources {
            if source.delivery() == crate::sources::Delivery::ExactlyOnce
                && self.checkpoint.store != StoreKind::Kafka
            {
                errors.push(ConfigError::new(
                    format!("sources.{name}"),
                    format!("sources.{name}.delivery"),
                    "`\"exactly_once\"` needs `checkpoint.store = \"kafka\"`: the position is \
                     written in the same Kafka transaction as the records",
                    "set `checkpoint.store = \"kafka\"` (with `checkpoint.topic`), or remove \
                     `delivery`",
                ));
            }
        }
        if self.kafka.flush_timeout.is_zero() {
            errors.push(ConfigError::new(
                "kafka",
                "kafka.flush_timeout",
                "must be greater than zero",
                "use e.g. `\"30s\"`",
            ));
        }
        check_topic(
            &mut errors,
            "checkpoint",
            "checkpoint.topic",
            &self.checkpoint.topic,
        );
        if self.checkpoint.topic_partitions < 1 {
            errors.push(ConfigError::new(
                "checkpoint",
                "checkpoint.topic_partitions",
                "must be at least 1",
                "use e.g. `1`",
            ));
        }
        if self.checkpoint.topic_replication_factor == 0
            || self.checkpoint.topic_replication_factor < -1
        {
            errors.push(ConfigError::new(
                "checkpoint",
                "checkpoint.topic_replication_factor",
                "must be at least 1, or -1 for the brokers' default",
                "use e.g. `3`",
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate(&mut errors);
            if self.checkpoint.store != StoreKind::Kafka {
                errors.push(ConfigError::new(
                    "cluster",
                    "checkpoint.store",
                    "must be `\"kafka\"` with `[cluster]`: the replicas share their positions through Kafka",
                    "set `checkpoint.store = \"kafka\"`",
                ));
            }
        }
        let mut checkpoint = self.checkpoint.clone();
        match std::path::absolute(&self.checkpoint.dir) {
            Ok(dir) => checkpoint.dir = dir,
            Err(e) => errors.push(ConfigError::new(
                "checkpoint",
                "checkpoint.dir",
                format!("cannot be made absolute: {e}"),
                "give an absolute directory path, e.g. `\"/var/lib/tributary\"`",
            )),
        }
        if self.checkpoint.commit_interval.is_zero() {
            errors.push(ConfigError::new(
                "checkpoint",
                "checkpoint.commit_interval",
                "must be greater than zero",
                "use e.g. `\"1s\"`",
            ));
        }
        if self.checkpoint.commit_every_records == 0 {
            errors.push(ConfigError::new(
                "checkpoint",
                "checkpoint.commit_every_records",
                "must be greater than zero",
                "use e.g. `10000`",
            ));
        }
        if self.server.header_read_timeout.is_zero() {
            errors.push(ConfigError::new(
                "server",
                "server.header_read_timeout",
                "must be greater than zero",
                "use e.g. `\"10s\"`",
            ));
        }
        if self.server.write_timeout.is_zero() {
            errors.push(ConfigError::new(
                "server",
                "server.write_timeout",
                "must be greater than zero",
                "use e.g. `\"30s\"`",
            ));
        }
        if self.server.max_connections == 0 {
            errors.push(ConfigError::new(
                "server",
                "server.max_connections",
                "must be greater than zero",
                "use e.g. `512`",
            ));
        }
        for (host, limit) in &self.rate_limits {
            if limit.quota().is_none() {
                errors.push(ConfigError::new(
                    "rate_limits",
                    format!("rate_limits.{host}"),
                    "`requests_per_second` and `burst` must be greater than zero",
                    "use e.g. `requests_per_second = 10` and `burst = 1`",
                ));
            }
        }
        if self.sources.is_empty() {
            errors.push(ConfigError::new(
                "sources",
                "sources",
                "no source is configured",
                "add a `[sources.<name>]` table (see config/sse.toml)",
            ));
        }
        // A body Kafka cannot hold would be accepted, then never produced whole.
        let message_max_bytes = self
            .kafka
            .producer
            .get("message.max.bytes")
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        let mut webhook_paths: BTreeMap<String, &str> = BTreeMap::new();
        let mut sources = Vec::new();
        for (name, source) in &self.sources {
            if let SourceConfig::Webhook(webhook) = source {
                if webhook.max_body_bytes > message_max_bytes {
                    errors.push(ConfigError::new(
                        format!("source `{name}`"),
                        format!("sources.{name}.max_body_bytes"),
                        format!(
                            "{} is above the producer's `message.max.bytes` ({message_max_bytes}): such a body would be accepted but could not be produced",
                            webhook.max_body_bytes
                        ),
                        "lower it, or raise `kafka.producer.\"message.max.bytes\"` (and the topic's `max.message.bytes`)",
                    ));
                }
                let path = webhook
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("/webhooks/{name}"));
                if let Some(other) = webhook_paths.insert(path.clone(), name) {
                    errors.push(ConfigError::new(
                        format!("source `{name}`"),
                        format!("sources.{name}.path"),
                        format!("`{path}` is also the path of source `{other}`"),
                        "give each webhook source its own path",
                    ));
                }
            }
            if !legal_source_name(name) {
                errors.push(ConfigError::new(
                    format!("source `{name}`"),
                    format!("sources.{name}"),
                    "the name is not allowed",
                    "use 1 to 64 characters from `a-z A-Z 0-9 _ - .`",
                ));
            }
            match source.build(name) {
                Ok(built) => sources.push(built),
                Err(source_errors) => errors.extend(source_errors),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            kafka: KafkaSinkConfig {
                brokers: self.kafka.brokers.clone(),
                properties,
                flush_timeout: self.kafka.flush_timeout,
                transaction_interval: self.kafka.transaction_interval,
                transaction_idle: self.kafka.transaction_idle,
                transaction_max_records: self.kafka.transaction_max_records,
            },
            checkpoint,
            server: self.server.clone(),
            rate_limits: self.rate_limits.clone(),
            cluster: match self.checkpoint.store {
                StoreKind::File => None,
                StoreKind::Kafka => Some(self.cluster.clone().unwrap_or_default()),
            },
            sources,
            source_configs: self.sources.clone(),
        })
    }
}

/// librdkafka's default `message.max.bytes`, bytes.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// A producer property that would break the delivery guarantee or the pipeline: why, and the
/// fix. `acks` and `enable.idempotence` are checked against
/// [`crate::sinks::kafka::ENFORCED_PROPERTIES`] instead.
fn refused_producer_property(key: &str, value: &str) -> Option<(&'static str, &'static str)> {
    match key {
        "transactional.id" => Some((
            "is set by Tributary: each source with `delivery = \"exactly_once\"` has its own \
             transactional producer, whose id belongs to the source (`tributary.<cluster>.<source>`) \
             so that a new owner fences the old one",
            "remove it, and set `delivery = \"exactly_once\"` on the sources that need it",
        )),
        "message.timeout.ms" if value.trim() != "0" => Some((
            "must be `0` (no timeout): a record that times out is neither in Kafka nor sent \
             again, so the source would have to stop",
            "remove it (`0` is the default)",
        )),
        _ => None,
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
