//! The pump: moves one source's records from its channel into the producer.
//!
//! Each event runs through the record stage and becomes zero or more records (see
//! [`crate::stage::Stage::apply`]). Each record takes its share of the producer queue's budget
//! (its own cost plus its slot in the acknowledgement window, `queue_budget.rs`), is registered
//! with the source's acknowledger in channel order, then sent (`send.rs`). When the budget is
//! spent or the producer queue is full the pump waits: that is backpressure, not an error, and
//! it stops the pump from pulling more. While it waits it still takes back the deliveries that
//! failed, whose records keep their budget for their next attempt, so that a burst of refusals
//! can never leave every pump waiting for bytes only those refusals hold.
//!
//! A refusal, at send or in a delivery report, is judged where the evidence is (`fault.rs`,
//! `refusal.rs`): a record fault sends the record to the dead-letter topic with the reason in
//! its headers; a batch fault sends it again alone; a pipeline fault stops the source: the pump
//! returns without acknowledging the record, its channel closes, the source stops, `/readyz`
//! names the cause, and the stored position stays before the record.
//!
//! Shutdown: the pump drains its channel, then returns. If the producer queue stays full
//! (brokers down) until the shutdown deadline, the `abandon` token makes it return at once:
//! the records it still held are not acknowledged, so their positions are not stored and they
//! are read again after a restart.

use std::{sync::Arc, time::Instant};

use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    producer::{FailedDelivery, KafkaProducer, SourceSink},
    queue_budget::{window_slot_cost, QueuedBytes},
};
use crate::{
    channel::{Envelope, RecordReceiver},
    record::{DeliveryOutcome, Record},
    router::TimestampCache,
    stage::Stop,
};

/// Records pulled from the channel per batch.
const BATCH: usize = 1024;

/// One source's pump: what sending a record needs.
pub(super) struct Pump {
    pub(super) producer: KafkaProducer,
    pub(super) sink: Arc<SourceSink>,
    /// Deliveries that failed, handed back by the delivery callback.
    pub(super) failures: mpsc::UnboundedReceiver<Box<FailedDelivery>>,
    pub(super) timestamps: TimestampCache,
    /// Cancelled at the shutdown deadline, on a missing topic, or when the pump returns.
    pub(super) stop: CancellationToken,
    /// Cancelled at the shutdown deadline.
    abandon: CancellationToken,
    /// An exactly-once source's transaction (`transaction/`); `None`: at-least-once.
    pub(super) txn: Option<super::transaction::Transaction>,
}

/// Why the pump must return now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Halt {
    /// The shutdown deadline passed (or a missing topic stopped the source) while the pump
    /// waited for room.
    Abandoned,
    /// A pipeline fault stopped the source (logged, counted, shown in `/readyz`).
    Faulted,
    /// Exactly-once: the transaction was aborted; the source rewinds to its last committed
    /// position.
    Rewind,
    /// Exactly-once: another owner fenced this source's transactional producer.
    Fenced,
}

/// How a pump ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PumpEnd {
    /// The source stopped and its channel is drained (an exactly-once source's last
    /// transaction committed).
    Drained,
    /// The shutdown deadline passed first; what the pump held is read again after a restart.
    Abandoned,
    /// A pipeline fault (or the record stage) stopped the source.
    Faulted,
    /// Exactly-once: the open transaction was aborted; start the source again from its last
    /// committed position.
    Rewind,
    /// Exactly-once: another owner fenced the source's producer; this instance stops.
    Fenced,
}

impl From<Halt> for PumpEnd {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::Abandoned => PumpEnd::Abandoned,
            Halt::Faulted => PumpEnd::Faulted,
            Halt::Rewind => PumpEnd::Rewind,
            Halt::Fenced => PumpEnd::Fenced,
        }
    }
}

/// Runs until the channel is closed and drained (the source has stopped), until `abandon`
/// is cancelled while the producer queue is full, or until a pipeline fault stops the source,
/// then returns. Failed deliveries that come back while it runs are judged by their fault
/// class. Meanwhile a task (spawned by this call, so it must be made on the runtime) asks the
/// brokers whether the source's topics exist, so that a missing one stops the source within
/// seconds instead of when its first record times out.
///
/// An exactly-once source passes its `txn` (and its own transactional `producer`): records
/// are sent in transactions that commit on schedule and when the channel is drained; a
/// transaction that cannot commit is aborted and the pump ends with [`PumpEnd::Rewind`].
///
/// The pump is put together here and the returned future only holds it: an `async fn` would
/// keep its arguments and the pump made of them side by side for as long as the pump lives
/// (every idle source has one).
pub fn run_pump(
    producer: KafkaProducer,
    sink: Arc<SourceSink>,
    mut records: RecordReceiver,
    failures: mpsc::UnboundedReceiver<Box<FailedDelivery>>,
    abandon: CancellationToken,
    txn: Option<super::transaction::Transaction>,
) -> impl std::future::Future<Output = PumpEnd> + Send + 'static {
    // Cancelled at the shutdown deadline (with `abandon`), on a missing topic, or when the pump
    // returns or is dropped (which ends the topic check).
    let stop = abandon.child_token();
    let stop_on_return = stop.clone().drop_guard();
    tokio::spawn({
        let (producer, sink, stop) = (producer.clone(), Arc::clone(&sink), stop.clone());
        async move {
            if !topics_exist(&producer, &sink, &stop).await {
                stop.cancel();
            }
        }
    });
    let mut pump = Pump {
        producer,
        sink,
        failures,
        timestamps: TimestampCache::default(),
        stop,
        abandon,
        txn,
    };
    async move {
        let end = pump.run(&mut records).await;
        if end != PumpEnd::Drained {
            pump.abort().await;
        }
        drop(stop_on_return);
        end
    }
}

impl Pump {
    /// The pump's loop. What it does with a batch, a failed delivery or a due commit runs
    /// boxed: those futures are large (kilobytes) and their states would otherwise be part of
    /// every pump's task for as long as it waits, idle or not; boxed, they cost an allocation
    /// per batch or per failure while they run.
    async fn run(&mut self, records: &mut RecordReceiver) -> PumpEnd {
        // Both grown by the first batches, not allocated up front: a thousand idle sources
        // would each hold a batch's worth (8 KiB of pointers) and room for a few records
        // (300 bytes each) for nothing.
        let mut batch: Vec<Box<Envelope>> = Vec::new();
        let mut staged: Vec<Record> = Vec::new();
        let (interval, idle) = (
            self.producer.transaction_interval(),
            self.producer.transaction_idle(),
        );
        let mut last_received = std::time::Instant::now();
        loop {
            let due = self
                .txn
                .as_ref()
                .and_then(|txn| txn.due_at(interval, idle, last_received));
            tokio::select! {
                biased;
                // Past the shutdown deadline: a sender still held (a slow webhook request) must
                // not keep the pump, and so the shutdown, waiting.
                _ = self.stop.cancelled() => return PumpEnd::Abandoned,
                Some(failed) = self.failures.recv() => {
                    if let Err(halt) = Box::pin(self.retry(failed)).await {
                        return halt.into();
                    }
                }
                received = records.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    last_received = std::time::Instant::now();
                    if let Err(halt) = Box::pin(self.pump_batch(&mut batch, &mut staged)).await {
                        return halt.into();
                    }
                }
                // After the channel: a due transaction commits only while no event waits (a
                // busy source commits on the interval as it sends, `sent_in_transaction`).
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    if let Err(halt) = Box::pin(self.commit()).await {
                        return halt.into();
                    }
                }
            }
        }
        if let Some(txn) = &self.txn {
            if !txn.at_boundary {
                // Stopped inside a page: its records are past the last position, and a restart
                // fetches the page again. They must not be committed.
                self.abort().await;
                return PumpEnd::Drained;
            }
            // The source stopped: its last records and position go into one more commit.
            return match Box::pin(self.commit()).await {
                Ok(()) => PumpEnd::Drained,
                Err(halt) => halt.into(),
            };
        }
        // Deliveries that fail from here on are logged by the callback and read again after
        // restart.
        while let Ok(failed) = self.failures.try_recv() {
            if let Err(halt) = Box::pin(self.retry(failed)).await {
                return halt.into();
            }
        }
        PumpEnd::Drained
    }
}

impl Pump {
    /// Runs a batch of events through the record stage and forwards what each becomes. A
    /// transform or a schema runs off the runtime, over every core, once the batch is large
    /// enough to pay for it (`shape.rs`); the rest inline. The channel's permit of an event is
    /// given back once its records are sent.
    #[expect(
        clippy::vec_box,
        reason = "the channel hands envelopes over boxed; a batch of pointers keeps 8 KiB, not 300"
    )]
    async fn pump_batch(
        &mut self,
        batch: &mut Vec<Box<Envelope>>,
        staged: &mut Vec<Record>,
    ) -> Result<(), Halt> {
        let sink = Arc::clone(&self.sink);
        sink.metrics.status.events_taken();
        let costly = sink.stage.is_costly();
        if costly && batch.len() >= super::shape::OFFLOAD_MIN {
            let (events, permits): (Vec<Record>, Vec<_>) = batch
                .drain(..)
                .map(|envelope| {
                    let Envelope { record, permit } = *envelope;
                    (record, permit)
                })
                .unzip();
            let shaped = super::shape::in_parallel(&sink.stage, &sink.metrics, events).await;
            for (shaped, permit) in shaped.into_iter().zip(permits) {
                match shaped {
                    Ok(records) => *staged = records,
                    Err(reason) => return Err(stage_stops(&sink, reason)),
                }
                self.forward(staged).await?;
                drop(permit);
            }
            return Ok(());
        }
        for envelope in batch.drain(..) {
            let Envelope { record, permit } = *envelope;
            let applied = if costly {
                super::shape::inline(&sink.stage, &sink.metrics, record, staged)
            } else {
                sink.stage.apply(record, staged, &sink.metrics)
            };
            if let Err(reason) = applied {
                return Err(stage_stops(&sink, reason));
            }
            self.forward(staged).await?;
            drop(permit);
        }
        Ok(())
    }

    /// Registers the records one event became (`staged`, emptied) with the acknowledger, in
    /// order, and sends them; a marker (a filtered event) is acknowledged at once. An error
    /// when the pump must return: the shutdown deadline passed with the producer queue full,
    /// or a pipeline fault stopped the source (dropping the channel stops it; what it held is
    /// read again after the restart).
    async fn forward(&mut self, staged: &mut Vec<Record>) -> Result<(), Halt> {
        let mut sent = 0;
        let mut positioned = false;
        for mut record in staged.drain(..) {
            positioned = record.position.is_some();
            if let (Some(txn), Some(position)) = (&mut self.txn, &record.position) {
                txn.sent_position = Some(position.clone());
            }
            let slot = window_slot_cost(record.position.as_ref().map_or(0, |p| p.0.len()));
            if record.marker {
                let hold = self.take_budget(slot).await?;
                let seq = self.sink.acks.register(record.position.take(), Some(hold));
                self.sink.acknowledge(seq);
                if let Some(ack) = record.ack.take() {
                    self.sink.settle(ack, DeliveryOutcome::Filtered);
                }
                if self.txn.is_some() {
                    // A filtered event moves the position: a transaction carries it.
                    self.begin()?;
                }
                continue;
            }
            self.begin()?;
            let alone = self.replay_as_refused(&mut record)?;
            let headers = self.headers(&record);
            let cost = super::send::cost(&record, &headers);
            let mut queued = self.take_budget(cost + slot).await?;
            let hold = queued.split(slot);
            let seq = self.sink.acks.register(record.position.clone(), hold);
            if alone {
                self.flush_transaction().await?;
            }
            if let Err(halt) = self.send(record, headers, seq, queued, alone).await {
                if halt == Halt::Abandoned && self.abandon.is_cancelled() {
                    tracing::warn!(source = %self.sink.name, "shutdown deadline passed with the producer queue full; unsent records will be read again after restart");
                }
                return Err(halt);
            }
            if alone {
                // Its own batch: a refusal in its delivery report is its own.
                self.flush_transaction().await?;
            }
            sent += 1;
        }
        // Between events only: a transaction holds every record of an event or none.
        if let Some(txn) = &mut self.txn {
            txn.event_sent(positioned);
        }
        self.sent_in_transaction(sent).await
    }

    /// Exactly-once: applies what an earlier, aborted transaction learnt of `record` (see
    /// `transaction/replay.rs`): a record refused alone becomes a dead-letter record; a record
    /// refused with its batch is sent alone (returns true).
    ///
    /// # Errors
    /// [`Halt::Faulted`]: the dead-letter topic cannot take it.
    fn replay_as_refused(&mut self, record: &mut Record) -> Result<bool, Halt> {
        if self.txn.is_none() {
            return Ok(false);
        }
        let topic: &str = match (&record.dead_letter, &record.topic) {
            (Some(_), _) => &self.sink.dead_letter_topic,
            (None, Some(routed)) => routed,
            (None, None) => &self.sink.topic,
        };
        let topic = topic.to_owned();
        match self.replayed(&topic, record) {
            (Some(error), _) => {
                let class = super::fault::FaultClass::Record;
                if !super::refusal::dead_letter_after_refusal(
                    &self.sink, record, &topic, &error, class,
                ) {
                    return Err(Halt::Faulted);
                }
                Ok(false)
            }
            (None, alone) => Ok(alone),
        }
    }

    /// Takes `cost` bytes of the producer queue's budget, waiting while it is spent. While it
    /// waits, failed deliveries are taken back and sent again (they hold their own bytes, so
    /// that never waits on the budget).
    ///
    /// # Errors
    /// [`Halt`]: the shutdown deadline passed, or a failed delivery was a pipeline fault.
    pub(super) async fn take_budget(&mut self, cost: usize) -> Result<QueuedBytes, Halt> {
        let budget = self.producer.queue_budget().clone();
        if let Some(queued) = budget.try_take(cost) {
            return Ok(queued);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Err(Halt::Abandoned),
                Some(failed) = self.failures.recv() => self.retry(failed).await?,
                queued = budget.take(cost) => return Ok(queued),
            }
        }
    }
}

/// The stage stopped the source (`on_drift = "fail"`, or the stage itself failed): the event
/// is not acknowledged, so the position stays before it.
fn stage_stops(sink: &SourceSink, reason: Stop) -> Halt {
    tracing::error!(source = %sink.name, reason = %reason.0, "the record stage stops the source");
    sink.health.set(
        &sink.name,
        crate::runtime::health::SourceState::Failed(reason.0),
    );
    Halt::Faulted
}

/// How long one metadata request of [`topics_exist`] waits for the brokers.
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long [`topics_exist`] waits before asking again.
const METADATA_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a topic must stay unknown before it counts as missing: a topic created a moment
/// ago may not have reached every broker's metadata yet (librdkafka waits for the same reason,
/// `topic.metadata.propagation.max.ms`).
const METADATA_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the brokers whether the source's topic and dead-letter topic exist, and waits while no
/// broker answers. A topic still unknown after [`METADATA_PROPAGATION`] is a pipeline fault,
/// reported then rather than when its first record times out. False when the source was
/// stopped (a missing topic) or `stop` fired first.
async fn topics_exist(
    producer: &KafkaProducer,
    sink: &SourceSink,
    stop: &CancellationToken,
) -> bool {
    // A templated topic names no topic until a record fills it: only the dead-letter topic is
    // known, and a record routed to a missing topic is dead-lettered (`unknown_topic`).
    let fixed = (!sink.stage.routes_topic()).then_some(&sink.topic);
    for topic in fixed.into_iter().chain([&sink.dead_letter_topic]) {
        let mut unknown_since = None;
        loop {
            match producer.topic_exists(topic, METADATA_TIMEOUT).await {
                Ok(true) => break,
                Ok(false) => {
                    let since = *unknown_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= METADATA_PROPAGATION {
                        let missing = KafkaError::MessageProduction(
                            RDKafkaErrorCode::UnknownTopicOrPartition,
                        );
                        sink.pipeline_fault(topic, &missing);
                        return false;
                    }
                }
                Err(error) => {
                    tracing::debug!(source = %sink.name, topic, %error, "no metadata yet; asking again");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(METADATA_RETRY) => {}
            }
        }
    }
    true
}
