//! The raw producer ceiling: one rdkafka producer configured like the daemon's, sending the
//! records the daemon would send, with the same lineage headers.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode,
    ClientContext,
};
use tributary::router::{
    TimestampCache, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_FETCHED_AT, HEADER_SOURCE,
    HEADER_URL,
};

use super::{process_cpu, producer_properties, Broker, Figures, SOURCE, STALL_TIMEOUT};

/// One record for the raw producer; it gets the lineage headers the daemon adds.
pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// `tributary.event_id`, when the daemon would add it.
    pub event_id: Option<&'a str>,
    /// `tributary.event_type`, when the daemon would add it.
    pub event_type: Option<&'a str>,
}

/// Hands one record to the producer.
pub type SendRecord<'s> = dyn FnMut(RawRecord<'_>) -> anyhow::Result<()> + 's;

/// The raw producer ceiling for `n` records into a fresh topic `bench.raw.<tag>.<pid>`:
/// `records(i, send)` sends record `i`; `url` is its `tributary.url` header; `payload_bytes`
/// their total payload size.
pub async fn raw_run<F>(
    broker: &Broker,
    n: usize,
    tag: &str,
    url: &str,
    payload_bytes: u64,
    records: F,
) -> anyhow::Result<Figures>
where
    F: FnMut(usize, &mut SendRecord<'_>) -> anyhow::Result<()> + Send + 'static,
{
    let topic = format!("bench.raw.{tag}.{}", std::process::id());
    broker.create_topics(&[&topic]).await?;
    let brokers = broker.brokers();
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        raw_producer(&brokers, &topic, n, &url, payload_bytes, records)
    })
    .await?
}

/// Counts delivery reports.
struct Counting {
    acknowledged: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acknowledged.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Sends the `n` records the daemon would send (same payloads, keys and lineage headers) with
/// one producer configured like the daemon's, timed from creating the producer until every
/// record is acknowledged.
fn raw_producer(
    brokers: &str,
    topic: &str,
    n: usize,
    url: &str,
    payload_bytes: u64,
    mut records: impl FnMut(usize, &mut SendRecord<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let cpu_before = process_cpu(std::process::id())?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in producer_properties() {
        config.set(*key, *value);
    }
    let context = Counting {
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<Counting> = config.create_with_context(context)?;
    let mut timestamps = TimestampCache::default();
    for i in 0..n {
        records(i, &mut |raw: RawRecord<'_>| {
            let mut headers = OwnedHeaders::new_with_capacity(5)
                .insert(Header {
                    key: HEADER_SOURCE,
                    value: Some(SOURCE),
                })
                .insert(Header {
                    key: HEADER_URL,
                    value: Some(url),
                })
                .insert(Header {
                    key: HEADER_FETCHED_AT,
                    value: Some(timestamps.rfc3339(SystemTime::now())),
                });
            if let Some(id) = raw.event_id {
                headers = headers.insert(Header {
                    key: HEADER_EVENT_ID,
                    value: Some(id),
                });
            }
            if let Some(event_type) = raw.event_type {
                headers = headers.insert(Header {
                    key: HEADER_EVENT_TYPE,
                    value: Some(event_type),
                });
            }
            let mut record = BaseRecord::to(topic).payload(raw.payload).headers(headers);
            if let Some(key) = raw.key {
                record = record.key(key);
            }
            // A full queue is waited out, for at most STALL_TIMEOUT per record.
            let give_up = Instant::now() + STALL_TIMEOUT;
            loop {
                match producer.send(record) {
                    Ok(()) => return Ok(()),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if Instant::now() > give_up {
                            bail!("raw producer: queue full for {STALL_TIMEOUT:?} at record {i}");
                        }
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => bail!("raw producer: record {i} refused: {error}"),
                }
            }
        })?;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("raw producer: flush")?;
    let elapsed = started.elapsed();
    let context = producer.context();
    let acknowledged = context.acknowledged.load(Ordering::Relaxed);
    let failed = context.failed.load(Ordering::Relaxed);
    if acknowledged != n as u64 || failed != 0 {
        bail!("raw producer: {acknowledged} of {n} records acknowledged, {failed} failed");
    }
    Ok(Figures {
        records: n,
        payload_bytes,
        elapsed,
        cpu: process_cpu(std::process::id())?.saturating_sub(cpu_before),
    })
}
