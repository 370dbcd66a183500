//! The record stage: what turns one feed event into zero or more Kafka records, shared by every
//! source kind. It runs in the source's pump, between the channel and the producer, in this
//! order: transform (a jq program), validate (a JSON Schema), then route: the topic (a fixed name
//! or a template), the key (a template), the event time (Kafka timestamp) and the static headers.
//!
//! Everything is compiled once at config time ([`Stage::build`]); a source without a transform,
//! templates or an event time passes its records through untouched ([`Stage::apply`] returns at
//! once). A record the stage cannot shape goes to the dead-letter topic with the reason:
//! `invalid_json` (an event of a JSON source that is not JSON), `transform_error` (the original
//! event), `schema_violation`, `invalid_topic`, `key_not_found` or `invalid_timestamp`.
//!
//! Before all that, the stage **admits** each event ([`Stage::admit`]): the JSON check of a
//! `format = "json"` source and its JSON-pointer key. By default the pump admits events too; a
//! source kind may admit them in its own task instead ([`Admission::Source`]), in parallel with
//! the pump: the SSE source does, since in the pump they cost a fifth of its throughput.
//! Source kinds whose key is also their event id and deduplication key (REST, GraphQL,
//! webhooks) read it with the same compiled [`Key`] in the source, before the stage. The
//! WebSocket source parses each message anyway (array splitting, sequence numbers) and reads its
//! pointers with the same compiled [`Pointer`] type.

mod direct;
pub mod event_time;
pub mod infer;
mod json_out;
pub mod key;
mod route;
pub mod schema;
pub mod template;
pub mod transform;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    error::ConfigError,
    json::Pointer,
    metrics::SourceMetrics,
    record::{DeadLetter, EventAck, Record},
};
use route::Input;

pub use event_time::{EventTime, TimestampUnit};
pub use key::Key;
pub use schema::{OnDrift, Schema};
pub use template::{Template, Unfilled};
pub use transform::{Transform, Yielded};

/// Declares the struct it is given with the record stage's keys first, then the struct's own
/// fields. The keys are written here once: [`StageConfig`] is this list alone, and every source
/// kind's table is declared through [`crate::sources::common::source_table`], which adds them to
/// the kind's own keys (see that module for why they are not a flattened struct).
macro_rules! with_stage_keys {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        $vis struct $name {
            /// A jq program run on each event; each value it yields becomes a record. Default:
            /// none (the event is the record).
            #[serde(default)]
            pub transform: Option<String>,
            /// A file holding the jq program, instead of `transform`.
            #[serde(default)]
            pub transform_file: Option<std::path::PathBuf>,
            /// JSON pointer of the record's event time: the Kafka record timestamp (CreateTime)
            /// and the `tributary.event_time` header. Default: none (Kafka stamps the time of
            /// sending).
            #[serde(default)]
            pub timestamp: Option<String>,
            /// How the `timestamp` field is written: `rfc3339` (default), `seconds` or
            /// `milliseconds`.
            #[serde(default)]
            pub timestamp_unit: $crate::stage::TimestampUnit,
            /// Fixed headers added to every record of the source (name → value).
            #[serde(default)]
            pub record_headers: std::collections::BTreeMap<String, String>,
            /// A JSON Schema (2020-12) file every record (after the transform) must match; a
            /// record that does not goes to the dead-letter topic (`schema_violation`). Default:
            /// none.
            #[serde(default)]
            pub schema: Option<std::path::PathBuf>,
            /// What a record carrying a field the schema does not name does: `count` (default),
            /// `dead_letter` or `fail`.
            #[serde(default)]
            pub on_drift: $crate::stage::OnDrift,
            $($fields)*
        }
    };
}
pub(crate) use with_stage_keys;

with_stage_keys! {
    /// The stage's settings, part of every `[sources.<name>]` table whatever its `type`.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct StageConfig {}
}

/// The compiled stage of one source.
#[derive(Debug, Default)]
pub struct Stage {
    /// Events must be JSON (`format = "json"`); others go to the dead-letter topic
    /// (`invalid_json`).
    json: bool,
    /// Where events are admitted (the JSON check and a pointer key).
    admission: Admission,
    transform: Option<Transform>,
    schema: Option<Schema>,
    on_drift: OnDrift,
    topic: Option<Template>,
    key: Option<Key>,
    event_time: Option<EventTime>,
    headers: Vec<(String, String)>,
}

/// Where a source's events are admitted ([`Stage::admit`]: the JSON check and a JSON-pointer
/// key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// In the Kafka pump, by [`Stage::apply`] (the default: a new source kind gets it all).
    #[default]
    Pump,
    /// In the source's own task, which calls [`Stage::admit`] on each record it sends.
    Source,
}

/// What the stage is asked to do besides the [`StageConfig`] every source kind shares: the
/// checks a source kind leaves to it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceRules<'a> {
    /// Events must be JSON (the source's `format = "json"`).
    pub json: bool,
    /// The source's `key` setting when the stage reads it: a JSON pointer (`/meta/id`, read
    /// from the event as it came) or a template (`{/a}-{/b}`, filled after the transform);
    /// `None` when the source kind reads its key itself.
    pub key: Option<&'a str>,
    /// Where the events are admitted.
    pub admission: Admission,
}

/// The `tributary.` prefix is the daemon's own; static headers may not use it.
const RESERVED_HEADER_PREFIX: &str = "tributary.";

impl Stage {
    /// Validates and compiles the stage of source `name`: its `config`, its `topic` (a fixed
    /// name or a template), and the `rules` its source kind leaves to the stage.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix: a jq syntax error
    /// with its line and column, an unreadable `transform_file`, a malformed template or
    /// pointer, a reserved or empty header name.
    pub fn build(
        name: &str,
        config: &StageConfig,
        topic: &str,
        rules: SourceRules<'_>,
    ) -> Result<Stage, Vec<ConfigError>> {
        let mut checks = crate::sources::common::Checks::new(name);
        let mut stage = Stage {
            json: rules.json,
            admission: rules.admission,
            on_drift: config.on_drift,
            ..Stage::default()
        };
        let program = match (&config.transform, &config.transform_file) {
            (Some(_), Some(_)) => {
                checks.error(
                    "transform_file",
                    "both `transform` and `transform_file` are set",
                    "keep one of them",
                );
                None
            }
            (Some(code), None) => Some(("transform", code.clone())),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(code) => Some(("transform_file", code)),
                Err(error) => {
                    checks.error(
                        "transform_file",
                        format!("cannot read `{}`: {error}", path.display()),
                        "name a readable file holding a jq program",
                    );
                    None
                }
            },
            (None, None) => None,
        };
        if let Some((field, code)) = program {
            match Transform::compile(&code) {
                Ok(transform) => stage.transform = Some(transform),
                Err(errors) => {
                    for error in errors {
                        checks.error(
                            field,
                            format!("the jq program does not compile: {error}"),
                            "fix the program (jq syntax; try it with `jq` on a recorded event)",
                        );
                    }
                }
            }
        }
        if let Some(path) = &config.schema {
            match Schema::load(path) {
                Ok(schema) => stage.schema = Some(schema),
                Err(error) => checks.error(
                    "schema",
                    error,
                    "name a JSON Schema file (draft 2020-12), e.g. `\"schemas/recentchange.json\"`",
                ),
            }
        }
        if Template::is_template(topic) {
            match Template::parse(topic) {
                Ok(template) => stage.topic = Some(template),
                Err(error) => checks.error("topic", error, "write e.g. `\"github.{/type}\"`"),
            }
        }
        if let Some(key) = rules.key {
            match Key::parse(key) {
                Ok(key) => stage.key = Some(key),
                Err(error) => checks.error(
                    "key",
                    error,
                    "write a JSON pointer such as `\"/meta/id\"` or a template such as `\"{/repo/id}-{/number}\"`",
                ),
            }
        }
        if let Some(pointer) = &config.timestamp {
            match Pointer::parse(pointer) {
                Ok(pointer) => {
                    stage.event_time = Some(EventTime {
                        pointer,
                        unit: config.timestamp_unit,
                    })
                }
                Err(error) => checks.error("timestamp", error, "write e.g. `\"/meta/dt\"`"),
            }
        }
        for (header, value) in &config.record_headers {
            let field = format!("record_headers.{header}");
            if header.is_empty() || header.starts_with(RESERVED_HEADER_PREFIX) {
                checks.error(
                    &field,
                    "header names must be non-empty and must not start with `tributary.`",
                    "choose another name (the `tributary.` headers are the daemon's own)",
                );
            } else {
                stage.headers.push((header.clone(), value.clone()));
            }
        }
        checks.finish().map(|()| stage)
    }

    /// True when the topic is a template: each record's topic comes from the record.
    pub fn routes_topic(&self) -> bool {
        self.topic.is_some()
    }

    /// The fixed headers added to every record (name, value).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// True when records pass through the pump unchanged (nothing to admit there, no
    /// transform, schema, template or event time).
    pub fn is_passthrough(&self) -> bool {
        !(self.admission == Admission::Pump && self.admits())
            && self.transform.is_none()
            && self.schema.is_none()
            && self.topic.is_none()
            && !self.key.as_ref().is_some_and(Key::is_template)
            && self.event_time.is_none()
    }

    /// True when the stage parses and rewrites events (a transform) or checks them against a
    /// schema: microseconds per record (about 10 for a 1 KB event in jaq, 2 to 3 on the
    /// transform's direct path), worth running off the async runtime for a large batch.
    pub fn is_costly(&self) -> bool {
        self.transform.is_some() || self.schema.is_some()
    }

    /// True when admitting an event does something: a JSON check or a pointer key.
    fn admits(&self) -> bool {
        self.json || matches!(self.key, Some(Key::Pointer(_)))
    }

    /// Admits `record` as the source read it: a `format = "json"` source's event must be JSON
    /// (else `invalid_json`), and a JSON-pointer key is read from it (a missing or `null` value
    /// gives `key_not_found`). Markers and records already bound for the dead-letter topic are
    /// left alone. [`Stage::apply`] calls it unless the source kind admits its events itself
    /// ([`Admission::Source`]).
    pub fn admit(&self, record: &mut Record) {
        if record.marker || record.dead_letter.is_some() || !self.admits() {
            return;
        }
        // serde_json checks raw values without its recursion limit; what comes after (jaq,
        // the schema, `schema infer`) must not meet deeper JSON than it would parse.
        if let Err(too_deep) = crate::json::check_nesting(&record.payload, crate::json::MAX_NESTING)
        {
            record.dead_letter = Some(DeadLetter::new(
                "invalid_json",
                format!("event data is not valid JSON: {too_deep}"),
            ));
            return;
        }
        let raw = match serde_json::from_slice::<&RawValue>(&record.payload) {
            Ok(raw) => raw,
            Err(error) => {
                record.dead_letter = Some(Input::Event.not_json(&error));
                return;
            }
        };
        if let Some(key @ Key::Pointer(_)) = &self.key {
            match key.of(Some(raw)) {
                Ok(text) => record.key = Some(Bytes::copy_from_slice(text.as_bytes())),
                Err(unfilled) => {
                    record.dead_letter =
                        Some(DeadLetter::new("key_not_found", key.describe(&unfilled)))
                }
            }
        }
    }

    /// The values `payload` becomes: what the transform yields, or the payload itself without a
    /// transform. `tributary schema infer` reads records through it.
    ///
    /// # Errors
    /// A sentence: the payload (or a value the program yields) is not JSON, or the program
    /// failed (jaq's message).
    pub fn shape(&self, payload: &[u8]) -> Result<Vec<serde_json::Value>, String> {
        let parse = |text: &[u8]| {
            serde_json::from_slice(text).map_err(|error| format!("not JSON: {error}"))
        };
        let Some(transform) = &self.transform else {
            crate::json::check_nesting(payload, crate::json::MAX_NESTING)
                .map_err(|too_deep| format!("not JSON: {too_deep}"))?;
            return parse(payload).map(|value| vec![value]);
        };
        let mut values = Vec::new();
        transform
            .run(payload, &mut values)
            .map_err(|failure| failure.to_string())?;
        values.iter().map(|value| parse(value)).collect()
    }

    /// Turns `record` into the records it becomes and appends them to `out`, in order.
    ///
    /// Markers and records already bound for the dead-letter topic pass unchanged. With a
    /// transform, each value the program yields becomes a record carrying the event's key, id,
    /// type, lineage and a share of its completion ([`EventAck::share`]); only the last carries
    /// the event's position, so that the position moves once Kafka holds all of them. When the program yields nothing, a
    /// marker with the event's position takes its place (and is counted as filtered). A
    /// runtime error sends the original event to the dead-letter topic (`transform_error`).
    ///
    /// # Errors
    /// [`Stop`] when a record drifts from the schema under `on_drift = "fail"`: nothing of the
    /// event is appended, and the source must stop.
    pub fn apply(
        &self,
        mut record: Record,
        out: &mut Vec<Record>,
        metrics: &SourceMetrics,
    ) -> Result<(), Stop> {
        if self.is_passthrough() || record.marker || record.dead_letter.is_some() {
            out.push(record);
            return Ok(());
        }
        if self.admission == Admission::Pump {
            self.admit(&mut record);
            if record.dead_letter.is_some() {
                out.push(record);
                return Ok(());
            }
        }
        let Some(transform) = &self.transform else {
            self.route(&mut record, Input::Event, metrics)?;
            out.push(record);
            return Ok(());
        };
        let mut values = Vec::new();
        // An event of a JSON source was admitted: checked as JSON, in the pump or the source.
        let ran = if self.json {
            transform.run_admitted(&record.payload, &mut values)
        } else {
            transform
                .run(&record.payload, &mut values)
                .map(|()| Yielded::Unchecked)
        };
        let yielded = match ran {
            Ok(yielded) => yielded,
            Err(error) => {
                record.dead_letter = Some(match error {
                    transform::Failure::NotJson(reason) if self.json => DeadLetter::new(
                        "invalid_json",
                        format!("event data is not valid JSON: {reason}"),
                    ),
                    other => DeadLetter::new("transform_error", other.to_string()),
                });
                out.push(record);
                return Ok(());
            }
        };
        let input = match yielded {
            Yielded::Json => Input::Json,
            Yielded::Unchecked => Input::Transformed,
        };
        let Some(last) = values.len().checked_sub(1) else {
            metrics.records_filtered.inc();
            let mut marker = Record::marker_at(record.position.take());
            marker.ack = record.ack.take();
            out.push(marker);
            return Ok(());
        };
        let first = out.len();
        for (index, value) in values.into_iter().enumerate() {
            let mut shaped = Record {
                key: record.key.clone(),
                payload: Bytes::from(value),
                event_id: record.event_id.clone(),
                event_type: record.event_type.clone(),
                position: None,
                fetched_at: record.fetched_at,
                dead_letter: None,
                ack: None,
                page: record.page.clone(),
                marker: false,
                topic: None,
                event_time: None,
            };
            // Every record of the event holds a share of its completion, so that its source
            // is told only once all of them are settled; the last carries the position too.
            if index == last {
                shaped.position = record.position.take();
                shaped.ack = record.ack.take();
            } else {
                shaped.ack = record.ack.as_ref().map(EventAck::share);
            }
            if let Err(stop) = self.route(&mut shaped, input, metrics) {
                out.truncate(first);
                return Err(stop);
            }
            out.push(shaped);
        }
        Ok(())
    }
}

/// Why the stage stops its source: a sentence for `/readyz` and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop(pub String);

#[cfg(test)]
mod tests;
