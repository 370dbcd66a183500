//! A replica's membership in the cluster's consumer group: the control topic, the group
//! consumer whose rebalance callbacks start and hand off sources, and the watch for replicas
//! that run another config.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{NewTopic, TopicReplication},
    client::ClientContext,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance},
    error::KafkaError,
    TopicPartitionList,
};
use tokio::runtime::Handle;

use super::{
    assignment::{client_id, control_partition, fingerprint, parse_client_id},
    connection, ClusterError, ClusterMetrics, ClusterSection,
};
use crate::{
    health::SourceState,
    sinks::kafka::KafkaSinkConfig,
    source_runner::{RunningSource, SourceRunner},
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

/// What the rebalance callbacks act on.
struct Owner {
    runner: SourceRunner,
    runtime: Handle,
    by_partition: BTreeMap<i32, Vec<String>>,
    configs: BTreeMap<String, SourceConfig>,
    running: Mutex<BTreeMap<String, RunningSource>>,
    handoff_timeout: Duration,
    metrics: ClusterMetrics,
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
            self.owner.revoke(&partition_ids(partitions), lost);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => self.owner.assign(&partition_ids(partitions)),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::error!(%error, "cluster rebalance failed; the group will try again")
            }
        }
    }
}

fn partition_ids(list: &TopicPartitionList) -> Vec<i32> {
    list.elements()
        .iter()
        .map(|element| element.partition())
        .collect()
}

impl Owner {
    fn sources_of(&self, partitions: &[i32]) -> Vec<String> {
        partitions
            .iter()
            .filter_map(|partition| self.by_partition.get(partition))
            .flatten()
            .cloned()
            .collect()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningSource>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Acquires the positions of the sources of `partitions` and starts them.
    fn assign(&self, partitions: &[i32]) {
        self.metrics
            .rebalances
            .with_label_values(&["assigned"])
            .inc_by(partitions.len() as u64);
        let names = self.sources_of(partitions);
        tracing::info!(?partitions, sources = ?names, "cluster: partitions assigned");
        if self.runner.shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        for name in names {
            if self.running().contains_key(&name) {
                continue;
            }
            let built = self.configs.get(&name).map(|config| config.build(&name));
            let (info, source) = match built {
                Some(Ok(built)) => built,
                Some(Err(errors)) => {
                    let reason = errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    self.runner.health.set(
                        &name,
                        SourceState::Failed(format!("cannot build: {reason}")),
                    );
                    continue;
                }
                None => continue,
            };
            match self.runtime.block_on(self.runner.start(info, source)) {
                Ok(running) => {
                    self.running().insert(name, running);
                }
                Err(error) => {
                    tracing::error!(source = %name, %error, "cluster: cannot acquire the source's position; it does not run on this replica until the next rebalance or restart");
                    self.runner.health.set(
                        &name,
                        SourceState::Failed(format!("cannot acquire its position: {error}")),
                    );
                }
            }
        }
        self.metrics
            .handoff_seconds
            .with_label_values(&["start"])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.sources_owned.set(self.running().len() as i64);
    }

    /// Hands off the sources of `partitions`: stops them, waits for Kafka's acknowledgements
    /// and commits their positions, all before the rebalance goes on.
    fn revoke(&self, partitions: &[i32], lost: bool) {
        let names = self.sources_of(partitions);
        let handing: Vec<RunningSource> = {
            let mut running = self.running();
            names
                .iter()
                .filter_map(|name| running.remove(name))
                .collect()
        };
        if lost {
            // Another replica owns these now: out of `/readyz` before anything else.
            for source in &handing {
                self.runner.health.remove(source.name());
            }
            tracing::warn!(?partitions, sources = ?names, "cluster: partitions lost (this replica was out of the group); stopping their sources, which another replica owns now");
        } else {
            tracing::info!(?partitions, sources = ?names, "cluster: partitions revoked; handing off their sources");
        }
        let event = if lost { "lost" } else { "revoked" };
        self.metrics
            .rebalances
            .with_label_values(&[event])
            .inc_by(partitions.len() as u64);
        if handing.is_empty() {
            return;
        }
        let started = Instant::now();
        let results = if lost {
            self.runtime.block_on(futures::future::join_all(
                handing
                    .into_iter()
                    .map(|source| self.runner.drop_lost(source)),
            ))
        } else {
            self.runtime.block_on(futures::future::join_all(
                handing
                    .into_iter()
                    .map(|source| self.runner.hand_off(source, self.handoff_timeout)),
            ))
        };
        for result in &results {
            tracing::info!(
                unacknowledged = result.unacknowledged,
                took_ms = result.took.as_millis() as u64,
                "cluster: source stopped"
            );
        }
        if !lost {
            self.metrics
                .handoff_seconds
                .with_label_values(&["stop"])
                .observe(started.elapsed().as_secs_f64());
        }
        self.metrics.sources_owned.set(self.running().len() as i64);
    }
}

fn kafka_error(cluster: &str, operation: &'static str, error: impl ToString) -> ClusterError {
    ClusterError::Kafka {
        cluster: cluster.to_owned(),
        operation,
        error: error.to_string(),
    }
}

/// Creates the control topic when it is missing and returns its partition count.
async fn control_partitions(
    cluster: &ClusterSection,
    kafka: &KafkaSinkConfig,
) -> Result<i32, ClusterError> {
    let topic = cluster.control_topic();
    super::ensure_topic(
        &connection(kafka),
        NewTopic::new(
            &topic,
            cluster.partitions,
            TopicReplication::Fixed(cluster.replication_factor),
        ),
    )
    .await
    .map_err(|e| kafka_error(&cluster.name, "create the control topic", e))?;
    let (name, metadata_topic) = (cluster.name.clone(), topic.clone());
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = connection(&kafka)
            .create()
            .map_err(|e| kafka_error(&name, "read the control topic's metadata", e))?;
        let partitions = super::topic_partitions(&consumer, &metadata_topic, REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(&name, "read the control topic's metadata", e))?;
        i32::try_from(partitions.len())
            .map_err(|e| kafka_error(&name, "read the control topic's metadata", e))
    })
    .await
    .map_err(|e| kafka_error(&cluster.name, "read the control topic's metadata", e))?
}

/// Joins the cluster's group and returns once the group consumer runs; the group then starts
/// `assigned` sources (built again from `configs` each time) on this replica as it is given
/// their control partitions.
///
/// # Errors
/// The control topic cannot be created or read, or the group consumer cannot be created.
pub async fn join(
    cluster: &ClusterSection,
    kafka: &KafkaSinkConfig,
    assigned: Vec<SourceInfo>,
    configs: BTreeMap<String, SourceConfig>,
    runner: SourceRunner,
) -> Result<Membership, ClusterError> {
    let partitions = control_partitions(cluster, kafka).await?;
    if partitions != cluster.partitions {
        tracing::warn!(topic = %cluster.control_topic(), partitions, configured = cluster.partitions, "the control topic has another partition count than `cluster.partitions`; its actual count is used");
    }
    let mut by_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for info in &assigned {
        by_partition
            .entry(control_partition(&info.name, partitions))
            .or_default()
            .push(info.name.to_string());
    }
    let configs: BTreeMap<String, SourceConfig> = configs
        .into_iter()
        .filter(|(name, _)| assigned.iter().any(|info| &*info.name == name))
        .collect();
    let own_fingerprint = fingerprint(&configs);
    let replica = cluster.replica_id();
    tracing::info!(cluster = %cluster.name, %replica, fingerprint = %own_fingerprint, control_topic = %cluster.control_topic(), partitions, sources = ?by_partition, "joining the cluster");
    let metrics = ClusterMetrics::new(runner.metrics.registry());
    let owner = Arc::new(Owner {
        runner,
        runtime: Handle::current(),
        by_partition,
        configs,
        running: Mutex::default(),
        handoff_timeout: cluster.handoff_timeout,
        metrics: metrics.clone(),
    });
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
    consumer
        .subscribe(&[&cluster.control_topic()])
        .map_err(|e| kafka_error(&cluster.name, "subscribe to the control topic", e))?;
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
/// config: two configs may map a source to different owners only through a changed partition
/// count, but they do run the shared sources with different settings.
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
            consumer_ref
                .fetch_group_list(Some(group_ref.as_str()), Duration::from_secs(5))
                .map(|list| {
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
            tracing::error!(replicas = ?differing, "CLUSTER CONFIG MISMATCH: these replicas run sources with different settings than this one; finish the rolling update (README, \"Rolling updates in a cluster\")");
        }
    }
}
