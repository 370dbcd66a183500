//! The Server-Sent Events source (WHATWG HTML §9.2 server-sent events).
//!
//! `config.rs` is the `type = "sse"` table and its validation; `source.rs` is the connection
//! loop: resume from the stored `Last-Event-ID`, honour the `retry:` field, reconnect with
//! backoff and full jitter, stop on HTTP 204, and turn events into records; `client.rs` builds
//! the request and shares one HTTP transport per network policy; `parser.rs` reads the event
//! stream (WHATWG HTML §9.2.6) and ends a connection whose line or event passes
//! `max_event_bytes`; `probe.rs` opens one connection and closes it, for
//! `tributary check --connect`.

mod client;
mod config;
pub(crate) mod parser;
mod probe;
mod source;

pub use config::{KeyFrom, SseConfig};
pub use source::SseSource;
