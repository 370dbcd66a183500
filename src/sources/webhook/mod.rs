//! The webhook receiver: signed HTTP pushes, verified over the raw body, answered 2xx only
//! once Kafka has acknowledged them.
//!
//! `config.rs` is the `type = "webhook"` table; `signature.rs` verifies the providers'
//! signature schemes; `receiver.rs` is the HTTP handler and its link to the pipeline.

mod config;
mod receiver;
pub mod signature;

pub use config::{EventIdConfig, SignatureConfig, WebhookConfig};
pub use receiver::WebhookSource;
