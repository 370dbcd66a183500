//! Cluster mode: replicas that share the sources through Kafka's consumer-group protocol,
//! with the positions in the Kafka store ([`crate::checkpoint::KafkaStore`]).
//!
//! Replicas with the same `[cluster] name` join the consumer group `tributary.<name>` on a
//! control topic that carries no records: its partitions only stand for sources
//! ([`assignment`] says which). The group coordinator (the brokers, no extra service)
//! assigns the partitions with the cooperative-sticky assignor, so a rebalance only moves the
//! partitions that must move, and a replica keeps running every source it keeps.
//!
//! - **Assignment:** for each new partition, the replica acquires its sources' positions from
//!   the Kafka store (which fences the previous owner) and starts them.
//! - **Revocation** is a clean handoff ([`crate::source_runner::SourceRunner::hand_off`]):
//!   inside the rebalance callback the replica stops the sources, waits until Kafka has
//!   acknowledged their records, commits their positions, and only then lets the rebalance go
//!   on, so the next owner starts right after the last record Kafka holds.
//! - **Lost partitions** (the replica was out of the group: a long pause, a network partition)
//!   stop their sources at once. Until the replica finds out, it may still produce and write
//!   positions; the owner epoch makes readers ignore those writes, and each of them covers only
//!   records Kafka holds: duplicates, never loss.
//! - **Webhook sources** are not assigned: every replica serves them.

pub mod assignment;
mod config;
mod membership;
mod metrics;

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use secrecy::ExposeSecret;

pub use config::ClusterSection;
pub use membership::{join, Membership};
pub use metrics::ClusterMetrics;

use crate::{
    checkpoint::KafkaStoreConfig, config::CheckpointSection, error::CheckpointError,
    sinks::kafka::KafkaSinkConfig,
};

/// Why a replica could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A Kafka request for the group or the control topic failed.
    #[error("cluster `{cluster}`: {operation} failed: {error}; check `kafka.brokers` and the ACLs on group `tributary.{cluster}` and the control topic (README, \"Cluster mode\")")]
    Kafka {
        /// The cluster's name.
        cluster: String,
        /// What was being done.
        operation: &'static str,
        /// librdkafka's error.
        error: String,
    },
}

/// librdkafka properties of `kafka.producer` that are about reaching the brokers (address
/// family, TLS, SASL, socket and reconnect settings), so that the store's and the group's
/// clients connect as the producer does.
fn is_connection_property(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "security.",
        "sasl.",
        "ssl.",
        "ssl_",
        "socket.",
        "broker.",
        "reconnect.",
        "retry.",
        "api.version",
        "client.dns.",
        "connections.max.",
        "enable.ssl.",
        "https.",
        "oauthbearer.",
    ];
    PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

/// A client config with the brokers and the connection properties of `kafka`.
pub(crate) fn connection(kafka: &KafkaSinkConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        if is_connection_property(key) {
            config.set(key, value.expose_secret());
        }
    }
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    config
}

/// The Kafka store's settings for a replica of `cluster`.
pub fn store_config(
    kafka: &KafkaSinkConfig,
    checkpoint: &CheckpointSection,
    cluster: &ClusterSection,
) -> KafkaStoreConfig {
    KafkaStoreConfig {
        connection: connection(kafka),
        topic: checkpoint.topic.clone(),
        partitions: checkpoint.topic_partitions,
        replication_factor: checkpoint.topic_replication_factor,
        cluster: cluster.name.clone(),
        replica: cluster.replica_id(),
    }
}

/// The client ids of the live members of the cluster's consumer group: replicas that run.
/// `tributary positions set|reset` refuses to change positions while there are any.
///
/// # Errors
/// The brokers do not answer (or refuse to describe the group).
pub fn live_members(
    kafka: &KafkaSinkConfig,
    cluster: &ClusterSection,
) -> Result<Vec<String>, CheckpointError> {
    let group = cluster.group_id();
    let failed = |error: rdkafka::error::KafkaError| CheckpointError::Kafka {
        topic: format!("(consumer group `{group}`)"),
        operation: "list the group's members",
        error: error.to_string(),
    };
    let consumer: BaseConsumer = connection(kafka).create().map_err(failed)?;
    let groups = consumer
        .fetch_group_list(Some(group.as_str()), std::time::Duration::from_secs(30))
        .map_err(failed)?;
    Ok(groups
        .groups()
        .iter()
        .filter(|info| info.name() == group)
        .flat_map(|info| info.members().iter().map(|m| m.client_id().to_owned()))
        .collect())
}
