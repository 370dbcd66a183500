//! The Kafka sink: an idempotent rdkafka producer shared by every source, one pump task per
//! source that moves records from the source's channel into the producer, and the delivery
//! callback that feeds each source's [`crate::state::checkpoint::Acknowledger`].
//!
//! `producer.rs` owns the producer, its context (delivery reports) and broker health;
//! `pump.rs` runs each event through the record stage and forwards its records, `send.rs` is
//! the only code that hands records to the producer; `queue_budget.rs` holds the producer queue
//! and the acknowledgement windows to the configured bytes, counting librdkafka's per-message
//! overhead; `fault.rs` judges whether a producer error is one record's (dead-letter it), its
//! batch's (send it again alone) or the pipeline's (stop, keep the position), and `refusal.rs`
//! does what follows; `transaction/` commits an exactly-once source's records and position
//! together in Kafka transactions;
//! `client_log.rs` keeps librdkafka's log lines and client errors to a readable few.

pub mod client_log;
mod delivery;
mod fault;
mod producer;
mod pump;
pub mod queue_budget;
mod refusal;
mod send;
mod shape;
mod transaction;

pub use fault::FaultClass;

pub use producer::{
    FailedDelivery, KafkaProducer, KafkaSinkConfig, SourceSink, DEFAULTS as DEFAULT_PROPERTIES,
    ENFORCED as ENFORCED_PROPERTIES,
};
pub use pump::{run_pump, PumpEnd};
pub use transaction::{init_transactions, Deferred, Replay, Transaction};

/// The short, stable kind of a producer error (a metric label).
fn error_kind(error: &rdkafka::error::KafkaError) -> &'static str {
    error
        .rdkafka_error_code()
        .map_or("other", producer::error_kind_name)
}
