//! Starting and stopping one source: its channel, its Kafka pump, its acknowledgements and its
//! task, as one unit.
//!
//! A single-node daemon starts every source once and stops them all at shutdown. A cluster
//! replica ([`crate::state::cluster`]) starts a source when it is assigned the source's control
//! partition and hands it off when the partition is revoked: [`SourceRunner::hand_off`] stops
//! the source, lets the pump drain its channel into the producer, waits (up to a deadline)
//! until Kafka has acknowledged every record, then commits the final position, so that the
//! next owner starts exactly after the last record Kafka holds.

mod transactional;

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
    error::CheckpointError,
    http::HostLimits,
    metrics::{Metrics, SourceMetrics},
    runtime::health::{Health, SourceState},
    runtime::supervise::Supervisor,
    sinks::kafka::{run_pump, Deferred, FailedDelivery, KafkaProducer, SourceSink},
    sources::{Source, SourceContext, SourceInfo},
    state::checkpoint::{AckTracker, Acknowledger, CheckpointStore, Committer, RecordAcks},
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
    /// What each exactly-once source's `transactional.id` starts with (`tributary.<cluster>.`);
    /// the source's name follows.
    pub(crate) transactional_id_prefix: Arc<str>,
    /// This replica's id: a push source (webhooks) runs on every replica, so its
    /// `transactional.id` ends with it.
    pub(crate) replica: Arc<str>,
    /// Transactional producers that fenced their source's earlier owner, by
    /// `transactional.id`, waiting for their source to start
    /// ([`SourceRunner::fence_exactly_once`]).
    pub(crate) fenced: Arc<std::sync::Mutex<std::collections::HashMap<String, KafkaProducer>>>,
}

/// A started source: one instance of it (a source handed off and acquired again, or
/// restarted by a reload, is a new instance).
pub struct RunningSource {
    name: Arc<str>,
    /// This instance's health handle: it reports for this instance only.
    health: Health,
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

    /// This instance's number in [`Health`] (see [`Health::begin`]).
    pub fn instance(&self) -> Option<u64> {
        self.health.instance()
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
        self.keep_refresh_tokens(&info.name, source.refresh_token_grant())
            .await?;
        if info.delivery == crate::sources::Delivery::ExactlyOnce {
            return self.start_transactional(info, source).await;
        }
        let name = Arc::clone(&info.name);
        let resume = self.store.acquire(&name).await?;
        // A new instance: its state starts over (an earlier `Failed` is cleared), and what an
        // earlier instance's late tasks report no longer counts.
        let health = self.health.begin(&name);
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
        let acks = Arc::new(RecordAcks::new(
            Arc::clone(&tracker),
            self.committer.handle(),
            info.commit_each_position,
        ));
        let sink = sink(&info, acks, &source_metrics, failures_tx, &health, None);
        let pump_run = run_pump(
            self.producer.clone(),
            sink,
            records_rx,
            failures_rx,
            self.abandon_pumps.clone(),
            None,
        );
        // Mapped, not awaited in an `async` block: the block would hold a second copy of the
        // pump's future.
        let pump = self.pumps.spawn(
            self.supervisor
                .clone()
                .pump(Arc::clone(&name), pump_run.map(|_end| ())),
        );
        tracing::info!(source = %name, topic = %info.topic, url = %info.redacted_url, resume_from = resume.as_ref().map_or("", |p| p.as_str()), "starting source");
        let stop = self.shutdown.child_token();
        let context = SourceContext {
            name: Arc::clone(&name),
            records: records_tx,
            shutdown: stop.clone(),
            resume,
            metrics: source_metrics,
            health: health.clone(),
            hosts: Arc::clone(&self.hosts),
            stage: Arc::clone(&info.stage),
        };
        let task = self
            .sources
            .spawn(run_source(source, context, health.clone()));
        Ok(RunningSource {
            name,
            health,
            stop,
            task,
            pump,
            tracker,
        })
    }

    /// For a source under an OAuth2 refresh-token grant: takes the refresh token an earlier
    /// run stored over the configured one, and has rotated tokens stored from now on (see
    /// [`crate::http::refresh_token`]).
    ///
    /// # Errors
    /// The store cannot be read.
    async fn keep_refresh_tokens(
        &self,
        name: &str,
        grant: Option<Arc<crate::http::OAuth2Tokens>>,
    ) -> Result<(), CheckpointError> {
        let Some(tokens) = grant else {
            return Ok(());
        };
        let Some(refresh) = tokens.refresh_tokens() else {
            return Ok(());
        };
        let key = crate::http::refresh_token::store_key(name);
        if let Some(stored) = self.store.acquire(&key).await? {
            tracing::info!(source = %name, "OAuth2: using the refresh token stored by an earlier run");
            refresh.resume(stored.as_str());
        }
        refresh.keep_in(Arc::clone(&self.store), key);
        Ok(())
    }

    /// Stops `running`, waits until its pump has handed every record to the producer and
    /// Kafka has acknowledged them (at most `timeout`), commits its final position and
    /// forgets the source (metrics keep their values; `/readyz` no longer lists it). A source
    /// task or pump still running at the deadline is aborted: it produces nothing more, and
    /// whatever it still reports is for its own instance, which is no longer listed.
    pub async fn hand_off(&self, running: RunningSource, timeout: Duration) -> Handoff {
        self.stop(running, timeout, true).await
    }

    /// Stops `running` after its partition was lost (this replica was out of the group and
    /// another one owns the source now): it leaves `/readyz` at once, and the source and its
    /// pump get at most [`LOST_STOP_TIMEOUT`] to end. No final commit: it would carry the old
    /// owner epoch and be ignored anyway.
    pub async fn drop_lost(&self, running: RunningSource) -> Handoff {
        running.health.remove(running.name());
        self.stop(running, LOST_STOP_TIMEOUT, false).await
    }

    async fn stop(&self, running: RunningSource, timeout: Duration, commit: bool) -> Handoff {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let RunningSource {
            name,
            health,
            stop,
            mut task,
            mut pump,
            tracker,
        } = running;
        stop.cancel();
        let drained = async {
            let _ = (&mut task).await;
            let _ = (&mut pump).await;
            while commit && tracker.in_flight() > 0 {
                tokio::time::sleep(ACK_POLL).await;
            }
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            let (task_running, pump_running) = (!task.is_finished(), !pump.is_finished());
            tracing::warn!(source = %name, in_flight = tracker.in_flight(), task_running, pump_running, "the stop deadline passed before the source stopped and Kafka acknowledged every record; its task and pump are aborted, and the next owner reads the unacknowledged records again");
            // Detached, they would go on producing, and a late failure of theirs would
            // count against the next instance of this source.
            for handle in [task, pump] {
                if !handle.is_finished() {
                    handle.abort();
                    let _ = handle.await;
                }
            }
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
        health.remove(&name);
        Handoff {
            unacknowledged: tracker.in_flight(),
            took: started.elapsed(),
            commit_error,
        }
    }
}

/// The sink of one instance of the source `info`: where its pump sends, how it acknowledges
/// (`acks`), and, for an exactly-once source, where its completions wait for the commit
/// (`deferred`).
fn sink(
    info: &SourceInfo,
    acks: Arc<dyn Acknowledger>,
    metrics: &SourceMetrics,
    failures: mpsc::UnboundedSender<Box<FailedDelivery>>,
    health: &Health,
    deferred: Option<Deferred>,
) -> Arc<SourceSink> {
    Arc::new(SourceSink {
        name: Arc::clone(&info.name),
        topic: info.topic.clone(),
        dead_letter_topic: info.dead_letter_topic.clone(),
        url: info.redacted_url.clone(),
        acks,
        metrics: metrics.clone(),
        failures,
        health: health.clone(),
        stage: Arc::clone(&info.stage),
        deferred,
    })
}

/// Runs `source` until it ends; its error, or a panic (caught: it must not end the source
/// silently), marks it failed in `health`.
///
/// The source's future is made here, before the task is spawned, so that the task holds only
/// the pointer to it: an `async fn` would keep its own copy of the context (over 600 bytes per
/// source) beside the one the source's future owns.
fn run_source(
    source: Box<dyn Source>,
    context: SourceContext,
    health: Health,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let name = Arc::clone(&context.name);
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| source.run(context)));
    async move {
        let ended = match run {
            Ok(run) => AssertUnwindSafe(run).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        match ended {
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
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        collections::BTreeMap,
        sync::atomic::{AtomicBool, Ordering},
    };

    use futures::future::BoxFuture;
    use tokio::sync::Notify;

    use super::*;
    use crate::{
        error::SourceError, sinks::kafka::KafkaSinkConfig, sources::SourceInfo,
        state::checkpoint::FileStore,
    };

    /// Runs until stopped, as a source should.
    struct Obedient;

    impl Source for Obedient {
        fn run(
            self: Box<Self>,
            context: SourceContext,
        ) -> BoxFuture<'static, Result<(), SourceError>> {
            Box::pin(async move {
                context.set_state(SourceState::Connected);
                context.shutdown.cancelled().await;
                Ok(())
            })
        }
    }

    /// Ignores its stop token (as a source stuck in a call that does not look at it): it
    /// waits for `wake`, then reports a failure. `dropped` is set when its task is dropped
    /// before that.
    struct Stubborn {
        wake: Arc<Notify>,
        dropped: Arc<AtomicBool>,
    }

    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    impl Source for Stubborn {
        fn run(
            self: Box<Self>,
            context: SourceContext,
        ) -> BoxFuture<'static, Result<(), SourceError>> {
            Box::pin(async move {
                let guard = SetOnDrop(self.dropped);
                self.wake.notified().await;
                std::mem::forget(guard);
                context.set_state(SourceState::Failed("a late failure".into()));
                Ok(())
            })
        }
    }

    /// Panics where `at` says: while its future is made, or once it runs.
    struct Panicking {
        at_start: bool,
    }

    impl Source for Panicking {
        fn run(
            self: Box<Self>,
            _context: SourceContext,
        ) -> BoxFuture<'static, Result<(), SourceError>> {
            assert!(!self.at_start, "injected while making the future");
            Box::pin(async { panic!("injected while running") })
        }
    }

    /// A runner on a file store in `dir`, with a producer whose broker is not there (these
    /// sources produce nothing).
    fn runner(dir: &std::path::Path) -> SourceRunner {
        let store: Arc<dyn CheckpointStore> = Arc::new(Arc::new(FileStore::open(dir).unwrap()));
        runner_on(store, "127.0.0.1:9")
    }

    /// A runner on `store`, producing to `brokers`.
    pub(crate) fn runner_on(store: Arc<dyn CheckpointStore>, brokers: &str) -> SourceRunner {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        SourceRunner {
            producer: KafkaProducer::new(&KafkaSinkConfig {
                brokers: brokers.into(),
                properties: BTreeMap::new(),
                flush_timeout: Duration::from_secs(1),
                transaction_interval: Duration::from_secs(1),
                transaction_idle: Duration::from_millis(100),
                transaction_max_records: 10_000,
            })
            .unwrap(),
            committer: Committer::new(
                Arc::clone(&store),
                Duration::from_secs(1),
                1000,
                health.clone(),
            ),
            store,
            metrics: Metrics::new(),
            hosts: Arc::new(HostLimits::new(BTreeMap::new())),
            supervisor: Supervisor::new(health.clone(), shutdown.clone()),
            health,
            abandon_pumps: CancellationToken::new(),
            shutdown,
            sources: TaskTracker::new(),
            pumps: TaskTracker::new(),
            transactional_id_prefix: "tributary.test.".into(),
            replica: "test".into(),
            fenced: Default::default(),
        }
    }

    fn info() -> SourceInfo {
        SourceInfo::new(
            "wiki",
            "wiki",
            None,
            "http://127.0.0.1:9/".into(),
            100,
            1 << 20,
        )
    }

    #[tokio::test]
    async fn a_source_past_the_stop_deadline_is_aborted_and_cannot_touch_its_next_instance() {
        let dir = tempfile::tempdir().unwrap();
        let runner = runner(dir.path());
        let (wake, dropped) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let stubborn = Stubborn {
            wake: Arc::clone(&wake),
            dropped: Arc::clone(&dropped),
        };
        let old = runner.start(info(), Box::new(stubborn)).await.unwrap();
        let handoff = runner.hand_off(old, Duration::from_millis(50)).await;
        assert!(handoff.took >= Duration::from_millis(50));
        assert!(
            dropped.load(Ordering::Acquire),
            "the task that ignored its stop still runs after the deadline"
        );
        assert_eq!(runner.health.get("wiki"), None);
        let new = runner.start(info(), Box::new(Obedient)).await.unwrap();
        // Had the old task survived, it would now mark the new instance failed.
        wake.notify_waiters();
        tokio::task::yield_now().await;
        assert!(!matches!(
            runner.health.get("wiki"),
            Some(SourceState::Failed(_))
        ));
        let handoff = runner.hand_off(new, Duration::from_secs(5)).await;
        assert!(handoff.took < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_new_instance_clears_an_earlier_failure() {
        let dir = tempfile::tempdir().unwrap();
        let runner = runner(dir.path());
        // What a replica records when it cannot acquire a source's position.
        runner.health.set(
            "wiki",
            SourceState::Failed("cannot acquire its position".into()),
        );
        assert!(!runner.health.readiness(true).ready);
        let running = runner.start(info(), Box::new(Obedient)).await.unwrap();
        assert!(!matches!(
            runner.health.get("wiki"),
            Some(SourceState::Failed(_))
        ));
        assert!(runner.health.readiness(true).ready);
        runner.hand_off(running, Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_source_that_panics_is_failed_whether_it_panics_making_its_future_or_running_it() {
        for at_start in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let runner = runner(dir.path());
            let mut running = runner
                .start(info(), Box::new(Panicking { at_start }))
                .await
                .unwrap();
            (&mut running.task)
                .await
                .expect("the panic is caught in the task");
            assert_eq!(
                runner.health.get("wiki"),
                Some(SourceState::Failed(
                    "the source task panicked (a bug): see the log".into()
                )),
                "at_start: {at_start}"
            );
        }
    }
}
