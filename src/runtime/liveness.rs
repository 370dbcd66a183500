//! Liveness of the tasks the pipeline cannot run without (the pumps and the committer), for
//! systemd's watchdog: `WATCHDOG=1` is sent only while each of them makes progress.
//!
//! A task is watched by wrapping its future ([`Liveness::watch`]); the wrapper records a beat
//! each time the task's own code runs to its next `.await` and returns. How a task proves
//! progress depends on what it waits for:
//!
//! - [`Progress::Returns`] (the pumps): an idle pump waits on its channel for as long as its
//!   feed is quiet, so the wrapper wakes it every [`BEAT`] itself, and a beat says the task's
//!   code came back from its poll. A pump stuck in a blocking call, a lock or a busy loop
//!   returns from no poll: no beat.
//! - [`Progress::Woken`] (the committer): its own timer wakes it every `commit_interval`, so
//!   only polls that its own wakers asked for count. A committer whose store write never
//!   returns is never woken again: no beat.
//!
//! A task that ended (a pump whose source stopped) is no longer watched. A whole runtime that
//! hangs runs no watchdog task at all, so it sends nothing either.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;

/// How often a [`Progress::Returns`] task is woken to prove that it still returns from polls.
pub const BEAT: Duration = Duration::from_secs(1);

/// How long a pump may go without a beat before it counts as wedged.
pub const PUMP_QUIET_LIMIT: Duration = Duration::from_secs(10);

/// How much longer than its `commit_interval` the committer may go without a beat (a slow
/// store write) before it counts as wedged.
pub const COMMITTER_GRACE: Duration = Duration::from_secs(20);

/// What counts as progress for a watched task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every poll that returns (the wrapper wakes the task every [`BEAT`]).
    Returns,
    /// Only polls the task's own wakers asked for (plus the first one).
    Woken,
}

struct Watched {
    name: String,
    quiet_limit: Duration,
    /// Milliseconds since [`Liveness`]'s epoch of the last beat.
    last_beat_ms: AtomicU64,
    ended: AtomicBool,
}

/// Every watched task of one daemon.
#[derive(Clone)]
pub struct Liveness {
    epoch: Instant,
    tasks: Arc<Mutex<Vec<Arc<Watched>>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            epoch: Instant::now(),
            tasks: Arc::default(),
        }
    }
}

impl Liveness {
    /// Wraps `task` so that it beats as `progress` says; it counts as wedged once it goes
    /// `quiet_limit` without a beat (see [`Liveness::wedged`]). `name` says which task it is
    /// (`the Kafka pump of source \`wiki\``), for the log.
    pub fn watch<F: Future>(
        &self,
        name: String,
        progress: Progress,
        quiet_limit: Duration,
        task: F,
    ) -> Watch<F> {
        let watched = Arc::new(Watched {
            name,
            quiet_limit,
            last_beat_ms: AtomicU64::new(self.millis(Instant::now())),
            ended: AtomicBool::new(false),
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|task| !task.ended.load(Ordering::Relaxed));
        tasks.push(Arc::clone(&watched));
        let wake = Arc::new(OwnWake {
            woken: AtomicBool::new(true),
            outer: AtomicWaker::new(),
        });
        Watch {
            task: Box::pin(task),
            watched,
            epoch: self.epoch,
            progress,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
            ticker: None,
        }
    }

    /// The first watched task that has gone longer than its quiet limit without a beat at
    /// `now`, and for how long; `None` when every running task made progress.
    pub fn wedged(&self, now: Instant) -> Option<(String, Duration)> {
        let now_ms = self.millis(now);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .iter()
            .filter(|task| !task.ended.load(Ordering::Relaxed))
            .find_map(|task| {
                let quiet = Duration::from_millis(
                    now_ms.saturating_sub(task.last_beat_ms.load(Ordering::Relaxed)),
                );
                (quiet > task.quiet_limit).then(|| (task.name.clone(), quiet))
            })
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

/// Forwards the task's own wake-ups to the runtime and remembers that one came.
struct OwnWake {
    woken: AtomicBool,
    outer: AtomicWaker,
}

impl Wake for OwnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

/// A watched task (see [`Liveness::watch`]).
pub struct Watch<F> {
    task: Pin<Box<F>>,
    watched: Arc<Watched>,
    epoch: Instant,
    progress: Progress,
    waker: Waker,
    wake: Arc<OwnWake>,
    ticker: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Watch<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.wake.outer.register(cx.waker());
        let own_wake = this.wake.woken.swap(false, Ordering::AcqRel);
        let output = this
            .task
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker));
        let now = Instant::now();
        if this.progress == Progress::Returns || own_wake {
            let ms = u64::try_from(now.saturating_duration_since(this.epoch).as_millis())
                .unwrap_or(u64::MAX);
            this.watched.last_beat_ms.store(ms, Ordering::Relaxed);
        }
        if output.is_ready() {
            return output;
        }
        if this.progress == Progress::Returns {
            let ticker = this
                .ticker
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(BEAT)));
            if ticker.as_mut().poll(cx).is_ready() {
                ticker
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(now) + BEAT);
                // Registers the new deadline with the runtime's timer.
                let _ = ticker.as_mut().poll(cx);
            }
        }
        Poll::Pending
    }
}

impl<F> Drop for Watch<F> {
    fn drop(&mut self) {
        self.watched.ended.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(300);

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_pump_is_alive_and_a_blocked_one_is_wedged() {
        let liveness = Liveness::default();
        // Idle: waits for records that never come, as a pump of a quiet feed does.
        let idle = tokio::spawn(liveness.watch(
            "idle pump".into(),
            Progress::Returns,
            BEAT * 2,
            futures::future::pending::<()>(),
        ));
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let stuck = tokio::spawn(liveness.watch(
            "stuck pump".into(),
            Progress::Returns,
            LIMIT,
            async move {
                tokio::task::yield_now().await;
                // A blocking wait: the task never returns from this poll. `block_in_place`
                // hands the worker's other duties (the timer, the other tasks) to another
                // thread meanwhile, as a plain blocking call would not: the test's own timers
                // would stop with it.
                let _ = tokio::task::block_in_place(|| blocked.recv());
            },
        ));
        wait_for("the stuck pump to count as wedged", || {
            liveness.wedged(Instant::now()).is_some()
        })
        .await;
        let (name, quiet) = liveness.wedged(Instant::now()).unwrap();
        assert_eq!(name, "stuck pump");
        assert!(quiet > LIMIT);
        // Past its limit, the idle one still beats: the wrapper wakes it every BEAT.
        release.send(()).unwrap();
        stuck.await.unwrap();
        tokio::time::sleep(BEAT * 3).await;
        assert_eq!(
            liveness.wedged(Instant::now()),
            None,
            "the idle pump is alive"
        );
        idle.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committer_counts_only_its_own_wakeups() {
        let liveness = Liveness::default();
        // Woken by its own timer every 50 ms: alive.
        let ticking = tokio::spawn(liveness.watch(
            "ticking committer".into(),
            Progress::Woken,
            LIMIT,
            async {
                let mut ticker = tokio::time::interval(Duration::from_millis(50));
                loop {
                    ticker.tick().await;
                }
            },
        ));
        // Waits for a store write that never returns: no wake-up, wedged.
        let hung = tokio::spawn(liveness.watch(
            "hung committer".into(),
            Progress::Woken,
            LIMIT,
            futures::future::pending::<()>(),
        ));
        wait_for("the hung committer to count as wedged", || {
            liveness.wedged(Instant::now()).is_some()
        })
        .await;
        assert_eq!(liveness.wedged(Instant::now()).unwrap().0, "hung committer");
        hung.abort();
        let _ = hung.await;
        assert_eq!(
            liveness.wedged(Instant::now()),
            None,
            "an ended task is no longer watched; the ticking one is alive"
        );
        ticking.abort();
    }
}
