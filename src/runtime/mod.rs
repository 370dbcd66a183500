//! The daemon at run time: assembling the pipeline, running and supervising its sources,
//! reloading, serving HTTP, and stopping.
//!
//! - [`daemon`]: starts every part and runs the shutdown.
//! - [`source_runner`]: starts one source's task and pump (at-least-once or exactly-once).
//! - [`supervise`], [`liveness`], [`health`]: restarts, the watchdog, and what `/readyz` says.
//! - [`reload`]: applies a changed config (SIGHUP, `--watch-config`).
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`, the status API and the webhook routes.
//! - [`shutdown`], [`systemd`], [`logging`]: signals, the service manager, logs.

pub mod daemon;
pub mod health;
pub mod liveness;
pub mod logging;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod source_runner;
pub mod supervise;
pub mod systemd;
