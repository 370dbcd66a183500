//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify` units.
//!
//! When systemd (or another service manager) sets `NOTIFY_SOCKET`, the daemon sends:
//! - `READY=1` once it has started: the HTTP server is bound and every source task runs;
//! - `STATUS=…` then and every [`STATUS_INTERVAL`]: sources by state and records per second
//!   produced to Kafka, as `systemctl status` shows it;
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` (set by `WatchdogSec=`), but only while the
//!   Kafka pumps and the checkpoint committer make progress (see [`crate::runtime::liveness`]); a
//!   wedged daemon stops sending it and systemd restarts it;
//! - `STOPPING=1` when the shutdown starts.
//!
//! Without `NOTIFY_SOCKET` nothing is sent. A message that cannot be sent is logged once at
//! debug level and the daemon carries on: notification never stops the pipeline.

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use sd_notify::NotifyState;

use crate::{
    metrics::Metrics, runtime::daemon::RunningDaemon, runtime::health::Health,
    runtime::liveness::Liveness,
};

/// How often `STATUS=` is refreshed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Sends `state` to the service manager, if there is one; failures are logged at debug.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::debug!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Tells the service manager that `daemon` is ready and keeps it informed until the process
/// ends: status lines, watchdog keep-alives while the pipeline makes progress, and
/// `STOPPING=1` when the daemon's root token is cancelled. Does nothing without
/// `NOTIFY_SOCKET`.
pub fn start(daemon: &RunningDaemon) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut status = Status {
        metrics: Arc::clone(daemon.metrics()),
        health: daemon.health().clone(),
        produced: 0,
        at: Instant::now(),
    };
    status.produced = status.total_produced();
    let line = status.line();
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    tracing::info!("notified the service manager: ready");
    let shutdown = daemon.shutdown_token();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(STATUS_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    let line = status.line();
                    notify(&[NotifyState::Status(&line)]);
                }
            }
        }
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: draining the channels and flushing the producer"),
        ]);
    });
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        tokio::spawn(watchdog(daemon.liveness().clone(), timeout));
    }
}

/// Sends `WATCHDOG=1` every `timeout / 2` while no watched task is wedged. Runs until the
/// process ends: the shutdown (up to `kafka.flush_timeout`) is watched too.
async fn watchdog(liveness: Liveness, timeout: Duration) {
    let mut ticker = tokio::time::interval(timeout / 2);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wedged_before = false;
    loop {
        ticker.tick().await;
        match liveness.wedged(Instant::now()) {
            None => {
                if wedged_before {
                    tracing::warn!("the pipeline makes progress again: sending WATCHDOG=1 again");
                    wedged_before = false;
                }
                notify(&[NotifyState::Watchdog]);
            }
            Some((task, quiet)) => {
                let reason = format!(
                    "{task} has made no progress for {} s: not sending WATCHDOG=1, so that systemd restarts the daemon",
                    quiet.as_secs()
                );
                if !wedged_before {
                    tracing::error!("{reason}");
                    wedged_before = true;
                }
                notify(&[NotifyState::Status(&format!("wedged: {reason}"))]);
            }
        }
    }
}

/// What `STATUS=` says.
struct Status {
    metrics: Arc<Metrics>,
    health: Health,
    /// Records produced (all sources) at `at`.
    produced: u64,
    at: Instant,
}

impl Status {
    fn total_produced(&self) -> u64 {
        self.health
            .readiness(true)
            .sources
            .keys()
            .filter_map(|source| self.metrics.registered(source))
            .map(|metrics| metrics.records_produced.get())
            .sum()
    }

    /// E.g. `3 of 4 sources connected (reconnecting: wiki); 1520 records/s to Kafka`.
    fn line(&mut self) -> String {
        let sources = self.health.readiness(true).sources;
        let produced = self.total_produced();
        let now = Instant::now();
        let seconds = now.duration_since(self.at).as_secs_f64();
        let rate = if seconds > 0.0 {
            produced.saturating_sub(self.produced) as f64 / seconds
        } else {
            0.0
        };
        (self.produced, self.at) = (produced, now);
        let mut others: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        let mut connected = 0;
        for (name, state) in &sources {
            match state.word() {
                "connected" | "listening" => connected += 1,
                other => others.entry(other).or_default().push(name),
            }
        }
        let mut line = format!("{connected} of {} sources connected", sources.len());
        for (state, names) in others {
            let _ = write!(line, "; {state}: {}", names.join(", "));
        }
        let _ = write!(line, "; {rate:.0} records/s to Kafka");
        line
    }
}
