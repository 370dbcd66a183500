//! Small Kafka tools for the demo, the tests and the benchmark: create topics, and read a
//! topic back completely (up to each partition's end).

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::{ClientContext, DefaultClientContext},
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
    message::{Headers, Message},
    types::RDKafkaErrorCode,
    Offset, TopicPartitionList,
};

/// The read-back consumer's context: partition ends are expected, not errors to log.
struct ReadBackContext;

impl ClientContext for ReadBackContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_))
            && error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF)
        {
            tracing::warn!(%error, reason, "kafka read-back consumer error");
        }
    }
}

impl ConsumerContext for ReadBackContext {}

/// One record read back from Kafka.
#[derive(Clone, Debug)]
pub struct ConsumedRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset within the partition.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Vec<u8>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its timestamp in milliseconds since the Unix epoch (CreateTime or LogAppendTime, as
    /// the topic keeps), if any.
    pub timestamp: Option<i64>,
}

impl ConsumedRecord {
    /// The value of header `name` as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }
}

/// Creates `topics` (name, partitions) through the Admin API (CreateTopics), each with
/// `replication` replicas; existing topics are fine.
///
/// # Errors
/// The brokers cannot be reached or refuse the request (e.g. more replicas than brokers).
pub async fn create_topics(
    brokers: &str,
    topics: &[(&str, i32)],
    replication: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic, ?code, "cannot create topic");
                })
            }
        }
    }
    Ok(())
}

/// Reads every committed record of `topic` (`isolation.level=read_committed`: records of
/// aborted or open transactions are not returned), from the beginning until each partition
/// reports its end
/// (librdkafka's partition EOF, taken from the fetch responses' high watermark). Blocking: call
/// it from `spawn_blocking` in async code.
///
/// The end is not taken from a ListOffsets request up front (`fetch_watermarks`): tansu 0.6
/// answers that with a count of record batches, not an offset, which would stop the read early.
///
/// # Errors
/// The brokers cannot be reached, or some partition does not reach its end within `timeout`
/// (brokers that are down meanwhile only delay the read).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let consumer: BaseConsumer<ReadBackContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tributary-read-back")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(ReadBackContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut remaining = std::collections::HashSet::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        remaining.insert(partition);
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + timeout;
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                remaining.remove(&partition);
                continue;
            }
            // The consumer reconnects by itself: a broker that is restarting, or briefly fenced
            // by its controller, only delays the read (until `timeout`).
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
            ))) => continue,
            Some(result) => result?,
        };
        let partition = message.partition();
        let offset = message.offset();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(ConsumedRecord {
            partition,
            offset,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp: message.timestamp().to_millis(),
        });
    }
    Ok(records)
}
