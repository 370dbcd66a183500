//! SSE → Kafka throughput: the `tributary` daemon against a plain rdkafka producer loop.
//!
//! ```text
//! cargo bench --bench sse_to_kafka -- [--broker tansu|mock] [--events N] [--rss-multiple K]
//! ```
//!
//! Phases, all against one broker on 127.0.0.1 (tansu as a child process, or librdkafka's mock
//! cluster in this process), each into a fresh topic with 8 partitions:
//!
//! 1. feed ceiling: how fast this process's replay server hands N events to a bare TCP reader
//!    (shows the feed is not the bottleneck);
//! 2. raw producer ceiling: one rdkafka producer with the daemon's settings sends the same N
//!    records (payload, key, 5 lineage headers) as fast as it can, timed until every delivery
//!    is acknowledged;
//! 3. the daemon: the real `tributary` binary (release build) runs as a child process, reading
//!    the N events over SSE; timed from spawn until its `/metrics` reports N records produced
//!    (acknowledged). Its peak RSS (VmHWM) is read before it is stopped with SIGTERM;
//! 4. the daemon again on K·N events, to show that peak RSS does not grow with the feed.
//!
//! Figures are printed, never judged: this is a benchmark, not a test. See README.md, "Benchmark".

use std::{
    fs,
    io::ErrorKind,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    mocking::MockCluster,
    producer::{
        BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext,
        ThreadedProducer,
    },
    types::RDKafkaErrorCode,
    ClientContext,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tributary::{
    kafka_admin,
    replay::{self, ReplayOptions, ReplayServer},
    router::{
        TimestampCache, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_FETCHED_AT, HEADER_SOURCE,
        HEADER_URL,
    },
    sinks::kafka::{DEFAULT_PROPERTIES, ENFORCED_PROPERTIES},
};

/// Partitions of every topic the benchmark creates.
const PARTITIONS: i32 = 8;
/// The daemon's source name (the `source` label of its metrics).
const SOURCE: &str = "bench";
/// Default number of events per run.
const DEFAULT_EVENTS: usize = 200_000;
/// Default size of the long daemon run, in multiples of `--events`.
const DEFAULT_RSS_MULTIPLE: usize = 4;
/// How often the daemon's `/metrics` is scraped while it runs.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(20);
/// A run whose produced count does not move for this long is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
usage: cargo bench --bench sse_to_kafka -- [--broker tansu|mock] [--events N] [--rss-multiple K]

  --broker tansu   (default) a tansu broker child process with in-memory storage, from
                   $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --broker mock    librdkafka's mock cluster, in the benchmark process
  --events N       events per run (default 200000)
  --rss-multiple K the second daemon run reads K*N events (default 4)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum BrokerKind {
    Tansu,
    Mock,
}

struct Args {
    broker: BrokerKind,
    events: usize,
    rss_multiple: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Tansu,
        events: DEFAULT_EVENTS,
        rss_multiple: DEFAULT_RSS_MULTIPLE,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            // `cargo bench` appends `--bench` to the command line of every bench target.
            "--bench" => {}
            "-h" | "--help" => return Err(String::new()),
            "--broker" => {
                args.broker = match value("`tansu` or `mock`")?.as_str() {
                    "tansu" => BrokerKind::Tansu,
                    "mock" => BrokerKind::Mock,
                    other => return Err(format!("unknown broker `{other}`")),
                }
            }
            "--events" => {
                args.events = value("a number")?
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--events: {e}"))?;
                if args.events == 0 {
                    return Err("--events must be at least 1".into());
                }
            }
            "--rss-multiple" => {
                args.rss_multiple = value("a number")?
                    .parse()
                    .map_err(|e| format!("--rss-multiple: {e}"))?;
                if args.rss_multiple < 2 {
                    return Err("--rss-multiple must be at least 2".into());
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if message.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("sse_to_kafka: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sse_to_kafka: {error:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Broker

/// A Kafka-protocol broker on 127.0.0.1, stopped when dropped.
enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu {
        child: Child,
        brokers: String,
        version: String,
    },
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Broker {
    fn start(kind: BrokerKind, logs: &Path) -> anyhow::Result<Self> {
        match kind {
            BrokerKind::Mock => Ok(Broker::Mock(
                MockCluster::new(1).context("starting librdkafka's mock cluster")?,
            )),
            BrokerKind::Tansu => Self::tansu(logs),
        }
    }

    fn tansu(logs: &Path) -> anyhow::Result<Self> {
        let binary = match std::env::var_os("TRIBUTARY_TEST_TANSU") {
            Some(path) => PathBuf::from(path),
            None => std::env::var_os("HOME")
                .map(|home| Path::new(&home).join(".cargo/bin/tansu"))
                .unwrap_or_default(),
        };
        if !binary.is_file() {
            bail!(
                "tansu not found at `{}`: install it (`cargo install tansu`) or set \
                 TRIBUTARY_TEST_TANSU to its path, or run with `--broker mock`",
                binary.display()
            );
        }
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = fs::File::create(logs.join("tansu.log"))?;
        let mut child = Command::new(&binary)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting `{}`", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "tansu exited ({status}) before listening; its log:\n{}",
                    tail(&logs.join("tansu.log"))
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tansu did not accept connections on 127.0.0.1:{port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Broker::Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
            version,
        })
    }

    fn brokers(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Tansu { brokers, .. } => brokers.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Broker::Mock(_) => format!(
                "librdkafka mock cluster (in the benchmark process) at {}",
                self.brokers()
            ),
            Broker::Tansu { version, .. } => format!(
                "{} (child process, memory storage) at {}",
                if version.is_empty() { "tansu" } else { version },
                self.brokers()
            ),
        }
    }

    /// Creates `topics` with [`PARTITIONS`] partitions each.
    async fn create_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        match self {
            Broker::Mock(cluster) => {
                for topic in topics {
                    cluster
                        .create_topic(topic, PARTITIONS, 1)
                        .with_context(|| format!("creating mock topic `{topic}`"))?;
                }
            }
            Broker::Tansu { brokers, .. } => {
                let list: Vec<(&str, i32)> = topics.iter().map(|t| (*t, PARTITIONS)).collect();
                kafka_admin::create_topics(brokers, &list)
                    .await
                    .with_context(|| format!("creating topics {topics:?}"))?;
            }
        }
        Ok(())
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The panic messages and the last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.contains("panicked at"))
        .flat_map(|(i, _)| lines[i..(i + 2).min(lines.len())].iter().copied())
        .collect();
    shown.extend(&lines[lines.len().saturating_sub(10)..]);
    shown.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Figures

/// One timed phase.
struct Figures {
    records: usize,
    payload_bytes: u64,
    elapsed: Duration,
    /// CPU time (user + system) the producing process spent: a figure that, unlike
    /// throughput, does not depend on what else the two cores were doing.
    cpu: Duration,
}

impl Figures {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_micros_per_record(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.records as f64
    }
    fn megabytes_per_second(&self) -> f64 {
        self.payload_bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Total payload bytes of the first `count` replayed events.
fn payload_bytes(recorded: &[&str], count: usize) -> u64 {
    let cycle: u64 = recorded.iter().map(|e| e.len() as u64).sum();
    let whole = (count / recorded.len()) as u64 * cycle;
    let rest: u64 = recorded[..count % recorded.len()]
        .iter()
        .map(|e| e.len() as u64)
        .sum();
    whole + rest
}

/// A daemon run.
struct DaemonRun {
    figures: Figures,
    /// Spawn → first record acknowledged (process start, producer, SSE connection).
    first_record: Duration,
    /// Peak resident set (VmHWM), KiB.
    peak_rss_kib: u64,
    /// Records the daemon sent to the dead-letter topic (expected: 0).
    dead_lettered: u64,
    /// SIGTERM → exit.
    shutdown: Duration,
}

/// Runs every phase in a temporary directory, kept (with the logs) when a phase fails.
async fn run(args: Args) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let result = phases(&args, work.path()).await;
    if result.is_err() {
        eprintln!("logs and configs kept in {}", work.keep().display());
    }
    result
}

async fn phases(args: &Args, work: &Path) -> anyhow::Result<()> {
    let n = args.events;
    let recorded = replay::recorded_wikimedia_events();
    let average_payload =
        recorded.iter().map(|e| e.len()).sum::<usize>() as f64 / recorded.len() as f64;
    let broker = Broker::start(args.broker, work)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("SSE → Kafka benchmark");
    println!("  broker   {}", broker.describe());
    println!(
        "  records  {n} per run; payload = recorded Wikimedia JSON, avg {average_payload:.0} B; \
         key = event id; 5 lineage headers; topics of {PARTITIONS} partitions"
    );
    println!("  producer {}", properties_line());
    println!("  machine  {cores} cores");
    println!();

    let feed = feed_ceiling(n, &recorded).await?;
    print_row("feed ceiling (replay server → socket)", &feed);

    // Each daemon run is compared with a raw run of the same length, made just before it, so
    // both see the broker in the same state (the first run also pays for a cold broker).
    let long_n = n * args.rss_multiple;
    let raw = raw_run(&broker, n, "n").await?;
    print_row("raw producer ceiling, N (rdkafka loop)", &raw);
    let short = daemon_run(&broker, n, "n", work).await?;
    print_row("daemon, N events", &short.figures);
    let raw_long = raw_run(&broker, long_n, "kn").await?;
    print_row(
        &format!("raw producer ceiling, {}N", args.rss_multiple),
        &raw_long,
    );
    let long = daemon_run(&broker, long_n, "kn", work).await?;
    print_row(
        &format!("daemon, {}N events", args.rss_multiple),
        &long.figures,
    );

    println!();
    println!(
        "daemon / raw producer       {:.2} (N)   {:.2} ({}N)   target ≥ 0.80",
        short.figures.records_per_second() / raw.records_per_second(),
        long.figures.records_per_second() / raw_long.records_per_second(),
        args.rss_multiple
    );
    println!(
        "daemon peak RSS (VmHWM)     {:.1} MiB (N = {n})   {:.1} MiB ({}N = {long_n})   ratio {:.2}",
        short.peak_rss_kib as f64 / 1024.0,
        long.peak_rss_kib as f64 / 1024.0,
        args.rss_multiple,
        long.peak_rss_kib as f64 / short.peak_rss_kib.max(1) as f64
    );
    println!(
        "daemon spawn → first ack    {} ms (N)   {} ms ({}N)",
        short.first_record.as_millis(),
        long.first_record.as_millis(),
        args.rss_multiple
    );
    println!(
        "daemon SIGTERM → exit       {} ms (N)   {} ms ({}N)",
        short.shutdown.as_millis(),
        long.shutdown.as_millis(),
        args.rss_multiple
    );
    println!(
        "dead-lettered records       {} (N)   {} ({}N)   expected 0",
        short.dead_lettered, long.dead_lettered, args.rss_multiple
    );
    Ok(())
}

/// The raw producer ceiling for `n` records, into a fresh topic.
async fn raw_run(broker: &Broker, n: usize, tag: &str) -> anyhow::Result<Figures> {
    let topic = format!("bench.raw.{tag}.{}", std::process::id());
    broker.create_topics(&[&topic]).await?;
    let brokers = broker.brokers();
    tokio::task::spawn_blocking(move || raw_producer(&brokers, &topic, n)).await?
}

/// The daemon's producer properties: its defaults, then the ones the delivery guarantee fixes.
fn producer_properties() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    DEFAULT_PROPERTIES.iter().chain(ENFORCED_PROPERTIES)
}

fn properties_line() -> String {
    producer_properties()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_row(label: &str, figures: &Figures) {
    println!(
        "{label:<40} {:>9} records {:>7.2} s {:>10.0} records/s {:>7.1} MB/s {:>6.2} CPU µs/record",
        figures.records,
        figures.elapsed.as_secs_f64(),
        figures.records_per_second(),
        figures.megabytes_per_second(),
        figures.cpu_micros_per_record(),
    );
}

// ---------------------------------------------------------------------------------------------
// Phase 1: how fast the replay server serves

/// Reads `n` events from a generated replay feed with a bare TCP reader that only counts
/// event terminators (`\n\n`), from connect to the last event.
async fn feed_ceiling(n: usize, recorded: &[&str]) -> anyhow::Result<Figures> {
    let feed = ReplayServer::start_wikimedia(n, ReplayOptions::default()).await?;
    let address = feed_address(&feed.url())?;
    let started = Instant::now();
    let cpu_before = process_cpu(std::process::id())?;
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET /stream HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut events = 0usize;
    let mut previous = 0u8;
    while events < n {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            bail!("the replay server closed the stream after {events} of {n} events");
        }
        for &byte in &buffer[..read] {
            if byte == b'\n' && previous == b'\n' {
                events += 1;
            }
            previous = byte;
        }
    }
    Ok(Figures {
        records: n,
        payload_bytes: payload_bytes(recorded, n),
        elapsed: started.elapsed(),
        cpu: process_cpu(std::process::id())?.saturating_sub(cpu_before),
    })
}

fn feed_address(url: &str) -> anyhow::Result<SocketAddr> {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.parse().ok())
        .with_context(|| format!("unexpected feed URL `{url}`"))
}

// ---------------------------------------------------------------------------------------------
// Phase 2: the raw producer ceiling

/// Counts delivery reports.
struct Counting {
    acknowledged: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acknowledged.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Sends the `n` records the daemon would send (same payloads, keys and lineage headers) with
/// one producer configured like the daemon's, timed from creating the producer until every
/// record is acknowledged.
fn raw_producer(brokers: &str, topic: &str, n: usize) -> anyhow::Result<Figures> {
    let recorded = replay::recorded_wikimedia_events();
    let url = "http://127.0.0.1:1/stream";
    let started = Instant::now();
    let cpu_before = process_cpu(std::process::id())?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in producer_properties() {
        config.set(*key, *value);
    }
    let context = Counting {
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<Counting> = config.create_with_context(context)?;
    let mut timestamps = TimestampCache::default();
    for i in 0..n {
        let id = replay::wikimedia_event_id(i);
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: HEADER_SOURCE,
                value: Some(SOURCE),
            })
            .insert(Header {
                key: HEADER_URL,
                value: Some(url),
            })
            .insert(Header {
                key: HEADER_FETCHED_AT,
                value: Some(timestamps.rfc3339(SystemTime::now())),
            })
            .insert(Header {
                key: HEADER_EVENT_ID,
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: HEADER_EVENT_TYPE,
                value: Some("message"),
            });
        let mut record = BaseRecord::to(topic)
            .key(id.as_bytes())
            .payload(recorded[i % recorded.len()].as_bytes())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => bail!("raw producer: record {i} refused: {error}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("raw producer: flush")?;
    let elapsed = started.elapsed();
    let context = producer.context();
    let acknowledged = context.acknowledged.load(Ordering::Relaxed);
    let failed = context.failed.load(Ordering::Relaxed);
    if acknowledged != n as u64 || failed != 0 {
        bail!("raw producer: {acknowledged} of {n} records acknowledged, {failed} failed");
    }
    Ok(Figures {
        records: n,
        payload_bytes: payload_bytes(&recorded, n),
        elapsed,
        cpu: process_cpu(std::process::id())?.saturating_sub(cpu_before),
    })
}

// ---------------------------------------------------------------------------------------------
// Phase 3: the daemon

/// Runs the `tributary` binary on a generated feed of `n` events until all are acknowledged.
async fn daemon_run(
    broker: &Broker,
    n: usize,
    label: &str,
    work: &Path,
) -> anyhow::Result<DaemonRun> {
    let topic = format!("bench.sse.{}.{label}", std::process::id());
    let dead_letter_topic = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dead_letter_topic]).await?;
    let feed = ReplayServer::start_wikimedia(n, ReplayOptions::default()).await?;
    let dir = work.join(format!("daemon-{label}"));
    fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let metrics_address: SocketAddr = ([127, 0, 0, 1], port).into();
    let config_path = dir.join("tributary.toml");
    fs::write(
        &config_path,
        format!(
            r#"[kafka]
brokers = "{brokers}"

[checkpoint]
dir = "{state}"

[server]
listen = "{metrics_address}"

[sources.{SOURCE}]
type = "sse"
url = "{url}"
topic = "{topic}"
"#,
            brokers = broker.brokers(),
            state = dir.join("state").display(),
            url = feed.url(),
        ),
    )?;
    let log_path = dir.join("tributary.log");
    let log = fs::File::create(&log_path)?;

    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning the tributary binary")?;
    let mut daemon = Daemon { child };
    let pid = daemon.child.id();
    let fail = |message: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{message}\nthe daemon's log ({}):\n{}",
            log_path.display(),
            tail(&log_path)
        )
    };

    let mut first_record = None;
    let mut produced = 0u64;
    let mut last_progress = Instant::now();
    let scrape_text = loop {
        if let Some(status) = daemon.child.try_wait()? {
            return Err(fail(format!(
                "the daemon exited ({status}) after {produced} of {n} records"
            )));
        }
        if let Ok(text) = scrape(metrics_address).await {
            let now = metric(&text, "tributary_records_produced_total");
            if now > produced {
                produced = now;
                last_progress = Instant::now();
                first_record.get_or_insert_with(|| started.elapsed());
            }
            if produced >= n as u64 {
                break text;
            }
        }
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(fail(format!(
                "no progress for {STALL_TIMEOUT:?}: {produced} of {n} records produced"
            )));
        }
        tokio::time::sleep(SCRAPE_INTERVAL).await;
    };
    let elapsed = started.elapsed();
    let peak_rss_kib =
        proc_status_kib(pid, "VmHWM:").with_context(|| format!("reading /proc/{pid}/status"))?;
    let dead_lettered = metric(&scrape_text, "tributary_records_dead_lettered_total");
    let cpu = process_cpu(pid)?;

    let stopping = Instant::now();
    let status = daemon.terminate(Duration::from_secs(60))?;
    let shutdown = stopping.elapsed();
    if !status.success() {
        return Err(fail(format!(
            "the daemon exited with {status} after SIGTERM"
        )));
    }
    drop(feed);
    Ok(DaemonRun {
        figures: Figures {
            records: n,
            payload_bytes: payload_bytes(&replay::recorded_wikimedia_events(), n),
            elapsed,
            cpu,
        },
        first_record: first_record.unwrap_or(elapsed),
        peak_rss_kib,
        dead_lettered,
        shutdown,
    })
}

/// The daemon child process; killed if still running when dropped (after an error).
struct Daemon {
    child: Child,
}

impl Daemon {
    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that).
    fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) with a pid of our own child process and a valid signal number.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("SIGTERM: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the daemon did not exit within {timeout:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /metrics` over a fresh connection (HTTP/1.0: the body ends at close, unchunked).
async fn scrape(address: SocketAddr) -> std::io::Result<String> {
    let request = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::with_capacity(16 * 1024);
        stream.read_to_end(&mut response).await?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into()))
}

/// The sum of metric `family` over the series of the benchmark's source in a scrape.
fn metric(scrape: &str, family: &str) -> u64 {
    let label = format!("source=\"{SOURCE}\"");
    scrape
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(&label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat` (clock ticks
/// of 10 ms, the Linux default `USER_HZ`).
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let after_name = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields.get(index).context("short /proc stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after `state` (field 3).
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A `kB` field (`VmHWM:`, `VmRSS:`) of `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no `{field}` line"))
}
