//! The Kafka [`CheckpointStore`]: positions in a compacted topic, as Kafka Connect keeps
//! source offsets in `offset.storage.topic`.
//!
//! - **Topic** ([`topic`]). `checkpoint.topic` (default `tributary.positions`), created when
//!   missing with `cleanup.policy=compact`. A topic that exists with any other policy
//!   (`delete`, `compact,delete`) is refused: retention would delete positions.
//! - **Record.** Key: the JSON array `["<cluster>", "<source>"]`. Value: JSON
//!   `{"position": …, "written_at": "<RFC 3339>", "replica": "…", "epoch": N, "owner": "…"}`;
//!   a `null` position means "none stored" (`positions reset`), a `null` value (a tombstone)
//!   the same. One key always lands in one partition (librdkafka's default partitioner hashes
//!   the key), so the topic orders every write of a source.
//! - **Load** ([`load`]). Read every partition from the beginning to the end it had when the
//!   read started, for as long as offsets move (a read fails only when it stalls). The last
//!   admitted value per key wins.
//! - **Owner epochs** ([`fencing`]). [`CheckpointStore::acquire`] reads to the end, writes a
//!   claim with the epoch above the key's fence and this store's random owner id, reads it back
//!   to see that it won, and tags every later commit with both. A reader admits a write only
//!   with a higher epoch, or with the fence's own epoch and owner. This is the fencing token of
//!   the cluster mode: a replica that lost a source and does not know it yet (a long pause, a
//!   network partition) writes with an old epoch, and readers ignore it. The consumer group's
//!   own generation cannot serve here: it starts again at 1 when the group's metadata
//!   expires, while the epoch lives in the topic itself. After compaction only the last write
//!   of a key is left, so a zombie's write that came last is read after all; it covers only
//!   records Kafka acknowledged, so it can cause duplicates, never loss.
//! - **Isolation.** The topic is read with `isolation.level=read_committed`: exactly-once
//!   sources write their positions inside their producer's transactions, and a position of an
//!   aborted transaction (or one still open) covers records no reader will see.
//! - **Commit.** Produced through an idempotent producer with `acks=all`, awaiting each
//!   acknowledgement (at most 30 s, then the commit fails and the committer tries again).

mod fencing;
mod load;
mod topic;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use rdkafka::{
    config::ClientConfig,
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use serde::{Deserialize, Serialize};

use self::{
    fencing::{claim_outcome, ClaimOutcome, Ledger},
    load::{Reader, STALL_TIMEOUT},
};
pub use self::{
    load::LoadSummary,
    topic::{compaction, Compaction},
};
use super::{CheckpointStore, PositionRecord};
use crate::{error::CheckpointError, record::Position};

/// How long one request to the brokers (metadata, admin, the topic's offsets) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the brokers may take to describe the topic's configs (Apache Kafka answers in
/// milliseconds; a broker that does not answer does not serve the request at all).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`KafkaStore::open`] waits to learn whether the brokers refuse the credentials
/// (a SASL login and a metadata request take milliseconds; brokers that have not answered by
/// then are left to the requests that follow).
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a position write may wait for its acknowledgement (`message.timeout.ms`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many claims one acquisition may write when each loses a race at the same epoch to
/// another replica's claim (one loss is already rare: both must read the same epoch).
const MAX_CLAIMS: usize = 3;

/// Where and how the Kafka store keeps positions.
#[derive(Clone, Debug)]
pub struct KafkaStoreConfig {
    /// `bootstrap.servers` and the connection properties (security, SASL, TLS).
    pub connection: ClientConfig,
    /// The compacted positions topic.
    pub topic: String,
    /// Partitions of the topic when it is created.
    pub partitions: i32,
    /// Replication factor of the topic when it is created (`-1`: the broker's
    /// `default.replication.factor`).
    pub replication_factor: i32,
    /// The cluster name, the first part of every key (replicas of other clusters may share
    /// the topic).
    pub cluster: String,
    /// This replica's id, written with each position.
    pub replica: String,
}

/// One source's entry in the store, as read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPosition {
    /// The position (`None` after a reset, or a claim of a source that had none).
    pub position: Option<Position>,
    /// When it was written (RFC 3339, UTC).
    pub written_at: String,
    /// The replica that wrote it.
    pub replica: String,
    /// The owner epoch it was written with.
    pub epoch: u64,
    /// The id of the store that claimed `epoch`: random, one per opened store, so that two
    /// owners never share it even with the same `replica`. `None` in records written before
    /// owners were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Positions in a compacted Kafka topic. Cheap to clone.
#[derive(Clone)]
pub struct KafkaStore {
    config: Arc<KafkaStoreConfig>,
    producer: FutureProducer,
    reader: Arc<Mutex<Reader>>,
    /// This store's owner id (see [`StoredPosition::owner`]).
    owner: Arc<str>,
    /// The epoch this store claimed for each source it acquired.
    owned: Arc<Mutex<HashMap<String, u64>>>,
    /// What the read at opening consumed.
    initial_load: LoadSummary,
}

fn kafka_error(
    config: &KafkaStoreConfig,
    operation: &'static str,
    error: impl std::fmt::Display,
) -> CheckpointError {
    CheckpointError::Kafka {
        topic: config.topic.clone(),
        operation,
        error: error.to_string(),
    }
}

impl KafkaStore {
    /// Connects, creates the topic when it is missing, refuses a topic whose
    /// `cleanup.policy` is not exactly `compact`, and reads the topic to its end (logging
    /// how many records and partitions it read, and how long it took).
    ///
    /// # Errors
    /// [`CheckpointError::Refused`] when the brokers refuse the credentials (checked first, for
    /// at most [`CREDENTIALS_TIMEOUT`]: librdkafka would retry a refused login until the
    /// requests below time out, and say only that they did);
    /// [`CheckpointError::NotCompacted`] for a topic with another `cleanup.policy`;
    /// [`CheckpointError::Kafka`] when the brokers do not answer, refuse the topic's creation
    /// or its reading (ACLs), or the read makes no progress for 30 s.
    pub async fn open(config: KafkaStoreConfig) -> Result<Self, CheckpointError> {
        let connection = config.connection.clone();
        tokio::task::spawn_blocking(move || {
            crate::kafka_auth::check_credentials(&connection, CREDENTIALS_TIMEOUT)
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))?
        .map_err(|failure| CheckpointError::Refused {
            topic: config.topic.clone(),
            failure: Box::new(failure),
        })?;
        topic::ensure_compacted_topic(&config).await?;
        let config = Arc::new(config);
        let producer: FutureProducer = config
            .connection
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "0")
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| kafka_error(&config, "create the position producer", e))?;
        let reader_config = Arc::clone(&config);
        let (reader, initial_load) = tokio::task::spawn_blocking(move || {
            let mut reader = Reader::new(&reader_config)?;
            let summary = reader.catch_up(&reader_config, STALL_TIMEOUT)?;
            Ok::<_, CheckpointError>((reader, summary))
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))??;
        tracing::info!(
            topic = %config.topic,
            records = initial_load.records,
            partitions = initial_load.partitions,
            seconds = initial_load.seconds,
            "read the positions topic"
        );
        Ok(KafkaStore {
            config,
            producer,
            reader: Arc::new(Mutex::new(reader)),
            owner: format!("{:016x}", rand::random::<u64>()).into(),
            owned: Arc::default(),
            initial_load,
        })
    }

    /// The positions topic.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// What the read of the whole topic at [`KafkaStore::open`] consumed: records,
    /// partitions and seconds.
    pub fn initial_load(&self) -> LoadSummary {
        self.initial_load
    }

    /// Reads the topic to its end and returns this cluster's entries, by source.
    ///
    /// # Errors
    /// The topic cannot be read.
    pub async fn positions(&self) -> Result<BTreeMap<String, StoredPosition>, CheckpointError> {
        self.read_to_end(|ledger| ledger.entries.clone()).await
    }

    /// Stores `position` for `source` (`None`: forget it) with the next owner epoch, so that
    /// it wins over any earlier write. For `tributary positions set|reset|copy`, while no
    /// replica runs.
    ///
    /// # Errors
    /// The topic cannot be read or written.
    pub async fn overwrite(
        &self,
        source: &str,
        position: Option<Position>,
    ) -> Result<(), CheckpointError> {
        let name = source.to_owned();
        let epoch = self
            .read_to_end(move |ledger| ledger.next_epoch(&name))
            .await?;
        self.write(source, position, epoch).await.map(|_| ())
    }

    /// Reads the topic to its end, then returns what `look` takes from the ledger.
    async fn read_to_end<T: Send + 'static>(
        &self,
        look: impl FnOnce(&Ledger) -> T + Send + 'static,
    ) -> Result<T, CheckpointError> {
        let reader = Arc::clone(&self.reader);
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
            let summary = reader.catch_up(&config, STALL_TIMEOUT)?;
            tracing::debug!(topic = %config.topic, records = summary.records, seconds = summary.seconds, "read the positions topic to its end");
            Ok(look(&reader.ledger))
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))?
    }

    /// Reads until `partition` is past `offset`, then returns what `look` takes from the
    /// ledger.
    async fn read_past<T: Send + 'static>(
        &self,
        (partition, offset): (i32, i64),
        look: impl FnOnce(&Ledger) -> T + Send + 'static,
    ) -> Result<T, CheckpointError> {
        let reader = Arc::clone(&self.reader);
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
            reader.catch_up_to(&config, partition, offset, STALL_TIMEOUT)?;
            Ok(look(&reader.ledger))
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))?
    }

    /// The value of a write of `position` with `epoch` by this store.
    fn value(&self, position: Option<Position>, epoch: u64) -> Vec<u8> {
        serde_json::to_vec(&StoredPosition {
            position,
            written_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            replica: self.config.replica.clone(),
            epoch,
            owner: Some(self.owner.to_string()),
        })
        .expect("a position serializes to JSON")
    }

    /// The epoch this store claimed for `source` (0, which loses to any claim, when it did not
    /// acquire it: the safe side).
    fn owned_epoch(&self, source: &str) -> u64 {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .copied()
            .unwrap_or(0)
    }

    /// Writes one value for `source` and returns where it landed: `(partition, offset)`.
    async fn write(
        &self,
        source: &str,
        position: Option<Position>,
        epoch: u64,
    ) -> Result<(i32, i64), CheckpointError> {
        let key = record_key(&self.config.cluster, source);
        let value = self.value(position, epoch);
        self.producer
            .send(
                FutureRecord::to(&self.config.topic)
                    .key(&key)
                    .payload(&value),
                Timeout::After(WRITE_TIMEOUT),
            )
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(error, _)| kafka_error(&self.config, "write a position", error))
    }
}

impl CheckpointStore for KafkaStore {
    /// Reads to the end, claims the epoch above the key's fence, and reads up to the claim:
    /// when another replica's claim of the same epoch was admitted before it, claims again
    /// above it (at most three claims); when a claim of a higher epoch is already there,
    /// that replica read the key after this one did, and it owns the source.
    fn acquire<'a>(
        &'a self,
        source: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, CheckpointError>> {
        Box::pin(async move {
            let mut last = None;
            for _ in 0..MAX_CLAIMS {
                let name = source.to_owned();
                let (position, epoch) = self
                    .read_to_end(move |ledger| {
                        let entry = ledger.entries.get(&name);
                        (
                            entry.and_then(|entry| entry.position.clone()),
                            ledger.next_epoch(&name),
                        )
                    })
                    .await?;
                let claim = self.write(source, position.clone(), epoch).await?;
                // A claim that raced with this one is in the same partition (same key). One
                // that landed before it decides whether it is admitted; one that lands after
                // it is fenced by it (same epoch) or fences it (higher) like any later claim.
                let name = source.to_owned();
                let (fence, holder) = self
                    .read_past(claim, move |ledger| {
                        let holder = ledger.entries.get(&name).map(|e| e.replica.clone());
                        (ledger.fence(&name).cloned(), holder)
                    })
                    .await?;
                let outcome = claim_outcome(fence.as_ref(), epoch, &self.owner);
                let winner = (
                    fence.map_or(epoch, |fence| fence.epoch),
                    holder.unwrap_or_else(|| "unknown".into()),
                );
                match outcome {
                    ClaimOutcome::Owned => {
                        self.owned
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(source.to_owned(), epoch);
                        return Ok(position);
                    }
                    ClaimOutcome::Tied => {
                        tracing::info!(topic = %self.config.topic, source = %source, epoch, other = %winner.1, "another replica claimed the source with the same epoch first; claiming it again above");
                        last = Some(winner);
                    }
                    ClaimOutcome::Superseded => {
                        last = Some(winner);
                        break;
                    }
                }
            }
            let (epoch, replica) = last.unwrap_or_default();
            Err(CheckpointError::Superseded {
                topic: self.config.topic.clone(),
                source_name: source.to_owned(),
                replica,
                epoch,
            })
        })
    }

    fn commit(
        &self,
        positions: Vec<(String, Position)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            // A source is always acquired before it commits.
            let writes: Vec<_> = positions
                .into_iter()
                .map(|(source, position)| {
                    let epoch = self.owned_epoch(&source);
                    (source, position, epoch)
                })
                .collect();
            let results =
                futures::future::join_all(writes.iter().map(|(source, position, epoch)| {
                    self.write(source, Some(position.clone()), *epoch)
                }))
                .await;
            results
                .into_iter()
                .try_for_each(|result| result.map(|_| ()))
        })
    }

    fn position_record(&self, source: &str, position: &Position) -> Option<PositionRecord> {
        Some(PositionRecord {
            topic: self.config.topic.clone(),
            key: record_key(&self.config.cluster, source),
            value: self.value(Some(position.clone()), self.owned_epoch(source)),
        })
    }
}

/// The record key of `source` in `cluster`: the JSON array `["cluster", "source"]`.
fn record_key(cluster: &str, source: &str) -> Vec<u8> {
    serde_json::to_vec(&(cluster, source)).expect("strings serialize to JSON")
}
