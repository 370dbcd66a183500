//! A replica's membership in the cluster's consumer group: the control topics (one per
//! source), the group consumer whose rebalance callbacks start and hand off sources
//! ([`super::owner`]), and the watch for replicas that run another config.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    client::ClientContext,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance},
    error::KafkaError,
    TopicPartitionList,
};

use super::{
    assignment::{client_id, fingerprint, parse_client_id},
    connection,
    owner::Owner,
    ClusterError, ClusterMetrics, ClusterSection,
};
use crate::{
    runtime::source_runner::SourceRunner,
    sinks::kafka::KafkaSinkConfig,
    sources::{SourceConfig, SourceInfo},
};

/// How long the poll loop waits for a group event at a time.
const POLL: Duration = Duration::from_millis(100);
/// How often the group's members are listed to compare configs.
const MEMBER_CHECK: Duration = Duration::from_secs(10);
/// How long one admin or metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long leaving the group may take (the last handoffs are already done by then).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A replica in its cluster. [`Membership::leave`] leaves the group after the daemon has
/// stopped its sources and committed their positions.
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Leaves the group: the coordinator gives this replica's partitions to the others at
    /// once (rather than after `session_timeout`).
    pub async fn leave(mut self) {
        self.watch.abort();
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

struct GroupContext {
    owner: Arc<Owner>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "cluster group consumer error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let lost = consumer.assignment_lost();
            self.owner.revoke(&topic_names(partitions), lost);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => self.owner.assign(&topic_names(partitions)),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::error!(%error, "cluster rebalance failed; the group will try again")
            }
        }
    }
}

/// The control topics of `list`. Each has one partition (partition 0 stands for the
/// source); any other partition of a topic created by hand with more stands for nothing.
fn topic_names(list: &TopicPartitionList) -> Vec<String> {
    list.elements()
        .iter()
        .filter(|element| element.partition() == 0)
        .map(|element| element.topic().to_owned())
        .collect()
}

fn kafka_error(cluster: &str, operation: &'static str, error: impl ToString) -> ClusterError {
    ClusterError::Kafka {
        cluster: cluster.to_owned(),
        operation,
        error: error.to_string(),
    }
}

/// Creates the control topics that are missing: one per source, with one partition.
async fn ensure_control_topics(
    cluster: &ClusterSection,
    kafka: &KafkaSinkConfig,
    topics: Vec<String>,
) -> Result<(), ClusterError> {
    super::ensure_topics(
        &connection(kafka),
        topics,
        1,
        cluster.replication_factor,
        REQUEST_TIMEOUT,
    )
    .await
    .map_err(|e| kafka_error(&cluster.name, "create the control topics", e))
}

/// Joins the cluster's group and returns once the group consumer runs; the group then starts
/// `assigned` sources (built again from `configs` each time) on this replica as it is given
/// their control topics.
///
/// # Errors
/// A control topic name is not legal, the control topics cannot be created or read, or the
/// group consumer cannot be created.
pub async fn join(
    cluster: &ClusterSection,
    kafka: &KafkaSinkConfig,
    assigned: Vec<SourceInfo>,
    configs: BTreeMap<String, SourceConfig>,
    runner: SourceRunner,
) -> Result<Membership, ClusterError> {
    let by_topic: BTreeMap<String, String> = assigned
        .iter()
        .map(|info| {
            (
                cluster.source_control_topic(&info.name),
                info.name.to_string(),
            )
        })
        .collect();
    if let Some((topic, source)) = by_topic.iter().find(|(topic, _)| topic.len() > 249) {
        return Err(ClusterError::TopicName {
            cluster: cluster.name.clone(),
            source_name: source.clone(),
            topic: topic.clone(),
        });
    }
    let mut folded: BTreeMap<String, &str> = BTreeMap::new();
    for (topic, source) in &by_topic {
        if let Some(first) = folded.insert(topic.replace('.', "_"), source) {
            return Err(ClusterError::TopicCollision {
                cluster: cluster.name.clone(),
                first: first.to_owned(),
                second: source.clone(),
            });
        }
    }
    // A replica with no source to share (webhooks only) still joins, on the bare control
    // topic, so that `positions set|reset` see it as a live member.
    let subscribed: Vec<String> = if by_topic.is_empty() {
        vec![cluster.control_topic()]
    } else {
        by_topic.keys().cloned().collect()
    };
    ensure_control_topics(cluster, kafka, subscribed.clone()).await?;
    let configs: BTreeMap<String, SourceConfig> = configs
        .into_iter()
        .filter(|(name, _)| assigned.iter().any(|info| &*info.name == name))
        .collect();
    let own_fingerprint = fingerprint(&configs);
    let replica = cluster.replica_id();
    tracing::info!(cluster = %cluster.name, %replica, fingerprint = %own_fingerprint, control_topics = %format!("{}.<source>", cluster.control_topic()), sources = ?by_topic.values().collect::<Vec<_>>(), "joining the cluster");
    let metrics = ClusterMetrics::new(runner.metrics.registry());
    let owner = Arc::new(Owner::new(
        runner,
        by_topic,
        configs,
        cluster.handoff_timeout,
        metrics.clone(),
    ));
    let session_ms = cluster.session_timeout.as_millis();
    let mut config = connection(kafka);
    config
        .set("group.id", cluster.group_id())
        .set("client.id", client_id(&replica, &own_fingerprint))
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 3).max(100).to_string(),
        )
        .set(
            "max.poll.interval.ms",
            (cluster.handoff_timeout.as_millis() + 60_000)
                .max(session_ms)
                .to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("allow.auto.create.topics", "false");
    let consumer: BaseConsumer<GroupContext> = config
        .create_with_context(GroupContext {
            owner: Arc::clone(&owner),
        })
        .map_err(|e| kafka_error(&cluster.name, "create the group consumer", e))?;
    let subscribed: Vec<&str> = subscribed.iter().map(String::as_str).collect();
    consumer
        .subscribe(&subscribed)
        .map_err(|e| kafka_error(&cluster.name, "subscribe to the control topics", e))?;
    let consumer = Arc::new(consumer);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("tributary-cluster".into())
        .spawn({
            let (consumer, stop) = (Arc::clone(&consumer), Arc::clone(&stop));
            move || poll_until_stopped(&consumer, &stop)
        })
        .map_err(|e| kafka_error(&cluster.name, "start the group thread", e))?;
    let watch = tokio::spawn(watch_members(
        consumer,
        cluster.group_id(),
        own_fingerprint,
        metrics,
    ));
    Ok(Membership {
        stop,
        thread: Some(thread),
        watch,
    })
}

/// Serves the group's callbacks until `stop`, then leaves the group, handing off whatever is
/// still assigned.
fn poll_until_stopped(consumer: &Arc<BaseConsumer<GroupContext>>, stop: &AtomicBool) {
    let mut last_warning: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if let Some(Err(error)) = consumer.poll(POLL) {
            if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                tracing::warn!(%error, "cluster group consumer");
                last_warning = Some(Instant::now());
            }
        }
    }
    consumer.unsubscribe();
    let deadline = Instant::now() + LEAVE_TIMEOUT;
    while Instant::now() < deadline
        && consumer
            .assignment()
            .is_ok_and(|assignment| assignment.count() > 0)
    {
        let _ = consumer.poll(POLL);
    }
}

/// Lists the group's members every [`MEMBER_CHECK`] and says loudly when one runs another
/// config: two configs never give a source two owners (its control topic depends on its name
/// only), but they do run the shared sources with different settings.
async fn watch_members(
    consumer: Arc<BaseConsumer<GroupContext>>,
    group: String,
    own: String,
    metrics: ClusterMetrics,
) {
    let mut ticker = tokio::time::interval(MEMBER_CHECK);
    loop {
        ticker.tick().await;
        let (consumer_ref, group_ref) = (Arc::clone(&consumer), group.clone());
        let listed = tokio::task::spawn_blocking(move || {
            super::list_group(&consumer_ref, &group_ref, Duration::from_secs(5)).map(|list| {
                list.groups()
                    .iter()
                    .filter(|info| info.name() == group_ref)
                    .flat_map(|info| {
                        info.members()
                            .iter()
                            .map(|member| member.client_id().to_owned())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await;
        let Ok(Ok(members)) = listed else { continue };
        metrics.members.set(members.len() as i64);
        let differing: Vec<&str> = members
            .iter()
            .filter_map(|id| parse_client_id(id))
            .filter(|(_, fingerprint)| *fingerprint != own)
            .map(|(replica, _)| replica)
            .collect();
        if differing.is_empty() {
            metrics.config_mismatch.set(0);
        } else {
            metrics.config_mismatch.set(1);
            tracing::error!(replicas = ?differing, "CLUSTER CONFIG MISMATCH: these replicas run sources with different settings than this one; finish the rolling update (the book: Cluster mode, \"Rolling updates in a cluster\")");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{runtime::source_runner::tests::runner_on, state::checkpoint::FileStore};

    #[tokio::test]
    async fn sources_whose_control_topics_collide_are_refused_before_joining() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Arc::new(FileStore::open(dir.path()).unwrap()));
        let kafka = KafkaSinkConfig {
            brokers: "127.0.0.1:9".into(),
            properties: BTreeMap::new(),
            flush_timeout: Duration::from_secs(1),
            transaction_interval: Duration::from_secs(1),
            transaction_idle: Duration::from_millis(100),
            transaction_max_records: 10_000,
        };
        let assigned = ["feed.a", "feed_a"]
            .map(|name| SourceInfo::new(name, "t", None, String::new(), 10, 1024))
            .to_vec();
        let joined = join(
            &ClusterSection::default(),
            &kafka,
            assigned,
            BTreeMap::new(),
            runner_on(store, &kafka.brokers),
        )
        .await;
        let error = joined.err().expect("refused").to_string();
        assert!(
            error.contains("`feed.a` and `feed_a`") && error.contains("rename one"),
            "{error}"
        );
    }
}
