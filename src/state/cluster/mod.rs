//! Cluster mode: replicas that share the sources through Kafka's consumer-group protocol,
//! with the positions in the Kafka store ([`crate::state::checkpoint::KafkaStore`]).
//!
//! Replicas with the same `[cluster] name` join the consumer group `tributary.<name>` on
//! control topics that carry no records: one per source, `<cluster.topic>.<source>`, with one
//! partition that stands for the source ([`assignment`]). The group coordinator (the brokers,
//! no extra service) assigns the partitions with the cooperative-sticky assignor, which
//! balances partition counts: since every partition is one source, each replica runs ⌊S/R⌋
//! or ⌈S/R⌉ sources once a rebalance settles, a rebalance only moves the sources that must
//! move, and a replica keeps running every source it keeps. A replica subscribes to the
//! topics of its own config's sources only, so in a rolling update a source is owned by
//! one replica whose config has it.
//!
//! - **Assignment:** for each new partition, the replica acquires its sources' positions from
//!   the Kafka store (which fences the previous owner) and starts them.
//! - **Revocation** is a clean handoff ([`crate::runtime::source_runner::SourceRunner::hand_off`]):
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
mod owner;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    types::RDKafkaErrorCode,
};
use secrecy::ExposeSecret;

pub use config::ClusterSection;
pub use membership::{join, Membership};
pub use metrics::ClusterMetrics;

use crate::{
    config::CheckpointSection, error::CheckpointError, sinks::kafka::KafkaSinkConfig,
    state::checkpoint::KafkaStoreConfig,
};

/// Why a replica could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A Kafka request for the group or the control topic failed.
    #[error("cluster `{cluster}`: {operation} failed: {error}; check `kafka.brokers` and the ACLs on group `tributary.{cluster}` and the control topic (the book: \"Cluster mode\")")]
    Kafka {
        /// The cluster's name.
        cluster: String,
        /// What was being done.
        operation: &'static str,
        /// librdkafka's error.
        error: String,
    },
    /// Two sources' control topics differ only by `.` and `_`, which Kafka refuses (the two
    /// would share metric names).
    #[error("cluster `{cluster}`: sources `{first}` and `{second}` would have control topics that differ only by `.` and `_`, which Kafka refuses; rename one of them")]
    TopicCollision {
        /// The cluster's name.
        cluster: String,
        /// One source.
        first: String,
        /// The other.
        second: String,
    },
    /// A source's control topic name would be longer than Kafka allows.
    #[error("cluster `{cluster}`: source `{source_name}`: its control topic `{topic}` is longer than Kafka's 249 characters; shorten `cluster.topic` (or `cluster.name`) or the source's name")]
    TopicName {
        /// The cluster's name.
        cluster: String,
        /// The source's name.
        source_name: String,
        /// The control topic it would have.
        topic: String,
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
        "enable.sasl.",
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

/// The partitions of `topic`, from the brokers' metadata. A topic created a moment ago may
/// not be in every broker's metadata yet, so this asks again every 100 ms until `timeout`; a
/// zero `timeout` asks once (the request itself may take up to 1 s).
///
/// # Errors
/// The brokers do not answer, or the topic still has no partitions at `timeout`.
pub(crate) fn topic_partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<Vec<i32>, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let metadata = consumer
            .fetch_metadata(
                Some(topic),
                remaining.max(std::time::Duration::from_secs(1)),
            )
            .map_err(|e| e.to_string())?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let partitions: Vec<i32> = found
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if !partitions.is_empty() {
            return Ok(partitions);
        }
        if std::time::Instant::now() >= deadline {
            let why = found
                .and_then(|t| t.error())
                .map(|code| rdkafka::types::RDKafkaErrorCode::from(code).to_string())
                .unwrap_or_else(|| "no partitions".into());
            return Err(format!(
                "the topic has no partitions in the metadata ({why})"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// True when the brokers' metadata lists `topic` with partitions (asked for at most
/// `timeout`). Blocking.
pub(crate) fn topic_exists(
    connection: &ClientConfig,
    topic: &str,
    timeout: std::time::Duration,
) -> bool {
    connection
        .create::<BaseConsumer>()
        .is_ok_and(|consumer| topic_partitions(&consumer, topic, timeout).is_ok())
}

/// Creates `topic` through the Admin API unless the brokers' metadata lists it already.
/// A refused creation is fine when the topic exists after all (a broker without the Admin
/// API, such as `dev-broker`'s mock cluster, or an ACL that allows using but not creating).
///
/// # Errors
/// The topic is missing and cannot be created: librdkafka's reason.
pub(crate) async fn ensure_topic(
    connection: &ClientConfig,
    topic: NewTopic<'_>,
) -> Result<(), String> {
    let name = topic.name.to_owned();
    let exists = |timeout| {
        let (connection, name) = (connection.clone(), name.clone());
        async move {
            tokio::task::spawn_blocking(move || topic_exists(&connection, &name, timeout))
                .await
                .unwrap_or(false)
        }
    };
    // One metadata request (a zero timeout asks once): a topic missing from it is created, and
    // one another replica created a moment ago is refused as existing, which is fine. Waiting
    // for it to appear first cost every first start a second per missing topic.
    if exists(std::time::Duration::ZERO).await {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        connection.create().map_err(|e| e.to_string())?;
    let created = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await;
    let refused = match created {
        Err(error) => Some(error.to_string()),
        Ok(results) => results.into_iter().find_map(|result| match result {
            Ok(_) => {
                tracing::info!(topic = %name, "created topic");
                None
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
            Err((_, code)) => Some(code.to_string()),
        }),
    };
    match refused {
        Some(refusal) if !exists(std::time::Duration::from_secs(10)).await => Err(refusal),
        _ => Ok(()),
    }
}

/// Creates those of `names` that the brokers' metadata does not list, with `partitions`
/// partitions and `replication_factor` replicas (-1: the brokers' default), in one Admin API
/// request, then waits (at most `timeout`) until the metadata lists them all. A refused
/// creation is fine when the topic exists after all (see [`ensure_topic`]).
///
/// # Errors
/// Topics are still missing at `timeout`: their names and librdkafka's reasons.
pub(crate) async fn ensure_topics(
    connection: &ClientConfig,
    names: Vec<String>,
    partitions: i32,
    replication_factor: i32,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let missing = |names: Vec<String>| {
        let connection = connection.clone();
        async move {
            tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
                let consumer: BaseConsumer = connection.create().map_err(|e| e.to_string())?;
                let metadata = consumer
                    .fetch_metadata(None, std::time::Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                let listed: std::collections::BTreeSet<&str> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name())
                    .collect();
                Ok(names
                    .into_iter()
                    .filter(|name| !listed.contains(name.as_str()))
                    .collect())
            })
            .await
            .map_err(|e| e.to_string())?
        }
    };
    let absent = missing(names).await?;
    if absent.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        connection.create().map_err(|e| e.to_string())?;
    let new_topics: Vec<NewTopic<'_>> = absent
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                partitions,
                rdkafka::admin::TopicReplication::Fixed(replication_factor),
            )
        })
        .collect();
    let created = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(30))),
        )
        .await;
    let mut refusals: Vec<String> = Vec::new();
    match created {
        Err(error) => refusals.push(error.to_string()),
        Ok(results) => {
            for result in results {
                match result {
                    Ok(name) => tracing::info!(topic = %name, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => refusals.push(format!("`{name}`: {code}")),
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut absent = absent;
    loop {
        absent = missing(absent).await?;
        if absent.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "topics {absent:?} are missing and could not be created ({})",
                refusals.join("; ")
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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

/// Describes the consumer group `group`, waiting while its coordinator is not ready: a
/// coordinator that has just started (or just moved) answers `COORDINATOR_LOAD_IN_PROGRESS` or
/// `COORDINATOR_NOT_AVAILABLE` until it has read `__consumer_offsets`, which is a state to wait
/// out, not an answer. Blocking: asks again every 100 ms until `timeout` (a wall-clock bound on
/// the whole call) has passed.
///
/// # Errors
/// The last error once `timeout` has passed, or at once any error that is not a coordinator
/// still getting ready (an ACL refusal, for example).
pub fn list_group<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    group: &str,
    timeout: std::time::Duration,
) -> rdkafka::error::KafkaResult<rdkafka::groups::GroupList> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match consumer.fetch_group_list(Some(group), left) {
            Err(error) if coordinator_not_ready(&error) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

/// Whether `error` says the group coordinator is getting ready (loading, moving, not yet
/// elected), which passes by itself (Kafka protocol error codes 14, 15 and 16).
fn coordinator_not_ready(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::CoordinatorLoadInProgress | Code::CoordinatorNotAvailable | Code::NotCoordinator
        )
    )
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
    let groups =
        list_group(&consumer, &group, std::time::Duration::from_secs(30)).map_err(failed)?;
    Ok(groups
        .groups()
        .iter()
        .filter(|info| info.name() == group)
        .flat_map(|info| info.members().iter().map(|m| m.client_id().to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{coordinator_not_ready, is_connection_property};
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;

    /// Every client Tributary makes must log in as the producer does: each security property
    /// of librdkafka's CONFIGURATION.md goes to the store's, the group's and the commands'
    /// clients; what only concerns producing does not.
    #[test]
    fn security_properties_reach_every_client_and_producer_tuning_does_not() {
        for key in [
            "security.protocol",
            "sasl.mechanism",
            "sasl.mechanisms",
            "sasl.username",
            "sasl.password",
            "sasl.kerberos.service.name",
            "sasl.kerberos.keytab",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.method",
            "sasl.oauthbearer.token.endpoint.url",
            "enable.sasl.oauthbearer.unsecure.jwt",
            "ssl.ca.location",
            "ssl.ca.pem",
            "ssl.ca.certificate.stores",
            "ssl.certificate.location",
            "ssl.certificate.pem",
            "ssl.key.location",
            "ssl.key.pem",
            "ssl.key.password",
            "ssl.keystore.location",
            "ssl.keystore.password",
            "ssl.crl.location",
            "ssl.cipher.suites",
            "ssl.curves.list",
            "ssl.sigalgs.list",
            "ssl.providers",
            "ssl.engine.id",
            "ssl.endpoint.identification.algorithm",
            "enable.ssl.certificate.verification",
            "https.ca.location",
            "client.dns.lookup",
            "broker.address.family",
            "socket.timeout.ms",
        ] {
            assert!(is_connection_property(key), "{key}");
        }
        for key in [
            "compression.type",
            "linger.ms",
            "acks",
            "enable.idempotence",
            "transactional.id",
            "queue.buffering.max.kbytes",
            "message.timeout.ms",
        ] {
            assert!(!is_connection_property(key), "{key}");
        }
    }

    #[test]
    fn a_coordinator_getting_ready_is_waited_out_other_errors_are_not() {
        for code in [
            Code::CoordinatorLoadInProgress,
            Code::CoordinatorNotAvailable,
            Code::NotCoordinator,
        ] {
            assert!(
                coordinator_not_ready(&KafkaError::GroupListFetch(code)),
                "{code:?}"
            );
        }
        for code in [
            Code::GroupAuthorizationFailed,
            Code::BrokerTransportFailure,
            Code::AllBrokersDown,
        ] {
            assert!(
                !coordinator_not_ready(&KafkaError::GroupListFetch(code)),
                "{code:?}"
            );
        }
    }
}
