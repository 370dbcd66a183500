//! `tributary dev-broker`: librdkafka's mock cluster as a standalone process, so that a new
//! user can try a config without installing Kafka.
//!
//! **For development only.** The mock cluster keeps everything in memory (a partition holds a
//! few MiB), loses it all when the process ends, and implements only part of the Kafka
//! protocol: topics cannot be created through the Admin API (this command creates them),
//! topic configs cannot be read, and consumer groups cannot be listed, so `tributary
//! positions set|reset` cannot check for running replicas against it.

use std::collections::BTreeMap;

use rdkafka::{mocking::MockCluster, producer::DefaultProducerContext};

use crate::config::{Config, StoreKind};

/// Partitions of a topic the command creates when none are given.
pub const DEFAULT_PARTITIONS: i32 = 3;

/// The banner printed on start.
pub const WARNING: &str = "DEVELOPMENT ONLY: this broker keeps records in memory, loses them all when it stops, and is not Apache Kafka; never point a production daemon at it";

/// A running mock cluster.
pub struct DevBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

/// Why the dev broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevBrokerError {
    /// librdkafka could not start the mock cluster or create a topic.
    #[error("dev-broker: {operation} failed: {error}")]
    Kafka {
        /// What was being done.
        operation: String,
        /// librdkafka's error.
        error: rdkafka::error::KafkaError,
    },
    /// A `--topic` argument is not `NAME` or `NAME:PARTITIONS`.
    #[error("dev-broker: `--topic {0}`: write NAME or NAME:PARTITIONS, e.g. `wiki:3`")]
    BadTopic(String),
}

/// Parses a `--topic` argument: `NAME` or `NAME:PARTITIONS`.
///
/// # Errors
/// [`DevBrokerError::BadTopic`] when the partition count is not a positive number.
pub fn parse_topic(argument: &str) -> Result<(String, i32), DevBrokerError> {
    match argument.rsplit_once(':') {
        None if !argument.is_empty() => Ok((argument.to_owned(), DEFAULT_PARTITIONS)),
        Some((name, partitions)) if !name.is_empty() => partitions
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| (name.to_owned(), p))
            .ok_or_else(|| DevBrokerError::BadTopic(argument.to_owned())),
        _ => Err(DevBrokerError::BadTopic(argument.to_owned())),
    }
}

/// The topics `config` needs: every source's topic and dead-letter topic, and, with the
/// Kafka store, the positions topic and the cluster's control topics.
pub fn topics_of(config: &Config) -> BTreeMap<String, i32> {
    let mut topics = BTreeMap::new();
    for (info, _) in &config.sources {
        topics.insert(info.topic.clone(), DEFAULT_PARTITIONS);
        topics.insert(info.dead_letter_topic.clone(), DEFAULT_PARTITIONS);
    }
    if config.checkpoint.store == StoreKind::Kafka {
        topics.insert(
            config.checkpoint.topic.clone(),
            config.checkpoint.topic_partitions,
        );
        if let Some(cluster) = &config.cluster {
            // One control topic of one partition per shared source (webhooks are not
            // shared); the bare one for a replica with none.
            let mut shared = 0;
            for (name, source) in &config.source_configs {
                if !source.is_pushed() {
                    topics.insert(cluster.source_control_topic(name), 1);
                    shared += 1;
                }
            }
            if shared == 0 {
                topics.insert(cluster.control_topic(), 1);
            }
        }
    }
    topics
}

impl DevBroker {
    /// Starts a mock cluster of `brokers` brokers on 127.0.0.1 and creates `topics` (name,
    /// partitions).
    ///
    /// # Errors
    /// The mock cluster cannot start, or a topic cannot be created.
    pub fn start(brokers: i32, topics: &BTreeMap<String, i32>) -> Result<Self, DevBrokerError> {
        let cluster = MockCluster::new(brokers).map_err(|error| DevBrokerError::Kafka {
            operation: "start the mock cluster".into(),
            error,
        })?;
        let replication = brokers.min(3);
        for (topic, partitions) in topics {
            cluster
                .create_topic(topic, *partitions, replication)
                .map_err(|error| DevBrokerError::Kafka {
                    operation: format!("create topic `{topic}`"),
                    error,
                })?;
        }
        Ok(DevBroker { cluster })
    }

    /// `bootstrap.servers` of the mock cluster.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_arguments() {
        assert_eq!(parse_topic("wiki").unwrap(), ("wiki".into(), 3));
        assert_eq!(parse_topic("wiki:12").unwrap(), ("wiki".into(), 12));
        assert!(parse_topic("wiki:0").is_err());
        assert!(parse_topic(":3").is_err());
        assert!(parse_topic("").is_err());
    }
}
