//! What survives a restart and what replicas share.
//!
//! - [`checkpoint`]: each source's position, in a directory or in a compacted Kafka topic.
//! - [`cluster`]: which replica runs which source (a Kafka consumer group assigns them).

pub mod checkpoint;
pub mod cluster;
