//! Exactly-once delivery (`delivery = "exactly_once"`): the pump of such a source sends through
//! its own transactional producer (Kafka's transactions, KIP-98), and commits its records,
//! their dead-letter records and the source's position record in one transaction.
//!
//! - **Transactions.** One opens with the first record sent after a commit, and commits every
//!   `kafka.transaction_interval` or after `kafka.transaction_max_records` records, whichever
//!   comes first, when its source has sent nothing for `kafka.transaction_idle` (a burst
//!   ended: its records need not wait out the interval to be visible), and when the source
//!   stops. A commit writes the source's position (that of
//!   the last record sent) to the Kafka store's topic inside the transaction
//!   ([`CheckpointStore::position_record`]), and commits: librdkafka waits until every record
//!   of the transaction is acknowledged by its partition leader, and the commit fails if one
//!   was refused, so a committed position only ever covers records Kafka holds. A reader with `isolation.level=read_committed`, the Kafka store's own included,
//!   sees the records and the position together or not at all.
//! - **Completion.** An event's completion (a webhook's answer) waits for the commit that holds
//!   its records: the sink defers settling it ([`super::producer::SourceSink::settle`]) until
//!   the pump's commit succeeds.
//! - **Refusals.** A record Kafka refused in a delivery report dooms the transaction: it is
//!   aborted, and the source rewinds to its last committed position (the runner starts it again
//!   from there, in this process). What the refusal said is kept in the [`Replay`] across
//!   rewinds, keyed by the record's content: a record refused alone is a record fault and goes
//!   to the dead-letter topic when it comes again; a record refused with its batch comes again
//!   alone (flushed before and after, so its batch holds it only); a pipeline fault stops the
//!   source.
//! - **Fencing.** The transactional id belongs to the source (`tributary.<cluster>.<source>`):
//!   a new owner's `init_transactions` fences the old producer, whose next send or commit fails
//!   with `ProducerFenced`, and that stops the old instance.
//!
//! `replay.rs` holds the [`Replay`] and what the pump does with a refusal; `commit.rs` opens,
//! commits and aborts the pump's transactions; `init.rs` initializes a producer's transactions.

mod commit;
mod init;
mod replay;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use init::init_transactions;
pub use replay::Replay;

use crate::{
    record::{DeliveryOutcome, EventAck, Position},
    state::checkpoint::CheckpointStore,
};

/// How long one transactional call (init, commit, abort) may take before it is tried again.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction state of one exactly-once pump.
pub struct Transaction {
    store: Arc<dyn CheckpointStore>,
    replay: Arc<Mutex<Replay>>,
    /// Event completions held until the transaction that holds their records commits.
    deferred: Deferred,
    open: bool,
    /// Records sent in the open transaction.
    records: u64,
    opened_at: Instant,
    /// Why the open transaction must be aborted (a refused record).
    doomed: Option<String>,
    /// The source's position moves only at some events (a polled source's page marker), not
    /// at each: a transaction may then commit only at such an event.
    page_boundaries: bool,
    /// Every record sent so far is covered by the last position sent: a commit now stores a
    /// position past all of the transaction's records.
    pub(super) at_boundary: bool,
    /// The position of the last record (or filtered event) handed to the producer: what the
    /// next commit stores. A commit succeeds only when Kafka holds every record of its
    /// transaction, so it holds every record up to this position then.
    pub(super) sent_position: Option<Position>,
}

/// What the sink of an exactly-once source needs from its pump's transaction.
pub type Deferred = Arc<Mutex<Uncommitted>>;

/// What the open transaction of an exactly-once source holds until it commits: the event
/// completions it defers, and what its acknowledged records add to the source's metrics
/// (`tributary_records_produced_total`, `_record_bytes_total`, `_records_dead_lettered_total`
/// count a record once its transaction commits, never one of an aborted transaction).
#[derive(Default)]
pub struct Uncommitted {
    /// Completions to settle at the commit.
    pub(super) acks: Vec<(EventAck, DeliveryOutcome)>,
    /// Records acknowledged into the topic.
    pub(super) records: u64,
    /// Their payload bytes.
    pub(super) bytes: u64,
    /// Records acknowledged into the dead-letter topic, by error kind.
    pub(super) dead_letters: Vec<&'static str>,
}

impl Uncommitted {
    /// Counts what a commit made visible into `metrics`, settles the held completions, and
    /// starts empty.
    fn committed(&mut self, metrics: &crate::metrics::SourceMetrics) {
        for (ack, outcome) in self.acks.drain(..) {
            ack.settle(outcome);
        }
        metrics
            .records_produced
            .inc_by(std::mem::take(&mut self.records));
        metrics.record_bytes.inc_by(std::mem::take(&mut self.bytes));
        for kind in self.dead_letters.drain(..) {
            metrics.dead_lettered(kind);
        }
    }

    /// Drops what an aborted transaction held: its completions unsettled, its counts uncounted.
    fn aborted(&mut self) {
        *self = Uncommitted::default();
    }
}

impl Transaction {
    /// The transaction state of a pump writing positions to `store`, deferring completions
    /// into `deferred`, keeping refusals in `replay`.
    /// `page_boundaries`: the source's position moves only at some events (a polled source's
    /// page marker; see [`Transaction::at_boundary`]).
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        replay: Arc<Mutex<Replay>>,
        deferred: Deferred,
        page_boundaries: bool,
    ) -> Self {
        Transaction {
            store,
            replay,
            deferred,
            open: false,
            records: 0,
            opened_at: Instant::now(),
            doomed: None,
            page_boundaries,
            at_boundary: true,
            sent_position: None,
        }
    }

    /// When the open transaction is due to commit if its source sends nothing more: at
    /// `interval` after it opened, or at `idle` after `last_received` (when the pump last took
    /// events from the channel), whichever comes first. `None`: none is open, or it is between
    /// two positions, where only the next position lets it commit.
    pub(super) fn due_at(
        &self,
        interval: Duration,
        idle: Duration,
        last_received: Instant,
    ) -> Option<tokio::time::Instant> {
        (self.open && self.at_boundary).then(|| {
            tokio::time::Instant::from_std(commit_due(
                self.opened_at,
                interval,
                idle,
                last_received,
            ))
        })
    }

    /// After an event whose last record carried a position (`positioned`) or not: whether
    /// the transaction may commit now. A source whose every event is a unit (SSE, WebSocket,
    /// webhooks) may commit after any event; a polled source only after a page's marker, since
    /// the records of a page carry no position and a restart fetches the whole page again.
    pub(super) fn event_sent(&mut self, positioned: bool) {
        self.at_boundary = !self.page_boundaries || positioned;
    }
}

/// When a transaction opened at `opened_at` commits if nothing more is sent: `interval` after
/// it opened, or `idle` after the later of its opening and `last_received`, whichever is first.
fn commit_due(
    opened_at: Instant,
    interval: Duration,
    idle: Duration,
    last_received: Instant,
) -> Instant {
    (opened_at + interval).min(last_received.max(opened_at) + idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::from_millis(100);

    #[test]
    fn a_quiet_source_commits_idle_after_its_last_events() {
        let opened = Instant::now();
        let last = opened + Duration::from_millis(300);
        assert_eq!(commit_due(opened, INTERVAL, IDLE, last), last + IDLE);
    }

    #[test]
    fn a_busy_source_commits_on_the_interval() {
        let opened = Instant::now();
        let last = opened + Duration::from_millis(950);
        assert_eq!(commit_due(opened, INTERVAL, IDLE, last), opened + INTERVAL);
    }

    #[test]
    fn events_taken_before_the_transaction_opened_count_from_its_opening() {
        let last = Instant::now();
        let opened = last + Duration::from_millis(500);
        assert_eq!(commit_due(opened, INTERVAL, IDLE, last), opened + IDLE);
    }

    #[test]
    fn an_idle_as_long_as_the_interval_commits_on_the_interval_only() {
        let opened = Instant::now();
        let last = opened + Duration::from_millis(10);
        assert_eq!(
            commit_due(opened, INTERVAL, INTERVAL, last),
            opened + INTERVAL
        );
    }
}
