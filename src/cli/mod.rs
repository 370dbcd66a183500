//! The commands besides `run`: each subcommand's work, which `main.rs` parses and calls.
//!
//! - [`check_connect`]: `check --connect`, every source's endpoint and the brokers, probed.
//! - [`positions`]: `positions list|set|reset`, the stored positions.
//! - [`topics`]: `topics create`, the topics a config names.
//! - [`schema_infer`]: `schema infer`, a JSON Schema from sample events.
//! - [`dev_broker`]: `dev-broker`, librdkafka's mock cluster for trying a config without Kafka.
//! - [`demo`]: `demo`, a recorded feed into a local broker, end to end.

pub mod check_connect;
pub mod demo;
pub mod dev_broker;
pub mod positions;
pub mod schema_infer;
pub mod topics;
