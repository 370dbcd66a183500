//! The Kafka sink: an idempotent rdkafka producer shared by every source, one pump task per
//! source that moves records from the source's channel into the producer, and the delivery
//! callback that feeds each source's [`crate::checkpoint::Acknowledger`].
//!
//! `producer.rs` owns the producer, its context (delivery reports) and broker health;
//! `pump.rs` is the only code that hands records to the producer; `queue_budget.rs` holds the
//! producer queue to its configured bytes, counting librdkafka's per-message overhead; `fault.rs` says whether a
//! producer error is one record's (dead-letter it) or the pipeline's (stop, keep the position);
//! `client_log.rs` keeps librdkafka's log lines and client errors to a readable few.

pub mod client_log;
mod fault;
mod producer;
mod pump;
pub mod queue_budget;
mod shape;

pub use fault::FaultClass;

pub use producer::{
    KafkaProducer, KafkaSinkConfig, SourceSink, DEFAULTS as DEFAULT_PROPERTIES,
    ENFORCED as ENFORCED_PROPERTIES,
};
pub use pump::run_pump;
