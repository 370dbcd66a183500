//! The bounded channel between a source and the Kafka sink, bounded in records AND bytes.
//!
//! A source awaits [`RecordSender::send`] until there is room on both bounds, so when Kafka is
//! slow the source stops reading its socket instead of growing memory (backpressure). The byte
//! bound is a semaphore whose permits travel with each record and are released when the sink
//! has handed the record to the producer.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::{metrics::SourceMetrics, record::Record};

/// A record together with its share of the byte bound.
pub struct Envelope {
    /// The record.
    pub record: Record,
    /// Released (dropped) once the record has left the channel for the producer.
    pub permit: OwnedSemaphorePermit,
}

/// The sending half, held by a source.
#[derive(Clone)]
pub struct RecordSender {
    inner: mpsc::Sender<Envelope>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
    metrics: SourceMetrics,
}

/// The receiving half, held by the sink.
pub struct RecordReceiver {
    inner: mpsc::Receiver<Envelope>,
    metrics: SourceMetrics,
}

/// The channel was closed because the sink stopped; the source should stop too.
#[derive(Debug, thiserror::Error)]
#[error("the record channel is closed (the sink has stopped)")]
pub struct ChannelClosed;

/// Why [`RecordSender::try_send`] gave the record back.
#[derive(Debug)]
pub enum TrySendError {
    /// The channel is full (in records or in bytes): backpressure.
    Full(Box<Record>),
    /// The sink has stopped.
    Closed(Box<Record>),
}

/// Creates a channel that holds at most `max_records` records and `max_bytes` bytes.
///
/// A single record larger than `max_bytes` is admitted alone (it takes every permit), so an
/// oversized record cannot wedge the source.
pub fn bounded(
    max_records: usize,
    max_bytes: u32,
    metrics: SourceMetrics,
) -> (RecordSender, RecordReceiver) {
    let (tx, rx) = mpsc::channel(max_records.max(1));
    let max_bytes = max_bytes.max(1);
    let bytes = Arc::new(Semaphore::new(max_bytes as usize));
    (
        RecordSender {
            inner: tx,
            bytes,
            max_bytes,
            metrics: metrics.clone(),
        },
        RecordReceiver { inner: rx, metrics },
    )
}

impl RecordSender {
    /// Sends a record, waiting while the channel is full in records or in bytes.
    ///
    /// # Errors
    /// [`ChannelClosed`] when the sink has stopped.
    pub async fn send(&self, record: Record) -> Result<(), ChannelClosed> {
        let size = record.size_bytes();
        let wanted = u32::try_from(size)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_bytes);
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| ChannelClosed)?;
        self.inner
            .send(Envelope { record, permit })
            .await
            .map_err(|_| ChannelClosed)?;
        self.metrics.channel_bytes.add(wanted as i64);
        self.metrics.channel_records.inc();
        Ok(())
    }
}

impl RecordSender {
    /// Sends a record if there is room now, without waiting (for sources that must answer
    /// someone at once, such as webhooks).
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the channel is full, [`TrySendError::Closed`] when the sink
    /// has stopped; both give the record back.
    pub fn try_send(&self, record: Record) -> Result<(), TrySendError> {
        use tokio::sync::{mpsc::error::TrySendError as MpscError, TryAcquireError};
        let wanted = u32::try_from(record.size_bytes())
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_bytes);
        let permit = match Arc::clone(&self.bytes).try_acquire_many_owned(wanted) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(Box::new(record))),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(Box::new(record))),
        };
        match self.inner.try_send(Envelope { record, permit }) {
            Ok(()) => {
                self.metrics.channel_bytes.add(wanted as i64);
                self.metrics.channel_records.inc();
                Ok(())
            }
            Err(MpscError::Full(envelope)) => Err(TrySendError::Full(Box::new(envelope.record))),
            Err(MpscError::Closed(envelope)) => {
                Err(TrySendError::Closed(Box::new(envelope.record)))
            }
        }
    }
}

impl RecordReceiver {
    /// Receives up to `limit` envelopes into `buffer`, waiting for at least one.
    /// Returns 0 when every sender is gone and the channel is empty.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Envelope>, limit: usize) -> usize {
        let received = self.inner.recv_many(buffer, limit).await;
        if received > 0 {
            let bytes: usize = buffer[buffer.len() - received..]
                .iter()
                .map(|envelope| envelope.permit.num_permits())
                .sum();
            self.metrics.channel_records.sub(received as i64);
            self.metrics.channel_bytes.sub(bytes as i64);
        }
        received
    }
}
