//! Polled REST source: walks every page of an endpoint each interval, with the shared HTTP
//! policy, a pagination strategy, an incremental watermark and a resumable position.

mod config;
pub mod pagination;

pub use config::RestConfig;
