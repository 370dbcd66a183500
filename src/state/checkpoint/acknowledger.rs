//! The boundary between the sink and the stored positions.
//!
//! The sink tells an [`Acknowledger`] two things: which records a source emitted, in order
//! (with their positions), and which of them Kafka holds. The acknowledger alone decides what
//! position is safe to store. Today's sink is idempotent and at-least-once, and acknowledges
//! record by record: [`RecordAcks`] feeds each delivery report into the source's
//! [`AckTracker`]. A transactional sink (exactly-once, later) acknowledges per transaction
//! instead: it registers the records of a transaction, and once the transaction commits (with
//! the position written inside it) acknowledges them together. Both keep the rule that a
//! position only ever covers records Kafka holds.

use std::sync::Arc;

use super::{AckTracker, CommitterHandle};
use crate::{record::Position, sinks::kafka::queue_budget::QueuedBytes};

/// Decides, from what Kafka acknowledged, which position of a source is safe to store.
///
/// Implementations are called from the pump (register) and from librdkafka's delivery
/// callback (acknowledge): they must be cheap and must never block or await.
pub trait Acknowledger: Send + Sync + 'static {
    /// Registers the next record the source emitted, in emission order, with its position
    /// (`None`: the record moves no position) and the budget bytes its place in the window
    /// holds until every record before it is acknowledged. Returns its sequence number.
    fn register(&self, position: Option<Position>, hold: Option<QueuedBytes>) -> u64;

    /// Kafka holds record `seq` (or it was dead-lettered, which Kafka holds as well).
    fn acknowledge(&self, seq: u64);
}

/// Per-record acknowledgements of the idempotent producer: each delivery report moves the
/// source's [`AckTracker`], and the committer is told.
pub struct RecordAcks {
    tracker: Arc<AckTracker>,
    committer: Arc<CommitterHandle>,
    commit_each_position: bool,
}

impl RecordAcks {
    /// Acknowledgements into `tracker`, counted for `committer`. With `commit_each_position`
    /// (polled sources, whose position moves once per page) the committer is woken each time
    /// the position moves, not only on its schedule.
    pub fn new(
        tracker: Arc<AckTracker>,
        committer: Arc<CommitterHandle>,
        commit_each_position: bool,
    ) -> Self {
        RecordAcks {
            tracker,
            committer,
            commit_each_position,
        }
    }
}

impl Acknowledger for RecordAcks {
    fn register(&self, position: Option<Position>, hold: Option<QueuedBytes>) -> u64 {
        self.tracker.register(position, hold)
    }

    fn acknowledge(&self, seq: u64) {
        let moved = self.tracker.ack(seq);
        self.committer.acked(1);
        if moved && self.commit_each_position {
            self.committer.commit_soon();
        }
    }
}
