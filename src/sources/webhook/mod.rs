//! Webhook receiver: signed HTTP pushes, verified over the raw body.
//!
//! `signature.rs` verifies the providers' signature schemes.

pub mod signature;
