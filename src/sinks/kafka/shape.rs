//! The record stage of a batch, run off the async runtime and over the machine's cores.
//!
//! A transform or a JSON Schema check costs microseconds per record (2 to 3 on the direct
//! path, about 10 when jaq parses and writes the event), which would hold a runtime worker for
//! a whole large batch and leave the other cores idle. So a pump whose stage does such work
//! hands each batch of [`OFFLOAD_MIN`] events or more to the blocking pool, in up to one chunk
//! per core, and reads the results back in channel order: the records are produced exactly as
//! if the stage had run inline. A smaller batch runs inline ([`inline`]): the round trip to a
//! pool thread and back (two thread wake-ups) costs more than the stage itself, and under a
//! steady feed the pump's batches are small, since it takes what the source has sent so far.

use std::{num::NonZeroUsize, panic::AssertUnwindSafe, sync::Arc};

use crate::{
    metrics::SourceMetrics,
    record::Record,
    stage::{Stage, Stop},
};

/// Fewer records than this per chunk are not worth a task of their own.
const MIN_CHUNK: usize = 32;

/// A batch of fewer events than this runs inline, on the pump's worker: at most about 0.6 ms
/// of stage work (64 events of about 10 µs in jaq).
pub(super) const OFFLOAD_MIN: usize = 2 * MIN_CHUNK;

/// What [`Stage::apply`] made of one event: its records, in order, or why the source stops.
pub(super) type Shaped = Result<Vec<Record>, Stop>;

/// Runs `stage` on each of `events` and returns what each became, in the order of `events`.
/// A chunk whose task fails (a panic in the stage) gives one [`Stop`] in place of its
/// events, so the pump stops the source there rather than skipping them.
pub(super) async fn in_parallel(
    stage: &Arc<Stage>,
    metrics: &SourceMetrics,
    events: Vec<Record>,
) -> Vec<Shaped> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let chunk = events.len().div_ceil(cores).max(MIN_CHUNK);
    let mut events = events.into_iter();
    let mut tasks = Vec::with_capacity(cores);
    loop {
        let part: Vec<Record> = events.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let (stage, metrics) = (Arc::clone(stage), metrics.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|event| {
                    let mut records = Vec::with_capacity(1);
                    stage.apply(event, &mut records, &metrics).map(|()| records)
                })
                .collect::<Vec<Shaped>>()
        }));
    }
    let mut shaped = Vec::new();
    for task in tasks {
        match task.await {
            Ok(part) => shaped.extend(part),
            Err(error) => {
                shaped.push(Err(Stop(format!("the record stage failed: {error}"))));
                break;
            }
        }
    }
    shaped
}

/// Runs `stage` on one event on the caller's thread, appending what it becomes to `out`, as a
/// task of [`in_parallel`] would: a panic in the stage gives a [`Stop`] (and leaves `out`
/// empty), so the pump stops the source there rather than dying with it.
///
/// # Errors
/// The [`Stop`] of [`Stage::apply`], or one for a panic in the stage.
pub(super) fn inline(
    stage: &Stage,
    metrics: &SourceMetrics,
    event: Record,
    out: &mut Vec<Record>,
) -> Result<(), Stop> {
    std::panic::catch_unwind(AssertUnwindSafe(|| stage.apply(event, out, metrics))).unwrap_or_else(
        |_| {
            out.clear();
            Err(Stop("the record stage failed: it panicked".to_owned()))
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::{
        metrics::{Metrics, SourceKind},
        stage::{Admission, SourceRules, StageConfig},
    };

    fn stage(program: &str) -> Arc<Stage> {
        let config = StageConfig {
            transform: Some(program.to_owned()),
            ..StageConfig::default()
        };
        let rules = SourceRules {
            json: true,
            key: None,
            admission: Admission::Pump,
        };
        Arc::new(Stage::build("s", &config, "t", rules).unwrap())
    }

    fn events(count: usize) -> Vec<Record> {
        (0..count)
            .map(|n| {
                let payload = format!(r#"{{"n":{n},"skip":{}}}"#, n % 3 == 0);
                Record::new(Bytes::from(payload), SystemTime::UNIX_EPOCH)
            })
            .collect()
    }

    fn payloads(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .filter(|record| !record.marker)
            .map(|record| String::from_utf8(record.payload.to_vec()).unwrap())
            .collect()
    }

    /// A batch large enough to be offloaded gives, in channel order, what each event gives
    /// inline: the two paths of the pump produce the same records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offloaded_batch_gives_what_each_event_gives_inline_in_order() {
        let stage = stage("select(.skip | not) | {n, twice: [.n, .n]}");
        let metrics = Metrics::new().source("s", SourceKind::Sse);
        let count = 3 * OFFLOAD_MIN + 5;
        let shaped = in_parallel(&stage, &metrics, events(count)).await;
        assert_eq!(shaped.len(), count, "one result per event");
        for (event, shaped) in events(count).into_iter().zip(shaped) {
            let mut inline_out = Vec::new();
            inline(&stage, &metrics, event, &mut inline_out).unwrap();
            let offloaded = shaped.unwrap();
            assert_eq!(payloads(&offloaded), payloads(&inline_out));
            assert_eq!(offloaded.len(), inline_out.len());
        }
    }

    #[test]
    fn inline_appends_what_the_stage_makes_of_the_event() {
        let stage = stage(".n");
        let metrics = Metrics::new().source("s", SourceKind::Sse);
        let mut out = Vec::new();
        for event in events(2) {
            inline(&stage, &metrics, event, &mut out).unwrap();
        }
        assert_eq!(payloads(&out), ["0", "1"]);
    }
}
