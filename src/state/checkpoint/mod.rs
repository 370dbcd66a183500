//! Stored positions: the [`Acknowledger`] boundary and its per-record [`AckTracker`] that
//! decide what is safe to store, the [`CheckpointStore`] trait and its two stores, and the
//! committer task that batches commits.
//!
//! A source never writes a checkpoint itself. The sink registers each record with the
//! source's acknowledger, the producer's delivery callback acknowledges it, and the committer
//! writes the tracker's committed position every `commit_interval` or every
//! `commit_every_records` acknowledgements, whichever comes first.
//!
//! Two stores implement [`CheckpointStore`]:
//! - [`FileStore`], the embedded default: one JSON file in a state directory, guarded by a
//!   lock file so that one daemon owns it.
//! - [`KafkaStore`]: a compacted Kafka topic, shared by the replicas of a cluster
//!   ([`crate::state::cluster`]); each source's writes carry an owner epoch that fences the writes of
//!   a replica that lost the source.
//!
//! Exactly-once sources (`delivery = "exactly_once"`) do not go through the committer: their
//! transactional sink (`sinks/kafka/transaction/`) writes each position to the Kafka store
//! inside the producer's transaction, with [`CheckpointStore::position_record`], so that the
//! position and the records it covers are committed together.

mod ack_tracker;
mod acknowledger;
mod committer;
mod file_store;
mod kafka_store;

pub use ack_tracker::{AckTracker, AckWindow};
pub use acknowledger::{Acknowledger, RecordAcks};
pub use committer::{Committer, CommitterHandle};
pub use file_store::FileStore;
pub use kafka_store::{
    compaction, Compaction, KafkaStore, KafkaStoreConfig, LoadSummary, StoredPosition,
};

use futures::future::BoxFuture;

use crate::{error::CheckpointError, record::Position};

/// Where positions are stored between runs (and, in a cluster, between replicas).
///
/// The futures do their blocking I/O (fsync, librdkafka calls) off the runtime's workers.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Takes ownership of `source`'s position and returns it (`None`: nothing is stored, the
    /// source starts as configured). Called once before the source starts.
    ///
    /// The file store only reads: its lock file already makes this daemon the only owner.
    /// The Kafka store reads its topic to the end, then writes a claim with the next owner
    /// epoch, so that later writes from the previous owner are ignored.
    ///
    /// # Errors
    /// The store cannot be read (or the claim cannot be written).
    fn acquire<'a>(
        &'a self,
        source: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, CheckpointError>>;

    /// Stores the given positions. Each position is stored whole or not at all; after a
    /// failure some may be stored and others not. Either is safe, since each one covers only
    /// records Kafka holds.
    ///
    /// # Errors
    /// The store cannot be written; the previous positions stay in force.
    fn commit(
        &self,
        positions: Vec<(String, Position)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>>;

    /// The record that stores `position` for `source` when a transactional producer writes it
    /// inside its transaction, with the owner epoch of this store's acquisition; `None` for a
    /// store that is not a Kafka topic (the file store).
    fn position_record(&self, _source: &str, _position: &Position) -> Option<PositionRecord> {
        None
    }
}

/// A position as a Kafka record of the Kafka store's topic (see
/// [`CheckpointStore::position_record`]).
#[derive(Clone, Debug)]
pub struct PositionRecord {
    /// The positions topic.
    pub topic: String,
    /// The record key (`["<cluster>", "<source>"]`).
    pub key: Vec<u8>,
    /// The record value ([`StoredPosition`] as JSON).
    pub value: Vec<u8>,
}
