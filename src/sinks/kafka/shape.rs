//! The record stage of a batch, run off the async runtime and over the machine's cores.
//!
//! A jq transform or a JSON Schema check costs tens of microseconds per record (the program
//! parses and writes each event), which would hold a runtime worker for the whole batch and
//! leave the other cores idle. So a pump whose stage does such work hands each batch to the
//! blocking pool in up to one chunk per core, and reads the results back in channel order: the
//! records are produced exactly as if the stage had run inline.

use std::{num::NonZeroUsize, sync::Arc};

use crate::{
    metrics::SourceMetrics,
    record::Record,
    stage::{Stage, Stop},
};

/// Fewer records than this per chunk are not worth a task of their own.
const MIN_CHUNK: usize = 32;

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
