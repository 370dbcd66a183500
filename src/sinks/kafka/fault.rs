//! Fault classes: what a producer error means for the record and for the pipeline, judged
//! where the evidence is.
//!
//! - A **record fault** belongs to one record (it is too large, its timestamp or format is
//!   invalid): that record goes to the dead-letter topic and the others flow on. The evidence
//!   must name the record alone: the producer's own refusal at send time, or a delivery report
//!   of a record that was sent alone ([`Evidence::Alone`]).
//! - A **batch fault** is a refusal that may concern another record of the same batch: the
//!   broker checks a topic's `max.message.bytes` against the whole (compressed) batch, and
//!   under KIP-467 it names the invalid records of a batch while librdkafka gives the others
//!   `_INVALID_DIFFERENT_RECORD`. A record-fault code in the delivery report of a record that
//!   was batched with others is such a refusal too. The record is sent again **alone** (a
//!   producer that batches one record at a time), where a second refusal is its own.
//! - A **pipeline fault** belongs to the producer or the topic (a missing topic, an
//!   authorization failure, a fatal idempotence error, a timeout, a purge, anything not known
//!   to be per-record): the record is never acknowledged, so no position moves past it; the
//!   source stops and `/readyz` says why. When unsure, an error is a pipeline fault: skipping a
//!   record we could have kept is silent loss, stopping is loud.

use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

/// Whether an error is this record's alone, its batch's, or the pipeline's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// This record only: dead-letter it.
    Record,
    /// Maybe another record of its batch: send it again, alone.
    Batch,
    /// The producer or the topic: stop, keep the position.
    Pipeline,
}

/// Where a refusal was seen, which decides how much it says about the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The producer refused the record when it was handed over (before any batch).
    Send,
    /// A delivery report of a record that may have shared its batch with others.
    Batched,
    /// A delivery report of a record that was sent alone (a batch of one).
    Alone,
}

impl FaultClass {
    /// The class of a librdkafka error code. Only the codes Kafka documents as concerning the
    /// record itself are record faults: `MESSAGE_TOO_LARGE`, `CORRUPT_MESSAGE`,
    /// `INVALID_MESSAGE_SIZE`, `INVALID_TIMESTAMP`, `INVALID_RECORD`, and librdkafka's local
    /// `_BAD_MSG`.
    pub fn of_code(code: RDKafkaErrorCode) -> Self {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge
            | C::InvalidMessage
            | C::InvalidMessageSize
            | C::InvalidTimestamp
            | C::InvalidRecord
            | C::BadMessage => FaultClass::Record,
            C::InvalidDifferentRecord => FaultClass::Batch,
            _ => FaultClass::Pipeline,
        }
    }

    /// The class of `error` seen as `evidence`: a record-fault code in the delivery report of
    /// a batched record is a batch fault, since the broker may have judged the whole batch.
    pub fn judge(error: &KafkaError, evidence: Evidence) -> Self {
        match (Self::of(error), evidence) {
            (FaultClass::Record, Evidence::Batched) => FaultClass::Batch,
            // A record sent alone, or not yet batched, cannot be refused for another record's
            // sake: the code means something not understood.
            (FaultClass::Batch, Evidence::Alone | Evidence::Send) => FaultClass::Pipeline,
            (class, _) => class,
        }
    }

    /// The class of an error returned by a send or a delivery report; an error without a
    /// librdkafka code is a pipeline fault.
    pub fn of(error: &KafkaError) -> Self {
        error
            .rdkafka_error_code()
            .map_or(FaultClass::Pipeline, Self::of_code)
    }
}

/// What an operator should do about a pipeline fault on `topic`, for the error message.
pub fn pipeline_fault_hint(error: &KafkaError, topic: &str) -> String {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => {
            format!("topic `{topic}` does not exist; create it (Tributary never creates topics)")
        }
        Some(C::TopicAuthorizationFailed) => format!(
            "the producer is not authorized to write to topic `{topic}`; grant WRITE on it (and \
             IDEMPOTENT_WRITE on the cluster) to the `kafka.producer` principal"
        ),
        Some(C::ClusterAuthorizationFailed | C::TransactionalIdAuthorizationFailed) => {
            "the producer's principal lacks cluster authorization (IDEMPOTENT_WRITE); grant it"
                .to_owned()
        }
        Some(C::Fatal) => "the producer hit a fatal error and cannot go on; the daemon exits and \
                           resumes from its stored positions when restarted"
            .to_owned(),
        Some(C::MessageTimedOut) => "a record timed out before Kafka acknowledged it; remove \
                                     `message.timeout.ms` from `kafka.producer` (0, no timeout, \
                                     is the default)"
            .to_owned(),
        _ => format!(
            "producing to topic `{topic}` failed in a way not known to concern this record only; \
             fix the cause and restart (the position was kept)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn per_record_codes_are_record_faults() {
        for code in [
            C::MessageSizeTooLarge,
            C::InvalidMessage,
            C::InvalidMessageSize,
            C::InvalidTimestamp,
            C::InvalidRecord,
            C::BadMessage,
        ] {
            assert_eq!(FaultClass::of_code(code), FaultClass::Record, "{code:?}");
        }
    }

    #[test]
    fn a_refused_batch_mate_is_a_batch_fault() {
        assert_eq!(
            FaultClass::of_code(C::InvalidDifferentRecord),
            FaultClass::Batch
        );
    }

    #[test]
    fn record_codes_name_the_record_only_when_it_was_alone() {
        use Evidence::*;
        let error = |code| KafkaError::MessageProduction(code);
        for code in [
            C::MessageSizeTooLarge,
            C::InvalidTimestamp,
            C::InvalidRecord,
        ] {
            assert_eq!(FaultClass::judge(&error(code), Send), FaultClass::Record);
            assert_eq!(FaultClass::judge(&error(code), Batched), FaultClass::Batch);
            assert_eq!(FaultClass::judge(&error(code), Alone), FaultClass::Record);
        }
        let batch_mate = error(C::InvalidDifferentRecord);
        assert_eq!(FaultClass::judge(&batch_mate, Batched), FaultClass::Batch);
        for evidence in [Alone, Send] {
            assert_eq!(
                FaultClass::judge(&batch_mate, evidence),
                FaultClass::Pipeline,
                "a batch of one cannot hold another invalid record"
            );
        }
        for code in [C::TopicAuthorizationFailed, C::MessageTimedOut, C::Fatal] {
            for evidence in [Send, Batched, Alone] {
                assert_eq!(
                    FaultClass::judge(&error(code), evidence),
                    FaultClass::Pipeline
                );
            }
        }
    }

    #[test]
    fn everything_else_is_a_pipeline_fault() {
        for code in [
            C::Fatal,
            C::State,
            C::PurgeQueue,
            C::PurgeInflight,
            C::TopicAuthorizationFailed,
            C::ClusterAuthorizationFailed,
            C::UnknownTopicOrPartition,
            C::UnknownTopic,
            C::MessageTimedOut,
            C::MessageBatchTooLarge,
            C::NotEnoughReplicas,
            C::Unknown,
        ] {
            assert_eq!(FaultClass::of_code(code), FaultClass::Pipeline, "{code:?}");
        }
        assert_eq!(
            FaultClass::of(&KafkaError::Canceled),
            FaultClass::Pipeline,
            "an error without a code"
        );
    }
}
