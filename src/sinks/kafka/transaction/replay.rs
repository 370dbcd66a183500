//! What an exactly-once source keeps of Kafka's refusals across its rewinds, and what the pump
//! does when a record of its open transaction is refused.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::{
    record::{Position, Record},
    sinks::kafka::{
        fault::{Evidence, FaultClass},
        producer::FailedDelivery,
        pump::{Halt, Pump},
    },
};

/// What an exactly-once source keeps across the rewinds of one instance.
#[derive(Default)]
pub struct Replay {
    /// The last position committed in a transaction (where a rewind starts).
    pub committed: Option<Position>,
    /// Refusals seen in delivery reports, by record content (see the module doc).
    refused: HashMap<u64, Refused>,
    /// Seeds the content hash (random per instance).
    hasher: std::collections::hash_map::RandomState,
}

/// What a delivery report said of a record.
#[derive(Clone, Debug)]
enum Refused {
    /// Refused with its batch: send it again alone.
    Batched,
    /// Refused alone: a record fault, with the error.
    Alone(KafkaError),
}

impl Replay {
    /// A replay that starts from `committed`.
    pub fn new(committed: Option<Position>) -> Self {
        Replay {
            committed,
            ..Replay::default()
        }
    }

    fn digest(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        topic.hash(&mut hasher);
        key.hash(&mut hasher);
        payload.hash(&mut hasher);
        hasher.finish()
    }
}

impl Pump {
    /// What the replay says of `record` bound for `topic`: `Some(error)` when it was refused
    /// alone (send it to the dead-letter topic), and whether it must be sent alone.
    pub(in crate::sinks::kafka) fn replayed(
        &self,
        topic: &str,
        record: &Record,
    ) -> (Option<KafkaError>, bool) {
        let Some(txn) = &self.txn else {
            return (None, false);
        };
        let replay = txn.replay.lock().unwrap_or_else(|e| e.into_inner());
        if replay.refused.is_empty() {
            return (None, false);
        }
        let digest = replay.digest(topic, record.key.as_deref(), &record.payload);
        match replay.refused.get(&digest) {
            Some(Refused::Alone(error)) => (Some(error.clone()), false),
            Some(Refused::Batched) => (None, true),
            None => (None, false),
        }
    }

    /// A delivery report refused a record of the open transaction: keeps what it says for the
    /// replay and dooms the transaction (see the module doc).
    ///
    /// # Errors
    /// [`Halt::Faulted`]: a pipeline fault (the source stops); [`Halt::Rewind`] otherwise.
    pub(in crate::sinks::kafka) fn refused_in_transaction(
        &mut self,
        failed: Box<FailedDelivery>,
    ) -> Result<(), Halt> {
        let FailedDelivery {
            ticket,
            topic,
            key,
            payload,
            error,
            ..
        } = *failed;
        if matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ) {
            return Err(self.fenced_or_rewind(&error));
        }
        if ticket.position_record {
            tracing::warn!(source = %self.sink.name, %error, "Kafka refused the position record of a transaction; it is aborted");
            return Err(Halt::Rewind);
        }
        let class = self.remember(&topic, key.as_deref(), &payload, &error, ticket.alone);
        let purged = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        );
        let transient = purged
            || matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageTimedOut
                        | RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::NotEnoughReplicas
                        | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                        | RDKafkaErrorCode::LeaderNotAvailable
                        | RDKafkaErrorCode::NotLeaderForPartition
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::State
                )
            );
        if class == FaultClass::Pipeline && !transient {
            self.sink.pipeline_fault(&topic, &error);
            return Err(Halt::Faulted);
        }
        let Some(txn) = &mut self.txn else {
            unreachable!("only a transactional pump takes refusals here")
        };
        if !purged {
            tracing::warn!(source = %self.sink.name, topic, %error, "Kafka refused a record of the open transaction; the transaction is aborted and the source rewinds to its last committed position");
        }
        txn.doomed.get_or_insert_with(|| error.to_string());
        Err(Halt::Rewind)
    }

    /// Keeps what a refusal in a delivery report says of its record for the replay (a record
    /// or batch fault; see the module doc), and returns its class.
    pub(super) fn remember(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        error: &KafkaError,
        alone: bool,
    ) -> FaultClass {
        let evidence = if alone {
            Evidence::Alone
        } else {
            Evidence::Batched
        };
        let class = FaultClass::judge(error, evidence);
        let refused = match class {
            FaultClass::Record => Refused::Alone(error.clone()),
            FaultClass::Batch => Refused::Batched,
            FaultClass::Pipeline => return class,
        };
        if let Some(txn) = &self.txn {
            let mut replay = txn.replay.lock().unwrap_or_else(|e| e.into_inner());
            let digest = replay.digest(topic, key, payload);
            replay.refused.insert(digest, refused);
        }
        class
    }

    /// A send refused because the transaction is already in an error state (a record of it
    /// was refused in a delivery report, or the producer was fenced): the halt it calls for,
    /// or `None` for any other refusal (judged as in at-least-once).
    pub(in crate::sinks::kafka) fn refused_at_send(&self, error: &KafkaError) -> Option<Halt> {
        self.txn.as_ref()?;
        matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::State
                    | RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        )
        .then(|| {
            tracing::warn!(source = %self.sink.name, %error, "the producer refused a record of the open transaction, which is in an error state; it is aborted and the source rewinds to its last committed position");
            self.fenced_or_rewind(error)
        })
    }

    /// The halt a transactional error calls for: a fenced producer (a new owner initialized the
    /// same transactional id) stops the source; anything else rewinds it.
    pub(super) fn fenced_or_rewind(&self, error: &KafkaError) -> Halt {
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ) || self
            .producer
            .fatal_error_now()
            .is_some_and(|reason| reason.contains("enced"));
        if fenced {
            tracing::error!(source = %self.sink.name, %error, "the source's transactional producer was fenced: another owner runs this source now; this instance stops");
            self.sink.health.set(
                &self.sink.name,
                crate::runtime::health::SourceState::Failed(format!(
                    "fenced: another owner runs this source now ({error})"
                )),
            );
            return Halt::Fenced;
        }
        Halt::Rewind
    }
}
