//! Where records go. Today: Kafka.

pub mod kafka;
