//! The idempotent producer, the per-source sink its records report to, and the tickets they
//! carry (the delivery callback is `delivery.rs`).
//!
//! Delivery is at-least-once: `enable.idempotence=true` and `acks=all` are enforced, and
//! `message.timeout.ms=0` (no timeout) by default, so a record whose broker is unavailable is
//! retried by librdkafka until the broker returns; meanwhile the producer queue fills and the
//! pumps stop pulling (backpressure). An exactly-once source has its own transactional
//! producer ([`KafkaProducer::transactional`]).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    producer::{Producer, ThreadedProducer},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

pub(crate) use super::delivery::{error_kind_name, DeliveryContext};
use super::{
    delivery::FatalError,
    fault::pipeline_fault_hint,
    queue_budget::{QueueBudget, QueuedBytes},
};
use crate::{
    metrics::SourceMetrics,
    record::{DeadLetter, DeliveryOutcome, EventAck},
    runtime::health::{Health, SourceState},
    state::checkpoint::Acknowledger,
};

/// Producer settings, validated.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Any librdkafka producer property (values may be secrets).
    pub properties: BTreeMap<String, SecretString>,
    /// How long shutdown waits for in-flight records to be acknowledged.
    pub flush_timeout: Duration,
    /// Exactly-once sources: longest time between transaction commits.
    pub transaction_interval: Duration,
    /// Exactly-once sources: a transaction commits once its source has sent nothing for this
    /// long.
    pub transaction_idle: Duration,
    /// Exactly-once sources: records after which a transaction commits early.
    pub transaction_max_records: u64,
}

/// Everything the pump and the delivery callback know about one source.
pub struct SourceSink {
    /// The configured source name (`tributary.source` header).
    pub name: Arc<str>,
    /// The topic records go to.
    pub topic: String,
    /// The dead-letter topic.
    pub dead_letter_topic: String,
    /// The feed URL with secrets stripped (`tributary.url` header).
    pub url: String,
    /// Decides which position Kafka's acknowledgements of this source's records make safe.
    pub acks: Arc<dyn Acknowledger>,
    /// This source's metric handles.
    pub metrics: SourceMetrics,
    /// Failed deliveries, handed back to the pump for the dead-letter topic.
    pub failures: mpsc::UnboundedSender<Box<FailedDelivery>>,
    /// Source states, for `/readyz`: a pipeline fault marks this source failed.
    pub health: Health,
    /// The record stage the pump runs each record through.
    pub stage: Arc<crate::stage::Stage>,
    /// Exactly-once sources: event completions wait here for the commit of the transaction
    /// that holds their records (`None`: settled at the delivery report).
    pub deferred: Option<super::transaction::Deferred>,
}

impl SourceSink {
    /// Settles one share of an event's completion with `outcome`: at once, or, for an
    /// exactly-once source, when the open transaction commits.
    pub(crate) fn settle(&self, ack: EventAck, outcome: DeliveryOutcome) {
        match &self.deferred {
            Some(deferred) => deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .acks
                .push((ack, outcome)),
            None => ack.settle(outcome),
        }
    }

    /// Marks record `seq` acknowledged: Kafka holds it.
    pub(crate) fn acknowledge(&self, seq: u64) {
        self.acks.acknowledge(seq);
    }

    /// Stops this source on a pipeline fault `error` from `topic`: logs it, counts it
    /// (`tributary_pipeline_faults_total`), and marks the source failed with what to do, for
    /// `/readyz`. The caller stops feeding the producer and acknowledges nothing more.
    pub(crate) fn pipeline_fault(&self, topic: &str, error: &KafkaError) {
        let kind = error.rdkafka_error_code().map_or("other", error_kind_name);
        self.metrics.pipeline_fault(kind);
        let hint = pipeline_fault_hint(error, topic);
        tracing::error!(source = %self.name, topic, %error, "{hint}; the source stops, and its position stays before the record Kafka did not take");
        self.health.set(
            &self.name,
            SourceState::Failed(format!("kafka: {hint} ({error})")),
        );
    }
}

/// What travels with each record through librdkafka and comes back in the delivery report.
pub struct DeliveryTicket {
    pub(crate) sink: Arc<SourceSink>,
    pub(crate) seq: u64,
    pub(crate) enqueued_at: Instant,
    pub(crate) payload_bytes: usize,
    /// `Some(kind)` when this is a dead-letter record.
    pub(crate) dead_letter_kind: Option<&'static str>,
    /// The record's share of its event's completion, when the source asked to be told.
    pub(crate) ack: Option<EventAck>,
    /// The topic a `topic` template routed the record to (`None`: the source's topic).
    pub(crate) topic: Option<Arc<str>>,
    /// The record's timestamp as given to the producer (its event time, in milliseconds since
    /// the Unix epoch); `None`: librdkafka stamped it. A failed delivery's report carries the
    /// broker's answer instead, so a record sent again takes its timestamp from here.
    pub(crate) timestamp: Option<i64>,
    /// Sent through the single-record producer ([`KafkaProducer::solo`]): a refusal in its
    /// delivery report concerns this record alone.
    pub(crate) alone: bool,
    /// The record's share of the producer queue's memory budget, given back on drop (a failed
    /// delivery keeps it for the record's next attempt).
    pub(crate) queued: QueuedBytes,
    /// The position record of an exactly-once source's transaction (not a record of the
    /// source's window: its delivery acknowledges nothing).
    pub(crate) position_record: bool,
}

impl DeliveryTicket {
    /// The ticket of the position record `sink`'s transaction writes, holding `queued`.
    pub(crate) fn position_record(sink: Arc<SourceSink>, queued: QueuedBytes) -> Self {
        DeliveryTicket {
            sink,
            seq: 0,
            enqueued_at: Instant::now(),
            payload_bytes: 0,
            dead_letter_kind: None,
            ack: None,
            topic: None,
            timestamp: None,
            alone: false,
            queued,
            position_record: true,
        }
    }
}

/// A record Kafka refused after accepting it into the queue.
pub struct FailedDelivery {
    pub(crate) ticket: Box<DeliveryTicket>,
    /// The topic it was sent to.
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    /// Its headers, as sent (a record sent again alone keeps them).
    pub(crate) headers: Option<rdkafka::message::OwnedHeaders>,
    pub(crate) event_id: Option<Vec<u8>>,
    pub(crate) event_type: Option<Vec<u8>>,
    /// Why it was a dead-letter record, read back from its headers (`None`: it was not one).
    pub(crate) dead_letter: Option<DeadLetter>,
    pub(crate) error: KafkaError,
}

/// The shared producer plus broker health.
#[derive(Clone)]
pub struct KafkaProducer {
    pub(crate) inner: ThreadedProducer<DeliveryContext>,
    /// The single-record producer, made on first use (see [`KafkaProducer::solo`]).
    solo: Arc<std::sync::Mutex<Option<ThreadedProducer<DeliveryContext>>>>,
    /// The settings both producers are made from.
    client: Arc<ClientConfig>,
    brokers_reachable: Arc<AtomicBool>,
    fatal: Arc<FatalError>,
    flush_timeout: Duration,
    queue_budget: QueueBudget,
    /// Exactly-once sources: longest time between transaction commits.
    transaction_interval: Duration,
    /// Exactly-once sources: a transaction commits once its source has sent nothing for this
    /// long.
    transaction_idle: Duration,
    /// Exactly-once sources: records after which a transaction commits early.
    transaction_max_records: u64,
}

/// The producer queue's budget when `queue.buffering.max.kbytes` cannot be read (bytes; the
/// default below).
const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// Producer properties Tributary sets unless `kafka.producer` says otherwise (name, value).
pub const DEFAULTS: &[(&str, &str)] = &[
    ("message.timeout.ms", "0"),
    // Tributary never creates topics, not even through the broker's auto-creation.
    ("allow.auto.create.topics", "false"),
    ("queue.buffering.max.kbytes", "65536"),
    ("queue.buffering.max.messages", "100000"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("compression.type", "lz4"),
];

/// `transaction.timeout.ms` of the exactly-once sources' producers unless `kafka.producer`
/// sets it: 10 s, ten transaction intervals. A transaction left open by a crashed process
/// holds back every `read_committed` reader of its partitions (the positions topic's readers
/// included) until the coordinator aborts it at this timeout, or the source's next owner
/// fences it; librdkafka's default, 60 s, would make each acquisition after a crash wait that
/// long.
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// Producer properties whose values are fixed by the at-least-once guarantee (name, value).
pub const ENFORCED: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

impl KafkaProducer {
    /// Builds the producer.
    ///
    /// # Errors
    /// librdkafka rejects a property (the message names it).
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, KafkaError> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers);
        for (key, value) in DEFAULTS {
            client.set(*key, *value);
        }
        for (key, value) in &config.properties {
            client.set(key, value.expose_secret());
        }
        for (key, value) in ENFORCED {
            client.set(*key, *value);
        }
        // librdkafka refuses a value that is not a number when the producer is created below.
        let queue_budget = client
            .get("queue.buffering.max.kbytes")
            .and_then(QueueBudget::from_kbytes)
            .unwrap_or_else(|| QueueBudget::new(DEFAULT_QUEUE_BYTES));
        let brokers_reachable = Arc::new(AtomicBool::new(false));
        let fatal = Arc::new(FatalError::default());
        let client = Arc::new(client);
        let inner = client.create_with_context(DeliveryContext {
            transactional: false,
            brokers_reachable: Arc::clone(&brokers_reachable),
            fatal: Arc::clone(&fatal),
            log_limiter: Default::default(),
            client: Arc::clone(&client),
        })?;
        Ok(KafkaProducer {
            inner,
            solo: Arc::default(),
            client,
            brokers_reachable,
            fatal,
            flush_timeout: config.flush_timeout,
            queue_budget,
            transaction_interval: config.transaction_interval,
            transaction_idle: config.transaction_idle,
            transaction_max_records: config.transaction_max_records,
        })
    }

    /// A transactional producer for one exactly-once source: the same settings with
    /// `transactional.id = id`, sharing this producer's queue budget and broker health. A
    /// record that is not delivered within the transaction timeout fails (librdkafka's
    /// `message.timeout.ms` follows `transaction.timeout.ms`), so that a transaction never
    /// waits forever. Its fatal errors (`ProducerFenced`: a new owner of the source initialized
    /// the same id) are its own: they stop the source, not the daemon. It has no
    /// single-record producer: a refusal aborts the whole transaction (see `transaction/`).
    /// Transactions are not initialized yet: see [`super::init_transactions`].
    ///
    /// # Errors
    /// librdkafka refuses the settings (e.g. a `transaction.timeout.ms` out of range).
    pub(crate) fn transactional(&self, id: &str) -> Result<KafkaProducer, KafkaError> {
        let mut client = (*self.client).clone();
        client.set("transactional.id", id);
        client.remove("message.timeout.ms");
        if client.get("transaction.timeout.ms").is_none() {
            client.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
        }
        let fatal = Arc::new(FatalError::default());
        let client = Arc::new(client);
        let inner: ThreadedProducer<DeliveryContext> =
            client.create_with_context(DeliveryContext {
                transactional: true,
                brokers_reachable: Arc::clone(&self.brokers_reachable),
                fatal: Arc::clone(&fatal),
                log_limiter: Default::default(),
                client: Arc::clone(&client),
            })?;
        Ok(KafkaProducer {
            solo: Arc::new(std::sync::Mutex::new(Some(inner.clone()))),
            inner,
            client,
            brokers_reachable: Arc::clone(&self.brokers_reachable),
            fatal,
            flush_timeout: self.flush_timeout,
            queue_budget: self.queue_budget.clone(),
            transaction_interval: self.transaction_interval,
            transaction_idle: self.transaction_idle,
            transaction_max_records: self.transaction_max_records,
        })
    }

    /// Exactly-once sources: longest time between commits (`kafka.transaction_interval`).
    pub fn transaction_interval(&self) -> Duration {
        self.transaction_interval
    }

    /// Exactly-once sources: how long a source may send nothing before its open transaction
    /// commits (`kafka.transaction_idle`).
    pub fn transaction_idle(&self) -> Duration {
        self.transaction_idle
    }

    /// Exactly-once sources: records after which a transaction commits early
    /// (`kafka.transaction_max_records`).
    pub fn transaction_max_records(&self) -> u64 {
        self.transaction_max_records
    }

    /// The single-record producer: the same settings, but every produce request carries one
    /// record per partition (`batch.num.messages=1`), so that a refusal in a delivery report
    /// names that record alone. Records a broker refused with their batch are sent again
    /// through it (see `fault.rs`); it is made the first time one is, and shares the main
    /// producer's broker health and fatal-error state.
    ///
    /// # Errors
    /// librdkafka cannot create the producer (the settings were accepted for the main one).
    pub(crate) fn solo(&self) -> Result<ThreadedProducer<DeliveryContext>, KafkaError> {
        let mut solo = self.solo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(producer) = &*solo {
            return Ok(producer.clone());
        }
        let mut client = (*self.client).clone();
        client.set("batch.num.messages", "1");
        client.set("linger.ms", "0");
        let client = Arc::new(client);
        let producer: ThreadedProducer<DeliveryContext> =
            client.create_with_context(DeliveryContext {
                transactional: false,
                brokers_reachable: Arc::clone(&self.brokers_reachable),
                fatal: Arc::clone(&self.fatal),
                log_limiter: Default::default(),
                client: Arc::clone(&client),
            })?;
        *solo = Some(producer.clone());
        Ok(producer)
    }

    /// Both producers: the main one, and the single-record one once it exists.
    fn producers(&self) -> Vec<ThreadedProducer<DeliveryContext>> {
        let solo = self.solo.lock().unwrap_or_else(|e| e.into_inner()).clone();
        std::iter::once(self.inner.clone()).chain(solo).collect()
    }

    /// The producer queue's memory budget (`queue.buffering.max.kbytes`, counting what
    /// librdkafka allocates per message; see [`super::queue_budget`]).
    pub fn queue_budget(&self) -> &QueueBudget {
        &self.queue_budget
    }

    /// Waits until the producer has a fatal error, and returns librdkafka's description. The
    /// error callback wakes it at once; the client's fatal state is also read every second, for
    /// a fatal error raised without an error event.
    pub async fn fatal_error(&self) -> String {
        loop {
            if let Some(reason) = self.fatal_error_now() {
                return reason;
            }
            tokio::select! {
                _ = self.fatal.raised.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The fatal error, if one happened.
    pub fn fatal_error_now(&self) -> Option<String> {
        self.fatal.reason.get().cloned().or_else(|| {
            self.producers().iter().find_map(|producer| {
                producer
                    .client()
                    .fatal_error()
                    .map(|(code, reason)| format!("{code:?}: {reason}"))
            })
        })
    }

    /// True when the brokers answered the last metadata request or delivered a record since.
    pub fn brokers_reachable(&self) -> bool {
        self.brokers_reachable.load(Ordering::Relaxed)
    }

    /// Asks the cluster for metadata (blocking, on the blocking pool) and updates
    /// [`Self::brokers_reachable`].
    pub async fn probe_brokers(&self, timeout: Duration) -> bool {
        let producer = self.inner.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).is_ok()
        })
        .await
        .unwrap_or(false);
        self.brokers_reachable.store(reachable, Ordering::Relaxed);
        reachable
    }

    /// Whether the brokers know `topic`, from a metadata request (blocking, on the blocking
    /// pool). A topic whose metadata carries another error (no leader yet) exists.
    ///
    /// # Errors
    /// No broker answered within `timeout`.
    pub async fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, KafkaError> {
        let producer = self.inner.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = producer.client().fetch_metadata(Some(&topic), timeout)?;
            let unknown = metadata.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_some_and(|error| {
                        matches!(
                            rdkafka::types::RDKafkaErrorCode::from(error),
                            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                                | rdkafka::types::RDKafkaErrorCode::UnknownTopic
                        )
                    })
            });
            Ok(!unknown)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Asks the brokers for `topic`'s metadata and returns the id of the broker that answered:
    /// `-1` when it came over a bootstrap connection (`bootstrap.servers`), before a connection
    /// to a broker the cluster's metadata names was up.
    ///
    /// # Errors
    /// No broker answered within `timeout`.
    pub async fn metadata_origin(&self, topic: &str, timeout: Duration) -> Result<i32, KafkaError> {
        let producer = self.inner.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|metadata| metadata.orig_broker_id())
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Records handed to librdkafka (either producer) and not yet acknowledged or failed.
    pub fn in_flight(&self) -> i32 {
        self.producers()
            .iter()
            .map(|producer| producer.in_flight_count())
            .sum()
    }

    /// How long shutdown may wait for in-flight records (`kafka.flush_timeout`).
    pub fn flush_timeout(&self) -> Duration {
        self.flush_timeout
    }

    /// Waits (on the blocking pool) up to `timeout` for every queued record to be
    /// acknowledged. Returns the number of records still in flight afterwards.
    pub async fn flush(&self, timeout: Duration) -> i32 {
        let producers = self.producers();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut in_flight = 0;
            for producer in producers {
                let left = deadline.saturating_duration_since(Instant::now());
                if let Err(error) = flush_outstanding(&producer, left) {
                    tracing::warn!(%error, "producer flush did not complete");
                }
                in_flight += producer.in_flight_count();
            }
            in_flight
        })
        .await
        .unwrap_or(-1)
    }
}

/// Waits (blocking the calling thread) up to `timeout` until every record handed to `producer`
/// is acknowledged or failed, and its delivery report handled.
///
/// This is librdkafka's `rd_kafka_flush`, called directly: with delivery reports as events
/// (as rust-rdkafka sets them) it waits on librdkafka's count of outstanding records, which
/// drops as the producer's polling thread handles each report. rust-rdkafka's own `flush`
/// instead polls the event queue from the calling thread in steps of up to 100 ms; beside a
/// `ThreadedProducer`'s polling thread it finds nothing to serve and sleeps the whole step, so
/// every flush with a record in flight took at least 100 ms (an exactly-once commit, ten times
/// a second of stalled sending at 1 s transactions).
///
/// # Errors
/// [`KafkaError::Flush`] with `OperationTimedOut`: records were still outstanding at
/// `timeout`.
pub(crate) fn flush_outstanding(
    producer: &ThreadedProducer<DeliveryContext>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the pointer is the live librdkafka handle `producer` owns (it outlives the
    // call); rd_kafka_flush is thread-safe and only takes the handle and a timeout.
    let code = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), millis) };
    match rdkafka::types::RDKafkaErrorCode::from(code) {
        rdkafka::types::RDKafkaErrorCode::NoError => Ok(()),
        other => Err(KafkaError::Flush(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fatal_producer_error_is_raised_with_its_reason() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        let producer = KafkaProducer::new(&KafkaSinkConfig {
            brokers: cluster.bootstrap_servers(),
            properties: BTreeMap::new(),
            flush_timeout: Duration::from_secs(1),
            transaction_interval: Duration::from_secs(1),
            transaction_idle: Duration::from_millis(100),
            transaction_max_records: 10_000,
        })
        .unwrap();
        assert_eq!(producer.fatal_error_now(), None);
        // librdkafka's own test hook raises a fatal error as a broker's fencing would.
        // SAFETY: the client pointer is valid while `producer` lives; the reason is a C string.
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.inner.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"a test fatal error".as_ptr(),
            )
        };
        assert_eq!(
            raised,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        let reason = tokio::time::timeout(Duration::from_secs(30), producer.fatal_error())
            .await
            .expect("the fatal error is reported");
        assert!(reason.contains("a test fatal error"), "{reason}");
        assert!(producer.fatal_error_now().is_some());
    }
}
