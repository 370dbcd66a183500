//! The `http_stream` source: a long-lived HTTP response of JSON values, one per line (NDJSON,
//! JSON Lines) or in a JSON text sequence (RFC 7464), read as it arrives.
//!
//! `config.rs` is the `type = "http_stream"` table and its validation; `framing.rs` cuts the
//! body into records under `max_line_bytes`; `preset.rs` holds the protocol rules of CouchDB's
//! continuous changes feed and of Kubernetes watches; `source.rs` is the connection loop:
//! resume from the stored position (a query parameter or a header), heartbeats and
//! `read_timeout`, reconnects with backoff and full jitter, and the Kubernetes list that
//! precedes a watch; `probe.rs` opens one connection, for `tributary check --connect`.

mod config;
pub(crate) mod framing;
mod preset;
mod probe;
mod source;

pub use config::{Framing, HttpStreamConfig};
pub use preset::Preset;
pub use source::HttpStreamSource;
