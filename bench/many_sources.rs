//! Many sources on one daemon: what hundreds or thousands of mostly idle SSE sources cost one
//! replica, and what a hundred busy ones cost per record against a single source.
//!
//! ```text
//! cargo bench --bench many_sources -- [--broker kafka|mock|tansu] [--idle 100,1000,10000]
//!                                     [--settle-secs S] [--active 100] [--rate 1000]
//!                                     [--active-secs T]
//! ```
//!
//! Phases, against one broker on 127.0.0.1 (Apache Kafka or tansu as child processes, or
//! librdkafka's mock cluster in this process) and the real `tributary` binary (release build)
//! as a child process:
//!
//! 1. idle sources: for each N, a server in this process (axum on 127.0.0.1) answers
//!    `GET /stream/<i>` with `text/event-stream`, one SSE comment, then nothing, holding every
//!    stream open. The daemon runs N `type = "sse"` sources `s0` … `s<N-1>` (as the issue
//!    measured), one per stream (the file position store). Once its `/readyz` reports all N
//!    `connected` (spawn → all connected is printed), and S seconds more (default 25), its RSS
//!    (VmRSS, and its parts RssAnon and RssFile), peak RSS (VmHWM), threads and open file
//!    descriptors are read from `/proc`; then `/metrics` is fetched 5 times (the median time is
//!    printed, and the body's size), once more with `Accept-Encoding: gzip` (the compressed size,
//!    or `n/a` when the daemon answers uncompressed), and the daemon is stopped with SIGTERM.
//!    Each row is printed beside the issue's goal for that N; after the table, the sample lines
//!    of `/metrics` per source and its largest families. Every stream is one socket in this
//!    process and one in the daemon, so the soft limit on open files is raised to the hard
//!    limit first; the daemon inherits it (its `/proc/<pid>/limits` is printed).
//! 2. active sources: A SSE sources (default 100), each reading its own replay server of the
//!    recorded Wikimedia events (~1 KB) that makes R events per second (default 1,000) from its
//!    start, into one topic. From 2 s after all are connected, T seconds (default 20) are
//!    measured: records produced (the daemon's `tributary_records_produced_total`, all sources)
//!    per second and the daemon's CPU µs per record. Then one source reads as many records from
//!    a feed that serves them as fast as it can (held back until the source is connected), timed
//!    until `/metrics` reports them all produced; the ratio of CPU µs per record, A sources / 1
//!    source, closes.
//!
//! Figures are printed, never judged: this is a benchmark, not a test. See
//! docs/src/performance.md, "Many sources". `--idle none` or `--active 0` leaves a phase out.

#[path = "many_sources/active.rs"]
mod active;
mod common;
#[path = "many_sources/idle_feed.rs"]
mod idle_feed;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use common::{http_get_response, metric_sum, Broker, BrokerKind, Daemon};
use idle_feed::IdleFeed;

/// Default numbers of idle sources, one daemon run each.
const DEFAULT_IDLE: &[usize] = &[100, 1_000, 10_000];
/// Default wait between all sources connected and the readings (the issue's "RSS after 25 s").
const DEFAULT_SETTLE: Duration = Duration::from_secs(25);
/// Default number of active sources.
const DEFAULT_ACTIVE: usize = 100;
/// Default events per second of each active source's feed.
const DEFAULT_RATE: u32 = 1_000;
/// Default length of the active measurement.
const DEFAULT_ACTIVE_SECS: u64 = 20;
/// `/metrics` fetches whose median time is printed.
const SCRAPES: usize = 5;
/// How often `/readyz` is read while the sources connect.
const READYZ_POLL: Duration = Duration::from_millis(100);
/// Longest one request to the daemon may take (a `/metrics` of thousands of sources is large).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Open files this process and the daemon need beyond one per stream (broker connections,
/// listeners, logs, the runtime's own).
const SPARE_FDS: u64 = 256;

/// How long N sources may take to connect before the run fails: 60 s plus 50 ms per source.
pub fn connect_timeout(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(50) * n as u32
}

const USAGE: &str = "\
usage: cargo bench --bench many_sources -- [--broker kafka|mock|tansu] [--idle 100,1000,10000]
                                           [--settle-secs S] [--active 100] [--rate 1000]
                                           [--active-secs T]

  --broker kafka    (default) Apache Kafka, one KRaft node (tests/kafka/kafka.sh; Java 17
                    and Maven), log on disk
  --broker mock     librdkafka's mock cluster, in the benchmark process
  --broker tansu    a tansu broker child process with in-memory storage, from
                    $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --idle LIST       numbers of idle SSE sources, one daemon run each (default 100,1000,10000;
                    `none`: no idle runs)
  --settle-secs S   seconds between all idle sources connected and the readings (default 25)
  --active A        active SSE sources (default 100; 0: no active runs)
  --rate R          events per second of each active source's feed (default 1000)
  --active-secs T   length of the active measurement, seconds (default 20)";

struct Args {
    broker: BrokerKind,
    idle: Vec<usize>,
    settle: Duration,
    active: usize,
    rate: u32,
    active_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Kafka,
        idle: DEFAULT_IDLE.to_vec(),
        settle: DEFAULT_SETTLE,
        active: DEFAULT_ACTIVE,
        rate: DEFAULT_RATE,
        active_secs: DEFAULT_ACTIVE_SECS,
    };
    common::parse_flags(|name, value| {
        match name {
            "--broker" => args.broker = common::broker_kind(&value("`kafka`, `mock` or `tansu`")?)?,
            "--idle" => {
                let list = value("a comma-separated list of numbers, or `none`")?;
                args.idle = if list == "none" {
                    Vec::new()
                } else {
                    list.split(',')
                        .map(|n| common::count(name, n.trim(), 1))
                        .collect::<Result<_, _>>()?
                };
            }
            "--settle-secs" => {
                args.settle =
                    Duration::from_secs(common::count(name, &value("seconds")?, 0)? as u64)
            }
            "--active" => args.active = common::count(name, &value("a number")?, 0)?,
            "--rate" => {
                args.rate = u32::try_from(common::count(name, &value("events per second")?, 1)?)
                    .map_err(|_| format!("{name} is too large"))?
            }
            "--active-secs" => {
                args.active_secs = common::count(name, &value("seconds")?, 1)? as u64
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(args)
}

fn main() -> ExitCode {
    common::main("many_sources", USAGE, parse_args(), phases)
}

async fn phases(args: Args, work: &Path) -> anyhow::Result<()> {
    let broker = Broker::start(args.broker, work)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let started = Instant::now();
    println!("Many sources on one daemon");
    println!("  broker   {}", broker.describe());
    println!("  machine  {cores} cores");
    if !args.idle.is_empty() {
        idle_phase(&args, &broker, work).await?;
    }
    if args.active > 0 {
        println!();
        active::active_phase(
            &broker,
            work,
            &active::ActiveArgs {
                sources: args.active,
                rate: args.rate,
                secs: args.active_secs,
            },
        )
        .await?;
    }
    println!();
    println!("benchmark took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Idle sources

/// The issue's goal for N idle sources: RSS (MB) and `/metrics` size (KB).
fn goal(n: usize) -> Option<(u64, u64)> {
    match n {
        100 => Some((24, 64)),
        1_000 => Some((40, 256)),
        _ => None,
    }
}

/// What one idle run read.
struct IdleRow {
    n: usize,
    /// Spawn → all N sources `connected` on `/readyz`.
    connect: Duration,
    rss_kib: u64,
    /// `RssAnon` of `/proc/<pid>/status`: the heap, stacks and other private memory.
    rss_anon_kib: u64,
    /// `RssFile`: the pages of the executable and libraries mapped in.
    rss_file_kib: u64,
    peak_rss_kib: u64,
    threads: u64,
    fds: usize,
    metrics_bytes: usize,
    /// The `/metrics` body asked for with `Accept-Encoding: gzip`, if the daemon compressed it.
    metrics_gzip_bytes: Option<usize>,
    /// Median of [`SCRAPES`] fetches of `/metrics`.
    scrape: Duration,
    /// `tributary_connected`, all sources, at the last fetch.
    connected_after: u64,
    /// `tributary_reconnects_total`, all sources, at the last fetch.
    reconnects: u64,
    /// SIGTERM → exit.
    stop: Duration,
    /// The daemon's soft and hard limits on open files.
    daemon_fd_limit: (String, String),
    /// Sample lines of `/metrics` labelled with the first source.
    series_per_source: usize,
    /// The families of `/metrics` that take the most bytes, with their bytes.
    largest_families: Vec<(String, usize)>,
}

async fn idle_phase(args: &Args, broker: &Broker, work: &Path) -> anyhow::Result<()> {
    let (before, soft, hard) =
        common::raise_open_files_limit().context("raising the limit on open files")?;
    println!(
        "  idle     N SSE sources, each on its own stream of a server in this process that sends \
         one comment and then nothing; readings {} s after all are connected",
        args.settle.as_secs()
    );
    println!(
        "  fds      this process's soft limit on open files raised from {before} to {soft} (hard \
         {hard}); the daemon inherits it"
    );
    let topic = format!("bench.many.{}.idle", std::process::id());
    broker
        .create_topics(&[&topic, &format!("{topic}.dlq")])
        .await?;
    println!();
    println!(
        "{:>6} {:>9} {:>8} {:>9} {:>9} {:>8} {:>7} {:>6} {:>10} {:>8} {:>9} {:>9} {:>10} {:>7}  goal",
        "N",
        "connect s",
        "RSS MiB",
        "anon MiB",
        "file MiB",
        "peak MiB",
        "threads",
        "fds",
        "/metrics B",
        "gzip B",
        "scrape ms",
        "connected",
        "reconnects",
        "stop ms",
    );
    let mut daemon_fd_limit = None;
    let mut notes = Vec::new();
    for &n in &args.idle {
        if soft < n as u64 + SPARE_FDS {
            bail!(
                "N = {n} needs about {} open files in this process and in the daemon (one socket \
                 per stream), but the limit is {soft} (hard {hard}): raise the hard limit \
                 (`ulimit -Hn`, systemd's `LimitNOFILE=`, docker's `--ulimit nofile=`)",
                n as u64 + SPARE_FDS
            );
        }
        let row = idle_run(n, args.settle, broker, &topic, work).await?;
        print_idle_row(&row);
        notes.push(format!(
            "/metrics at N = {n}: {} sample lines per source; largest families: {}",
            row.series_per_source,
            row.largest_families
                .iter()
                .map(|(family, bytes)| format!(
                    "{family} {:.0}%",
                    *bytes as f64 * 100.0 / row.metrics_bytes.max(1) as f64
                ))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        daemon_fd_limit.get_or_insert(row.daemon_fd_limit);
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    if let Some((soft, hard)) = daemon_fd_limit {
        println!("the daemon's limit on open files (/proc/<pid>/limits): soft {soft}, hard {hard}");
    }
    println!(
        "gzip B: the /metrics body asked for with `Accept-Encoding: gzip`; n/a when the daemon \
         answers it uncompressed"
    );
    Ok(())
}

/// One daemon run with `n` idle SSE sources.
async fn idle_run(
    n: usize,
    settle: Duration,
    broker: &Broker,
    topic: &str,
    work: &Path,
) -> anyhow::Result<IdleRow> {
    let feed = IdleFeed::start().context("starting the idle feed server")?;
    let mut sources = String::with_capacity(n * 120);
    for i in 0..n {
        // Named as in the issue's own measurement (`s0` … `s999`): the names are in every
        // series of `/metrics`, so they weigh on its size.
        write!(
            sources,
            "[sources.{}]\ntype = \"sse\"\nurl = \"{}\"\ntopic = \"{topic}\"\n\n",
            idle_source(i),
            feed.url(i)
        )?;
    }
    let mut daemon =
        Daemon::start_sources(&broker.brokers(), &work.join(format!("idle-{n}")), &sources)?;
    let connect = wait_connected(&mut daemon, n, connect_timeout(n))
        .await
        .map_err(|error| {
            let stats = feed.stats();
            error.context(format!(
                "the feed server answered {} stream requests, {} streams open",
                stats.requests.load(std::sync::atomic::Ordering::Relaxed),
                stats.open.load(std::sync::atomic::Ordering::Relaxed),
            ))
        })?;
    tokio::time::sleep(settle).await;
    daemon.check_running(&format!("while {n} idle sources settled"))?;
    let pid = daemon.pid();
    let rss_kib = common::proc_status_kib(pid, "VmRSS:")?;
    let rss_anon_kib = common::proc_status_kib(pid, "RssAnon:")?;
    let rss_file_kib = common::proc_status_kib(pid, "RssFile:")?;
    let peak_rss_kib = daemon.peak_rss_kib()?;
    let threads = common::proc_status_count(pid, "Threads:")?;
    let fds = common::open_fds(pid)?;
    let daemon_fd_limit = common::open_files_limit(pid)?;

    let mut times = Vec::with_capacity(SCRAPES);
    let mut last = None;
    for _ in 0..SCRAPES {
        let fetched = Instant::now();
        let response = http_get_response(daemon.address, "/metrics", &[], HTTP_TIMEOUT)
            .await
            .map_err(|e| daemon.fail(format!("GET /metrics: {e}")))?;
        times.push(fetched.elapsed());
        last = Some(response);
    }
    times.sort();
    let metrics = last.context("no /metrics fetch")?;
    let text = String::from_utf8_lossy(&metrics.body);
    let gzip = http_get_response(
        daemon.address,
        "/metrics",
        &[("Accept-Encoding", "gzip")],
        HTTP_TIMEOUT,
    )
    .await
    .map_err(|e| daemon.fail(format!("GET /metrics with gzip: {e}")))?;
    let metrics_gzip_bytes = gzip
        .header("content-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("gzip"))
        .then_some(gzip.body.len());
    let stop = daemon.stop()?;
    Ok(IdleRow {
        n,
        connect,
        rss_kib,
        rss_anon_kib,
        rss_file_kib,
        peak_rss_kib,
        threads,
        fds,
        metrics_bytes: metrics.body.len(),
        metrics_gzip_bytes,
        scrape: times[times.len() / 2],
        connected_after: metric_sum(&text, "tributary_connected"),
        reconnects: metric_sum(&text, "tributary_reconnects_total"),
        stop,
        daemon_fd_limit,
        series_per_source: text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| line.contains(&format!("source=\"{}\"", idle_source(0))))
            .count(),
        largest_families: largest_families(&text, LARGEST_FAMILIES),
    })
}

/// Families [`IdleRow::largest_families`] names.
const LARGEST_FAMILIES: usize = 4;

/// The `count` metric families that take the most bytes of a scrape (their `# HELP` and
/// `# TYPE` lines included; a histogram's `_bucket`, `_sum` and `_count` lines count to it),
/// largest first.
fn largest_families(scrape: &str, count: usize) -> Vec<(String, usize)> {
    let mut bytes: BTreeMap<&str, usize> = BTreeMap::new();
    for line in scrape.lines() {
        let name = match line.strip_prefix("# ") {
            Some(comment) => comment.split(' ').nth(1).unwrap_or(""),
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        *bytes.entry(family).or_insert(0) += line.len() + 1;
    }
    let mut largest: Vec<(String, usize)> = bytes
        .into_iter()
        .map(|(family, bytes)| (family.to_owned(), bytes))
        .collect();
    largest.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    largest.truncate(count);
    largest
}

/// The name of the `i`-th idle source: `s<i>`.
fn idle_source(i: usize) -> String {
    format!("s{i}")
}

fn print_idle_row(row: &IdleRow) {
    let goal = match goal(row.n) {
        Some((rss_mb, metrics_kb)) => format!("RSS ≤ {rss_mb} MB, /metrics ≤ {metrics_kb} KB"),
        None => "—".to_owned(),
    };
    println!(
        "{:>6} {:>9.2} {:>8.1} {:>9.1} {:>9.1} {:>8.1} {:>7} {:>6} {:>10} {:>8} {:>9.1} {:>9} {:>10} {:>7}  {goal}",
        row.n,
        row.connect.as_secs_f64(),
        row.rss_kib as f64 / 1024.0,
        row.rss_anon_kib as f64 / 1024.0,
        row.rss_file_kib as f64 / 1024.0,
        row.peak_rss_kib as f64 / 1024.0,
        row.threads,
        row.fds,
        row.metrics_bytes,
        row.metrics_gzip_bytes
            .map_or_else(|| "n/a".to_owned(), |bytes| bytes.to_string()),
        row.scrape.as_secs_f64() * 1e3,
        row.connected_after,
        row.reconnects,
        row.stop.as_millis(),
    );
}

// ---------------------------------------------------------------------------------------------
// Waiting for the sources

/// Reads `/readyz` every [`READYZ_POLL`] until `n` sources are `connected`; returns the time
/// from the daemon's spawn. Fails when the daemon exits, or after `timeout` with what the
/// sources were doing.
pub async fn wait_connected(
    daemon: &mut Daemon,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        daemon.check_running(&format!("before its {n} sources were connected"))?;
        let seen = match http_get_response(daemon.address, "/readyz", &[], HTTP_TIMEOUT).await {
            Ok(response) => match SourceStates::of(&response.body) {
                Ok(states) if states.connected() >= n => return Ok(daemon.started.elapsed()),
                Ok(states) => states.describe(),
                Err(error) => format!("an unreadable /readyz ({error})"),
            },
            Err(error) => format!("GET /readyz: {error}"),
        };
        if Instant::now() > deadline {
            return Err(daemon.fail(format!(
                "{n} sources were not all connected within {timeout:?} of the daemon's spawn; \
                 last seen: {seen}"
            )));
        }
        tokio::time::sleep(READYZ_POLL).await;
    }
}

/// The sources of a `/readyz` answer, counted by state.
struct SourceStates {
    counts: BTreeMap<String, usize>,
    /// One source's error detail (a `reconnecting` or `failed` state), if any.
    example: Option<String>,
}

impl SourceStates {
    fn of(body: &[u8]) -> anyhow::Result<Self> {
        let readyz: serde_json::Value = serde_json::from_slice(body)?;
        let sources = readyz["sources"]
            .as_object()
            .context("no `sources` object")?;
        let mut counts = BTreeMap::new();
        let mut example = None;
        for (name, state) in sources {
            let kind = state["state"].as_str().unwrap_or("?").to_owned();
            if example.is_none() && !state["detail"].is_null() {
                example = Some(format!("{name}: {kind} {}", state["detail"]));
            }
            *counts.entry(kind).or_insert(0) += 1;
        }
        Ok(SourceStates { counts, example })
    }

    fn connected(&self) -> usize {
        self.counts.get("connected").copied().unwrap_or(0)
    }

    fn describe(&self) -> String {
        let mut text = self
            .counts
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(example) = &self.example {
            write!(text, " (e.g. {example})").expect("writing to a String cannot fail");
        }
        text
    }
}

/// The daemon's `/metrics`, as text.
pub async fn metrics_text(address: SocketAddr) -> anyhow::Result<String> {
    let response = http_get_response(address, "/metrics", &[], HTTP_TIMEOUT)
        .await
        .context("GET /metrics")?;
    Ok(String::from_utf8_lossy(&response.body).into_owned())
}
