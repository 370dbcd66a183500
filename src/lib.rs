//! Tributary: a daemon that turns API feeds into Kafka topics, resumably.
//!
//! Each configured source reads one feed and emits records into a bounded channel; a pump per
//! source hands them to one idempotent Kafka producer; delivery reports advance each source's
//! acknowledged position, which the committer stores, so that after any restart the source
//! resumes where it left off and nothing is lost. See the book (`docs/`, an mdBook) for the operator's view.

pub mod backoff;
pub mod channel;
pub mod check_connect;
pub mod checkpoint;
pub mod cluster;
pub mod config;
mod config_explain;
pub mod daemon;
pub mod demo;
pub mod dev_broker;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod json;
pub mod liveness;
pub mod logging;
pub mod metrics;
pub mod positions;
pub mod record;
pub mod reload;
pub mod router;
pub mod schema_infer;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod sinks;
pub mod source_runner;
pub mod sources;
pub mod stage;
pub mod status;
pub mod supervise;
pub mod systemd;
pub mod tls;
pub mod topics;
