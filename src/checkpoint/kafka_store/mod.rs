//! The Kafka [`CheckpointStore`]: positions in a compacted topic, as Kafka Connect keeps
//! source offsets in `offset.storage.topic`.
//!
//! - **Topic.** `checkpoint.topic` (default `tributary.positions`), created when missing with
//!   `cleanup.policy=compact`. A topic that exists without compaction is refused: retention
//!   would delete positions.
//! - **Record.** Key: the JSON array `["<cluster>", "<source>"]`. Value: JSON
//!   `{"position": …, "written_at": "<RFC 3339>", "replica": "…", "epoch": N}`; a `null`
//!   position means "none stored" (`positions reset`), a `null` value (a tombstone) the same.
//!   One key always lands in one partition (librdkafka's default partitioner hashes the key),
//!   so the topic orders every write of a source.
//! - **Load.** Read every partition from the beginning to its end (the high watermark at the
//!   time of the read); the last value per key wins, except a write whose epoch is below the
//!   highest epoch already read for that key: that is a late write of an owner that lost the
//!   source, and it is ignored.
//! - **Owner epochs.** [`CheckpointStore::acquire`] reads to the end, then writes a claim with
//!   the key's epoch plus one, and tags every later commit with it. This is the fencing token
//!   of the cluster mode: a replica that lost a source and does not know it yet (a long pause,
//!   a network partition) writes with the old epoch, and readers ignore it. The consumer
//!   group's own generation cannot serve here: it starts again at 1 when the group's metadata
//!   expires, while the epoch lives in the topic itself. After compaction only the last write
//!   of a key is left, so a zombie's write that came last is read after all; it covers only
//!   records Kafka acknowledged, so it can cause duplicates, never loss.
//! - **Commit.** Produced through an idempotent producer with `acks=all`, awaiting each
//!   acknowledgement (at most 30 s, then the commit fails and the committer tries again).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::future::BoxFuture;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
    util::Timeout,
    Offset, TopicPartitionList,
};
use serde::{Deserialize, Serialize};

use super::CheckpointStore;
use crate::{error::CheckpointError, record::Position};

/// How long one request to the brokers (metadata, admin, a read to the end) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the brokers may take to describe the topic's configs (Apache Kafka answers in
/// milliseconds; a broker that does not answer does not serve the request at all).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a position write may wait for its acknowledgement (`message.timeout.ms`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// The reader: a consumer assigned to every partition of the topic, and what it read.
struct Reader {
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    entries: BTreeMap<String, StoredPosition>,
}

/// Positions in a compacted Kafka topic. Cheap to clone.
#[derive(Clone)]
pub struct KafkaStore {
    config: Arc<KafkaStoreConfig>,
    producer: FutureProducer,
    reader: Arc<Mutex<Reader>>,
    /// The epoch this store claimed for each source it acquired.
    owned: Arc<Mutex<HashMap<String, u64>>>,
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
    /// Connects, creates the topic when it is missing, refuses a topic without compaction,
    /// and reads the topic to its end.
    ///
    /// # Errors
    /// [`CheckpointError::NotCompacted`] for a topic without compaction;
    /// [`CheckpointError::Kafka`] when the brokers do not answer, refuse the topic's creation
    /// or its reading (ACLs).
    pub async fn open(config: KafkaStoreConfig) -> Result<Self, CheckpointError> {
        ensure_compacted_topic(&config).await?;
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
        let reader = tokio::task::spawn_blocking(move || -> Result<Reader, CheckpointError> {
            let mut reader = Reader::new(&reader_config)?;
            reader.catch_up(&reader_config)?;
            Ok(reader)
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))??;
        Ok(KafkaStore {
            config,
            producer,
            reader: Arc::new(Mutex::new(reader)),
            owned: Arc::default(),
        })
    }

    /// The positions topic.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Reads the topic to its end and returns this cluster's entries, by source.
    ///
    /// # Errors
    /// The topic cannot be read.
    pub async fn positions(&self) -> Result<BTreeMap<String, StoredPosition>, CheckpointError> {
        self.read_to_end().await
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
        let entries = self.read_to_end().await?;
        let epoch = entries.get(source).map_or(0, |entry| entry.epoch) + 1;
        self.write(source, position, epoch).await
    }

    async fn read_to_end(&self) -> Result<BTreeMap<String, StoredPosition>, CheckpointError> {
        let reader = Arc::clone(&self.reader);
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
            reader.catch_up(&config)?;
            Ok(reader.entries.clone())
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))?
    }

    async fn write(
        &self,
        source: &str,
        position: Option<Position>,
        epoch: u64,
    ) -> Result<(), CheckpointError> {
        let key = record_key(&self.config.cluster, source);
        let value = serde_json::to_vec(&StoredPosition {
            position,
            written_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            replica: self.config.replica.clone(),
            epoch,
        })
        .expect("a position serializes to JSON");
        self.producer
            .send(
                FutureRecord::to(&self.config.topic)
                    .key(&key)
                    .payload(&value),
                Timeout::After(WRITE_TIMEOUT),
            )
            .await
            .map(|_| ())
            .map_err(|(error, _)| kafka_error(&self.config, "write a position", error))
    }
}

impl CheckpointStore for KafkaStore {
    fn acquire<'a>(
        &'a self,
        source: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, CheckpointError>> {
        Box::pin(async move {
            let entries = self.read_to_end().await?;
            let stored = entries.get(source);
            let position = stored.and_then(|entry| entry.position.clone());
            let epoch = stored.map_or(0, |entry| entry.epoch) + 1;
            self.write(source, position.clone(), epoch).await?;
            self.owned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(source.to_owned(), epoch);
            Ok(position)
        })
    }

    fn commit(
        &self,
        positions: Vec<(String, Position)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            let writes: Vec<_> = {
                let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                positions
                    .into_iter()
                    .map(|(source, position)| {
                        // A source is always acquired before it commits; epoch 0 loses to any
                        // claim, which is the safe side.
                        let epoch = owned.get(&source).copied().unwrap_or(0);
                        (source, position, epoch)
                    })
                    .collect()
            };
            let results =
                futures::future::join_all(writes.iter().map(|(source, position, epoch)| {
                    self.write(source, Some(position.clone()), *epoch)
                }))
                .await;
            results.into_iter().collect()
        })
    }
}

/// The record key of `source` in `cluster`: the JSON array `["cluster", "source"]`.
fn record_key(cluster: &str, source: &str) -> Vec<u8> {
    serde_json::to_vec(&(cluster, source)).expect("strings serialize to JSON")
}

impl Reader {
    fn new(config: &KafkaStoreConfig) -> Result<Self, CheckpointError> {
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
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| kafka_error(config, "create the position reader", e))?;
        let partitions =
            crate::cluster::topic_partitions(&consumer, &config.topic, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(config, "read the topic's metadata", e))?;
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            assignment
                .add_partition_offset(&config.topic, partition, Offset::Beginning)
                .map_err(|e| kafka_error(config, "assign the topic", e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka_error(config, "assign the topic", e))?;
        Ok(Reader {
            consumer,
            partitions,
            entries: BTreeMap::new(),
        })
    }

    /// Reads every partition up to the high watermark it has now.
    fn catch_up(&mut self, config: &KafkaStoreConfig) -> Result<(), CheckpointError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut ends = Vec::with_capacity(self.partitions.len());
        for &partition in &self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&config.topic, partition, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(config, "read the topic's end offsets", e))?;
            ends.push((partition, high));
        }
        loop {
            let position = self
                .consumer
                .position()
                .map_err(|e| kafka_error(config, "read the topic", e))?;
            let done = ends.iter().all(|&(partition, high)| {
                high <= 0
                    || matches!(
                        position.find_partition(&config.topic, partition).map(|p| p.offset()),
                        Some(Offset::Offset(next)) if next >= high
                    )
            });
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(kafka_error(
                    config,
                    "read the topic",
                    format!("not at its end after {REQUEST_TIMEOUT:?}"),
                ));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => {
                    apply(&mut self.entries, config, message.key(), message.payload());
                }
                Some(Err(error)) => return Err(kafka_error(config, "read the topic", error)),
            }
        }
    }
}

/// Applies one record of the topic: this cluster's keys only, and never a write whose
/// epoch is below the key's highest.
fn apply(
    entries: &mut BTreeMap<String, StoredPosition>,
    config: &KafkaStoreConfig,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(Ok((cluster, source))) = key.map(serde_json::from_slice::<(String, String)>) else {
        tracing::warn!(topic = %config.topic, "a record of the positions topic has no valid key; it is ignored");
        return;
    };
    if cluster != config.cluster {
        return;
    }
    let Some(value) = value else {
        entries.remove(&source);
        return;
    };
    let stored: StoredPosition = match serde_json::from_slice(value) {
        Ok(stored) => stored,
        Err(error) => {
            // The previous value stays in force: an older position causes duplicates at
            // worst, never loss.
            tracing::error!(topic = %config.topic, source = %source, %error, "a stored position cannot be parsed; the previous one stays in force (`tributary positions set` replaces it)");
            return;
        }
    };
    match entries.get(&source) {
        Some(current) if stored.epoch < current.epoch => {
            tracing::warn!(topic = %config.topic, source = %source, epoch = stored.epoch, current = current.epoch, replica = %stored.replica, "ignoring a late write from a replica that no longer owns the source");
        }
        _ => {
            entries.insert(source, stored);
        }
    }
}

/// Creates the topic (compacted) when it is missing, and refuses one without compaction.
async fn ensure_compacted_topic(config: &KafkaStoreConfig) -> Result<(), CheckpointError> {
    crate::cluster::ensure_topic(
        &config.connection,
        NewTopic::new(
            &config.topic,
            config.partitions,
            TopicReplication::Fixed(config.replication_factor),
        )
        .set("cleanup.policy", "compact"),
    )
    .await
    .map_err(|e| kafka_error(config, "create the topic", e))?;
    match compaction(config).await? {
        Compaction::Compacted => Ok(()),
        Compaction::Unknown(error) => {
            tracing::warn!(topic = %config.topic, %error, "no broker describes topic configs (a development broker such as `tributary dev-broker`?); the topic's `cleanup.policy` is not checked");
            Ok(())
        }
        Compaction::NotCompacted { policy } => Err(CheckpointError::NotCompacted {
            topic: config.topic.clone(),
            policy,
        }),
    }
}

/// What the brokers say about the `cleanup.policy` of an existing positions topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compaction {
    /// The policy includes `compact`.
    Compacted,
    /// The policy (e.g. `delete`) does not include `compact`: retention would delete positions.
    NotCompacted {
        /// The topic's `cleanup.policy`.
        policy: String,
    },
    /// No broker describes topic configs (a development broker): the policy is not known.
    Unknown(String),
}

/// Asks the brokers (DescribeConfigs, at most 5 s) whether the existing topic
/// `config.topic` is compacted. Used when the store opens and by `tributary check --connect`.
///
/// # Errors
/// [`CheckpointError::Kafka`] when the brokers do not answer or refuse to describe the topic
/// (ACLs, a missing topic).
pub async fn compaction(config: &KafkaStoreConfig) -> Result<Compaction, CheckpointError> {
    let admin: AdminClient<DefaultClientContext> = config
        .connection
        .create()
        .map_err(|e| kafka_error(config, "create the admin client", e))?;
    let options = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    let described = match admin
        .describe_configs(&[ResourceSpecifier::Topic(&config.topic)], &options)
        .await
    {
        Ok(described) => described,
        Err(error) if is_unsupported(&error) => return Ok(Compaction::Unknown(error.to_string())),
        Err(error) => return Err(kafka_error(config, "describe the topic", error)),
    };
    for result in described {
        let resource = result.map_err(|code| kafka_error(config, "describe the topic", code))?;
        let policy = resource
            .get("cleanup.policy")
            .and_then(|entry| entry.value.clone())
            .unwrap_or_default();
        if !policy.split(',').any(|part| part.trim() == "compact") {
            return Ok(Compaction::NotCompacted { policy });
        }
    }
    Ok(Compaction::Compacted)
}

/// True when no broker serves a request: it says the request is not supported, or (as
/// librdkafka's mock cluster does) it lets the request time out although the same brokers
/// answered metadata and the topic's creation a moment before.
fn is_unsupported(error: &rdkafka::error::KafkaError) -> bool {
    let code = match error {
        rdkafka::error::KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(
            RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::InvalidRequest
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaStoreConfig {
        KafkaStoreConfig {
            connection: ClientConfig::new(),
            topic: "positions".into(),
            partitions: 1,
            replication_factor: 1,
            cluster: "east".into(),
            replica: "r1".into(),
        }
    }

    fn value(position: &str, epoch: u64) -> Vec<u8> {
        serde_json::to_vec(&StoredPosition {
            position: Some(Position(position.into())),
            written_at: "2026-01-01T00:00:00Z".into(),
            replica: "r".into(),
            epoch,
        })
        .unwrap()
    }

    fn reader() -> Reader {
        Reader {
            consumer: ClientConfig::new().create().unwrap(),
            partitions: vec![0],
            entries: BTreeMap::new(),
        }
    }

    fn position(reader: &Reader, source: &str) -> Option<String> {
        reader
            .entries
            .get(source)
            .and_then(|entry| entry.position.as_ref())
            .map(|p| p.as_str().to_owned())
    }

    #[test]
    fn the_last_write_wins_unless_its_epoch_is_older() {
        let config = config();
        let mut reader = reader();
        let key = record_key("east", "wiki");
        apply(
            &mut reader.entries,
            &config,
            Some(&key),
            Some(&value("1", 1)),
        );
        apply(
            &mut reader.entries,
            &config,
            Some(&key),
            Some(&value("2", 1)),
        );
        assert_eq!(position(&reader, "wiki").as_deref(), Some("2"));
        apply(
            &mut reader.entries,
            &config,
            Some(&key),
            Some(&value("3", 2)),
        );
        // A late write of the previous owner (epoch 1) is fenced.
        apply(
            &mut reader.entries,
            &config,
            Some(&key),
            Some(&value("zombie", 1)),
        );
        assert_eq!(position(&reader, "wiki").as_deref(), Some("3"));
    }

    #[test]
    fn other_clusters_keys_tombstones_and_garbage() {
        let config = config();
        let mut reader = reader();
        apply(
            &mut reader.entries,
            &config,
            Some(&record_key("west", "wiki")),
            Some(&value("w", 1)),
        );
        assert_eq!(position(&reader, "wiki"), None);
        let key = record_key("east", "wiki");
        apply(
            &mut reader.entries,
            &config,
            Some(&key),
            Some(&value("1", 1)),
        );
        apply(&mut reader.entries, &config, Some(&key), Some(b"{not json"));
        assert_eq!(position(&reader, "wiki").as_deref(), Some("1"));
        apply(
            &mut reader.entries,
            &config,
            Some(b"no json key"),
            Some(&value("x", 9)),
        );
        apply(&mut reader.entries, &config, Some(&key), None);
        assert_eq!(position(&reader, "wiki"), None);
    }
}
