//! Supervision of the tasks the pipeline cannot run without: the per-source pumps and the
//! committer.
//!
//! A source that dies stops alone (its state says why). A pump or the committer that dies
//! cannot be left behind: records would stop reaching Kafka, or positions would stop moving,
//! while `/readyz` stayed green. So when one panics (or the committer ends before it was told
//! to), [`Supervisor`] marks the daemon failed in [`Health`] (readiness goes false, with the
//! reason) and cancels the root token: the daemon shuts down and exits 1, and the service
//! manager restarts it from positions that only cover records Kafka holds.
//!
//! A pump or committer that hangs without dying is caught by systemd's watchdog instead:
//! both run under [`Liveness`], and `WATCHDOG=1` is sent only while they make progress.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::{
    runtime::health::Health,
    runtime::liveness::{Liveness, Progress, COMMITTER_GRACE, PUMP_QUIET_LIMIT},
};

/// Watches essential tasks and stops the daemon when one of them dies.
#[derive(Clone)]
pub struct Supervisor {
    health: Health,
    shutdown: CancellationToken,
    failed: Arc<AtomicBool>,
    liveness: Liveness,
}

impl Supervisor {
    /// A supervisor that reports to `health` and cancels `shutdown` (the daemon's root token).
    pub fn new(health: Health, shutdown: CancellationToken) -> Self {
        Supervisor {
            health,
            shutdown,
            failed: Arc::new(AtomicBool::new(false)),
            liveness: Liveness::default(),
        }
    }

    /// The liveness of the pumps and the committer this supervisor runs.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// True once an essential task has died: the daemon must exit with a failure code.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Runs the pump of `source`. A pump may return on its own (a
    /// missing topic stops it, and its source says so); a panic stops the daemon.
    ///
    /// The pump is boxed (by the watch) before the returned future exists, so that the task
    /// spawned with it holds a pointer, not a second copy of the pump's state (kilobytes per
    /// source).
    pub fn pump(
        self,
        source: Arc<str>,
        task: impl Future<Output = ()>,
    ) -> impl Future<Output = ()> {
        let task = self.liveness.watch(
            format!("the Kafka pump of source `{source}`"),
            Progress::Returns,
            PUMP_QUIET_LIMIT,
            task,
        );
        async move {
            if AssertUnwindSafe(task).catch_unwind().await.is_err() {
                self.die(format!(
                    "the Kafka pump of source `{source}` panicked (a bug): see the log"
                ));
            }
        }
    }

    /// Runs the committer until `stop` is cancelled. A panic, or an end before `stop` was
    /// cancelled, stops the daemon: positions would no longer be stored. The committer wakes
    /// itself every `interval` (`checkpoint.commit_interval`); going [`COMMITTER_GRACE`]
    /// longer than that without waking makes it wedged for the watchdog.
    pub async fn committer(
        self,
        stop: CancellationToken,
        interval: std::time::Duration,
        task: impl Future<Output = ()>,
    ) {
        let task = self.liveness.watch(
            "the checkpoint committer".into(),
            Progress::Woken,
            interval + COMMITTER_GRACE,
            task,
        );
        match AssertUnwindSafe(task).catch_unwind().await {
            Ok(()) if stop.is_cancelled() => {}
            Ok(()) => self.die("the checkpoint committer stopped unexpectedly (a bug)".into()),
            Err(_) => self.die("the checkpoint committer panicked (a bug): see the log".into()),
        }
    }

    fn die(&self, reason: String) {
        tracing::error!(%reason, "an essential task died; stopping the daemon (exit code 1) so that it is restarted from the stored positions");
        self.failed.store(true, Ordering::Release);
        self.health.internal_failure(reason);
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_pump_fails_readiness_and_stops_the_daemon() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(health.clone(), shutdown.clone());
        assert!(health.readiness(true).ready);
        tokio::spawn(supervisor.clone().pump("wiki".into(), async {
            panic!("injected");
        }))
        .await
        .expect("the supervisor catches the panic");
        assert!(shutdown.is_cancelled());
        assert!(supervisor.failed());
        let readiness = health.readiness(true);
        assert!(!readiness.ready);
        assert!(readiness
            .internal_error
            .as_deref()
            .is_some_and(|reason| reason.contains("pump of source `wiki` panicked")));
    }

    #[tokio::test]
    async fn a_pump_that_returns_is_not_a_failure() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(health.clone(), shutdown.clone());
        supervisor.clone().pump("wiki".into(), async {}).await;
        assert!(!shutdown.is_cancelled());
        assert!(!supervisor.failed());
        assert!(health.readiness(true).ready);
    }

    #[tokio::test]
    async fn a_committer_that_ends_early_or_panics_stops_the_daemon() {
        for panics in [false, true] {
            let health = Health::default();
            let shutdown = CancellationToken::new();
            let supervisor = Supervisor::new(health.clone(), shutdown.clone());
            let stop = CancellationToken::new();
            tokio::spawn(supervisor.clone().committer(
                stop,
                std::time::Duration::from_secs(1),
                async move {
                    if panics {
                        panic!("injected");
                    }
                },
            ))
            .await
            .expect("the supervisor catches the panic");
            assert!(shutdown.is_cancelled(), "panics: {panics}");
            assert!(supervisor.failed());
            assert!(!health.readiness(true).ready);
        }
    }

    #[tokio::test]
    async fn a_committer_stopped_on_request_is_not_a_failure() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(health.clone(), shutdown.clone());
        let stop = CancellationToken::new();
        stop.cancel();
        supervisor
            .clone()
            .committer(stop, std::time::Duration::from_secs(1), async {})
            .await;
        assert!(!shutdown.is_cancelled());
        assert!(!supervisor.failed());
        assert!(health.readiness(true).ready);
    }
}
