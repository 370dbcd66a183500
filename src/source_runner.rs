//! Starting and stopping one source: its channel, its Kafka pump, its acknowledgements and its
//! task, as one unit.
//!
//! A single-node daemon starts every source once and stops them all at shutdown. A cluster
//! replica ([`crate::cluster`]) starts a source when it is assigned the source's control
//! partition and hands it off when the partition is revoked: [`SourceRunner::hand_off`] stops
//! the source, lets the pump drain its channel into the producer, waits (up to a deadline)
//! until Kafka has acknowledged every record, then commits the final position, so that the
//! next owner starts exactly after the last record Kafka holds.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    channel,
    checkpoint::{AckTracker, CheckpointStore, Committer, RecordAcks},
    error::CheckpointError,
    health::{Health, SourceState},
    http::HostLimits,
    metrics::Metrics,
    sinks::kafka::{run_pump, KafkaProducer, SourceSink},
    sources::{Source, SourceContext, SourceInfo},
    supervise::Supervisor,
};

/// How long a source whose partition was lost may take to stop.
pub const LOST_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a handoff looks whether Kafka has acknowledged the source's last records.
const ACK_POLL: Duration = Duration::from_millis(5);

/// What every source of a daemon shares.
#[derive(Clone)]
pub struct SourceRunner {
    pub(crate) producer: KafkaProducer,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) committer: Committer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Health,
    pub(crate) hosts: Arc<HostLimits>,
    pub(crate) supervisor: Supervisor,
    /// Cancelled at the shutdown deadline: pumps blocked on a full producer queue give up.
    pub(crate) abandon_pumps: CancellationToken,
    /// The daemon's root token: every source stops when it is cancelled.
    pub(crate) shutdown: CancellationToken,
    pub(crate) sources: TaskTracker,
    pub(crate) pumps: TaskTracker,
}

/// A started source.
pub struct RunningSource {
    name: Arc<str>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pump: tokio::task::JoinHandle<()>,
    tracker: Arc<AckTracker>,
}

impl RunningSource {
    /// The source's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// How a handoff ended.
#[derive(Debug)]
pub struct Handoff {
    /// Records Kafka had not acknowledged at the deadline (read again by the next owner).
    pub unacknowledged: usize,
    /// Time from the stop to the final commit.
    pub took: Duration,
    /// The final commit's error, if it failed (the previous position stays in force).
    pub commit_error: Option<CheckpointError>,
}

impl SourceRunner {
    /// Takes ownership of the source's stored position (see [`CheckpointStore::acquire`])
    /// and starts the source from it, with its pump.
    ///
    /// # Errors
    /// The store cannot be read (the source does not start).
    pub async fn start(
        &self,
        info: SourceInfo,
        source: Box<dyn Source>,
    ) -> Result<RunningSource, CheckpointError> {
        let name = Arc::clone(&info.name);
        let resume = self.store.acquire(&name).await?;
        let source_metrics = self.metrics.source(&name, info.kind);
        let tracker = Arc::new(AckTracker::new(resume.clone()));
        self.committer
            .track(&name, Arc::clone(&tracker), source_metrics.clone());
        let (records_tx, records_rx) = channel::bounded(
            info.channel_max_records,
            info.channel_max_bytes,
            source_metrics.clone(),
        );
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let sink = Arc::new(SourceSink {
            name: Arc::clone(&name),
            topic: info.topic.clone(),
            dead_letter_topic: info.dead_letter_topic.clone(),
            url: info.redacted_url.clone(),
            acks: Arc::new(RecordAcks::new(
                Arc::clone(&tracker),
                self.committer.handle(),
                info.commit_each_position,
            )),
            metrics: source_metrics.clone(),
            failures: failures_tx,
            health: self.health.clone(),
            stage: Arc::clone(&info.stage),
        });
        let pump = self.pumps.spawn(self.supervisor.clone().pump(
            Arc::clone(&name),
            run_pump(
                self.producer.clone(),
                sink,
                records_rx,
                failures_rx,
                self.abandon_pumps.clone(),
            ),
        ));
        tracing::info!(source = %name, topic = %info.topic, url = %info.redacted_url, resume_from = resume.as_ref().map_or("", |p| p.as_str()), "starting source");
        let stop = self.shutdown.child_token();
        let context = SourceContext {
            name: Arc::clone(&name),
            records: records_tx,
            shutdown: stop.clone(),
            resume,
            metrics: source_metrics,
            health: self.health.clone(),
            hosts: Arc::clone(&self.hosts),
            stage: Arc::clone(&info.stage),
        };
        self.health.set(&name, SourceState::Starting);
        let health = self.health.clone();
        let task_name = Arc::clone(&name);
        let task = self.sources.spawn(async move {
            let name = task_name;
            // A panic in a source must not end it silently: catch it and report it.
            match AssertUnwindSafe(source.run(context)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => health.set(&name, SourceState::Failed(error.to_string())),
                Err(_) => {
                    tracing::error!(source = %name, "source task panicked; it is stopped");
                    health.set(
                        &name,
                        SourceState::Failed("the source task panicked (a bug): see the log".into()),
                    );
                }
            }
        });
        Ok(RunningSource {
            name,
            stop,
            task,
            pump,
            tracker,
        })
    }

    /// Stops `running`, waits until its pump has handed every record to the producer and
    /// Kafka has acknowledged them (at most until `deadline`), commits its final position and
    /// forgets the source (metrics keep their values; `/readyz` no longer lists it).
    pub async fn hand_off(&self, running: RunningSource, timeout: Duration) -> Handoff {
        self.stop(running, timeout, true).await
    }

    /// Stops `running` after its partition was lost (this replica was out of the group and
    /// another one owns the source now): it leaves `/readyz` at once, and the source and its
    /// pump get at most [`LOST_STOP_TIMEOUT`] to end. No final commit: it would carry the old
    /// owner epoch and be ignored anyway.
    pub async fn drop_lost(&self, running: RunningSource) -> Handoff {
        self.health.remove(running.name());
        self.stop(running, LOST_STOP_TIMEOUT, false).await
    }

    async fn stop(&self, running: RunningSource, timeout: Duration, commit: bool) -> Handoff {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let RunningSource {
            name,
            stop,
            task,
            pump,
            tracker,
        } = running;
        stop.cancel();
        let drained = async {
            let _ = task.await;
            let _ = pump.await;
            while commit && tracker.in_flight() > 0 {
                tokio::time::sleep(ACK_POLL).await;
            }
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(source = %name, in_flight = tracker.in_flight(), "handoff deadline passed before Kafka acknowledged every record; the next owner reads them again");
        }
        let commit_error = if commit {
            self.committer.release(&name).await.err()
        } else {
            self.committer.forget(&name);
            None
        };
        if let Some(error) = &commit_error {
            tracing::error!(source = %name, %error, "the handoff's final commit failed; the next owner starts from the previous position (duplicates, no loss)");
        }
        self.health.remove(&name);
        Handoff {
            unacknowledged: tracker.in_flight(),
            took: started.elapsed(),
            commit_error,
        }
    }
}
