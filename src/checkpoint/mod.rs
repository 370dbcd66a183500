//! Stored positions: the [`AckTracker`] that decides what is safe to store, the
//! [`CheckpointStore`] trait that stores it, and the committer task that batches commits.
//!
//! A source never writes a checkpoint itself. The sink registers each record with the
//! source's tracker, the producer's delivery callback acknowledges it, and the committer
//! writes the tracker's committed position every `commit_interval` or every
//! `commit_every_records` acknowledgements, whichever comes first. A future Kafka-topic store
//! (and the exactly-once mode that commits positions inside the producer's transaction) is one
//! more implementation of [`CheckpointStore`].

mod ack_tracker;
mod committer;
mod file_store;

pub use ack_tracker::{AckTracker, AckWindow};
pub use committer::{Committer, CommitterHandle};
pub use file_store::FileStore;

use crate::{error::CheckpointError, record::Position};

/// Where positions are stored between runs.
///
/// Methods are blocking (file or network I/O); async code calls them through
/// `tokio::task::spawn_blocking`.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The stored position of `source`, if any.
    ///
    /// # Errors
    /// The store cannot be read or parsed.
    fn load(&self, source: &str) -> Result<Option<Position>, CheckpointError>;

    /// Stores the given positions atomically: after a crash either all of them or none of them
    /// are visible.
    ///
    /// # Errors
    /// The store cannot be written; the previous positions stay in force.
    fn commit(&self, positions: &[(String, Position)]) -> Result<(), CheckpointError>;
}
