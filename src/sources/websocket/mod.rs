//! The WebSocket source (RFC 6455).
//!
//! `config.rs` is the `type = "websocket"` table and its validation; `frames.rs` turns messages
//! into records (JSON, array splitting, filter, key, sequence and gaps); `source.rs` is the
//! connection loop (subscribe, liveness, reconnects, close codes); `handshake.rs` opens a
//! connection (and, for `tributary check --connect`, closes it again).

mod config;
mod frames;
pub(crate) mod handshake;
pub(crate) mod source;

pub use config::{FilterConfig, HeartbeatConfig, WebSocketConfig, POSITION_PLACEHOLDER};
pub use frames::{Decoded, FrameDecoder, FrameFilter, FrameRules, Gap};
pub use source::WebSocketSource;
