//! The last step of the record stage: the schema check, then the record's topic, key and event
//! time from its (transformed) value.

use std::{sync::Arc, time::UNIX_EPOCH};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{OnDrift, Stage, Stop, Unfilled};
use crate::{metrics::SourceMetrics, record::DeadLetter, record::Record};

impl Stage {
    /// Sets the record's topic, key (a template) and event time from its (transformed) value,
    /// or its dead-letter reason when one cannot be had. A transform's output that is not JSON
    /// is dead-lettered (an event of a JSON source was checked when it was admitted).
    ///
    /// # Errors
    /// [`Stop`]: the record drifts from the schema under `on_drift = "fail"`.
    pub(super) fn route(
        &self,
        record: &mut Record,
        input: Input,
        metrics: &SourceMetrics,
    ) -> Result<(), Stop> {
        // The schema's check parses the record: a record it passed is JSON.
        let mut parsed_json = false;
        if let Some(schema) = &self.schema {
            parsed_json = true;
            match schema.check(&record.payload) {
                Err(dead_letter) => {
                    record.dead_letter = Some(dead_letter);
                    return Ok(());
                }
                Ok(value) => {
                    if let Some(drift) = schema.drift(metrics.name(), &value) {
                        metrics.schema_drift("unknown_field");
                        let paths = drift.paths.join("`, `");
                        let reason = format!(
                            "the record carries fields the schema `{}` does not name: `{paths}`",
                            schema.file()
                        );
                        match self.on_drift {
                            OnDrift::Count => {}
                            OnDrift::DeadLetter => {
                                let mut dead_letter = DeadLetter::new("schema_drift", reason);
                                dead_letter.details = vec![(
                                    crate::router::HEADER_SCHEMA_INSTANCE_PATH,
                                    drift.paths[0].clone(),
                                )];
                                record.dead_letter = Some(dead_letter);
                                return Ok(());
                            }
                            OnDrift::Fail => return Err(Stop(format!("schema drift: {reason}"))),
                        }
                    }
                }
            }
        }
        let must_be_json = input == Input::Transformed;
        let key = self.key.as_ref().filter(|key| key.is_template());
        if self.topic.is_none() && key.is_none() && self.event_time.is_none() {
            if must_be_json && !parsed_json {
                if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&record.payload)
                {
                    record.dead_letter = Some(input.not_json(&error));
                }
            }
            return Ok(());
        }
        let parsed = serde_json::from_slice::<&RawValue>(&record.payload);
        let raw = match &parsed {
            Ok(raw) => Some(*raw),
            Err(error) if must_be_json => {
                record.dead_letter = Some(input.not_json(error));
                return Ok(());
            }
            Err(_) => None,
        };
        let mut dead_letter = None;
        let mut topic = None;
        if let Some(template) = &self.topic {
            match template.fill(raw) {
                Ok(name) if crate::config::legal_topic(&name) => topic = Some(Arc::from(name)),
                Ok(name) => {
                    dead_letter = Some(DeadLetter::new(
                        "invalid_topic",
                        format!(
                            "the topic template `{}` gives `{name}`, which is not a legal Kafka \
                             topic name (1 to 249 characters from `a-z A-Z 0-9 . _ -`)",
                            template.as_str()
                        ),
                    ))
                }
                Err(unfilled) => {
                    dead_letter = Some(DeadLetter::new(
                        "invalid_topic",
                        format!(
                            "the topic template `{}` cannot be filled: {}",
                            template.as_str(),
                            describe(&unfilled)
                        ),
                    ))
                }
            }
        }
        let filled = key.map(|rule| {
            rule.of(raw)
                .map(|text| Bytes::copy_from_slice(text.as_bytes()))
                .map_err(|unfilled| rule.describe(&unfilled))
        });
        let mut key = None;
        match filled {
            Some(Ok(text)) => key = Some(text),
            Some(Err(reason)) if dead_letter.is_none() => {
                dead_letter = Some(DeadLetter::new("key_not_found", reason))
            }
            _ => {}
        }
        let mut event_time = None;
        if let Some(time) = &self.event_time {
            match time.millis(raw) {
                Ok(millis) => event_time = Some(millis),
                Err(reason) if dead_letter.is_none() => {
                    dead_letter = Some(DeadLetter::new("invalid_timestamp", reason))
                }
                Err(_) => {}
            }
        }
        drop(parsed);
        if let Some(dead_letter) = dead_letter {
            record.dead_letter = Some(dead_letter);
            return Ok(());
        }
        record.topic = topic;
        if key.is_some() {
            record.key = key;
        }
        if let Some(millis) = event_time {
            let fetched = record
                .fetched_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as i64);
            // A feed whose clock runs ahead shows as no lag rather than a negative one.
            let lag = (fetched - millis).max(0) as f64 / 1000.0;
            metrics.event_lag_seconds.observe(lag);
            record.event_time = Some(millis);
        }
        Ok(())
    }
}

/// What [`Stage::route`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Input {
    /// The event as the source read it.
    Event,
    /// A value the transform yielded.
    Transformed,
    /// A value the transform yielded, known to be JSON ([`Yielded::Json`]).
    Json,
}

impl Input {
    /// The dead-letter reason of a value that should be JSON and is not.
    pub(super) fn not_json(self, error: &serde_json::Error) -> DeadLetter {
        match self {
            Input::Event => DeadLetter::new(
                "invalid_json",
                format!("event data is not valid JSON: {error}"),
            ),
            Input::Transformed | Input::Json => DeadLetter::new(
                "transform_error",
                format!(
                    "the transform yielded a value that is not JSON (NaN, infinity or a \
                     non-string object key?): {error}"
                ),
            ),
        }
    }
}

/// Why a template could not be filled, as a sentence.
pub(super) fn describe(unfilled: &Unfilled) -> String {
    match unfilled {
        Unfilled::Missing(pointer) => format!("the record has no value at `{pointer}`"),
        Unfilled::NotJson => "the record is not JSON".to_owned(),
    }
}
