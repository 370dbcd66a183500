//! Fault classes: what a producer error means for the record and for the pipeline.
//!
//! A **record fault** belongs to one record (it is too large, its timestamp or format is
//! invalid): that record goes to the dead-letter topic and the others flow on. A **pipeline
//! fault** belongs to the producer or the topic (a missing topic, an authorization failure, a
//! fatal idempotence error, a timeout, a purge, anything not known to be per-record): the record
//! is never acknowledged, so no position moves past it; the source stops and `/readyz` says
//! why. When unsure, an error is a pipeline fault: skipping a record we could have kept is
//! silent loss, stopping is loud.

use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};

/// Whether an error is this record's alone, or the pipeline's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// This record only: dead-letter it.
    Record,
    /// The producer or the topic: stop, keep the position.
    Pipeline,
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
            _ => FaultClass::Pipeline,
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
