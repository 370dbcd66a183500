//! Exactly-once delivery (`delivery = "exactly_once"`): the pump of such a source sends through
//! its own transactional producer (Kafka's transactions, KIP-98), and commits its records,
//! their dead-letter records and the source's position record in one transaction.
//!
//! - **Transactions.** One opens with the first record sent after a commit, and commits every
//!   `kafka.transaction_interval` or after `kafka.transaction_max_records` records, whichever
//!   comes first, when its source has sent nothing for `kafka.transaction_idle` (a burst
//!   ended: its records need not wait out the interval to be visible), and when the source
//!   stops. A commit writes the source's position (that of
//!   the last record sent) to the Kafka store's topic inside the transaction
//!   ([`CheckpointStore::position_record`]), and commits: librdkafka waits until every record
//!   of the transaction is acknowledged by its partition leader, and the commit fails if one
//!   was refused, so a committed position only ever covers records Kafka holds. A reader with `isolation.level=read_committed`, the Kafka store's own included,
//!   sees the records and the position together or not at all.
//! - **Completion.** An event's completion (a webhook's answer) waits for the commit that holds
//!   its records: the sink defers settling it ([`super::producer::SourceSink::settle`]) until
//!   [`Transaction::commit`] succeeds.
//! - **Refusals.** A record Kafka refused in a delivery report dooms the transaction: it is
//!   aborted, and the source rewinds to its last committed position (the runner starts it again
//!   from there, in this process). What the refusal said is kept in the [`Replay`] across
//!   rewinds, keyed by the record's content: a record refused alone is a record fault and goes
//!   to the dead-letter topic when it comes again; a record refused with its batch comes again
//!   alone (flushed before and after, so its batch holds it only); a pipeline fault stops the
//!   source.
//! - **Fencing.** The transactional id belongs to the source (`tributary.<cluster>.<source>`):
//!   a new owner's `init_transactions` fences the old producer, whose next send or commit fails
//!   with `ProducerFenced`, and that stops the old instance.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{BaseRecord, Producer},
};

use super::{
    fault::{Evidence, FaultClass},
    producer::{DeliveryTicket, FailedDelivery, KafkaProducer},
    pump::{Halt, Pump},
};
use crate::{
    record::{DeliveryOutcome, EventAck, Position, Record},
    state::checkpoint::CheckpointStore,
};

/// How long one transactional call (init, commit, abort) may take before it is tried again.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`init_transactions`] waits for its producer's first broker connection before it
/// initializes anyway (librdkafka then finds the coordinator on its own timer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`init_transactions`] waits before it asks again whether a named broker is
/// connected.
const CONNECT_RECHECK: Duration = Duration::from_millis(5);

/// What an exactly-once source keeps across the rewinds of one instance.
#[derive(Default)]
pub struct Replay {
    /// The last position committed in a transaction (where a rewind starts).
    pub committed: Option<Position>,
    /// Refusals seen in delivery reports, by record content (see the module doc).
    refused: HashMap<u64, Refused>,
    /// Seeds the content hash (random per instance).
    hasher: std::collections::hash_map::RandomState,
}

/// What a delivery report said of a record.
#[derive(Clone, Debug)]
enum Refused {
    /// Refused with its batch: send it again alone.
    Batched,
    /// Refused alone: a record fault, with the error.
    Alone(KafkaError),
}

impl Replay {
    /// A replay that starts from `committed`.
    pub fn new(committed: Option<Position>) -> Self {
        Replay {
            committed,
            ..Replay::default()
        }
    }

    fn digest(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        topic.hash(&mut hasher);
        key.hash(&mut hasher);
        payload.hash(&mut hasher);
        hasher.finish()
    }
}

/// The transaction state of one exactly-once pump.
pub struct Transaction {
    store: Arc<dyn CheckpointStore>,
    replay: Arc<Mutex<Replay>>,
    /// Event completions held until the transaction that holds their records commits.
    deferred: Deferred,
    open: bool,
    /// Records sent in the open transaction.
    records: u64,
    opened_at: Instant,
    /// Why the open transaction must be aborted (a refused record).
    doomed: Option<String>,
    /// The source's position moves only at some events (a polled source's page marker), not
    /// at each: a transaction may then commit only at such an event.
    page_boundaries: bool,
    /// Every record sent so far is covered by the last position sent: a commit now stores a
    /// position past all of the transaction's records.
    pub(super) at_boundary: bool,
    /// The position of the last record (or filtered event) handed to the producer: what the
    /// next commit stores. A commit succeeds only when Kafka holds every record of its
    /// transaction, so it holds every record up to this position then.
    pub(super) sent_position: Option<Position>,
}

/// What the sink of an exactly-once source needs from its pump's transaction.
pub type Deferred = Arc<Mutex<Uncommitted>>;

/// What the open transaction of an exactly-once source holds until it commits: the event
/// completions it defers, and what its acknowledged records add to the source's metrics
/// (`tributary_records_produced_total`, `_record_bytes_total`, `_records_dead_lettered_total`
/// count a record once its transaction commits, never one of an aborted transaction).
#[derive(Default)]
pub struct Uncommitted {
    /// Completions to settle at the commit.
    pub(super) acks: Vec<(EventAck, DeliveryOutcome)>,
    /// Records acknowledged into the topic.
    pub(super) records: u64,
    /// Their payload bytes.
    pub(super) bytes: u64,
    /// Records acknowledged into the dead-letter topic, by error kind.
    pub(super) dead_letters: Vec<&'static str>,
}

impl Uncommitted {
    /// Counts what a commit made visible into `metrics`, settles the held completions, and
    /// starts empty.
    fn committed(&mut self, metrics: &crate::metrics::SourceMetrics) {
        for (ack, outcome) in self.acks.drain(..) {
            ack.settle(outcome);
        }
        metrics
            .records_produced
            .inc_by(std::mem::take(&mut self.records));
        metrics.record_bytes.inc_by(std::mem::take(&mut self.bytes));
        for kind in self.dead_letters.drain(..) {
            metrics.dead_lettered(kind);
        }
    }

    /// Drops what an aborted transaction held: its completions unsettled, its counts uncounted.
    fn aborted(&mut self) {
        *self = Uncommitted::default();
    }
}

impl Transaction {
    /// The transaction state of a pump writing positions to `store`, deferring completions
    /// into `deferred`, keeping refusals in `replay`.
    /// `page_boundaries`: the source's position moves only at some events (a polled source's
    /// page marker; see [`Transaction::at_boundary`]).
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        replay: Arc<Mutex<Replay>>,
        deferred: Deferred,
        page_boundaries: bool,
    ) -> Self {
        Transaction {
            store,
            replay,
            deferred,
            open: false,
            records: 0,
            opened_at: Instant::now(),
            doomed: None,
            page_boundaries,
            at_boundary: true,
            sent_position: None,
        }
    }

    /// When the open transaction is due to commit if its source sends nothing more: at
    /// `interval` after it opened, or at `idle` after `last_received` (when the pump last took
    /// events from the channel), whichever comes first. `None`: none is open, or it is between
    /// two positions, where only the next position lets it commit.
    pub(super) fn due_at(
        &self,
        interval: Duration,
        idle: Duration,
        last_received: Instant,
    ) -> Option<tokio::time::Instant> {
        (self.open && self.at_boundary).then(|| {
            tokio::time::Instant::from_std(commit_due(
                self.opened_at,
                interval,
                idle,
                last_received,
            ))
        })
    }

    /// After an event whose last record carried a position (`positioned`) or not: whether
    /// the transaction may commit now. A source whose every event is a unit (SSE, WebSocket,
    /// webhooks) may commit after any event; a polled source only after a page's marker, since
    /// the records of a page carry no position and a restart fetches the whole page again.
    pub(super) fn event_sent(&mut self, positioned: bool) {
        self.at_boundary = !self.page_boundaries || positioned;
    }
}

/// When a transaction opened at `opened_at` commits if nothing more is sent: `interval` after
/// it opened, or `idle` after the later of its opening and `last_received`, whichever is first.
fn commit_due(
    opened_at: Instant,
    interval: Duration,
    idle: Duration,
    last_received: Instant,
) -> Instant {
    (opened_at + interval).min(last_received.max(opened_at) + idle)
}

/// Runs a blocking transactional call of `producer` on the blocking pool.
async fn blocking<T: Send + 'static>(
    producer: &KafkaProducer,
    call: impl FnOnce(&rdkafka::producer::ThreadedProducer<super::producer::DeliveryContext>) -> T
        + Send
        + 'static,
) -> T {
    let inner = producer.inner.clone();
    tokio::task::spawn_blocking(move || call(&inner))
        .await
        .expect("a transactional call does not panic")
}

/// Initializes transactions on `producer`: fences any earlier producer of the same id (its
/// open transaction is aborted), retrying while the coordinator is not reachable yet.
///
/// `topic` (one the source writes to) is asked for in the brokers' metadata first: a new
/// producer that has no broker connection yet when `init_transactions` is called finds no
/// broker to ask for its coordinator and tries again only on librdkafka's 500 ms timer,
/// which every exactly-once start paid. The metadata request connects it.
///
/// # Errors
/// A fatal or non-retriable error (e.g. `transaction.timeout.ms` above the brokers'
/// `transaction.max.timeout.ms`, or no `TransactionalId` ACL).
pub async fn init_transactions(producer: &KafkaProducer, topic: &str) -> Result<(), KafkaError> {
    connect(producer, topic).await;
    let mut wait = Duration::from_millis(100);
    loop {
        match blocking(producer, |p| p.init_transactions(CALL_TIMEOUT)).await {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                tracing::info!(%error, "initializing transactions; trying again");
            }
            Err(error) => return Err(error),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Waits until `producer` has a connection to a broker the cluster's metadata names, for at
/// most [`CONNECT_TIMEOUT`]: librdkafka looks for the transaction coordinator only over such a
/// connection, and when none is up yet it tries again on a 500 ms timer. A metadata request
/// answered by a named broker (not over the bootstrap connection) shows one is up; `topic`
/// (the source's dead-letter topic) is what it asks about, and whether it exists does not
/// matter here (a missing topic is reported where it is used).
async fn connect(producer: &KafkaProducer, topic: &str) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match producer.metadata_origin(topic, left).await {
            Ok(broker) if broker >= 0 => return,
            Ok(_) => tokio::time::sleep(CONNECT_RECHECK).await,
            Err(_) => return,
        }
    }
}

impl Pump {
    /// Opens a transaction when none is open (before a record is sent).
    ///
    /// # Errors
    /// [`Halt::Rewind`]: the producer cannot begin one (fenced, or in an error state).
    pub(super) fn begin(&mut self) -> Result<(), Halt> {
        let Some(txn) = &mut self.txn else {
            return Ok(());
        };
        if txn.open {
            return Ok(());
        }
        if let Err(error) = self.producer.inner.begin_transaction() {
            tracing::error!(source = %self.sink.name, %error, "cannot begin a transaction");
            return Err(self.fenced_or_rewind(&error));
        }
        txn.open = true;
        txn.records = 0;
        txn.opened_at = Instant::now();
        Ok(())
    }

    /// Counts `n` records sent in the open transaction; commits it once it holds
    /// `kafka.transaction_max_records` or has been open for `kafka.transaction_interval`.
    pub(super) async fn sent_in_transaction(&mut self, n: u64) -> Result<(), Halt> {
        let Some(txn) = &mut self.txn else {
            return Ok(());
        };
        txn.records += n;
        // Also on time here, not only in the pump's loop: a long run of events (a replay that
        // sends records alone) must not keep a transaction open until the coordinator aborts
        // it at `transaction.timeout.ms`.
        if txn.at_boundary
            && (txn.records >= self.producer.transaction_max_records()
                || txn.opened_at.elapsed() >= self.producer.transaction_interval())
        {
            self.commit().await?;
        }
        Ok(())
    }

    /// What the replay says of `record` bound for `topic`: `Some(error)` when it was refused
    /// alone (send it to the dead-letter topic), and whether it must be sent alone.
    pub(super) fn replayed(&self, topic: &str, record: &Record) -> (Option<KafkaError>, bool) {
        let Some(txn) = &self.txn else {
            return (None, false);
        };
        let replay = txn.replay.lock().unwrap_or_else(|e| e.into_inner());
        if replay.refused.is_empty() {
            return (None, false);
        }
        let digest = replay.digest(topic, record.key.as_deref(), &record.payload);
        match replay.refused.get(&digest) {
            Some(Refused::Alone(error)) => (Some(error.clone()), false),
            Some(Refused::Batched) => (None, true),
            None => (None, false),
        }
    }

    /// Waits (off the runtime) until every record handed to the producer is acknowledged or
    /// failed.
    pub(super) async fn flush_transaction(&self) -> Result<(), Halt> {
        match blocking(&self.producer, |p| {
            super::producer::flush_outstanding(p, CALL_TIMEOUT)
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::warn!(source = %self.sink.name, %error, "the transaction's records were not all acknowledged in time");
                Err(self.fenced_or_rewind(&error))
            }
        }
    }

    /// A delivery report refused a record of the open transaction: keeps what it says for the
    /// replay and dooms the transaction (see the module doc).
    ///
    /// # Errors
    /// [`Halt::Faulted`]: a pipeline fault (the source stops); [`Halt::Rewind`] otherwise.
    pub(super) fn refused_in_transaction(&mut self, failed: FailedDelivery) -> Result<(), Halt> {
        let FailedDelivery {
            ticket,
            topic,
            key,
            payload,
            error,
            ..
        } = failed;
        if matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ) {
            return Err(self.fenced_or_rewind(&error));
        }
        if ticket.position_record {
            tracing::warn!(source = %self.sink.name, %error, "Kafka refused the position record of a transaction; it is aborted");
            return Err(Halt::Rewind);
        }
        let class = self.remember(&topic, key.as_deref(), &payload, &error, ticket.alone);
        let purged = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        );
        let transient = purged
            || matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageTimedOut
                        | RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::NotEnoughReplicas
                        | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                        | RDKafkaErrorCode::LeaderNotAvailable
                        | RDKafkaErrorCode::NotLeaderForPartition
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::State
                )
            );
        if class == FaultClass::Pipeline && !transient {
            self.sink.pipeline_fault(&topic, &error);
            return Err(Halt::Faulted);
        }
        let Some(txn) = &mut self.txn else {
            unreachable!("only a transactional pump takes refusals here")
        };
        if !purged {
            tracing::warn!(source = %self.sink.name, topic, %error, "Kafka refused a record of the open transaction; the transaction is aborted and the source rewinds to its last committed position");
        }
        txn.doomed.get_or_insert_with(|| error.to_string());
        Err(Halt::Rewind)
    }

    /// Keeps what a refusal in a delivery report says of its record for the replay (a record
    /// or batch fault; see the module doc), and returns its class.
    fn remember(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        error: &KafkaError,
        alone: bool,
    ) -> FaultClass {
        let evidence = if alone {
            Evidence::Alone
        } else {
            Evidence::Batched
        };
        let class = FaultClass::judge(error, evidence);
        let refused = match class {
            FaultClass::Record => Refused::Alone(error.clone()),
            FaultClass::Batch => Refused::Batched,
            FaultClass::Pipeline => return class,
        };
        if let Some(txn) = &self.txn {
            let mut replay = txn.replay.lock().unwrap_or_else(|e| e.into_inner());
            let digest = replay.digest(topic, key, payload);
            replay.refused.insert(digest, refused);
        }
        class
    }

    /// A send refused because the transaction is already in an error state (a record of it
    /// was refused in a delivery report, or the producer was fenced): the halt it calls for,
    /// or `None` for any other refusal (judged as in at-least-once).
    pub(super) fn refused_at_send(&self, error: &KafkaError) -> Option<Halt> {
        self.txn.as_ref()?;
        matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::State
                    | RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        )
        .then(|| {
            tracing::warn!(source = %self.sink.name, %error, "the producer refused a record of the open transaction, which is in an error state; it is aborted and the source rewinds to its last committed position");
            self.fenced_or_rewind(error)
        })
    }

    /// Commits the open transaction (see the module doc): position record, then commit (which
    /// waits until every record of the transaction is acknowledged, and fails if one was
    /// refused); then settles the completions it held. Nothing happens when none is open.
    ///
    /// # Errors
    /// [`Halt::Rewind`] when the transaction was aborted (the source rewinds),
    /// [`Halt::Faulted`] when the producer was fenced or a pipeline fault stopped the source.
    pub(super) async fn commit(&mut self) -> Result<(), Halt> {
        if !self.txn.as_ref().is_some_and(|txn| txn.open) {
            return Ok(());
        }
        // A refusal already reported dooms the transaction: no need to ask the coordinator.
        while let Ok(failed) = self.failures.try_recv() {
            self.refused_in_transaction(failed)?;
        }
        let (position, store, name) = {
            let txn = self.txn.as_ref().expect("checked above");
            (
                txn.sent_position.clone(),
                Arc::clone(&txn.store),
                Arc::clone(&self.sink.name),
            )
        };
        let committed_before = self.txn_replay().committed.clone();
        let moved = position.is_some() && position != committed_before;
        if let Some(position) = position.as_ref().filter(|_| moved) {
            self.send_position_record(&*store, &name, position).await?;
        }
        // The transaction's records are flushed first (librdkafka's commit would too, but
        // rust-rdkafka's wrapper flushes in steps of 100 ms: see `flush_outstanding`); the
        // commit fails (an abortable error) if any of them was refused.
        let committing = Instant::now();
        let result = blocking(&self.producer, |p| {
            super::producer::flush_outstanding(p, CALL_TIMEOUT)?;
            p.commit_transaction(CALL_TIMEOUT)
        })
        .await;
        let txn = self.txn.as_mut().expect("checked above");
        txn.open = false;
        match result {
            Ok(()) => {
                tracing::debug!(
                    source = %self.sink.name,
                    records = txn.records,
                    open_seconds = (committing - txn.opened_at).as_secs_f64(),
                    commit_seconds = committing.elapsed().as_secs_f64(),
                    "committed the transaction"
                );
                txn.deferred
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .committed(&self.sink.metrics);
                if moved {
                    if let Some(position) = &position {
                        self.sink.metrics.status.committed(position.as_str());
                    }
                    txn.replay
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .committed = position;
                    self.sink.metrics.checkpoint_commits.inc();
                }
                self.sink.metrics.checkpoint_age_seconds.set(0);
                self.sink.metrics.transaction("committed");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(source = %self.sink.name, %error, "the transaction did not commit; it is aborted and the source rewinds to its last committed position");
                // The delivery reports of refused records say why; a pipeline fault among them
                // stops the source instead of rewinding it.
                while let Ok(failed) = self.failures.try_recv() {
                    if let Err(halt @ (Halt::Faulted | Halt::Fenced)) =
                        self.refused_in_transaction(failed)
                    {
                        return Err(halt);
                    }
                }
                Err(self.fenced_or_rewind(&error))
            }
        }
    }

    /// Writes the source's `position` into the open transaction (the Kafka store's position
    /// record), taking its share of the producer queue's budget.
    ///
    /// # Errors
    /// [`Halt`]: the producer refused it (fenced, or in an error state), or the shutdown
    /// deadline passed while the budget was spent.
    async fn send_position_record(
        &mut self,
        store: &dyn CheckpointStore,
        name: &str,
        position: &Position,
    ) -> Result<(), Halt> {
        let Some(record) = store.position_record(name, position) else {
            unreachable!("exactly-once needs the Kafka store (checked with the config)")
        };
        let cost = super::queue_budget::record_cost(record.value.len(), record.key.len(), 0, 0);
        let queued = self.take_budget(cost).await?;
        let ticket = Box::new(DeliveryTicket::position_record(
            Arc::clone(&self.sink),
            queued,
        ));
        let base: BaseRecord<'_, [u8], [u8], Box<DeliveryTicket>> =
            BaseRecord::with_opaque_to(&record.topic, ticket)
                .key(record.key.as_slice())
                .payload(record.value.as_slice());
        if let Err((error, _)) = self.producer.inner.send(base) {
            tracing::error!(source = %self.sink.name, %error, "cannot write the position into the transaction");
            return Err(self.fenced_or_rewind(&error));
        }
        Ok(())
    }

    /// Aborts the open transaction, if any (after a refusal, a failed commit, or at the
    /// shutdown deadline): its records and position are never read by a `read_committed`
    /// reader, and the completions it held are dropped unsettled (a webhook answers 503).
    pub(super) async fn abort(&mut self) {
        let Some(txn) = &mut self.txn else {
            return;
        };
        txn.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .aborted();
        if !txn.open {
            return;
        }
        txn.open = false;
        let doomed = txn.doomed.take();
        let result = blocking(&self.producer, |p| p.abort_transaction(CALL_TIMEOUT)).await;
        match result {
            Ok(()) => {
                self.sink.metrics.transaction("aborted");
                tracing::info!(source = %self.sink.name, reason = doomed.as_deref().unwrap_or("the source stopped or rewinds"), "aborted the open transaction");
            }
            Err(error) => {
                tracing::warn!(source = %self.sink.name, %error, "the open transaction could not be aborted; the coordinator aborts it at `transaction.timeout.ms`, or the next producer of this source does")
            }
        }
        // Acknowledgements that came in while it aborted are not counted either.
        txn.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .aborted();
        // What the refusals still waiting said is kept for the replay; the reports of purged
        // records carry nothing.
        while let Ok(failed) = self.failures.try_recv() {
            if !failed.ticket.position_record {
                let (key, alone) = (failed.key.as_deref(), failed.ticket.alone);
                self.remember(&failed.topic, key, &failed.payload, &failed.error, alone);
            }
        }
    }

    fn txn_replay(&self) -> std::sync::MutexGuard<'_, Replay> {
        self.txn
            .as_ref()
            .expect("a transactional pump")
            .replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The halt a transactional error calls for: a fenced producer (a new owner initialized the
    /// same transactional id) stops the source; anything else rewinds it.
    fn fenced_or_rewind(&self, error: &KafkaError) -> Halt {
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ) || self
            .producer
            .fatal_error_now()
            .is_some_and(|reason| reason.contains("enced"));
        if fenced {
            tracing::error!(source = %self.sink.name, %error, "the source's transactional producer was fenced: another owner runs this source now; this instance stops");
            self.sink.health.set(
                &self.sink.name,
                crate::runtime::health::SourceState::Failed(format!(
                    "fenced: another owner runs this source now ({error})"
                )),
            );
            return Halt::Fenced;
        }
        Halt::Rewind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::from_millis(100);

    #[test]
    fn a_quiet_source_commits_idle_after_its_last_events() {
        let opened = Instant::now();
        let last = opened + Duration::from_millis(300);
        assert_eq!(commit_due(opened, INTERVAL, IDLE, last), last + IDLE);
    }

    #[test]
    fn a_busy_source_commits_on_the_interval() {
        let opened = Instant::now();
        let last = opened + Duration::from_millis(950);
        assert_eq!(commit_due(opened, INTERVAL, IDLE, last), opened + INTERVAL);
    }

    #[test]
    fn events_taken_before_the_transaction_opened_count_from_its_opening() {
        let last = Instant::now();
        let opened = last + Duration::from_millis(500);
        assert_eq!(commit_due(opened, INTERVAL, IDLE, last), opened + IDLE);
    }

    #[test]
    fn an_idle_as_long_as_the_interval_commits_on_the_interval_only() {
        let opened = Instant::now();
        let last = opened + Duration::from_millis(10);
        assert_eq!(
            commit_due(opened, INTERVAL, INTERVAL, last),
            opened + INTERVAL
        );
    }
}
