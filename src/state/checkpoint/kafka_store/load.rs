//! Reading the positions topic to its end.
//!
//! A read captures each partition's offsets when it starts and consumes until every partition
//! is at the end it had then. It is bounded by progress, not by a wall clock: a topic of a
//! long-lived cluster may take minutes to read, and that is fine while offsets move. The read
//! fails only when no partition moved for [`STALL_TIMEOUT`] while some are still below their
//! end (brokers gone, a partition without a leader, ACLs).
//!
//! The reader keeps its consumer between reads, so every read after the first one (each
//! acquisition, `positions list`) only consumes what was written since. Between reads it is
//! unassigned and keeps where each partition stands: an idle, assigned reader would keep a
//! fetch waiting on the broker (`fetch.wait.max.ms`), and the next read's offset request would
//! queue behind it on the same connection (an exactly-once start waited about 0.4 s for that).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::Message,
    Offset, TopicPartitionList,
};

use super::{fencing::Ledger, kafka_error, KafkaStoreConfig, REQUEST_TIMEOUT};
use crate::error::CheckpointError;

/// How long a read may go without consuming anything while a partition is below its end.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How much one read consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadSummary {
    /// Records consumed (of every cluster sharing the topic, tombstones included).
    pub records: u64,
    /// Partitions of the topic.
    pub partitions: usize,
    /// How long the read took, in seconds.
    pub seconds: f64,
}

/// Where one partition's read stands.
#[derive(Clone, Copy, Debug)]
struct PartitionProgress {
    partition: i32,
    /// The high watermark when the read started: the read is done at this offset.
    end: i64,
    /// The next offset to consume, once the consumer has one.
    next: Option<i64>,
}

impl PartitionProgress {
    fn done(&self, low: i64) -> bool {
        // A partition whose log start is at its end (empty, or emptied) has nothing to read.
        low >= self.end || self.next.is_some_and(|next| next >= self.end)
    }
}

/// What a read should do after looking at the consumer's positions.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Every partition is at the end it had when the read started.
    Done,
    /// Some partition is below its end; keep consuming.
    Continue,
    /// Nothing moved for the stall timeout. The partitions still behind, as
    /// `(partition, next offset or -1, end)`.
    Stalled(Vec<(i32, i64, i64)>),
}

/// The progress of one read toward the ends captured at its start. Pure: the caller feeds it
/// the consumer's positions and the time.
pub(super) struct LoadProgress {
    partitions: Vec<PartitionProgress>,
    /// Log start offset per partition when the read started.
    lows: HashMap<i32, i64>,
    stall_timeout: Duration,
    started: Instant,
    last_progress: Instant,
    records: u64,
}

impl LoadProgress {
    /// A read of partitions with the given `(partition, low, high)` watermarks, starting now.
    pub(super) fn new(
        watermarks: &[(i32, i64, i64)],
        stall_timeout: Duration,
        now: Instant,
    ) -> Self {
        LoadProgress {
            partitions: watermarks
                .iter()
                .map(|&(partition, _, end)| PartitionProgress {
                    partition,
                    end,
                    next: None,
                })
                .collect(),
            lows: watermarks
                .iter()
                .map(|&(partition, low, _)| (partition, low))
                .collect(),
            stall_timeout,
            started: now,
            last_progress: now,
            records: 0,
        }
    }

    /// Counts one consumed record: progress.
    pub(super) fn record(&mut self, now: Instant) {
        self.records += 1;
        self.last_progress = now;
    }

    /// Takes the consumer's next offset of each partition (`None`: none yet) and says
    /// whether the read is done, goes on, or stalled. A next offset that moved is progress.
    pub(super) fn observe(
        &mut self,
        positions: impl IntoIterator<Item = (i32, Option<i64>)>,
        now: Instant,
    ) -> Step {
        for (partition, next) in positions {
            let Some(entry) = self
                .partitions
                .iter_mut()
                .find(|p| p.partition == partition)
            else {
                continue;
            };
            if next.is_some() && next > entry.next {
                entry.next = next;
                self.last_progress = now;
            }
        }
        let behind: Vec<_> = self
            .partitions
            .iter()
            .filter(|p| !p.done(self.lows.get(&p.partition).copied().unwrap_or(0)))
            .map(|p| (p.partition, p.next.unwrap_or(-1), p.end))
            .collect();
        if behind.is_empty() {
            Step::Done
        } else if now.saturating_duration_since(self.last_progress) >= self.stall_timeout {
            Step::Stalled(behind)
        } else {
            Step::Continue
        }
    }

    /// What the read consumed so far.
    pub(super) fn summary(&self, now: Instant) -> LoadSummary {
        LoadSummary {
            records: self.records,
            partitions: self.partitions.len(),
            seconds: now.saturating_duration_since(self.started).as_secs_f64(),
        }
    }
}

/// The reader: a consumer assigned to every partition of the topic, and what it read.
pub(super) struct Reader {
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    /// Where the next read starts, for every partition of the topic (the reader is assigned
    /// only while it reads).
    next: TopicPartitionList,
    pub(super) ledger: Ledger,
}

impl Reader {
    /// A consumer assigned to every partition of the topic from its beginning.
    pub(super) fn new(config: &KafkaStoreConfig) -> Result<Self, CheckpointError> {
        let consumer: BaseConsumer = config
            .connection
            .clone()
            // librdkafka wants a group id even for assigned partitions; no group is joined
            // and no offset is committed (the reader always starts from the beginning).
            .set(
                "group.id",
                format!("tributary.{}.positions-reader", config.cluster),
            )
            .set("enable.auto.commit", "false")
            // Positions written in a transaction count once it commits (librdkafka's default,
            // set here because exactly-once depends on it).
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| kafka_error(config, "create the position reader", e))?;
        let partitions =
            crate::state::cluster::topic_partitions(&consumer, &config.topic, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(config, "read the topic's metadata", e))?;
        let mut next = TopicPartitionList::new();
        for &partition in &partitions {
            next.add_partition_offset(&config.topic, partition, Offset::Beginning)
                .map_err(|e| kafka_error(config, "assign the topic", e))?;
        }
        Ok(Reader {
            consumer,
            partitions,
            next,
            ledger: Ledger::default(),
        })
    }

    /// Reads every partition up to the high watermark it has now (see the module doc).
    ///
    /// # Errors
    /// The watermarks cannot be read, the consumer fails, or the read stalls for
    /// `stall_timeout`.
    pub(super) fn catch_up(
        &mut self,
        config: &KafkaStoreConfig,
        stall_timeout: Duration,
    ) -> Result<LoadSummary, CheckpointError> {
        let mut watermarks = Vec::with_capacity(self.partitions.len());
        for &partition in &self.partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&config.topic, partition, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(config, "read the topic's end offsets", e))?;
            watermarks.push((partition, low, high));
        }
        self.read(config, &watermarks, stall_timeout)
    }

    /// Reads until `partition` is past `offset` (a record this store wrote, so it is there);
    /// records of other partitions read meanwhile are applied too. Cheaper than
    /// [`Reader::catch_up`]: no offsets are asked for.
    ///
    /// # Errors
    /// The consumer fails, or the read stalls for `stall_timeout`.
    pub(super) fn catch_up_to(
        &mut self,
        config: &KafkaStoreConfig,
        partition: i32,
        offset: i64,
        stall_timeout: Duration,
    ) -> Result<LoadSummary, CheckpointError> {
        self.read(config, &[(partition, 0, offset + 1)], stall_timeout)
    }

    /// Consumes until each of `watermarks`' `(partition, low, high)` is at its `high`, assigned
    /// for that time only (see the module doc).
    fn read(
        &mut self,
        config: &KafkaStoreConfig,
        watermarks: &[(i32, i64, i64)],
        stall_timeout: Duration,
    ) -> Result<LoadSummary, CheckpointError> {
        self.consumer
            .assign(&self.next)
            .map_err(|e| kafka_error(config, "assign the topic", e))?;
        let read = self.consume(config, watermarks, stall_timeout);
        // Where each partition stands: the next read starts there (a partition not fetched
        // yet keeps its start).
        if let Ok(reached) = self.consumer.position() {
            for element in reached.elements() {
                if let Offset::Offset(offset) = element.offset() {
                    if let Some(mut next) = self
                        .next
                        .find_partition(element.topic(), element.partition())
                    {
                        let _ = next.set_offset(Offset::Offset(offset));
                    }
                }
            }
        }
        let unassigned = self
            .consumer
            .unassign()
            .map_err(|e| kafka_error(config, "unassign the topic", e));
        let summary = read?;
        unassigned?;
        Ok(summary)
    }

    fn consume(
        &mut self,
        config: &KafkaStoreConfig,
        watermarks: &[(i32, i64, i64)],
        stall_timeout: Duration,
    ) -> Result<LoadSummary, CheckpointError> {
        let mut progress = LoadProgress::new(watermarks, stall_timeout, Instant::now());
        loop {
            let assigned = self
                .consumer
                .position()
                .map_err(|e| kafka_error(config, "read the topic", e))?;
            let start = &self.next;
            let positions = watermarks.iter().map(|&(partition, _, _)| {
                let offset_of = |list: &TopicPartitionList| match list
                    .find_partition(&config.topic, partition)
                    .map(|p| p.offset())
                {
                    Some(Offset::Offset(next)) => Some(next),
                    _ => None,
                };
                // Until it consumes something, a freshly assigned partition reports no
                // position: it stands where this read assigned it from.
                (partition, offset_of(&assigned).or_else(|| offset_of(start)))
            });
            match progress.observe(positions, Instant::now()) {
                Step::Done => return Ok(progress.summary(Instant::now())),
                Step::Continue => {}
                Step::Stalled(behind) => {
                    let behind = behind
                        .iter()
                        .map(|(partition, next, end)| {
                            format!("partition {partition} at offset {next} of {end}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    let summary = progress.summary(Instant::now());
                    return Err(kafka_error(
                        config,
                        "read the topic",
                        format!(
                            "no progress for {stall_timeout:?} ({behind}; {} records read in {:.1} s)",
                            summary.records, summary.seconds
                        ),
                    ));
                }
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => {
                    progress.record(Instant::now());
                    self.ledger.apply(config, message.key(), message.payload());
                }
                Some(Err(error)) => return Err(kafka_error(config, "read the topic", error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(30);

    #[test]
    fn an_empty_or_emptied_topic_is_read_at_once() {
        let now = Instant::now();
        let mut empty = LoadProgress::new(&[(0, 0, 0), (1, 0, 0)], STALL, now);
        assert_eq!(empty.observe([(0, None), (1, None)], now), Step::Done);
        // Retention emptied partition 1: its log starts at its end.
        let mut emptied = LoadProgress::new(&[(0, 0, 0), (1, 7, 7)], STALL, now);
        assert_eq!(emptied.observe([(0, None), (1, None)], now), Step::Done);
    }

    #[test]
    fn the_read_is_done_when_every_partition_reaches_its_captured_end() {
        let now = Instant::now();
        let mut progress = LoadProgress::new(&[(0, 0, 3), (1, 0, 2)], STALL, now);
        assert_eq!(
            progress.observe([(0, None), (1, None)], now),
            Step::Continue
        );
        assert_eq!(
            progress.observe([(0, Some(3)), (1, Some(1))], now),
            Step::Continue
        );
        // Offsets written after the read started do not count: 2 is partition 1's end.
        assert_eq!(
            progress.observe([(0, Some(5)), (1, Some(2))], now),
            Step::Done
        );
    }

    #[test]
    fn a_slow_read_that_keeps_moving_never_stalls() {
        let start = Instant::now();
        let mut progress = LoadProgress::new(&[(0, 0, 1_000)], STALL, start);
        // Ten minutes of reading, one offset every 20 s: far beyond any fixed deadline of
        // 30 s, yet each step is progress.
        for step in 1..30 {
            let now = start + Duration::from_secs(20 * step);
            progress.record(now);
            assert_eq!(
                progress.observe([(0, Some(step as i64))], now),
                Step::Continue,
                "step {step}"
            );
        }
        assert_eq!(
            progress.summary(start + Duration::from_secs(600)).records,
            29
        );
    }

    #[test]
    fn a_read_stalls_after_the_timeout_without_progress() {
        let start = Instant::now();
        let mut progress = LoadProgress::new(&[(0, 0, 10), (1, 0, 4)], STALL, start);
        let moved = start + Duration::from_secs(5);
        assert_eq!(
            progress.observe([(0, Some(10)), (1, Some(2))], moved),
            Step::Continue
        );
        // The same positions again, just under the timeout since the last move.
        let almost = moved + STALL - Duration::from_millis(1);
        assert_eq!(
            progress.observe([(0, Some(10)), (1, Some(2))], almost),
            Step::Continue
        );
        assert_eq!(
            progress.observe([(0, Some(10)), (1, Some(2))], moved + STALL),
            Step::Stalled(vec![(1, 2, 4)])
        );
    }

    #[test]
    fn a_partition_that_never_starts_stalls_with_no_offset() {
        let start = Instant::now();
        let mut progress = LoadProgress::new(&[(0, 0, 3)], STALL, start);
        assert_eq!(
            progress.observe([(0, None)], start + STALL),
            Step::Stalled(vec![(0, -1, 3)])
        );
    }

    #[test]
    fn the_summary_counts_records_partitions_and_seconds() {
        let start = Instant::now();
        let mut progress = LoadProgress::new(&[(0, 0, 2), (1, 0, 0), (2, 0, 0)], STALL, start);
        progress.record(start);
        progress.record(start);
        let summary = progress.summary(start + Duration::from_millis(1_500));
        assert_eq!(
            summary,
            LoadSummary {
                records: 2,
                partitions: 3,
                seconds: 1.5
            }
        );
    }
}
