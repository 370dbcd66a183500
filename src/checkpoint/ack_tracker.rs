//! Tracks Kafka acknowledgements per source and yields the position that is safe to store.
//!
//! Records are registered in the order the source emitted them and get consecutive sequence
//! numbers. Kafka acknowledges them in any order (partitions progress independently); the safe
//! position is the position of the last record of the longest acknowledged prefix, so that on
//! restart nothing before it can have been lost. This is a confirmation window over sequence
//! numbers: memory is proportional to the records in flight, which the producer queue bounds.

use std::{collections::VecDeque, sync::Mutex};

use crate::record::Position;

/// One record's place in the window.
#[derive(Debug)]
struct Slot {
    acked: bool,
    position: Option<Position>,
}

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
        let seq = self.base_seq + self.slots.len() as u64;
        self.slots.push_back(Slot {
            acked: false,
            position,
        });
        seq
    }

    /// Marks `seq` acknowledged. Returns true when the committed position moved.
    ///
    /// An unknown or repeated `seq` is ignored (it is a bug upstream, checked in debug builds).
    pub fn ack(&mut self, seq: u64) -> bool {
        let Some(index) = seq.checked_sub(self.base_seq) else {
            debug_assert!(
                false,
                "ack of seq {seq} below the window base {}",
                self.base_seq
            );
            return false;
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            debug_assert!(false, "ack of unregistered seq {seq}");
            return false;
        };
        debug_assert!(!slot.acked, "seq {seq} acknowledged twice");
        slot.acked = true;
        let mut moved = false;
        while self.slots.front().is_some_and(|slot| slot.acked) {
            let slot = self.slots.pop_front().expect("front exists");
            self.base_seq += 1;
            if let Some(position) = slot.position {
                self.committed = Some(position);
                moved = true;
            }
        }
        if moved {
            self.version += 1;
        }
        moved
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
/// (ack). The lock is held for a few instructions and never across an await.
#[derive(Debug, Default)]
pub struct AckTracker {
    window: Mutex<AckWindow>,
}

impl AckTracker {
    /// A tracker that starts from the stored position.
    pub fn new(resume: Option<Position>) -> Self {
        AckTracker {
            window: Mutex::new(AckWindow::new(resume)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckWindow> {
        // A panic while holding this lock cannot leave the window half-updated in a way that
        // loses data (at worst a position is not advanced), so a poisoned lock is still used.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`AckWindow::register`].
    pub fn register(&self, position: Option<Position>) -> u64 {
        self.lock().register(position)
    }

    /// See [`AckWindow::ack`].
    pub fn ack(&self, seq: u64) -> bool {
        self.lock().ack(seq)
    }

    /// The committed position and its version (see [`AckWindow::committed`]).
    pub fn committed(&self) -> (Option<Position>, u64) {
        let window = self.lock();
        let (position, version) = window.committed();
        (position.cloned(), version)
    }

    /// See [`AckWindow::in_flight`].
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight()
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
