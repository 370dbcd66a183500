//! Active sources: A SSE sources each fed at R events per second against one source fed as
//! fast as it can with as many records, compared by the daemon's CPU per record.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tributary::cli::demo::replay::{self, ReplayOptions, ReplayServer};

use crate::{
    common::{metric_sum, print_row, Broker, Daemon, Figures, SOURCE},
    connect_timeout, metrics_text, wait_connected,
};

/// Time from all sources connected to the start of the measurement, so that the backlog each
/// feed made while the daemon started (a live feed grows from its server's start) is read
/// first.
const WARM_UP: Duration = Duration::from_secs(2);
/// Each active feed holds events for the measurement plus this much (it then idles).
const FEED_SPARE: Duration = Duration::from_secs(600);

/// What the active phase runs.
pub struct ActiveArgs {
    /// Sources, each with a feed of its own.
    pub sources: usize,
    /// Events per second of each feed.
    pub rate: u32,
    /// Length of the measurement, seconds.
    pub secs: u64,
}

/// The daemon's counters and CPU at one moment.
struct Snapshot {
    at: Instant,
    cpu: Duration,
    produced: u64,
    bytes: u64,
    dead_lettered: u64,
}

async fn snapshot(daemon: &Daemon) -> anyhow::Result<Snapshot> {
    let at = Instant::now();
    let cpu = daemon.cpu()?;
    let text = metrics_text(daemon.address)
        .await
        .map_err(|e| daemon.fail(format!("{e:#}")))?;
    Ok(Snapshot {
        at,
        cpu,
        produced: metric_sum(&text, "tributary_records_produced_total"),
        bytes: metric_sum(&text, "tributary_record_bytes_total"),
        dead_lettered: metric_sum(&text, "tributary_records_dead_lettered_total"),
    })
}

/// The figures between two snapshots.
fn between(from: &Snapshot, to: &Snapshot) -> Figures {
    Figures {
        records: (to.produced - from.produced) as usize,
        payload_bytes: to.bytes - from.bytes,
        elapsed: to.at - from.at,
        cpu: to.cpu.saturating_sub(from.cpu),
    }
}

/// One measured daemon run.
struct ActiveRun {
    figures: Figures,
    peak_rss_kib: u64,
    dead_lettered: u64,
}

/// Both runs and their ratio.
pub async fn active_phase(broker: &Broker, work: &Path, args: &ActiveArgs) -> anyhow::Result<()> {
    let recorded = replay::recorded_wikimedia_events();
    let average_payload =
        recorded.iter().map(|e| e.len()).sum::<usize>() as f64 / recorded.len() as f64;
    let offered = args.sources as u64 * u64::from(args.rate);
    println!(
        "  active   {} SSE sources, each reading its own feed of the recorded Wikimedia events \
         (avg {average_payload:.0} B) made at {} events/s (together {offered} events/s), into \
         one topic; measured for {} s from {} s after all are connected",
        args.sources,
        args.rate,
        args.secs,
        WARM_UP.as_secs(),
    );
    println!();
    let many = many_run(broker, work, args).await?;
    print_row(
        &format!("{} sources × {} events/s", args.sources, args.rate),
        &many.figures,
    );
    if many.figures.records == 0 {
        bail!(
            "the {} sources produced no record in {} s",
            args.sources,
            args.secs
        );
    }
    let single = single_run(broker, work, many.figures.records).await?;
    print_row("1 source, as fast as it can", &single.figures);
    println!();
    println!(
        "records/s produced           {:.0} of the {offered} offered ({:.2})",
        many.figures.records_per_second(),
        many.figures.records_per_second() / offered as f64,
    );
    println!(
        "CPU per record               {:.2} µs ({} sources) / {:.2} µs (1 source) = {:.2}",
        many.figures.cpu_micros_per_record(),
        args.sources,
        single.figures.cpu_micros_per_record(),
        many.figures.cpu_micros_per_record() / single.figures.cpu_micros_per_record(),
    );
    println!(
        "daemon peak RSS (VmHWM)      {:.1} MiB ({} sources)   {:.1} MiB (1 source)",
        many.peak_rss_kib as f64 / 1024.0,
        args.sources,
        single.peak_rss_kib as f64 / 1024.0,
    );
    println!(
        "dead-lettered records        {} ({} sources)   {} (1 source)   expected 0",
        many.dead_lettered, args.sources, single.dead_lettered,
    );
    Ok(())
}

/// `args.sources` sources at `args.rate` events/s each, measured for `args.secs`.
async fn many_run(broker: &Broker, work: &Path, args: &ActiveArgs) -> anyhow::Result<ActiveRun> {
    let topic = format!("bench.many.{}.active", std::process::id());
    broker
        .create_topics(&[&topic, &format!("{topic}.dlq")])
        .await?;
    let events = (u64::from(args.rate) * (args.secs + FEED_SPARE.as_secs())) as usize;
    let mut feeds = Vec::with_capacity(args.sources);
    let mut body = String::new();
    for i in 0..args.sources {
        let feed = ReplayServer::start_wikimedia(
            events,
            ReplayOptions {
                events_per_second: Some(args.rate),
                ..ReplayOptions::default()
            },
        )
        .await
        .context("starting a replay server")?;
        // `Daemon::start` opens `[sources.bench]`; the others follow it.
        if i > 0 {
            write!(body, "\n[sources.{SOURCE}_{i}]\n")?;
        }
        write!(
            body,
            "type = \"sse\"\nurl = \"{}\"\ntopic = \"{topic}\"\n",
            feed.url()
        )?;
        feeds.push(feed);
    }
    let mut daemon = Daemon::start(&broker.brokers(), &work.join("active-many"), &body)?;
    wait_connected(&mut daemon, args.sources, connect_timeout(args.sources)).await?;
    tokio::time::sleep(WARM_UP).await;
    let from = snapshot(&daemon).await?;
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    daemon.check_running("during the measurement")?;
    let to = snapshot(&daemon).await?;
    let peak_rss_kib = daemon.peak_rss_kib()?;
    daemon.stop()?;
    drop(feeds);
    Ok(ActiveRun {
        figures: between(&from, &to),
        peak_rss_kib,
        dead_lettered: to.dead_lettered,
    })
}

/// One source reading `records` events served as fast as the server can, from the moment it
/// is connected until all are produced.
async fn single_run(broker: &Broker, work: &Path, records: usize) -> anyhow::Result<ActiveRun> {
    let topic = format!("bench.many.{}.single", std::process::id());
    broker
        .create_topics(&[&topic, &format!("{topic}.dlq")])
        .await?;
    // Every event waits until the source is connected, so the time and CPU measured are the
    // records', not the start's.
    let feed = ReplayServer::start_wikimedia(
        records,
        ReplayOptions {
            pause_before: Some(0),
            ..ReplayOptions::default()
        },
    )
    .await
    .context("starting the replay server")?;
    let body = format!(
        "type = \"sse\"\nurl = \"{}\"\ntopic = \"{topic}\"\n",
        feed.url()
    );
    let mut daemon = Daemon::start(&broker.brokers(), &work.join("active-single"), &body)?;
    wait_connected(&mut daemon, 1, connect_timeout(1)).await?;
    let from = snapshot(&daemon).await?;
    feed.release();
    daemon.wait_produced(records as u64).await?;
    let to = snapshot(&daemon).await?;
    let peak_rss_kib = daemon.peak_rss_kib()?;
    daemon.stop()?;
    Ok(ActiveRun {
        figures: between(&from, &to),
        peak_rss_kib,
        dead_lettered: to.dead_lettered,
    })
}
