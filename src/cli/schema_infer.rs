//! `tributary schema infer`: a starting JSON Schema (draft 2020-12) for one source's records,
//! inferred from N records, so that nobody has to write a schema by hand.
//!
//! The records come either from the live feed (the source runs as it would in the daemon, from
//! no stored position, and stops after N records; nothing is produced to Kafka and no position
//! is stored) or from a file of recorded events (`--input`, one JSON event per line). Either
//! way each event goes through the source's `transform` first, since the schema checks what the
//! transform yields. Events the source would dead-letter (e.g. not JSON) are skipped and
//! counted. The merging rules are in [`crate::stage::infer`].

use std::{
    io::BufRead,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    channel,
    config::Config,
    metrics::Metrics,
    runtime::health::{Health, SourceState},
    sources::SourceContext,
    stage::{infer::Inference, Stage},
};

/// What to infer from.
#[derive(Clone, Debug)]
pub struct Request {
    /// The configured source name.
    pub source: String,
    /// Records to read (events, before the transform), at least 1.
    pub sample: usize,
    /// A file of recorded events, one JSON event per line; `None` reads the live feed.
    pub input: Option<PathBuf>,
    /// How long to wait for the live feed's records before inferring from those read so far.
    pub timeout: Duration,
}

/// An inferred schema and what it came from.
#[derive(Debug)]
pub struct Inferred {
    /// The schema (JSON Schema draft 2020-12).
    pub schema: Value,
    /// Events read (records, before the transform).
    pub events: usize,
    /// Values the schema was inferred from (after the transform).
    pub values: usize,
    /// Events skipped: ones the source would dead-letter, and transform errors.
    pub skipped: usize,
    /// True when the live feed ended or the timeout passed before `sample` events.
    pub short: bool,
}

/// Why no schema could be inferred.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The config has no source of that name.
    #[error("the config has no source named `{name}` (its sources: {known}); pass one of them with --source")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// A webhook source's records are pushed to the daemon: there is no feed to read.
    #[error("source `{0}` is a webhook source: its events are pushed to the daemon, so there is no feed to read; pass recorded payloads with --input FILE (one JSON event per line)")]
    Webhook(String),
    /// The recorded events cannot be read.
    #[error("cannot read `{file}`: {reason}")]
    Input {
        /// The file.
        file: String,
        /// What went wrong, with the line number when it concerns one line.
        reason: String,
    },
    /// The feed failed for good before any record arrived.
    #[error("source `{source_name}` stopped before a record arrived: {reason}")]
    Feed {
        /// The source.
        source_name: String,
        /// The source's error.
        reason: String,
    },
    /// No value to infer from.
    #[error("source `{source_name}`: no record to infer from ({detail})")]
    NoSamples {
        /// The source.
        source_name: String,
        /// What was read and skipped.
        detail: String,
    },
}

/// Infers a schema for `request.source` of `config`.
///
/// # Errors
/// [`InferError`]: an unknown source, a webhook source without `--input`, an unreadable input
/// file, a feed that failed before any record, or no usable record at all.
pub async fn infer(mut config: Config, request: &Request) -> Result<Inferred, InferError> {
    crate::tls::install_crypto_provider();
    let Some(index) = config
        .sources
        .iter()
        .position(|(info, _)| *info.name == *request.source)
    else {
        return Err(InferError::UnknownSource {
            name: request.source.clone(),
            known: config
                .sources
                .iter()
                .map(|(info, _)| info.name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let (info, source) = config.sources.swap_remove(index);
    let mut collector = Collector::new(Arc::clone(&info.stage), request.sample);
    if let Some(path) = &request.input {
        read_recorded(path, &mut collector)?;
    } else {
        if info.kind.is_pushed() {
            return Err(InferError::Webhook(request.source.clone()));
        }
        let metrics = Metrics::new().source(&info.name, info.kind);
        let (records, mut receiver) = channel::bounded(
            info.channel_max_records,
            info.channel_max_bytes,
            metrics.clone(),
        );
        let shutdown = CancellationToken::new();
        let health = Health::default();
        let context = SourceContext {
            name: Arc::clone(&info.name),
            records,
            shutdown: shutdown.clone(),
            resume: None,
            metrics,
            health: health.clone(),
            hosts: Arc::new(crate::http::HostLimits::new(config.rate_limits.clone())),
            stage: Arc::clone(&info.stage),
        };
        let mut task = tokio::spawn(source.run(context));
        let deadline = tokio::time::sleep(request.timeout);
        tokio::pin!(deadline);
        let mut buffer = Vec::new();
        let mut ended = None;
        while !collector.full() {
            tokio::select! {
                received = receiver.recv_many(&mut buffer, 256) => {
                    if received == 0 {
                        break;
                    }
                    for envelope in buffer.drain(..) {
                        collector.event(envelope.record);
                    }
                }
                result = &mut task, if ended.is_none() => {
                    ended = Some(result);
                }
                () = &mut deadline => break,
            }
        }
        // What the feed last did, before the cancellation makes it `stopped`.
        let last_state = health.get(&request.source);
        shutdown.cancel();
        drop(receiver);
        let result = match ended {
            Some(result) => result,
            // A source stops within its read timeout once cancelled; do not wait longer.
            None => match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(result) => result,
                Err(_) => Ok(Ok(())),
            },
        };
        if collector.events == 0 {
            let reason = match result {
                Ok(Err(error)) => Some(error.to_string()),
                Err(panic) => Some(panic.to_string()),
                // Still retrying when the time ran out: say what the feed last did.
                Ok(Ok(())) => match last_state {
                    Some(
                        SourceState::Reconnecting { error, .. }
                        | SourceState::Failing { error, .. },
                    ) => Some(format!(
                        "{error} (still failing after {} s)",
                        request.timeout.as_secs()
                    )),
                    Some(SourceState::Failed(reason) | SourceState::Finished(reason)) => {
                        Some(reason)
                    }
                    _ => None,
                },
            };
            if let Some(reason) = reason {
                return Err(InferError::Feed {
                    source_name: request.source.clone(),
                    reason,
                });
            }
        }
    }
    collector.finish(&request.source)
}

/// Feeds the events of a recorded file (one JSON event per line, blank lines skipped) to
/// `collector` until it is full.
fn read_recorded(path: &Path, collector: &mut Collector) -> Result<(), InferError> {
    let file = path.display().to_string();
    let reader = std::fs::File::open(path).map_err(|error| InferError::Input {
        file: file.clone(),
        reason: error.to_string(),
    })?;
    for (number, line) in std::io::BufReader::new(reader).lines().enumerate() {
        if collector.full() {
            break;
        }
        let line = line.map_err(|error| InferError::Input {
            file: file.clone(),
            reason: format!("line {}: {error}", number + 1),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = crate::record::Record::new(line.into(), std::time::SystemTime::now());
        collector.event(record);
    }
    Ok(())
}

/// Merges the values the events become, up to `sample` events.
struct Collector {
    stage: Arc<Stage>,
    sample: usize,
    inference: Inference,
    events: usize,
    skipped: usize,
    /// The first reason an event was skipped, for the error when nothing is left.
    first_skip: Option<String>,
}

impl Collector {
    fn new(stage: Arc<Stage>, sample: usize) -> Self {
        Collector {
            stage,
            sample: sample.max(1),
            inference: Inference::new(),
            events: 0,
            skipped: 0,
            first_skip: None,
        }
    }

    fn full(&self) -> bool {
        self.events >= self.sample
    }

    /// Takes one event: admitted as the daemon would (the JSON check, a pointer key), then
    /// shaped by the transform.
    fn event(&mut self, mut record: crate::record::Record) {
        if record.marker || self.full() {
            return;
        }
        self.events += 1;
        self.stage.admit(&mut record);
        let shaped = match &record.dead_letter {
            Some(dead_letter) => Err(dead_letter.reason.clone()),
            None => self.stage.shape(&record.payload),
        };
        match shaped {
            Ok(values) => values.iter().for_each(|value| self.inference.add(value)),
            Err(reason) => {
                self.skipped += 1;
                tracing::warn!(%reason, "event skipped");
                self.first_skip.get_or_insert(reason);
            }
        }
    }

    fn finish(self, source: &str) -> Result<Inferred, InferError> {
        let values = self.inference.samples();
        if values == 0 {
            let mut detail = format!("{} event(s) read, {} skipped", self.events, self.skipped);
            if let Some(reason) = &self.first_skip {
                detail.push_str(&format!("; the first: {reason}"));
            } else if self.events > 0 {
                detail.push_str("; the transform yielded nothing");
            }
            return Err(InferError::NoSamples {
                source_name: source.to_owned(),
                detail,
            });
        }
        let origin = format!(
            "{} record(s) of source `{source}` ({values} value(s) after the transform)",
            self.events
        );
        Ok(Inferred {
            schema: self.inference.schema(source, &origin),
            events: self.events,
            values,
            skipped: self.skipped,
            short: self.events < self.sample,
        })
    }
}

/// Writes the schema of `inferred` (pretty JSON) to `output`, or to stdout, and a summary line
/// to stderr. Returns the command's exit code: 0, or 1 when `output` cannot be written (the
/// reason is printed on stderr).
pub fn write(
    inferred: &Inferred,
    request: &Request,
    output: Option<&Path>,
) -> std::process::ExitCode {
    let mut text = serde_json::to_string_pretty(&inferred.schema).expect("a schema serializes");
    text.push('\n');
    let target = match output {
        Some(path) => {
            if let Err(error) = std::fs::write(path, &text) {
                eprintln!(
                    "tributary schema infer: cannot write `{}`: {error}",
                    path.display()
                );
                return std::process::ExitCode::FAILURE;
            }
            path.display().to_string()
        }
        None => {
            print!("{text}");
            "stdout".to_owned()
        }
    };
    let mut summary = format!(
        "source `{}`: schema inferred from {} event(s) ({} value(s) after the transform, {} skipped), written to {target}",
        request.source, inferred.events, inferred.values, inferred.skipped
    );
    if inferred.short {
        summary.push_str(&match &request.input {
            Some(_) => format!(
                "; the file holds fewer events than the {} asked for",
                request.sample
            ),
            None => format!(
                "; fewer than the {} asked for: the feed ended or {} s passed",
                request.sample,
                request.timeout.as_secs()
            ),
        });
    }
    eprintln!("{summary}");
    std::process::ExitCode::SUCCESS
}
