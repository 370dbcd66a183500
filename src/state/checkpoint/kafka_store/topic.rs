//! The positions topic itself: created when missing with `cleanup.policy=compact`, and
//! refused when it exists with any other policy.
//!
//! Only exactly `compact` is accepted. `delete` lets retention remove positions, and so does
//! `compact,delete`: compaction keeps the last record of each key, but retention then deletes
//! it with its segment. A source whose position was deleted starts again from its configured
//! start, and a partition that retention emptied has no record left to read, so the load
//! cannot show that it reached its end.

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use super::{kafka_error, KafkaStoreConfig, DESCRIBE_TIMEOUT};
use crate::error::CheckpointError;

/// The only `cleanup.policy` the positions topic may have.
const COMPACT: &str = "compact";

/// Creates the topic (compacted) when it is missing, and refuses one whose `cleanup.policy`
/// is not exactly `compact`.
pub(super) async fn ensure_compacted_topic(
    config: &KafkaStoreConfig,
) -> Result<(), CheckpointError> {
    crate::state::cluster::ensure_topic(
        &config.connection,
        NewTopic::new(
            &config.topic,
            config.partitions,
            TopicReplication::Fixed(config.replication_factor),
        )
        .set("cleanup.policy", COMPACT),
    )
    .await
    .map_err(|e| kafka_error(config, "create the topic", e))?;
    match compaction(config).await? {
        Compaction::Compacted => Ok(()),
        Compaction::Unknown(error) => {
            tracing::warn!(topic = %config.topic, %error, "no broker describes topic configs (a development broker such as `tributary dev-broker`?); the topic's `cleanup.policy` is not checked");
            Ok(())
        }
        Compaction::NotCompacted { policy } => Err(CheckpointError::NotCompacted {
            topic: config.topic.clone(),
            policy,
        }),
    }
}

/// What the brokers say about the `cleanup.policy` of an existing positions topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compaction {
    /// The policy is exactly `compact`.
    Compacted,
    /// The policy is anything else (`delete`, `compact,delete`, empty): retention would delete
    /// positions.
    NotCompacted {
        /// The topic's `cleanup.policy`, as the brokers describe it.
        policy: String,
    },
    /// No broker describes topic configs (a development broker): the policy is not known.
    Unknown(String),
}

/// Asks the brokers (DescribeConfigs, at most 5 s) whether the existing topic
/// `config.topic` has `cleanup.policy=compact` and nothing else. Used when the store opens
/// and by `tributary check --connect`.
///
/// # Errors
/// [`CheckpointError::Kafka`] when the brokers do not answer or refuse to describe the topic
/// (ACLs, a missing topic).
pub async fn compaction(config: &KafkaStoreConfig) -> Result<Compaction, CheckpointError> {
    let admin: AdminClient<DefaultClientContext> = config
        .connection
        .create()
        .map_err(|e| kafka_error(config, "create the admin client", e))?;
    let options = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    // A topic created a moment ago (by this replica or another one starting beside it) may be
    // described before its configs reached the broker that answers: no `cleanup.policy` yet.
    // Every existing topic has one (Kafka's default is `delete`), so ask again for a while.
    let mut attempts = 0;
    loop {
        let described = match admin
            .describe_configs(&[ResourceSpecifier::Topic(&config.topic)], &options)
            .await
        {
            Ok(described) => described,
            Err(error) if is_unsupported(&error) => {
                return Ok(Compaction::Unknown(error.to_string()))
            }
            Err(error) => return Err(kafka_error(config, "describe the topic", error)),
        };
        let mut policies = Vec::new();
        for result in described {
            let resource =
                result.map_err(|code| kafka_error(config, "describe the topic", code))?;
            policies.push(
                resource
                    .get("cleanup.policy")
                    .and_then(|entry| entry.value.clone())
                    .unwrap_or_default(),
            );
        }
        attempts += 1;
        if policies.iter().any(|policy| policy.trim().is_empty()) && attempts < DESCRIBE_ATTEMPTS {
            tokio::time::sleep(DESCRIBE_RETRY).await;
            continue;
        }
        return Ok(match policies.into_iter().find(|p| !is_compact_only(p)) {
            Some(policy) => Compaction::NotCompacted { policy },
            None => Compaction::Compacted,
        });
    }
}

/// How often [`compaction`] asks while the brokers describe the topic without a
/// `cleanup.policy` (a topic created a moment ago).
const DESCRIBE_ATTEMPTS: u32 = 20;
/// How long [`compaction`] waits between two such asks.
const DESCRIBE_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// True when `policy`, a `cleanup.policy` value (a comma-separated list), is `compact` and
/// nothing else.
fn is_compact_only(policy: &str) -> bool {
    let mut parts = policy
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .peekable();
    parts.peek().is_some() && parts.all(|part| part == COMPACT)
}

/// True when no broker serves a request: it says the request is not supported, or (as
/// librdkafka's mock cluster does) it lets the request time out although the same brokers
/// answered metadata and the topic's creation a moment before.
fn is_unsupported(error: &rdkafka::error::KafkaError) -> bool {
    let code = match error {
        rdkafka::error::KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(
            RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::InvalidRequest
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compact_alone_is_compact_only() {
        assert!(is_compact_only("compact"));
        assert!(is_compact_only(" compact "));
        for refused in [
            "compact,delete",
            "delete,compact",
            "compact, delete",
            "delete",
            "",
            ",",
        ] {
            assert!(!is_compact_only(refused), "`{refused}` was accepted");
        }
    }
}
