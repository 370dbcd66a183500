//! The Kafka half of `check --connect`: brokers, topics, the positions topic and (with the
//! Kafka store) each source's control topic, asked through metadata and DescribeConfigs
//! requests only (no topic is created, nothing is produced).

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{consumer::BaseConsumer, metadata::Metadata};

use super::{Class, Line, Status};
use crate::{
    config::{Config, StoreKind},
    kafka_auth::{AuthWatch, MetadataError},
    state::checkpoint::{compaction, Compaction},
};

/// How long one metadata request may take before the brokers count as unreachable.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topic missing from the metadata is asked for again (it may have been created a
/// moment ago).
const TOPIC_GRACE: Duration = Duration::from_secs(2);

/// What the brokers said about each topic: the result and its detail.
type Topics = BTreeMap<String, (Status, String)>;

/// The Kafka checks' results.
pub(super) struct KafkaChecks {
    /// Whether the brokers answered.
    pub(super) brokers: Line,
    /// Every topic the sources use.
    topics: Topics,
    /// The positions topic, with `checkpoint.store = "kafka"`.
    pub(super) positions: Option<Line>,
    /// Each shared source's control topic (`<cluster control topic>.<source>`), with
    /// `checkpoint.store = "kafka"`: the group assigns a source through it.
    pub(super) control: Vec<Line>,
}

impl KafkaChecks {
    /// The line for `topic`, as `what`.
    pub(super) fn topic(&self, what: String, topic: &str) -> Line {
        let (status, detail) = self.topics.get(topic).cloned().unwrap_or((
            Status::Skipped,
            "not checked: the brokers did not answer".to_owned(),
        ));
        Line {
            what,
            target: topic.to_owned(),
            status,
            detail,
        }
    }
}

/// Asks the brokers (with the producer's connection properties: TLS, SASL) for their
/// metadata, then for each topic of `config`; with the Kafka store, describes the positions
/// topic. Topic checks are skipped when the brokers do not answer.
pub(super) async fn check(config: &Config) -> KafkaChecks {
    let connection = crate::state::cluster::connection(&config.kafka);
    let mut wanted: Vec<String> = config
        .sources
        .iter()
        .flat_map(|(info, _)| [info.topic.clone(), info.dead_letter_topic.clone()])
        .collect();
    let positions_topic =
        (config.checkpoint.store == StoreKind::Kafka).then(|| config.checkpoint.topic.clone());
    wanted.extend(positions_topic.clone());
    // Webhook sources run on every replica: only the others have a control topic.
    let control_topics: Vec<(String, String)> = match &config.cluster {
        Some(cluster) => config
            .sources
            .iter()
            .filter(|(info, _)| !info.kind.is_pushed())
            .map(|(info, _)| {
                (
                    info.name.to_string(),
                    cluster.source_control_topic(&info.name),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let control_names: Vec<String> = control_topics.iter().map(|(_, t)| t.clone()).collect();
    let asked = tokio::task::spawn_blocking(move || {
        let watch = AuthWatch::new(&connection);
        let consumer: BaseConsumer<AuthWatch> = connection
            .create_with_context(watch.clone())
            .map_err(|e| format!("no answer within {METADATA_TIMEOUT:?}: {e}"))?;
        let metadata = watch
            .fetch_metadata(&consumer, None, METADATA_TIMEOUT)
            .map_err(|error| match error {
                MetadataError::Auth(failure) => failure.to_string(),
                MetadataError::Kafka(error) => {
                    format!("no answer within {METADATA_TIMEOUT:?}: {error}")
                }
            })?;
        let topics: Topics = wanted
            .into_iter()
            .map(|topic| {
                let found = topic_status(&consumer, &topic);
                (topic, found)
            })
            .collect();
        // Control topics are often missing before the first `run` (it creates them): read from
        // the metadata already fetched, without the grace a missing source topic gets.
        let control: Topics = control_names
            .into_iter()
            .map(|topic| {
                let partitions = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len());
                (topic, control_status(partitions))
            })
            .collect();
        Ok::<_, String>((brokers_detail(&metadata), topics, control))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let asked = asked.map(|(detail, topics, control)| {
        let lines = control_topics
            .iter()
            .map(|(source, topic)| {
                let (status, detail) = control.get(topic).cloned().unwrap_or((
                    Status::Skipped,
                    "not checked: the brokers did not answer".to_owned(),
                ));
                Line {
                    what: format!("control topic ({source})"),
                    target: topic.clone(),
                    status,
                    detail,
                }
            })
            .collect::<Vec<_>>();
        (detail, topics, lines)
    });
    let target = config.kafka.brokers.clone();
    let (brokers, topics, control) = match asked {
        Ok((detail, topics, control)) => (
            Line {
                what: "kafka brokers".to_owned(),
                target,
                status: Status::Ok,
                detail,
            },
            topics,
            control,
        ),
        Err(error) => (
            Line {
                what: "kafka brokers".to_owned(),
                target,
                status: Status::Failed(Class::Kafka),
                detail: error,
            },
            Topics::new(),
            Vec::new(),
        ),
    };
    let positions = match positions_topic {
        Some(topic) => Some(positions_line(config, &topic, topics.get(&topic)).await),
        None => None,
    };
    KafkaChecks {
        brokers,
        topics,
        positions,
        control,
    }
}

/// A control topic with `partitions` (`None`: missing). `run` creates a missing one; the group
/// assigns a source through its control topic's one partition, so a topic of several
/// partitions would let several replicas run the source at once.
fn control_status(partitions: Option<usize>) -> (Status, String) {
    match partitions {
        None => (
            Status::Ok,
            "missing; `run` creates it with 1 partition (ACL `Create` on the control topic prefix)"
                .to_owned(),
        ),
        Some(1) => (Status::Ok, "exists, 1 partition".to_owned()),
        Some(n) => (
            Status::Failed(Class::Kafka),
            format!(
                "exists with {n} partitions: a control topic must have exactly 1 (each partition \
                 can be assigned to a different replica); delete it, `run` creates it again"
            ),
        ),
    }
}

/// `N broker(s): id@host:port, …`.
fn brokers_detail(metadata: &Metadata) -> String {
    let list: Vec<String> = metadata
        .brokers()
        .iter()
        .map(|b| format!("{}@{}:{}", b.id(), b.host(), b.port()))
        .collect();
    format!("{} broker(s) answered: {}", list.len(), list.join(", "))
}

/// Whether the metadata lists `topic` with partitions. A topic created a moment ago may not
/// be in the metadata yet, so a missing topic is asked for again for up to [`TOPIC_GRACE`].
fn topic_status(consumer: &BaseConsumer<AuthWatch>, topic: &str) -> (Status, String) {
    match crate::state::cluster::topic_partitions(consumer, topic, TOPIC_GRACE) {
        Ok(partitions) => (
            Status::Ok,
            format!("exists, {} partition(s)", partitions.len()),
        ),
        Err(why) => (
            Status::Failed(Class::Kafka),
            format!("missing: {why}; create it: `tributary topics create --config <file>`"),
        ),
    }
}

/// The positions topic: missing is fine (`run` creates it, compacted); an existing one must be
/// compacted, as [`crate::state::checkpoint::KafkaStore::open`] demands.
async fn positions_line(config: &Config, topic: &str, found: Option<&(Status, String)>) -> Line {
    let line = |status, detail: String| Line {
        what: "positions topic".to_owned(),
        target: topic.to_owned(),
        status,
        detail,
    };
    let (exists, detail) = match found {
        None => {
            return line(
                Status::Skipped,
                "not checked: the brokers did not answer".to_owned(),
            )
        }
        Some((Status::Ok, detail)) => (true, detail.clone()),
        Some(_) => (false, String::new()),
    };
    if !exists {
        return line(
            Status::Ok,
            "missing; `run` creates it with cleanup.policy=compact (ACL `Create`)".to_owned(),
        );
    }
    let store = crate::state::cluster::store_config(
        &config.kafka,
        &config.checkpoint,
        &config.cluster.clone().unwrap_or_default(),
    );
    match compaction(&store).await {
        Ok(Compaction::Compacted) => line(Status::Ok, format!("{detail}, compacted")),
        Ok(Compaction::NotCompacted { policy }) => line(
            Status::Failed(Class::Kafka),
            format!(
                "{detail}, but cleanup.policy=`{policy}`: `run` refuses it; set it to `compact` \
                 alone (`kafka-configs.sh --alter --entity-type topics --entity-name {topic} \
                 --add-config cleanup.policy=compact` replaces the whole list)",
                topic = store.topic
            ),
        ),
        Ok(Compaction::Unknown(_)) => line(
            Status::Ok,
            format!("{detail}; cleanup.policy not checked: no broker describes topic configs"),
        ),
        Err(error) => line(Status::Failed(Class::Kafka), error.to_string()),
    }
}
