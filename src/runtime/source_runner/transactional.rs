//! Starting an exactly-once source (`delivery = "exactly_once"`): its own transactional
//! producer, and a driver task that runs the source and its pump and rewinds them.
//!
//! - **Fencing first.** The producer's `transactional.id` is `tributary.<cluster>.<source>`:
//!   the source is the unit of ownership. `init_transactions` runs before the position is read,
//!   so that a previous owner (a replica that lost the source, or this daemon before a crash)
//!   is fenced and its open transaction aborted; the position read after it, with
//!   `read_committed`, is the last one committed.
//! - **Rewind.** When the pump aborts a transaction ([`PumpEnd::Rewind`]), the driver stops
//!   the source, drops what its channel held, and starts a new instance of it (built again
//!   from its config, or, for a webhook source whose routes the HTTP server holds, a sibling
//!   sharing them) from the last committed position, after a backoff. A webhook source has
//!   nothing to read again: the senders of the aborted events were answered 503, and send
//!   again.
//! - **Stop.** A handoff or a shutdown stops the source; the pump drains the channel and
//!   commits one last transaction, so the next owner starts after it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{RunningSource, SourceRunner};
use crate::{
    channel,
    error::CheckpointError,
    record::Position,
    runtime::health::{Health, SourceState},
    sinks::kafka::{
        init_transactions, queue_budget::QueuedBytes, run_pump, KafkaProducer, PumpEnd, Replay,
        Transaction,
    },
    sources::{Source, SourceContext, SourceInfo},
    state::checkpoint::{AckTracker, Acknowledger},
};

/// The first wait before a rewound source starts again; it doubles up to [`REWIND_MAX_WAIT`]
/// while rewinds follow each other.
const REWIND_FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait before a rewound source starts again.
const REWIND_MAX_WAIT: Duration = Duration::from_secs(30);
/// A run this long (or one that committed a position) resets the rewind wait.
const REWIND_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long a stopped instance's source task may take to end before it is aborted.
const INSTANCE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Acknowledgements of a transactional pump: the tracker only (the transaction writes the
/// position, not the committer).
struct TrackerAcks(Arc<AckTracker>);

impl Acknowledger for TrackerAcks {
    fn register(&self, position: Option<Position>, hold: Option<QueuedBytes>) -> u64 {
        self.0.register(position, hold)
    }

    fn acknowledge(&self, seq: u64) {
        self.0.ack(seq);
    }
}

impl SourceRunner {
    /// The `transactional.id` of the exactly-once source `info`: `tributary.<cluster>.<source>`,
    /// and for a push source (which runs on every replica, each instance its own owner)
    /// `.<replica>` after it.
    fn transactional_id(&self, info: &SourceInfo) -> String {
        if info.kind.is_pushed() {
            format!(
                "{}{}.{}",
                self.transactional_id_prefix, info.name, self.replica
            )
        } else {
            format!("{}{}", self.transactional_id_prefix, info.name)
        }
    }

    /// Fences the earlier owners of the exactly-once sources among `sources` all at once, before
    /// any of them reads its position: each gets its transactional producer and runs
    /// `init_transactions`, which aborts the open transaction a crashed or replaced owner left.
    /// Until every such transaction on the positions topic is aborted, a `read_committed`
    /// reader cannot read past it, so fencing one source at a time as it starts would keep
    /// each start waiting for the others' old transactions (up to `transaction.timeout.ms`).
    /// [`SourceRunner::start`] takes the fenced producer; a source whose fencing failed tries
    /// again there and reports the error. Call [`SourceRunner::discard_fenced`] once the
    /// sources are started.
    pub async fn fence_exactly_once<'a>(&self, sources: impl IntoIterator<Item = &'a SourceInfo>) {
        let fencing = sources
            .into_iter()
            .filter(|info| info.delivery == crate::sources::Delivery::ExactlyOnce)
            .map(|info| {
                let id = self.transactional_id(info);
                async move {
                    let producer = self.producer.transactional(&id).ok()?;
                    init_transactions(&producer, &info.dead_letter_topic)
                        .await
                        .ok()?;
                    Some((id, producer))
                }
            });
        let fenced = futures::future::join_all(fencing).await;
        self.fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(fenced.into_iter().flatten());
    }

    /// Drops the fenced producers no start took (a source whose start failed, or that was
    /// revoked first): each is good only until another owner fences it in turn, so a later
    /// start makes its own.
    pub fn discard_fenced(&self) {
        self.fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Starts an exactly-once source (see the module doc).
    ///
    /// # Errors
    /// [`CheckpointError::Transactions`]: the producer cannot be made or cannot initialize
    /// transactions; or the store cannot be read.
    pub(super) async fn start_transactional(
        &self,
        info: SourceInfo,
        source: Box<dyn Source>,
    ) -> Result<RunningSource, CheckpointError> {
        let name = Arc::clone(&info.name);
        let id = self.transactional_id(&info);
        let failed = |error: rdkafka::error::KafkaError| CheckpointError::Transactions {
            source_name: name.to_string(),
            transactional_id: id.clone(),
            error: error.to_string(),
        };
        let fenced = self
            .fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let producer = match fenced {
            Some(producer) => producer,
            None => {
                let producer = self.producer.transactional(&id).map_err(failed)?;
                init_transactions(&producer, &info.dead_letter_topic)
                    .await
                    .map_err(failed)?;
                producer
            }
        };
        let resume = self.store.acquire(&name).await?;
        let health = self.health.begin(&name);
        tracing::info!(source = %name, transactional_id = %id, topic = %info.topic, url = %info.redacted_url, resume_from = resume.as_ref().map_or("", |p| p.as_str()), "starting source (exactly-once)");
        let stop = self.shutdown.child_token();
        let driver = Driver {
            runner: self.clone(),
            info,
            id,
            producer,
            replay: Arc::new(Mutex::new(Replay::new(resume))),
            health: health.clone(),
            stop: stop.clone(),
        };
        let task = self.sources.spawn(driver.run(source));
        Ok(RunningSource {
            name,
            health,
            stop,
            task,
            pump: self.pumps.spawn(async {}),
            // The driver's last transaction holds every record: nothing is left in flight
            // once it returns.
            tracker: Arc::new(AckTracker::new(None)),
        })
    }
}

/// One exactly-once source instance: its producer and what survives its rewinds.
struct Driver {
    runner: SourceRunner,
    info: SourceInfo,
    /// The producer's `transactional.id`.
    id: String,
    producer: KafkaProducer,
    replay: Arc<Mutex<Replay>>,
    health: Health,
    stop: tokio_util::sync::CancellationToken,
}

impl Driver {
    async fn run(mut self, first: Box<dyn Source>) {
        let name = Arc::clone(&self.info.name);
        let mut source = Some(first);
        let mut wait = REWIND_FIRST_WAIT;
        loop {
            let instance = match source.take() {
                Some(source) => source,
                None => match self.info.rebuild.as_ref().map(|factory| factory.build()) {
                    Some(Ok(source)) => source,
                    Some(Err(error)) => {
                        self.fail(format!(
                            "cannot build the source again to rewind it: {error}"
                        ));
                        return;
                    }
                    None => {
                        self.fail("cannot build the source again to rewind it (a bug)".into());
                        return;
                    }
                },
            };
            // A source the daemon holds more of than the instance (webhook routes) comes again
            // as a sibling, not built anew.
            source = instance.sibling();
            let started = Instant::now();
            let committed_before = self.committed();
            match self.attempt(instance).await {
                PumpEnd::Rewind => {}
                PumpEnd::Drained | PumpEnd::Abandoned | PumpEnd::Faulted | PumpEnd::Fenced => {
                    return
                }
            }
            // A long run, or one that committed, was progress: the wait starts over.
            let from = self.committed();
            if started.elapsed() >= REWIND_RESET_AFTER || from != committed_before {
                wait = REWIND_FIRST_WAIT;
            }
            tracing::warn!(source = %name, from = from.as_ref().map_or("", |p| p.as_str()), wait_ms = wait.as_millis() as u64, "the source rewinds to its last committed position");
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(REWIND_MAX_WAIT);
            // A new producer under the same id for the next attempt: its `init_transactions`
            // bumps the epoch, so nothing of the aborted transaction (a request still in
            // flight, a sequence number librdkafka kept) mixes with the next one, and a
            // producer left in a fatal state is replaced.
            if let Some(reason) = self.producer.fatal_error_now() {
                tracing::warn!(source = %name, %reason, "the transactional producer hit a fatal error");
            }
            let renewed = match self.runner.producer.transactional(&self.id) {
                Ok(producer) => init_transactions(&producer, &self.info.dead_letter_topic)
                    .await
                    .map(|()| producer),
                Err(error) => Err(error),
            };
            match renewed {
                Ok(producer) => self.producer = producer,
                Err(error) => {
                    self.fail(format!(
                        "cannot make a new transactional producer `{}`: {error}",
                        self.id
                    ));
                    return;
                }
            }
        }
    }

    /// The last position committed in a transaction.
    fn committed(&self) -> Option<Position> {
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed
            .clone()
    }

    /// Marks the source failed with `reason`.
    fn fail(&self, reason: String) {
        tracing::error!(source = %self.info.name, %reason, "the exactly-once source stops");
        self.health
            .set(&self.info.name, SourceState::Failed(reason));
    }

    /// Runs `source` from the last committed position with a pump in transactions, until the
    /// pump ends; stops the source then.
    async fn attempt(&self, source: Box<dyn Source>) -> PumpEnd {
        let runner = &self.runner;
        let info = &self.info;
        let name = Arc::clone(&info.name);
        let resume = self
            .replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed
            .clone();
        let source_metrics = runner.metrics.source(&name, info.kind);
        let tracker = Arc::new(AckTracker::new(resume.clone()));
        let (records_tx, records_rx) = channel::bounded(
            info.channel_max_records,
            info.channel_max_bytes,
            source_metrics.clone(),
        );
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let deferred = crate::sinks::kafka::Deferred::default();
        let acks = Arc::new(TrackerAcks(Arc::clone(&tracker)));
        let sink = super::sink(
            info,
            acks,
            &source_metrics,
            failures_tx,
            &self.health,
            Some(Arc::clone(&deferred)),
        );
        let attempt_stop = self.stop.child_token();
        let context = SourceContext {
            name: Arc::clone(&name),
            records: records_tx,
            shutdown: attempt_stop.clone(),
            resume,
            metrics: source_metrics,
            health: self.health.clone(),
            hosts: Arc::clone(&runner.hosts),
            stage: Arc::clone(&info.stage),
        };
        let mut task = tokio::spawn(super::run_source(source, context, self.health.clone()));
        let txn = Transaction::new(
            Arc::clone(&runner.store),
            Arc::clone(&self.replay),
            deferred,
            info.kind.polled(),
        );
        let end = Arc::new(Mutex::new(PumpEnd::Abandoned));
        let pump_end = Arc::clone(&end);
        runner
            .supervisor
            .clone()
            .pump(Arc::clone(&name), async move {
                let ended = run_pump(
                    self.producer.clone(),
                    sink,
                    records_rx,
                    failures_rx,
                    runner.abandon_pumps.clone(),
                    Some(txn),
                )
                .await;
                *pump_end.lock().unwrap_or_else(|e| e.into_inner()) = ended;
            })
            .await;
        attempt_stop.cancel();
        if tokio::time::timeout(INSTANCE_STOP_TIMEOUT, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        let end = std::mem::replace(
            &mut *end.lock().unwrap_or_else(|e| e.into_inner()),
            PumpEnd::Abandoned,
        );
        end
    }
}
