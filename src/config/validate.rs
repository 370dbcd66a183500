//! The second stage of configuration: [`RawConfig::validate`] checks every value of a parsed
//! config, resolves secrets and builds the sources, collecting every problem (each naming its
//! scope, field and fix) rather than stopping at the first, so that `tributary check` can print
//! them all at once.

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::{check_topic, Config, RawConfig, StoreKind};
use crate::{
    error::{ConfigError, ConfigErrors},
    secret,
    sinks::kafka::KafkaSinkConfig,
    sources::SourceConfig,
};

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
            metrics: self.metrics,
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
