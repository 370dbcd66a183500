//! Tributary: a daemon that turns API feeds into Kafka topics, resumably.
//!
//! Each configured source reads one feed and emits records into a bounded channel; a pump per
//! source hands them to one idempotent Kafka producer; delivery reports advance each source's
//! acknowledged position, which the committer stores, so that after any restart the source
//! resumes where it left off and nothing is lost. See the book (`docs/`, an mdBook) for the
//! operator's view.
//!
//! # How a record flows, by module
//!
//! ```text
//!  feed ──▶ sources::<kind> ──▶ channel ──▶ sinks::kafka::pump ──▶ stage ──▶ producer ──▶ Kafka
//!           (SSE, WebSocket,     (bounded,    (one per source)      (transform,   (librdkafka)
//!            REST, GraphQL,       bytes and                          schema, key,      │
//!            webhook)             records)                           topic: router)    │
//!                                                                                      ▼
//!  state::checkpoint ◀── committer ◀── acknowledged positions ◀── sinks::kafka::delivery reports
//!  (file or Kafka store)                (per source, in order)
//! ```
//!
//! - **The pipeline:** [`sources`] (one module per kind), [`channel`], [`stage`] (the record
//!   stage), [`router`] (topic templates), [`sinks`] (the Kafka producer, the pump, delivery
//!   reports, dead letters, transactions), [`record`] (what flows between them).
//! - **The state:** [`state`]: where each source stands ([`state::checkpoint`]) and which
//!   replica runs it ([`state::cluster`]).
//! - **The runtime:** [`runtime`]: the daemon that assembles the pipeline
//!   ([`runtime::daemon`]), runs each source ([`runtime::source_runner`]), supervises and
//!   reloads it, serves `/metrics`, the probes and the webhook routes ([`runtime::server`]),
//!   and shuts it down.
//! - **The commands:** [`cli`]: every subcommand besides `run` (`check --connect`,
//!   `positions`, `topics`, `schema infer`, `dev-broker`, `demo`); [`status`] is both the
//!   `/api/v1/sources` endpoint and `tributary status`.
//! - **Configuration and observability:** [`config`], [`metrics`].
//! - **Helpers:** [`http`] (the shared HTTP policy), [`tls`], [`secret`], [`backoff`],
//!   [`json`], [`error`], [`kafka_auth`] (a Kafka client the brokers refuse).

pub mod backoff;
pub mod channel;
pub mod cli;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod json;
pub mod kafka_auth;
pub mod metrics;
pub mod record;
pub mod router;
pub mod runtime;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod stage;
pub mod state;
pub mod status;
pub mod tls;
