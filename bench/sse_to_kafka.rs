//! SSE → Kafka throughput: the `tributary` daemon against a plain rdkafka producer loop.
//!
//! ```text
//! cargo bench --bench sse_to_kafka -- [--broker kafka|mock|tansu] [--events N] [--rss-multiple K]
//!                                       [--transform PROGRAM] [--schema FILE] [--exactly-once]
//! ```
//!
//! Phases, all against one broker on 127.0.0.1 (Apache Kafka or tansu as child
//! processes, or librdkafka's mock cluster in this process), each into a fresh topic with 8 partitions:
//!
//! 1. feed ceiling: how fast this process's replay server hands N events to a bare TCP reader
//!    (shows the feed is not the bottleneck);
//! 2. raw producer ceiling: one rdkafka producer with the daemon's settings sends the same N
//!    records (payload, key, 5 lineage headers) as fast as it can, timed until every delivery
//!    is acknowledged (after one such run that only warms the broker up);
//! 3. the daemon: the real `tributary` binary (release build) runs as a child process, reading
//!    the N events over SSE; timed from spawn until its `/metrics` reports N records produced
//!    (acknowledged). Its peak RSS (VmHWM) is read before it is stopped with SIGTERM;
//! 4. the daemon again on K·N events, to show that peak RSS does not grow with the feed.
//!
//! Figures are printed, never judged: this is a benchmark, not a test. See README.md, "Benchmark".
//! The broker, the daemon process, the raw producer and the printing live in `common/`.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use common::{
    print_comparison, print_row, process_cpu, properties_line, Broker, BrokerKind, Figures, Goals,
    RawRecord, PARTITIONS,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tributary::cli::demo::replay::{self, ReplayOptions, ReplayServer};

/// Default number of events per run.
const DEFAULT_EVENTS: usize = 200_000;
/// Default size of the long daemon run, in multiples of `--events`.
const DEFAULT_RSS_MULTIPLE: usize = 4;
/// The goals of a run with `--transform`: the jq program runs on every event.
const TRANSFORM_GOALS: Goals = Goals {
    min_ratio: 0.60,
    max_cpu_ratio: 2.0,
};
/// Longest the feed ceiling may take.
const FEED_TIMEOUT: Duration = Duration::from_secs(300);

const USAGE: &str = "\
usage: cargo bench --bench sse_to_kafka -- [--broker kafka|mock|tansu] [--events N] [--rss-multiple K]
                                           [--transform PROGRAM] [--schema FILE] [--exactly-once]

  --broker kafka   (default) Apache Kafka, one KRaft node (tests/kafka/kafka.sh; Java 17
                   and Maven), log on disk
  --broker mock    librdkafka's mock cluster, in the benchmark process
  --broker tansu   a tansu broker child process with in-memory storage, from
                   $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --events N       events per run (default 200000)
  --rss-multiple K the second daemon run reads K*N events (default 4)
  --transform P    the daemon's source runs the jq program P on each event (the record stage);
                   P must keep every event (e.g. `select(.type == \"edit\") | {…}`), as the run
                   waits for N records; MB/s then counts the events' bytes, not the records'
  --schema FILE    the daemon's source checks each record against this JSON Schema file
  --exactly-once   also runs the daemon with `delivery = \"exactly_once\"` (the Kafka store,
                   1 s transactions) for N and K*N events, and compares it with at-least-once";

struct Args {
    broker: BrokerKind,
    events: usize,
    rss_multiple: usize,
    transform: Option<String>,
    schema: Option<String>,
    exactly_once: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Kafka,
        events: DEFAULT_EVENTS,
        rss_multiple: DEFAULT_RSS_MULTIPLE,
        transform: None,
        schema: None,
        exactly_once: false,
    };
    common::parse_flags(|name, value| {
        match name {
            "--broker" => args.broker = common::broker_kind(&value("`kafka`, `mock` or `tansu`")?)?,
            "--events" => args.events = common::count(name, &value("a number")?, 1)?,
            "--rss-multiple" => args.rss_multiple = common::count(name, &value("a number")?, 2)?,
            "--transform" => args.transform = Some(value("a jq program")?),
            "--schema" => args.schema = Some(value("a JSON Schema file")?),
            "--exactly-once" => args.exactly_once = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(args)
}

fn main() -> ExitCode {
    common::main("sse_to_kafka", USAGE, parse_args(), phases)
}

async fn phases(args: Args, work: &Path) -> anyhow::Result<()> {
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
    if let Some(program) = &args.transform {
        println!("  stage    transform = '{program}'");
    }
    if let Some(schema) = &args.schema {
        println!("  stage    schema = {schema}");
    }
    println!("  producer {}", properties_line());
    println!("  machine  {cores} cores");
    println!();

    let feed = feed_ceiling(n, &recorded).await?;
    print_row("feed ceiling (replay server → socket)", &feed);

    // Each daemon run is compared with a raw run of the same length, made just before it, so
    // both see the broker in the same state. A first raw run warms the broker up (a JVM
    // broker's first records run interpreted code) and is not compared.
    let long_n = n * args.rss_multiple;
    let warm_up = raw_run(&broker, n, "warm-up").await?;
    print_row("broker warm-up (raw, not compared)", &warm_up);
    let raw = raw_run(&broker, n, "n").await?;
    print_row("raw producer ceiling, N (rdkafka loop)", &raw);
    let mut stage = Stage {
        transform: args.transform.as_deref(),
        schema: args.schema.as_deref(),
        exactly_once: false,
    };
    let short = daemon_run(&broker, n, "n", work, &stage).await?;
    print_row("daemon, N events", &short.figures);
    let raw_long = raw_run(&broker, long_n, "kn").await?;
    print_row(
        &format!("raw producer ceiling, {}N", args.rss_multiple),
        &raw_long,
    );
    let long = daemon_run(&broker, long_n, "kn", work, &stage).await?;
    print_row(
        &format!("daemon, {}N events", args.rss_multiple),
        &long.figures,
    );

    // The record stage (a jq program or a schema check per event) is work the raw producer
    // does not do: its goals are wider.
    let goals = if args.transform.is_some() {
        TRANSFORM_GOALS
    } else {
        common::FEED_GOALS
    };
    print_comparison(n, args.rss_multiple, &raw, &short, &raw_long, &long, goals);
    if args.exactly_once {
        stage.exactly_once = true;
        println!();
        // The cluster's first transactional producer creates the transaction state topic and
        // loads its coordinator: a cost paid once per Kafka cluster, not per run.
        let warm_up = daemon_run(&broker, n / 10, "eos-warm-up", work, &stage).await?;
        print_row("exactly-once warm-up (not compared)", &warm_up.figures);
        let eos_short = daemon_run(&broker, n, "eos-n", work, &stage).await?;
        print_row("daemon exactly-once, N events", &eos_short.figures);
        let eos_long = daemon_run(&broker, long_n, "eos-kn", work, &stage).await?;
        print_row(
            &format!("daemon exactly-once, {}N events", args.rss_multiple),
            &eos_long.figures,
        );
        common::print_exactly_once(args.rss_multiple, &short, &long, &eos_short, &eos_long);
    }
    Ok(())
}

/// The raw producer ceiling for `n` records (the daemon's: payload, key = event id, event id
/// and type `message`), into a fresh topic.
async fn raw_run(broker: &Broker, n: usize, tag: &str) -> anyhow::Result<Figures> {
    let recorded = replay::recorded_wikimedia_events();
    let bytes = common::cycled_bytes(&recorded, n);
    common::raw_run(
        broker,
        n,
        tag,
        "http://127.0.0.1:1/stream",
        bytes,
        move |i, send| {
            let id = replay::wikimedia_event_id(i);
            send(RawRecord {
                key: Some(id.as_bytes()),
                payload: recorded[i % recorded.len()].as_bytes(),
                event_id: Some(&id),
                event_type: Some("message"),
            })
        },
    )
    .await
}

/// The record stage settings of the daemon's source.
struct Stage<'a> {
    /// A jq program.
    transform: Option<&'a str>,
    /// A JSON Schema file.
    schema: Option<&'a str>,
    /// `delivery = "exactly_once"`.
    exactly_once: bool,
}

/// Runs the `tributary` binary on a generated feed of `n` events until all are acknowledged,
/// with the record `stage` settings in its source.
async fn daemon_run(
    broker: &Broker,
    n: usize,
    label: &str,
    work: &Path,
    stage: &Stage<'_>,
) -> anyhow::Result<common::DaemonRun> {
    let topic = format!("bench.sse.{}.{label}", std::process::id());
    let dead_letter_topic = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dead_letter_topic]).await?;
    let feed = ReplayServer::start_wikimedia(n, ReplayOptions::default()).await?;
    let mut source = format!(
        "type = \"sse\"\nurl = \"{url}\"\ntopic = \"{topic}\"\n",
        url = feed.url()
    );
    if let Some(program) = stage.transform {
        source.push_str(&format!("transform = '''{program}'''\n"));
    }
    if let Some(schema) = stage.schema {
        let path = std::fs::canonicalize(schema)?;
        source.push_str(&format!("schema = \"{}\"\n", path.display()));
    }
    if stage.exactly_once {
        source.push_str(common::EXACTLY_ONCE);
        source.push('\n');
    }
    let bytes = common::cycled_bytes(&replay::recorded_wikimedia_events(), n);
    let dir = work.join(format!("daemon-{label}"));
    let run = common::daemon_run(&broker.brokers(), &dir, &source, n, bytes).await?;
    drop(feed);
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// How fast the replay server serves

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
    let read_all = async {
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
        Ok(())
    };
    tokio::time::timeout(FEED_TIMEOUT, read_all)
        .await
        .with_context(|| format!("the feed did not serve {n} events within {FEED_TIMEOUT:?}"))??;
    Ok(Figures {
        records: n,
        payload_bytes: common::cycled_bytes(recorded, n),
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
