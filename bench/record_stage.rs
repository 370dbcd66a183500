//! The record stage alone: CPU µs per record and records per second of [`Stage::apply`] on the
//! recorded Wikimedia `recentchange` events (`data/wikimedia`, about 1 KB of JSON each), without
//! a broker, a feed or the async runtime.
//!
//! ```text
//! cargo bench --bench record_stage -- [--records N] [--case NAME]
//! ```
//!
//! Each case builds a stage as the daemon does ([`Stage::build`], `format = "json"`, admission in
//! the pump) and runs N records (default 200,000, cycling through the 100 recorded events)
//! through [`Stage::apply`] on this thread, after a warm-up of one pass over the events (`--case`
//! runs only the cases whose name starts with NAME, e.g. to profile one):
//! - `passthrough JSON`: no transform; the stage admits each event (the JSON check);
//! - `.`: the identity program;
//! - `typical`: `select(.wiki != null) | {id, title, user, wiki, timestamp}`, the program of the
//!   SSE benchmark's stage run;
//! - `typical + schema`: the same with a JSON Schema inferred from the recorded events by the
//!   code `tributary schema infer` runs ([`Stage::shape`] and [`Inference`]);
//! - `other program`: `.x = 1`, a program outside the stage's direct path (jaq runs it).
//!
//! The figure to trust is CPU µs per record (`getrusage(RUSAGE_THREAD)`: this thread's user +
//! system time), since the machine may be shared; records/s is from wall time. It also prints
//! how many records came out and how many went to the dead-letter topic, so that a case that
//! silently dead-letters everything shows. Figures are printed, never judged: this is a
//! benchmark, not a test.

use std::{
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tributary::{
    cli::demo::replay,
    metrics::{Metrics, SourceKind, SourceMetrics},
    record::Record,
    stage::{infer::Inference, Admission, SourceRules, Stage, StageConfig},
};

/// Default number of records per case.
const DEFAULT_RECORDS: usize = 200_000;

/// The typical program: keeps edits of a wiki and five of their fields.
const TYPICAL: &str = "select(.wiki != null) | {id, title, user, wiki, timestamp}";

const USAGE: &str = "usage: cargo bench --bench record_stage -- [--records N] [--case NAME]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("record_stage: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut records = DEFAULT_RECORDS;
    // Only the cases whose name starts with this (to profile one).
    let mut only = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--records" => {
                records = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or(USAGE)?
            }
            "--case" => only = args.next().ok_or(USAGE)?,
            // `cargo bench` passes `--bench` to every harness-less benchmark.
            "--bench" => {}
            _ => return Err(USAGE.to_owned()),
        }
    }
    let events: Vec<Bytes> = replay::recorded_wikimedia_events()
        .into_iter()
        .map(|event| Bytes::from_static(event.as_bytes()))
        .collect();
    let work = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let schema = work.path().join("recentchange.schema.json");
    let inferred = infer(TYPICAL, &events)?;
    std::fs::write(&schema, serde_json::to_vec_pretty(&inferred).unwrap())
        .map_err(|e| format!("writing the schema: {e}"))?;

    let cases: [(&str, Option<&str>, bool); 5] = [
        ("passthrough JSON", None, false),
        (".", Some("."), false),
        ("typical", Some(TYPICAL), false),
        ("typical + schema", Some(TYPICAL), true),
        ("other program (.x = 1)", Some(".x = 1"), false),
    ];
    println!(
        "record stage, {records} records per case, {} recorded Wikimedia events of {} bytes on average",
        events.len(),
        events.iter().map(Bytes::len).sum::<usize>() / events.len()
    );
    println!("  typical = '{TYPICAL}'");
    println!(
        "{:<24} {:>14} {:>12} {:>10} {:>12}",
        "case", "CPU µs/record", "records/s", "out", "dead-letter"
    );
    for (name, program, with_schema) in cases {
        if !name.starts_with(&only) {
            continue;
        }
        let config = StageConfig {
            transform: program.map(str::to_owned),
            schema: with_schema.then(|| schema.clone()),
            ..StageConfig::default()
        };
        let stage = Stage::build("bench", &config, "bench", rules())
            .map_err(|errors| format!("case `{name}`: {errors:?}"))?;
        let metrics = Metrics::new().source("bench", SourceKind::Sse);
        // Warm-up: one pass over the events.
        pass(&stage, &events, events.len(), &metrics);
        let cpu = thread_cpu();
        let started = Instant::now();
        let (out, dead) = pass(&stage, &events, records, &metrics);
        let wall = started.elapsed();
        let cpu = thread_cpu() - cpu;
        println!(
            "{name:<24} {:>14.2} {:>12.0} {out:>10} {dead:>12}",
            cpu.as_secs_f64() * 1e6 / records as f64,
            records as f64 / wall.as_secs_f64(),
        );
    }
    Ok(())
}

/// What the daemon's SSE source leaves to the stage, with admission in the pump so that its
/// cost is counted here.
fn rules() -> SourceRules<'static> {
    SourceRules {
        json: true,
        key: None,
        admission: Admission::Pump,
    }
}

/// A schema for what `program` makes of `events`, as `tributary schema infer` writes it.
fn infer(program: &str, events: &[Bytes]) -> Result<serde_json::Value, String> {
    let config = StageConfig {
        transform: Some(program.to_owned()),
        ..StageConfig::default()
    };
    let stage = Stage::build("bench", &config, "bench", rules())
        .map_err(|errors| format!("the schema's stage: {errors:?}"))?;
    let mut inference = Inference::new();
    for event in events {
        for value in stage.shape(event)? {
            inference.add(&value);
        }
    }
    Ok(inference.schema("bench", "the recorded Wikimedia events"))
}

/// Runs `records` records (cycling through `events`) through the stage; returns how many
/// records came out that are not markers and how many of those go to the dead-letter topic.
fn pass(
    stage: &Stage,
    events: &[Bytes],
    records: usize,
    metrics: &SourceMetrics,
) -> (usize, usize) {
    let fetched_at = SystemTime::now();
    let mut out = Vec::with_capacity(4);
    let (mut produced, mut dead) = (0, 0);
    for i in 0..records {
        let record = Record::new(events[i % events.len()].clone(), fetched_at);
        stage
            .apply(record, &mut out, metrics)
            .expect("no stage of the benchmark stops its source");
        for record in out.drain(..) {
            if !record.marker {
                produced += 1;
                dead += usize::from(record.dead_letter.is_some());
            }
        }
    }
    (produced, dead)
}

/// This thread's CPU time (user + system), from `getrusage(RUSAGE_THREAD)`.
fn thread_cpu() -> Duration {
    // SAFETY: `getrusage` writes the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
