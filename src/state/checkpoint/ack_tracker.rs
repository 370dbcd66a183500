//! Tracks Kafka acknowledgements per source and yields the position that is safe to store.
//!
//! Records are registered in the order the source emitted them and get consecutive sequence
//! numbers. Kafka acknowledges them in any order (partitions progress independently); the safe
//! position is the position of the last record of the longest acknowledged prefix, so that on
//! restart nothing before it can have been lost. This is a confirmation window over sequence
//! numbers: a slot stays from its record's registration until every record before it is
//! acknowledged, so behind one unavailable partition the window holds every later record of the
//! source, acknowledged or filtered. Each slot therefore holds its share of the producer queue's
//! budget ([`crate::sinks::kafka::queue_budget::window_slot_cost`]), given back when the slot
//! leaves the window: the window grows only until the budget is spent, then the pumps wait.

use std::{collections::VecDeque, sync::Mutex};

use crate::{record::Position, sinks::kafka::queue_budget::QueuedBytes};

/// One record's place in the window.
#[derive(Debug)]
struct Slot {
    acked: bool,
    /// Budget bytes the slot holds while it is in the window.
    bytes: u32,
    position: Option<Position>,
}

/// Slots a window keeps room for after it empties; a larger buffer (grown behind a stuck
/// partition) is given back to the allocator.
const KEPT_CAPACITY: usize = 1024;

/// The pure window logic, without locking.
#[derive(Debug, Default)]
pub struct AckWindow {
    /// Sequence number of `slots[0]`.
    base_seq: u64,
    slots: VecDeque<Slot>,
    /// Position of the last record (with a position) in the acknowledged prefix.
    committed: Option<Position>,
    /// Incremented each time `committed` moves, so a committer can tell what changed.
    version: u64,
}

impl AckWindow {
    /// A window that starts from `resume` (the stored position, if any).
    pub fn new(resume: Option<Position>) -> Self {
        AckWindow {
            committed: resume,
            ..AckWindow::default()
        }
    }

    /// Registers the next record and returns its sequence number.
    pub fn register(&mut self, position: Option<Position>) -> u64 {
        self.register_holding(position, 0)
    }

    /// Registers the next record, whose slot holds `bytes` of the budget, and returns its
    /// sequence number.
    pub fn register_holding(&mut self, position: Option<Position>, bytes: usize) -> u64 {
        let seq = self.base_seq + self.slots.len() as u64;
        self.slots.push_back(Slot {
            acked: false,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            position,
        });
        seq
    }

    /// Marks `seq` acknowledged. Returns true when the committed position moved.
    ///
    /// An unknown or repeated `seq` is ignored (it is a bug upstream, checked in debug builds).
    pub fn ack(&mut self, seq: u64) -> bool {
        self.ack_releasing(seq).0
    }

    /// Marks `seq` acknowledged. Returns whether the committed position moved, and the budget
    /// bytes the slots that left the window held.
    pub fn ack_releasing(&mut self, seq: u64) -> (bool, usize) {
        let Some(index) = seq.checked_sub(self.base_seq) else {
            debug_assert!(
                false,
                "ack of seq {seq} below the window base {}",
                self.base_seq
            );
            return (false, 0);
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            debug_assert!(false, "ack of unregistered seq {seq}");
            return (false, 0);
        };
        debug_assert!(!slot.acked, "seq {seq} acknowledged twice");
        slot.acked = true;
        let mut moved = false;
        let mut released = 0;
        while self.slots.front().is_some_and(|slot| slot.acked) {
            let slot = self.slots.pop_front().expect("front exists");
            self.base_seq += 1;
            released += slot.bytes as usize;
            if let Some(position) = slot.position {
                self.committed = Some(position);
                moved = true;
            }
        }
        if self.slots.is_empty() && self.slots.capacity() > 4 * KEPT_CAPACITY {
            self.slots.shrink_to(KEPT_CAPACITY);
        }
        if moved {
            self.version += 1;
        }
        (moved, released)
    }

    /// The position of the longest acknowledged prefix, and its version.
    pub fn committed(&self) -> (Option<&Position>, u64) {
        (self.committed.as_ref(), self.version)
    }

    /// Records registered but not yet part of the acknowledged prefix.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Sequence number that the next registered record will get.
    pub fn next_seq(&self) -> u64 {
        self.base_seq + self.slots.len() as u64
    }
}

/// An [`AckWindow`] shared between the sink (register) and the producer's delivery callback
/// (ack), with the budget bytes its slots hold. The lock is held for a few instructions and
/// never across an await. Dropping the tracker gives back whatever its slots still held (a
/// source stopped with records never acknowledged).
#[derive(Debug, Default)]
pub struct AckTracker {
    window: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    window: AckWindow,
    /// The bytes every slot in the window holds, together, and those of slots that left it
    /// but are not given back yet ([`RELEASE_BATCH`]).
    bytes: Option<QueuedBytes>,
    /// Bytes of slots that left the window, given back once they reach [`RELEASE_BATCH`] or
    /// the window empties.
    leaving: usize,
}

/// Bytes of departed slots given back to the budget at once: one release per some hundred
/// slots instead of one per acknowledgement, on the delivery callback's hot path.
const RELEASE_BATCH: usize = 8 * 1024;

impl AckTracker {
    /// A tracker that starts from the stored position.
    pub fn new(resume: Option<Position>) -> Self {
        AckTracker {
            window: Mutex::new(Held {
                window: AckWindow::new(resume),
                bytes: None,
                leaving: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding this lock cannot leave the window half-updated in a way that
        // loses data (at worst a position is not advanced), so a poisoned lock is still used.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the next record (see [`AckWindow::register`]); its slot keeps `hold` (budget
    /// bytes, if any) until it leaves the window.
    pub fn register(&self, position: Option<Position>, hold: Option<QueuedBytes>) -> u64 {
        let mut held = self.lock();
        let bytes = hold.as_ref().map_or(0, QueuedBytes::bytes);
        let seq = held.window.register_holding(position, bytes);
        if let Some(hold) = hold {
            match &mut held.bytes {
                Some(all) => all.merge(hold),
                empty @ None => *empty = Some(hold),
            }
        }
        seq
    }

    /// See [`AckWindow::ack`]; the bytes of the slots that left the window go back to the
    /// budget, by [`RELEASE_BATCH`] or when the window empties.
    pub fn ack(&self, seq: u64) -> bool {
        let mut held = self.lock();
        let (moved, released) = held.window.ack_releasing(seq);
        held.leaving += released;
        let due =
            held.leaving >= RELEASE_BATCH || (held.leaving > 0 && held.window.in_flight() == 0);
        let held = &mut *held;
        let freed = match &mut held.bytes {
            Some(all) if due => all.split(std::mem::take(&mut held.leaving)),
            _ => None,
        };
        drop(freed);
        moved
    }

    /// The committed position and its version (see [`AckWindow::committed`]).
    pub fn committed(&self) -> (Option<Position>, u64) {
        let held = self.lock();
        let (position, version) = held.window.committed();
        (position.cloned(), version)
    }

    /// See [`AckWindow::in_flight`].
    pub fn in_flight(&self) -> usize {
        self.lock().window.in_flight()
    }

    /// Budget bytes the window's slots hold now (with those of departed slots not given back
    /// yet, fewer than [`RELEASE_BATCH`]).
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes.as_ref().map_or(0, QueuedBytes::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(i: usize) -> Option<Position> {
        Some(Position(i.to_string().into()))
    }

    #[test]
    fn in_order_acks_advance_one_by_one() {
        let mut w = AckWindow::new(None);
        let a = w.register(pos(0));
        let b = w.register(pos(1));
        assert!(w.ack(a));
        assert_eq!(w.committed().0, pos(0).as_ref());
        assert!(w.ack(b));
        assert_eq!(w.committed().0, pos(1).as_ref());
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_gap_holds_the_position_back_until_filled() {
        let mut w = AckWindow::new(Some(Position("start".into())));
        let a = w.register(pos(0));
        let b = w.register(pos(1));
        let c = w.register(pos(2));
        assert!(!w.ack(c));
        assert!(!w.ack(b));
        assert_eq!(w.committed().0.map(Position::as_str), Some("start"));
        assert!(w.ack(a));
        assert_eq!(w.committed().0, pos(2).as_ref());
    }

    #[test]
    fn records_without_position_keep_the_last_one() {
        let mut w = AckWindow::new(None);
        let a = w.register(pos(7));
        let b = w.register(None);
        assert!(w.ack(a));
        assert!(!w.ack(b));
        assert_eq!(w.committed().0, pos(7).as_ref());
        assert_eq!(w.committed().1, 1);
    }

    #[test]
    fn slots_give_their_bytes_back_when_they_leave_the_window() {
        let mut w = AckWindow::new(None);
        let a = w.register_holding(pos(0), 100);
        let b = w.register_holding(None, 70);
        let c = w.register_holding(pos(2), 80);
        assert_eq!(w.ack_releasing(b), (false, 0), "b waits behind a");
        assert_eq!(w.ack_releasing(c), (false, 0), "c waits behind a");
        assert_eq!(w.ack_releasing(a), (true, 250));
        assert_eq!(w.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_stuck_record_holds_the_budget_of_every_slot_behind_it() {
        let budget = crate::sinks::kafka::queue_budget::QueueBudget::new(1_000);
        let tracker = AckTracker::new(None);
        let stuck = tracker.register(pos(0), budget.try_take(100));
        for i in 1..10 {
            let seq = tracker.register(pos(i), budget.try_take(100));
            tracker.ack(seq);
        }
        assert_eq!(
            budget.available(),
            0,
            "acknowledged slots behind the stuck one stay"
        );
        assert!(budget.try_take(1).is_none(), "the next record must wait");
        tracker.ack(stuck);
        assert_eq!(budget.available(), 1_000);
        assert_eq!(tracker.held_bytes(), 0);
    }

    #[tokio::test]
    async fn departed_slots_go_back_by_batches_or_when_the_window_empties() {
        let budget = crate::sinks::kafka::queue_budget::QueueBudget::new(1 << 20);
        let tracker = AckTracker::new(None);
        let slot = 100;
        let seqs: Vec<u64> = (0..200)
            .map(|i| tracker.register(pos(i), budget.try_take(slot)))
            .collect();
        for &seq in &seqs[..50] {
            tracker.ack(seq);
        }
        assert_eq!(
            budget.available(),
            (1 << 20) - 200 * slot,
            "50 departed slots (5,000 bytes) stay below the batch"
        );
        for &seq in &seqs[50..100] {
            tracker.ack(seq);
        }
        assert_eq!(
            budget.available(),
            (1 << 20) - 200 * slot + 82 * slot,
            "the 82nd departed slot passed the batch: 8,200 bytes went back at once"
        );
        for &seq in &seqs[100..] {
            tracker.ack(seq);
        }
        assert_eq!(budget.available(), 1 << 20, "an empty window holds nothing");
    }

    #[tokio::test]
    async fn dropping_the_tracker_gives_back_what_its_slots_held() {
        let budget = crate::sinks::kafka::queue_budget::QueueBudget::new(1_000);
        let tracker = AckTracker::new(None);
        tracker.register(pos(0), budget.try_take(300));
        tracker.register(pos(1), budget.try_take(300));
        assert_eq!(budget.available(), 400);
        drop(tracker);
        assert_eq!(budget.available(), 1_000);
    }

    proptest! {
        /// Any acknowledgement order ⇒ after each ack the committed position is that of the
        /// longest acknowledged prefix.
        #[test]
        fn committed_is_longest_acked_prefix(order in (1usize..200).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())) {
            let n = order.len();
            let mut w = AckWindow::new(None);
            for i in 0..n {
                prop_assert_eq!(w.register(pos(i)), i as u64);
            }
            let mut acked = vec![false; n];
            for &i in &order {
                w.ack(i as u64);
                acked[i] = true;
                let prefix = acked.iter().take_while(|a| **a).count();
                let expected = if prefix == 0 { None } else { pos(prefix - 1) };
                prop_assert_eq!(w.committed().0, expected.as_ref());
                prop_assert_eq!(w.in_flight(), n - prefix);
            }
        }
    }
}
