//! Opening, committing and aborting the transactions of an exactly-once pump.

use std::{sync::Arc, time::Instant};

use rdkafka::producer::{BaseRecord, Producer};

use super::{init::blocking, Replay, CALL_TIMEOUT};
use crate::{
    record::Position,
    sinks::kafka::{
        producer::{self, DeliveryTicket},
        pump::{Halt, Pump},
        queue_budget,
    },
    state::checkpoint::CheckpointStore,
};

impl Pump {
    /// Opens a transaction when none is open (before a record is sent).
    ///
    /// # Errors
    /// [`Halt::Rewind`]: the producer cannot begin one (fenced, or in an error state).
    pub(in crate::sinks::kafka) fn begin(&mut self) -> Result<(), Halt> {
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
    pub(in crate::sinks::kafka) async fn sent_in_transaction(
        &mut self,
        n: u64,
    ) -> Result<(), Halt> {
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

    /// Waits (off the runtime) until every record handed to the producer is acknowledged or
    /// failed.
    pub(in crate::sinks::kafka) async fn flush_transaction(&self) -> Result<(), Halt> {
        match blocking(&self.producer, |p| {
            producer::flush_outstanding(p, CALL_TIMEOUT)
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

    /// Commits the open transaction (see the module doc): position record, then commit (which
    /// waits until every record of the transaction is acknowledged, and fails if one was
    /// refused); then settles the completions it held. Nothing happens when none is open.
    ///
    /// # Errors
    /// [`Halt::Rewind`] when the transaction was aborted (the source rewinds),
    /// [`Halt::Faulted`] when the producer was fenced or a pipeline fault stopped the source.
    pub(in crate::sinks::kafka) async fn commit(&mut self) -> Result<(), Halt> {
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
            producer::flush_outstanding(p, CALL_TIMEOUT)?;
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
        let cost = queue_budget::record_cost(record.value.len(), record.key.len(), 0, 0);
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
    pub(in crate::sinks::kafka) async fn abort(&mut self) {
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
}
