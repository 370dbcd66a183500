//! What a replica does when the group gives it sources or takes them back: the rebalance
//! callbacks' work, run on the group consumer's thread.
//!
//! - **Assigned** sources are acquired (their positions read from the Kafka store, which
//!   fences the previous owner) and started. An acquisition that fails (the store's topic
//!   unreachable for a moment) is tried again with backoff, in a task, until it succeeds or
//!   the source is revoked; meanwhile `/readyz` shows the source as reconnecting.
//! - **Revoked** sources are handed off (stop, await Kafka's acknowledgements, final commit)
//!   before the callback returns, so the next owner starts after the last record Kafka holds.
//!   Retries of revoked sources are cancelled and awaited first, so a source never runs on
//!   two replicas at once. Every revoked source leaves `/readyz`, whether it ran, failed to
//!   build or was still being retried.
//! - **Lost** sources (this replica was out of the group) stop at once, without a final
//!   commit.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::ClusterMetrics;
use crate::{
    backoff::Backoff,
    runtime::health::SourceState,
    runtime::source_runner::{RunningSource, SourceRunner},
    sources::{Source, SourceConfig, SourceInfo},
};

/// The first ceiling of the delay between two acquisitions of a source.
const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// The longest delay between two acquisitions of a source.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// An acquisition being retried.
struct Retry {
    /// Told to stop (revoked, lost, shutdown).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The sources this replica runs, and the acquisitions it retries.
#[derive(Default)]
struct Owned {
    running: BTreeMap<String, RunningSource>,
    retrying: BTreeMap<String, Retry>,
}

/// What the rebalance callbacks act on.
pub(super) struct Owner {
    pub(super) runner: SourceRunner,
    pub(super) runtime: Handle,
    /// Control topic → the source it stands for.
    pub(super) by_topic: BTreeMap<String, String>,
    pub(super) configs: BTreeMap<String, SourceConfig>,
    owned: Mutex<Owned>,
    pub(super) handoff_timeout: Duration,
    pub(super) metrics: ClusterMetrics,
}

impl Owner {
    pub(super) fn new(
        runner: SourceRunner,
        by_topic: BTreeMap<String, String>,
        configs: BTreeMap<String, SourceConfig>,
        handoff_timeout: Duration,
        metrics: ClusterMetrics,
    ) -> Self {
        Owner {
            runner,
            runtime: Handle::current(),
            by_topic,
            configs,
            owned: Mutex::default(),
            handoff_timeout,
            metrics,
        }
    }

    fn sources_of(&self, topics: &[String]) -> Vec<String> {
        topics
            .iter()
            .filter_map(|topic| self.by_topic.get(topic))
            .cloned()
            .collect()
    }

    fn owned(&self) -> MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_owned(&self) {
        let owned = self.owned().running.len();
        self.metrics.sources_owned.set(owned as i64);
    }

    /// Builds `name` from its config; a config that does not build fails the source.
    fn build(&self, name: &str) -> Option<(SourceInfo, Box<dyn Source>)> {
        match self.configs.get(name)?.build(name) {
            Ok(built) => Some(built),
            Err(errors) => {
                let reason = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                self.runner
                    .health
                    .set(name, SourceState::Failed(format!("cannot build: {reason}")));
                None
            }
        }
    }

    /// Acquires the positions of the sources of `topics` and starts them; those whose
    /// acquisition fails are retried in the background.
    pub(super) fn assign(self: &Arc<Self>, topics: &[String]) {
        self.metrics
            .rebalances
            .with_label_values(&["assigned"])
            .inc_by(topics.len() as u64);
        let names = self.sources_of(topics);
        tracing::info!(sources = ?names, "cluster: sources assigned");
        if self.runner.shutdown.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let built: Vec<_> = names
            .into_iter()
            .filter(|name| {
                let owned = self.owned();
                !owned.running.contains_key(name) && !owned.retrying.contains_key(name)
            })
            .filter_map(|name| self.build(&name).map(|built| (name, built)))
            .collect();
        // The exactly-once sources among them fence their previous owners together, before any
        // reads its position (see `SourceRunner::fence_exactly_once`).
        self.runtime.block_on(
            self.runner
                .fence_exactly_once(built.iter().map(|(_, (info, _))| info)),
        );
        for (name, (info, source)) in built {
            match self.runtime.block_on(self.runner.start(info, source)) {
                Ok(running) => {
                    self.owned().running.insert(name, running);
                }
                Err(error) => {
                    tracing::warn!(source = %name, %error, "cluster: cannot acquire the source's position; trying again with backoff");
                    self.runner.health.set(
                        &name,
                        SourceState::Reconnecting {
                            attempts: 1,
                            error: format!("cannot acquire its position: {error}"),
                        },
                    );
                    let stop = self.runner.shutdown.child_token();
                    let task = self
                        .runtime
                        .spawn(Arc::clone(self).retry(name.clone(), stop.clone()));
                    self.owned().retrying.insert(name, Retry { stop, task });
                }
            }
        }
        self.runner.discard_fenced();
        self.metrics
            .handoff_seconds
            .with_label_values(&["start"])
            .observe(started.elapsed().as_secs_f64());
        self.count_owned();
    }

    /// Acquires `name` again and again, with backoff, until it starts or `stop` (revoked,
    /// lost, shutdown).
    async fn retry(self: Arc<Self>, name: String, stop: CancellationToken) {
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        let mut attempts = 1;
        loop {
            let delay = backoff.next_delay(Some(RETRY_INITIAL / 5), &mut rand::rng());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let Some((info, source)) = self.build(&name) else {
                self.owned().retrying.remove(&name);
                return;
            };
            // `start` does nothing after the acquisition that is not done at once: dropped
            // while it waits, it has started nothing.
            let started = tokio::select! {
                _ = stop.cancelled() => return,
                started = self.runner.start(info, source) => started,
            };
            attempts += 1;
            match started {
                Ok(running) => {
                    let mut owned = self.owned();
                    if stop.is_cancelled() {
                        // Revoked while it started: the revocation waits for this handoff.
                        drop(owned);
                        self.runner.hand_off(running, self.handoff_timeout).await;
                        return;
                    }
                    tracing::info!(source = %name, attempts, "cluster: the source's position was acquired; it runs");
                    owned.retrying.remove(&name);
                    owned.running.insert(name, running);
                    drop(owned);
                    self.count_owned();
                    return;
                }
                Err(error) => {
                    tracing::warn!(source = %name, %error, attempts, "cluster: cannot acquire the source's position; trying again with backoff");
                    self.runner.health.set(
                        &name,
                        SourceState::Reconnecting {
                            attempts,
                            error: format!("cannot acquire its position: {error}"),
                        },
                    );
                }
            }
        }
    }

    /// Hands off the sources of `topics`: stops them, waits for Kafka's acknowledgements
    /// and commits their positions, all before the rebalance goes on.
    pub(super) fn revoke(&self, topics: &[String], lost: bool) {
        let names = self.sources_of(topics);
        let (handing, retries): (Vec<RunningSource>, Vec<Retry>) = {
            let mut owned = self.owned();
            let handing = names
                .iter()
                .filter_map(|name| owned.running.remove(name))
                .collect();
            // Cancelled under the same lock a retry checks before it counts a source as
            // running: it either ran (and was taken above) or will hand itself off.
            let retries = names
                .iter()
                .filter_map(|name| owned.retrying.remove(name))
                .inspect(|retry| retry.stop.cancel())
                .collect();
            (handing, retries)
        };
        // Whatever state a source had here (running, retried, failed to build), it is
        // another replica's now.
        for name in &names {
            self.runner.health.remove(name);
        }
        if lost {
            tracing::warn!(sources = ?names, "cluster: sources lost (this replica was out of the group); stopping them: another replica owns them now");
        } else {
            tracing::info!(sources = ?names, "cluster: sources revoked; handing them off");
        }
        let event = if lost { "lost" } else { "revoked" };
        self.metrics
            .rebalances
            .with_label_values(&[event])
            .inc_by(topics.len() as u64);
        self.runtime.block_on(futures::future::join_all(
            retries.into_iter().map(|retry| retry.task),
        ));
        if handing.is_empty() {
            self.count_owned();
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
        self.count_owned();
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::{
        mocking::MockCluster,
        types::{RDKafkaApiKey, RDKafkaRespErr},
        ClientConfig,
    };

    use super::*;
    use crate::{
        cli::demo::replay::{ReplayOptions, ReplayServer},
        runtime::source_runner::tests::runner_on,
        state::checkpoint::{KafkaStore, KafkaStoreConfig},
    };

    /// Polls `condition` every 10 ms; fails after 30 s.
    async fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_claim_is_retried_until_the_source_runs_and_revocation_clears_it() {
        let mock = MockCluster::new(1).unwrap();
        for topic in ["positions", "wiki", "wiki.dlq"] {
            mock.create_topic(topic, 1, 1).unwrap();
        }
        let brokers = mock.bootstrap_servers();
        let store = KafkaStore::open(KafkaStoreConfig {
            connection: ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .clone(),
            topic: "positions".into(),
            partitions: 1,
            replication_factor: 1,
            cluster: "retry".into(),
            replica: "r1".into(),
        })
        .await
        .unwrap();
        let feed = ReplayServer::start_wikimedia(100, ReplayOptions::default())
            .await
            .unwrap();
        let config = crate::config::parse_toml(&format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[sources.wiki]\ntype = \"sse\"\nurl = \"{}\"\ntopic = \"wiki\"\n",
            feed.url()
        ))
        .and_then(|raw| raw.validate())
        .unwrap();
        let runner = runner_on(Arc::new(store), &brokers);
        let health = runner.health.clone();
        let metrics = ClusterMetrics::new(runner.metrics.registry());
        let owner = Arc::new(Owner::new(
            runner,
            BTreeMap::from([("control.wiki".to_owned(), "wiki".to_owned())]),
            config.source_configs,
            Duration::from_secs(5),
            metrics,
        ));
        // The next claims are refused, as a missing ACL would refuse them.
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
        );
        // The group's thread calls the callbacks, outside the runtime.
        let assigning = Arc::clone(&owner);
        tokio::task::spawn_blocking(move || assigning.assign(&["control.wiki".into()]))
            .await
            .unwrap();
        assert!(
            matches!(health.get("wiki"), Some(SourceState::Reconnecting { .. })),
            "{:?}",
            health.get("wiki")
        );
        assert!(owner.owned().running.is_empty());
        wait_until("the retried claim", || {
            owner.owned().running.contains_key("wiki")
        })
        .await;
        assert!(owner.owned().retrying.is_empty());
        assert!(!matches!(
            health.get("wiki"),
            Some(SourceState::Reconnecting { .. } | SourceState::Failed(_))
        ));
        let revoking = Arc::clone(&owner);
        tokio::task::spawn_blocking(move || revoking.revoke(&["control.wiki".into()], false))
            .await
            .unwrap();
        assert!(owner.owned().running.is_empty());
        assert_eq!(health.get("wiki"), None);
    }
}
