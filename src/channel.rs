//! The bounded channel between a source and the Kafka sink, bounded in records AND bytes.
//!
//! A source awaits [`RecordSender::send`] until there is room on both bounds, so when Kafka is
//! slow the source stops reading its socket instead of growing memory (backpressure). The byte
//! bound is a semaphore whose permits travel with each record and are released when the sink
//! has handed the record to the producer.
//!
//! Envelopes travel boxed. Tokio's channel allocates its slots 32 at a time, the first block as
//! soon as the channel exists: with envelopes inline (over 300 bytes each) that is about 10 KiB
//! per source, idle or not. Boxed, a slot is one pointer (a block is about 300 bytes), and
//! the envelope's memory exists only while it is in flight; the price is one allocation per
//! record, small against the rest of a record's way to Kafka.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::{metrics::SourceMetrics, record::Record};

/// A record together with its share of the byte bound; it travels boxed (see the module doc).
pub struct Envelope {
    /// The record.
    pub record: Record,
    /// Released (dropped) once the record has left the channel for the producer.
    pub permit: OwnedSemaphorePermit,
}

/// The sending half, held by a source.
#[derive(Clone)]
pub struct RecordSender {
    inner: mpsc::Sender<Box<Envelope>>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
    metrics: SourceMetrics,
}

/// The receiving half, held by the sink.
pub struct RecordReceiver {
    inner: mpsc::Receiver<Box<Envelope>>,
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
            .send(Box::new(Envelope { record, permit }))
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
        match self.inner.try_send(Box::new(Envelope { record, permit })) {
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
    pub async fn recv_many(&mut self, buffer: &mut Vec<Box<Envelope>>, limit: usize) -> usize {
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;
    use futures::FutureExt;

    use super::*;
    use crate::metrics::{Metrics, SourceKind};

    fn record(payload: &'static str) -> Record {
        Record::new(Bytes::from_static(payload.as_bytes()), SystemTime::now())
    }

    fn channel(
        max_records: usize,
        max_bytes: u32,
    ) -> (RecordSender, RecordReceiver, SourceMetrics) {
        let metrics = Metrics::new().source("s", SourceKind::Sse);
        let (tx, rx) = bounded(max_records, max_bytes, metrics.clone());
        (tx, rx, metrics)
    }

    fn payloads(buffer: &[Box<Envelope>]) -> Vec<&[u8]> {
        buffer.iter().map(|e| e.record.payload.as_ref()).collect()
    }

    #[tokio::test]
    async fn a_channel_full_in_records_makes_the_sender_wait_until_the_sink_takes_one() {
        let (tx, mut rx, _) = channel(2, 1 << 20);
        tx.send(record("a")).await.unwrap();
        tx.send(record("b")).await.unwrap();
        let mut third = Box::pin(tx.send(record("c")));
        assert!((&mut third).now_or_never().is_none(), "a third record fit");
        let mut buffer = Vec::new();
        assert_eq!(rx.recv_many(&mut buffer, 1).await, 1);
        third.await.unwrap();
        assert_eq!(rx.recv_many(&mut buffer, 10).await, 2);
        assert_eq!(payloads(&buffer), [b"a".as_ref(), b"b", b"c"]);
    }

    #[tokio::test]
    async fn bytes_come_back_only_when_the_sink_drops_the_envelope() {
        let (tx, mut rx, _) = channel(100, 10);
        tx.send(record("123456")).await.unwrap();
        let mut second = Box::pin(tx.send(record("abcdef")));
        assert!((&mut second).now_or_never().is_none(), "12 bytes fit in 10");
        let mut buffer = Vec::new();
        assert_eq!(rx.recv_many(&mut buffer, 10).await, 1);
        assert!(
            (&mut second).now_or_never().is_none(),
            "the bytes came back before the sink handed the record on"
        );
        buffer.clear();
        second.await.unwrap();
    }

    #[tokio::test]
    async fn a_record_over_the_byte_bound_goes_alone() {
        let (tx, mut rx, metrics) = channel(100, 4);
        tx.send(record("far too long")).await.unwrap();
        assert_eq!(metrics.channel_bytes.get(), 4, "it takes every permit");
        let mut next = Box::pin(tx.send(record("x")));
        assert!((&mut next).now_or_never().is_none());
        let mut buffer = Vec::new();
        rx.recv_many(&mut buffer, 10).await;
        buffer.clear();
        next.await.unwrap();
    }

    #[tokio::test]
    async fn the_gauges_count_what_is_in_the_channel() {
        let (tx, mut rx, metrics) = channel(100, 1 << 20);
        tx.send(record("abc")).await.unwrap();
        tx.send(record("")).await.unwrap();
        assert_eq!(metrics.channel_records.get(), 2);
        // An empty record still holds one byte of the bound.
        assert_eq!(metrics.channel_bytes.get(), 4);
        let mut buffer = Vec::new();
        assert_eq!(rx.recv_many(&mut buffer, 1).await, 1);
        assert_eq!(metrics.channel_records.get(), 1);
        assert_eq!(metrics.channel_bytes.get(), 1);
        assert_eq!(rx.recv_many(&mut buffer, 10).await, 1);
        assert_eq!(metrics.channel_records.get(), 0);
        assert_eq!(metrics.channel_bytes.get(), 0);
    }

    #[tokio::test]
    async fn try_send_gives_the_record_back_when_full_or_closed() {
        let (tx, rx, metrics) = channel(1, 1 << 20);
        tx.try_send(record("a")).unwrap();
        match tx.try_send(record("b")) {
            Err(TrySendError::Full(back)) => assert_eq!(back.payload.as_ref(), b"b"),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(
            metrics.channel_records.get(),
            1,
            "a refused record is not counted"
        );
        drop(rx);
        match tx.try_send(record("c")) {
            Err(TrySendError::Closed(back)) => assert_eq!(back.payload.as_ref(), b"c"),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn try_send_is_full_when_the_bytes_are_spent() {
        let (tx, _rx, _) = channel(100, 4);
        tx.try_send(record("abcd")).unwrap();
        assert!(matches!(
            tx.try_send(record("e")),
            Err(TrySendError::Full(_))
        ));
    }

    #[tokio::test]
    async fn a_stopped_sink_closes_the_channel_for_the_source() {
        let (tx, rx, _) = channel(10, 1 << 20);
        drop(rx);
        assert!(matches!(tx.send(record("a")).await, Err(ChannelClosed)));
    }

    #[tokio::test]
    async fn the_sink_drains_what_is_left_after_every_source_stopped() {
        let (tx, mut rx, _) = channel(10, 1 << 20);
        let second = tx.clone();
        tx.send(record("a")).await.unwrap();
        second.send(record("b")).await.unwrap();
        drop((tx, second));
        let mut buffer = Vec::new();
        assert_eq!(rx.recv_many(&mut buffer, 10).await, 2);
        assert_eq!(rx.recv_many(&mut buffer, 10).await, 0);
        assert_eq!(payloads(&buffer), [b"a".as_ref(), b"b"]);
    }
}
