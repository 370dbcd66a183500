//! The producer queue's memory budget, counted as librdkafka really allocates it.
//!
//! librdkafka's `queue.buffering.max.kbytes` counts only each message's key and value. Every
//! queued message also costs its `rd_kafka_msg_t`, its copied headers (Tributary's lineage
//! headers: the source, the URL, the event id and type, the fetch time) and its delivery
//! ticket: on 1 KiB records that is half as much again, so a queue "of 64 MiB" held about
//! 100 MiB. [`QueueBudget`] holds the queue to the operator's `queue.buffering.max.kbytes`
//! counting those costs as well: a pump takes a record's cost before handing it to
//! librdkafka, and the delivery report gives it back. librdkafka's own limit still applies;
//! this one is reached first.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a queued message costs beyond its key, value and header bytes: librdkafka's message
/// structure and header list, the batch buffers a produce request copies it into, and the
/// delivery ticket (bytes). Calibrated with the chaos suite's broker outage, where the queue
/// is full: with 512 the queue's resident memory came to 1.6 times its budget.
pub const MESSAGE_OVERHEAD_BYTES: usize = 1024;
/// What each header costs beyond its name and value: its `rd_kafka_header_t` and allocator
/// rounding (bytes).
pub const HEADER_OVERHEAD_BYTES: usize = 96;

/// Bytes of the producer queue, shared by every pump.
#[derive(Clone, Debug)]
pub struct QueueBudget {
    bytes: Arc<Semaphore>,
    capacity: usize,
}

/// Bytes taken from a [`QueueBudget`], given back when dropped: a queued record's cost (after
/// its delivery report), or the acknowledgement window's slots (when they leave the window).
#[derive(Debug)]
pub struct QueuedBytes(OwnedSemaphorePermit);

impl QueuedBytes {
    /// How many bytes this holds.
    pub fn bytes(&self) -> usize {
        self.0.num_permits()
    }

    /// Splits `bytes` off into a value of their own (all of them when this holds fewer).
    pub fn split(&mut self, bytes: usize) -> Option<QueuedBytes> {
        let bytes = bytes.min(self.bytes());
        self.0.split(bytes).map(QueuedBytes)
    }

    /// Adds `other`'s bytes to these (both from the same budget).
    pub fn merge(&mut self, other: QueuedBytes) {
        self.0.merge(other.0);
    }
}

/// What one slot of a source's acknowledgement window costs (bytes): the slot, its position's
/// shared text and the allocator's rounding, beyond the position's own length. A slot stays
/// until every record before it is acknowledged, long after its record left the producer
/// queue, so slots take their share of the same budget: behind one stuck partition the window
/// can grow only until the budget is spent, then the pumps wait (backpressure).
pub const WINDOW_SLOT_BYTES: usize = 64;

/// The bytes one acknowledgement-window slot costs for a position of `position` bytes.
pub fn window_slot_cost(position: usize) -> usize {
    WINDOW_SLOT_BYTES + position
}

impl QueueBudget {
    /// A budget of `capacity` bytes (at least one record's worth is always let through).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        QueueBudget {
            bytes: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// The budget from librdkafka's `queue.buffering.max.kbytes` value (KiB); `None` when the
    /// value is not a number (librdkafka refuses it when the producer is created).
    pub fn from_kbytes(value: &str) -> Option<Self> {
        let kib: usize = value.trim().parse().ok()?;
        Some(Self::new(kib.saturating_mul(1024)))
    }

    /// The budget's size (bytes).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes not taken now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Takes `cost` bytes when they are free now (`None` otherwise).
    pub fn try_take(&self, cost: usize) -> Option<QueuedBytes> {
        let permits = u32::try_from(cost.clamp(1, self.capacity)).unwrap_or(u32::MAX);
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(permits)
            .ok()
            .map(QueuedBytes)
    }

    /// Waits until `cost` bytes are free and takes them. A record costing more than the whole
    /// budget waits for an empty queue and then takes all of it.
    pub async fn take(&self, cost: usize) -> QueuedBytes {
        let permits = u32::try_from(cost.clamp(1, self.capacity)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(permits)
            .await
            .expect("the budget's semaphore is never closed");
        QueuedBytes(permit)
    }
}

/// The memory a queued record takes (bytes): its value, key and header bytes plus the
/// per-message and per-header overheads.
pub fn record_cost(payload: usize, key: usize, header_bytes: usize, headers: usize) -> usize {
    payload + key + header_bytes + MESSAGE_OVERHEAD_BYTES + headers * HEADER_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_comes_from_kbytes() {
        assert_eq!(
            QueueBudget::from_kbytes("65536").unwrap().capacity(),
            64 << 20
        );
        assert!(QueueBudget::from_kbytes("lots").is_none());
    }

    #[test]
    fn a_record_costs_more_than_its_bytes() {
        assert_eq!(
            record_cost(1000, 20, 100, 5),
            1000 + 20 + 100 + 1024 + 5 * 96
        );
    }

    #[tokio::test]
    async fn takes_wait_until_deliveries_give_bytes_back() {
        let budget = QueueBudget::new(10_000);
        let first = budget.take(6_000).await;
        assert_eq!(budget.available(), 4_000);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(6_000).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "6000 of 4000 free bytes must wait");
        drop(first);
        let _second = waiting.await.unwrap();
        assert_eq!(budget.available(), 4_000);
    }

    #[tokio::test]
    async fn split_bytes_go_back_on_their_own() {
        let budget = QueueBudget::new(1_000);
        let mut record = budget.take(300).await;
        let slot = record.split(100).expect("100 of 300 bytes");
        assert_eq!((record.bytes(), slot.bytes()), (200, 100));
        drop(record);
        assert_eq!(budget.available(), 900, "the slot's bytes stay taken");
        let mut window = budget.take(50).await;
        window.merge(slot);
        assert_eq!(window.bytes(), 150);
        drop(window);
        assert_eq!(budget.available(), 1_000);
        assert!(
            budget.try_take(1_001).is_some(),
            "clamped to the whole budget"
        );
    }

    #[tokio::test]
    async fn a_record_larger_than_the_budget_takes_all_of_it() {
        let budget = QueueBudget::new(1_000);
        let all = budget.take(5_000).await;
        assert_eq!(budget.available(), 0);
        drop(all);
        assert_eq!(budget.available(), 1_000);
    }
}
