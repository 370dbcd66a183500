//! `tributary demo`: the real pipeline on recorded real data, with no setup.
//!
//! Starts librdkafka's in-process mock cluster on 127.0.0.1, replays the recorded Wikimedia
//! recentchange events as an SSE feed (every event with an `id:`, resuming from
//! `Last-Event-ID`), and runs the daemon — the same code as `tributary run` — into topic
//! `wikimedia.recentchange`. Midway the feed drops the connection once (the source resumes
//! with `Last-Event-ID`), and the daemon is stopped and started again (the source resumes from
//! its stored checkpoint). At the end the topic is read back and compared with what was served.

use std::{
    collections::HashSet,
    io::Write,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    config,
    router::HEADER_EVENT_ID,
    runtime::daemon::{self, RunningDaemon},
    state::checkpoint::FileStore,
};

pub mod kafka_admin;
pub mod replay;

use replay::{ReplayOptions, ReplayServer};

const TOPIC: &str = "wikimedia.recentchange";
const SOURCE: &str = "wikimedia";
const PARTITIONS: i32 = 8;

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Events to replay (cycling through the 100 recorded ones).
    pub events: usize,
    /// Print a JSON report instead of text, and no progress line.
    pub json: bool,
    /// Keep the second daemon (and `/metrics`) running after the report until Ctrl-C.
    pub keep_running: bool,
}

/// What the demo measured.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// Distinct events the feed offered.
    pub events_served: usize,
    /// Records found in the topic.
    pub records_in_kafka: usize,
    /// Records whose event id appeared more than once.
    pub duplicates: usize,
    /// Served events missing from the topic.
    pub lost: usize,
    /// Records in the dead-letter topic.
    pub dead_lettered: usize,
    /// Feed connections the source made (the first, one after the drop, one after restart).
    pub feed_connections: usize,
    /// Daemon restarts whose first connection resumed from the stored checkpoint (measured at
    /// the feed: its `Last-Event-ID` was the stored position).
    pub restarts: usize,
    /// The position the restarted daemon resumed from.
    pub resumed_from: String,
    /// Records per second through the pipeline (events ÷ time both daemons ran).
    pub records_per_second: f64,
    /// Where the restarted daemon serves `/metrics`: only with `--keep-running`, when it is
    /// still running as the report is printed (without it the daemon stops first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

/// Runs the demo.
///
/// # Errors
/// The mock cluster, the feed or the daemon cannot start, or reading the topic back fails.
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoReport> {
    let events = options.events.max(4);
    let cluster = MockCluster::new(1).context("starting the in-process Kafka mock cluster")?;
    let brokers = cluster.bootstrap_servers();
    for topic in [TOPIC, &format!("{TOPIC}.dlq")] {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("creating topic `{topic}`"))?;
    }
    let feed = ReplayServer::start(
        replay::wikimedia_feed(events),
        ReplayOptions {
            drop_after: Some(events / 4),
            drops: 1,
            retry_ms: None,
            // The feed holds the second half back until the daemon has been restarted, so
            // the restart happens midway through the feed.
            pause_before: Some(events / 2),
            ..ReplayOptions::default()
        },
    )
    .await
    .context("starting the SSE feed on 127.0.0.1")?;
    let state = tempfile::tempdir().context("creating a state directory")?;
    let progress = !options.json;

    let started = Instant::now();
    let first = start_daemon(&brokers, &feed.url(), state.path()).await?;
    wait_for_produced(&first, events / 2, events, "first run", progress).await;
    first.shutdown().await;
    let first_run = started.elapsed();

    let resumed_from = FileStore::open(state.path())?
        .load(SOURCE)?
        .map(|p| p.0.to_string())
        .context("the first run stored no position")?;
    let resume_index = replay::wikimedia_event_index(&resumed_from)
        .filter(|&i| i < events)
        .context("the stored position is not an id the feed served")?;

    // A restart counts when the new daemon's first connection resumed from the stored
    // position (its Last-Event-ID), as the feed saw it.
    let connections_before = feed
        .stats()
        .last_event_ids
        .lock()
        .map_or(0, |ids| ids.len());
    let restarted = Instant::now();
    let second = start_daemon(&brokers, &feed.url(), state.path()).await?;
    feed.release();
    let metrics_url = format!("http://{}/metrics", second.metrics_address());
    wait_for_produced(
        &second,
        events - resume_index - 1,
        events - resume_index - 1,
        "after restart",
        progress,
    )
    .await;
    let pipeline_time = first_run + restarted.elapsed();
    let restarts = feed.stats().last_event_ids.lock().map_or(0, |ids| {
        usize::from(ids.get(connections_before).and_then(Option::as_deref) == Some(&resumed_from))
    });
    if progress {
        eprintln!();
    }

    let read_brokers = brokers.clone();
    let (records, dead) = tokio::task::spawn_blocking(move || {
        let records = kafka_admin::read_topic(&read_brokers, TOPIC, Duration::from_secs(30))?;
        let dead = kafka_admin::read_topic(
            &read_brokers,
            &format!("{TOPIC}.dlq"),
            Duration::from_secs(30),
        )?;
        Ok::<_, rdkafka::error::KafkaError>((records, dead))
    })
    .await?
    .context("reading the topic back")?;
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for record in &records {
        if let Some(id) = record.header(HEADER_EVENT_ID) {
            if !seen.insert(id.to_owned()) {
                duplicates += 1;
            }
        }
    }
    let lost = (0..events)
        .filter(|&i| !seen.contains(&replay::wikimedia_event_id(i)))
        .count();
    let report = DemoReport {
        events_served: events,
        records_in_kafka: records.len(),
        duplicates,
        lost,
        dead_lettered: dead.len(),
        feed_connections: feed
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        restarts,
        resumed_from,
        records_per_second: events as f64 / pipeline_time.as_secs_f64(),
        metrics_url: options.keep_running.then(|| metrics_url.clone()),
    };
    if options.keep_running {
        print_report(&report, options.json);
        eprintln!("serving {metrics_url} until Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
    }
    second.shutdown().await;
    drop(cluster);
    Ok(report)
}

async fn start_daemon(brokers: &str, url: &str, state: &Path) -> anyhow::Result<RunningDaemon> {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "10s"

[checkpoint]
dir = "{state}"
commit_interval = "200ms"

[server]
listen = "127.0.0.1:0"

[sources.{SOURCE}]
type = "sse"
url = "{url}"
topic = "{TOPIC}"
reconnect = {{ initial_delay = "100ms", max_delay = "2s" }}
"#,
        state = state.display()
    );
    let config = config::parse_toml(&text)?.validate()?;
    Ok(daemon::start(config, CancellationToken::new()).await?)
}

/// Waits (checking every 50 ms, printing a progress line) until the daemon has had `target`
/// records acknowledged.
async fn wait_for_produced(
    daemon: &RunningDaemon,
    target: usize,
    total: usize,
    phase: &str,
    progress: bool,
) {
    let metrics = Arc::clone(daemon.metrics()).source(SOURCE, crate::metrics::SourceKind::Sse);
    let started = Instant::now();
    loop {
        let produced = metrics.records_produced.get() as usize;
        if progress {
            let rate = produced as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprint!("\r{phase}: {produced}/{total} records acknowledged by Kafka ({rate:.0} records/s)   ");
            let _ = std::io::stderr().flush();
        }
        if produced >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints the report as text or JSON on stdout.
pub fn print_report(report: &DemoReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("the report serializes")
        );
        return;
    }
    println!(
        "Tributary demo: recorded Wikimedia recentchange events → SSE → Kafka topic `{TOPIC}`"
    );
    println!("  events served        {}", report.events_served);
    println!("  records in Kafka     {}", report.records_in_kafka);
    println!("  duplicates           {}", report.duplicates);
    println!("  lost                 {}", report.lost);
    println!("  dead-lettered        {}", report.dead_lettered);
    println!(
        "  feed connections     {} (one dropped by the feed, one after the restart)",
        report.feed_connections
    );
    match replay::wikimedia_event_index(&report.resumed_from) {
        Some(index) => println!(
            "  resumed after        event {} of {}: the restarted daemon sent its stored position back to the feed (Last-Event-ID)",
            index + 1,
            report.events_served
        ),
        None => println!("  resumed after        the stored position below"),
    }
    println!(
        "  stored position      {} (Wikimedia's own SSE event id, kept as sent: the topic and offset in it are Wikimedia's, not your Kafka's)",
        report.resumed_from
    );
    println!(
        "  throughput           {:.0} records/s (including both daemon starts)",
        report.records_per_second
    );
    match &report.metrics_url {
        Some(url) => println!("  metrics              {url} (until Ctrl-C)"),
        None => println!("  metrics              the daemon has stopped; run `tributary demo --keep-running` to browse /metrics"),
    }
}
