//! The committer task: writes each source's acknowledged position to the store, batched.
//!
//! Commits happen every `interval`, or as soon as `every_records` acknowledgements have
//! arrived since the last commit, whichever is first; only sources whose position moved are
//! written. Store I/O runs on the blocking pool so the runtime never waits on fsync.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{AckTracker, CheckpointStore};
use crate::{metrics::SourceMetrics, record::Position, runtime::health::Health};

/// The shortest time between two commits that a wake-up (rather than the interval) asks for.
const WAKE_SPACING: Duration = Duration::from_millis(10);

/// What the delivery callback holds: counts acknowledgements and wakes the committer.
#[derive(Debug)]
pub struct CommitterHandle {
    acks_since_commit: AtomicU64,
    every_records: u64,
    wake: Notify,
}

impl CommitterHandle {
    /// Counts `n` acknowledgements; wakes the committer once `every_records` have arrived.
    /// Cheap and non-blocking: safe to call from librdkafka's delivery callback.
    pub fn acked(&self, n: u64) {
        let before = self.acks_since_commit.fetch_add(n, Ordering::Relaxed);
        if before < self.every_records && before + n >= self.every_records {
            self.wake.notify_one();
        }
    }
}

impl CommitterHandle {
    /// Wakes the committer now (a polled source's page was acknowledged), so a restart does
    /// not fetch that page again. Wakes coalesce: one commit covers every position moved
    /// before it runs, and commits asked this way are at least 10 ms apart.
    pub fn commit_soon(&self) {
        self.wake.notify_one();
    }
}

struct Tracked {
    name: Arc<str>,
    tracker: Arc<AckTracker>,
    metrics: SourceMetrics,
    committed_version: u64,
    committed_at: Instant,
}

/// What the committer task and the code that starts and stops sources share.
struct Shared {
    store: Arc<dyn CheckpointStore>,
    sources: std::sync::Mutex<Vec<Tracked>>,
    /// Held for each commit round, so that a released source's final commit is never
    /// followed by an older one of a round that started before it.
    round: tokio::sync::Mutex<()>,
    handle: Arc<CommitterHandle>,
    health: Health,
}

/// Batches position commits for every source of a daemon. Cheap to clone: clones share the
/// sources, so sources can be tracked and released while [`Committer::run`] runs.
#[derive(Clone)]
pub struct Committer {
    shared: Arc<Shared>,
    interval: Duration,
}

impl Committer {
    /// A committer that writes to `store` every `interval` or every `every_records`
    /// acknowledgements (records).
    /// Commit failures are reported to `health` (`/readyz`).
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        interval: Duration,
        every_records: u64,
        health: Health,
    ) -> Self {
        Committer {
            interval,
            shared: Arc::new(Shared {
                store,
                sources: std::sync::Mutex::default(),
                round: tokio::sync::Mutex::new(()),
                health,
                handle: Arc::new(CommitterHandle {
                    acks_since_commit: AtomicU64::new(0),
                    every_records: every_records.max(1),
                    wake: Notify::new(),
                }),
            }),
        }
    }

    /// The handle the delivery callback uses to report acknowledgements.
    pub fn handle(&self) -> Arc<CommitterHandle> {
        Arc::clone(&self.shared.handle)
    }

    /// Adds a source whose tracker's position should be stored under `name`.
    pub fn track(&self, name: &str, tracker: Arc<AckTracker>, metrics: SourceMetrics) {
        let (_, version) = tracker.committed();
        self.shared.sources().push(Tracked {
            name: name.into(),
            tracker,
            metrics,
            committed_version: version,
            committed_at: Instant::now(),
        });
    }

    /// Commits the position of `name` one last time (if it moved) and stops tracking it:
    /// the source was stopped and its records acknowledged (a handoff to another replica).
    ///
    /// # Errors
    /// The store refused the final commit; the source is no longer tracked either way, and
    /// its last stored position stays in force (its new owner reads again what came after).
    pub async fn release(&self, name: &str) -> Result<(), crate::error::CheckpointError> {
        let _round = self.shared.round.lock().await;
        let released = {
            let mut sources = self.shared.sources();
            let index = sources.iter().position(|source| &*source.name == name);
            index.map(|index| sources.remove(index))
        };
        let Some(source) = released else {
            return Ok(());
        };
        let (position, version) = source.tracker.committed();
        match position.filter(|_| version != source.committed_version) {
            Some(position) => {
                self.shared
                    .store
                    .commit(vec![(name.to_owned(), position.clone())])
                    .await?;
                source.metrics.checkpoint_commits.inc();
                source.metrics.status.committed(position.as_str());
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Stops tracking `name` without a final commit (its partition was lost: another replica
    /// owns it and has claimed it).
    pub fn forget(&self, name: &str) {
        self.shared.sources().retain(|source| &*source.name != name);
    }

    /// Runs until `stop` is cancelled, then commits once more and returns.
    ///
    /// Store errors are logged, counted (`tributary_checkpoint_commit_failures_total`), shown
    /// in `/readyz` once they last, and retried on the next round: the previous positions stay
    /// in force, so an error can only cause duplicates after a restart, never loss.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_commit = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
                _ = self.shared.handle.wake.notified() => {
                    // Wake-ups come at most every WAKE_SPACING: the positions that move in
                    // between go into one write, so a fast walk does not fsync every page.
                    let since = last_commit.elapsed();
                    if since < WAKE_SPACING {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(WAKE_SPACING - since) => {}
                        }
                    }
                }
            }
            self.commit_changed().await;
            last_commit = Instant::now();
        }
        self.commit_changed().await;
    }

    async fn commit_changed(&self) {
        let _round = self.shared.round.lock().await;
        self.shared
            .handle
            .acks_since_commit
            .store(0, Ordering::Relaxed);
        let mut updates: Vec<(String, Position)> = Vec::new();
        let mut versions = Vec::new();
        for source in self.shared.sources().iter() {
            let (position, version) = source.tracker.committed();
            if let Some(position) = position.filter(|_| version != source.committed_version) {
                versions.push((Arc::clone(&source.tracker), version, position.clone()));
                updates.push((source.name.to_string(), position));
            }
        }
        let now = Instant::now();
        if !updates.is_empty() {
            let result = self.shared.store.commit(updates).await;
            let mut sources = self.shared.sources();
            let mut moved = sources
                .iter_mut()
                .filter_map(|source| {
                    // By tracker, not by name: a source stopped and started again while this
                    // round wrote (a lost partition claimed back) is a new tracker, whose
                    // versions start over; taking the old one's version would make it skip
                    // a commit, its final handoff commit included.
                    let (_, version, position) = versions
                        .iter()
                        .find(|(tracker, ..)| Arc::ptr_eq(tracker, &source.tracker))?;
                    Some((source, *version, position))
                })
                .collect::<Vec<_>>();
            match result {
                Ok(()) => {
                    for (source, version, position) in &mut moved {
                        source.committed_version = *version;
                        source.committed_at = now;
                        source.metrics.checkpoint_commits.inc();
                        source.metrics.status.committed(position.as_str());
                    }
                    self.shared.health.checkpoint_commit(Ok(()));
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::error!(error = %reason, "checkpoint commit failed; will retry");
                    for (source, ..) in &moved {
                        source.metrics.checkpoint_commit_failures.inc();
                    }
                    self.shared.health.checkpoint_commit(Err(reason));
                }
            }
        }
        for source in self.shared.sources().iter() {
            // A source that has read nothing yet has no age to show: an idle one exports no
            // series for it (the stale-checkpoint alert needs records arriving anyway).
            if source.metrics.records_received.get() == 0 {
                continue;
            }
            let age = now.duration_since(source.committed_at).as_secs();
            source
                .metrics
                .checkpoint_age_seconds
                .show(i64::try_from(age).unwrap_or(i64::MAX));
        }
    }
}

impl Shared {
    fn sources(&self) -> std::sync::MutexGuard<'_, Vec<Tracked>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metrics::Metrics, metrics::SourceKind, state::checkpoint::FileStore};

    #[tokio::test]
    async fn a_source_started_again_during_a_round_keeps_its_own_commits() {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(FileStore::open(dir.path()).unwrap());
        let store: Arc<dyn CheckpointStore> = Arc::new(Arc::clone(&files));
        let committer = Committer::new(store, Duration::from_secs(60), 1000, Health::default());
        let metrics = Metrics::new().source("wiki", SourceKind::Sse);
        let position = |text: &str| Some(Position(text.into()));
        let old = Arc::new(AckTracker::new(None));
        committer.track("wiki", Arc::clone(&old), metrics.clone());
        let seq = old.register(position("old-1"), None);
        old.ack(seq);
        // A round takes the old instance's position and waits for the store...
        let mut round = Box::pin(committer.commit_changed());
        assert!(futures::poll!(&mut round).is_pending());
        // ...while the source is dropped (its partition lost) and started again.
        committer.forget("wiki");
        let new = Arc::new(AckTracker::new(position("old-1")));
        committer.track("wiki", Arc::clone(&new), metrics);
        round.await;
        assert_eq!(files.load("wiki").unwrap(), position("old-1"));
        let seq = new.register(position("new-1"), None);
        new.ack(seq);
        // The new instance's version is now the one the round committed for the old one.
        committer.release("wiki").await.unwrap();
        assert_eq!(files.load("wiki").unwrap(), position("new-1"));
    }

    #[tokio::test]
    async fn the_checkpoint_age_appears_once_the_source_has_read_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> =
            Arc::new(Arc::new(FileStore::open(dir.path()).unwrap()));
        let committer = Committer::new(store, Duration::from_secs(60), 1000, Health::default());
        let all = Metrics::new();
        let metrics = all.source("idle", SourceKind::Sse);
        committer.track("idle", Arc::new(AckTracker::new(None)), metrics.clone());
        committer.commit_changed().await;
        assert!(!all.render().contains("tributary_checkpoint_age_seconds{"));
        metrics.records_received.inc();
        committer.commit_changed().await;
        assert!(all
            .render()
            .contains("tributary_checkpoint_age_seconds{source=\"idle\"} 0"));
    }
}
