//! Initializing a producer's transactions, and running its blocking transactional calls.

use std::time::{Duration, Instant};

use rdkafka::{error::KafkaError, producer::Producer};

use super::CALL_TIMEOUT;
use crate::sinks::kafka::producer::{DeliveryContext, KafkaProducer};

/// How long [`init_transactions`] waits for its producer's first broker connection before it
/// initializes anyway (librdkafka then finds the coordinator on its own timer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`init_transactions`] waits before it asks again whether a named broker is
/// connected.
const CONNECT_RECHECK: Duration = Duration::from_millis(20);

/// Runs a blocking transactional call of `producer` on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    producer: &KafkaProducer,
    call: impl FnOnce(&rdkafka::producer::ThreadedProducer<DeliveryContext>) -> T + Send + 'static,
) -> T {
    let inner = producer.inner.clone();
    tokio::task::spawn_blocking(move || call(&inner))
        .await
        .expect("a transactional call does not panic")
}

/// Initializes transactions on `producer`: fences any earlier producer of the same id (its
/// open transaction is aborted), retrying while the coordinator is not reachable yet.
///
/// `topic` (one the source writes to) is asked for in the brokers' metadata first: a new
/// producer that has no broker connection yet when `init_transactions` is called finds no
/// broker to ask for its coordinator and tries again only on librdkafka's 500 ms timer,
/// which every exactly-once start paid. The metadata request connects it.
///
/// # Errors
/// A fatal or non-retriable error (e.g. `transaction.timeout.ms` above the brokers'
/// `transaction.max.timeout.ms`, or no `TransactionalId` ACL).
pub async fn init_transactions(producer: &KafkaProducer, topic: &str) -> Result<(), KafkaError> {
    connect(producer, topic).await;
    let mut wait = Duration::from_millis(100);
    loop {
        match blocking(producer, |p| p.init_transactions(CALL_TIMEOUT)).await {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                tracing::info!(%error, "initializing transactions; trying again");
            }
            Err(error) => return Err(error),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Waits until `producer` has a connection to a broker the cluster's metadata names, for at
/// most [`CONNECT_TIMEOUT`]: librdkafka looks for the transaction coordinator only over such a
/// connection, and when none is up yet it tries again on a 500 ms timer. A metadata request
/// answered by a named broker (not over the bootstrap connection) shows one is up; `topic`
/// (the source's dead-letter topic) is what it asks about, and whether it exists does not
/// matter here (a missing topic is reported where it is used).
async fn connect(producer: &KafkaProducer, topic: &str) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match producer.metadata_origin(topic, left).await {
            Ok(broker) if broker >= 0 => return,
            Ok(_) => tokio::time::sleep(CONNECT_RECHECK).await,
            Err(_) => return,
        }
    }
}
