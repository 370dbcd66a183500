//! `http_stream` → Kafka throughput: the `tributary` daemon reading NDJSON of the recorded
//! Wikimedia events against a plain rdkafka producer loop.
//!
//! ```text
//! cargo bench --bench http_stream_to_kafka -- [--broker kafka|mock|tansu] [--events N]
//!                                             [--rss-multiple K]
//! ```
//!
//! Phases, all against one broker on 127.0.0.1, each into a fresh topic with 8 partitions:
//!
//! 1. raw producer ceiling: one rdkafka producer with the daemon's settings sends the same N
//!    records (payload, key = `meta.id`, the lineage headers) as fast as it can, timed until
//!    every delivery is acknowledged (after one such run that only warms the broker up);
//! 2. the daemon: the real `tributary` binary runs as a child process, reading the N events as
//!    one NDJSON response (one recorded Wikimedia recentchange event per line, cycled) from a
//!    server in this process; `position = "/meta/offset"`, `key = "/meta/id"`; timed from spawn
//!    until its `/metrics` reports N records produced (acknowledged), peak RSS read before
//!    SIGTERM;
//! 3. the same two on K·N events.
//!
//! Figures are printed, never judged: this is a benchmark, not a test. The broker, the daemon
//! process, the raw producer and the printing live in `common/`, shared with `sse_to_kafka`.

mod common;

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use bytes::Bytes;
use common::{print_comparison, print_row, properties_line, Broker, BrokerKind, RawRecord};
use futures::StreamExt as _;
use tributary::cli::demo::replay;

/// Default number of events per run.
const DEFAULT_EVENTS: usize = 200_000;
/// Default size of the long runs, in multiples of `--events`.
const DEFAULT_RSS_MULTIPLE: usize = 4;

const USAGE: &str = "\
usage: cargo bench --bench http_stream_to_kafka -- [--broker kafka|mock|tansu] [--events N]
                                                   [--rss-multiple K]

  --broker kafka   (default) Apache Kafka, one KRaft node (tests/kafka/kafka.sh; Java 17
                   and Maven), log on disk
  --broker mock    librdkafka's mock cluster, in the benchmark process
  --broker tansu   a tansu broker child process with in-memory storage, from
                   $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --events N       events per run (default 200000)
  --rss-multiple K the second runs read K*N events (default 4)";

struct Args {
    broker: BrokerKind,
    events: usize,
    rss_multiple: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Kafka,
        events: DEFAULT_EVENTS,
        rss_multiple: DEFAULT_RSS_MULTIPLE,
    };
    common::parse_flags(|name, value| {
        match name {
            "--broker" => args.broker = common::broker_kind(&value("`kafka`, `mock` or `tansu`")?)?,
            "--events" => args.events = common::count(name, &value("a number")?, 1)?,
            "--rss-multiple" => args.rss_multiple = common::count(name, &value("a number")?, 2)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(args)
}

fn main() -> ExitCode {
    common::main("http_stream_to_kafka", USAGE, parse_args(), phases)
}

/// One recorded event: its line, its `meta.id` (the key) and `meta.offset` (the position).
struct Recorded {
    line: &'static str,
    id: String,
    offset: String,
}

fn recorded() -> anyhow::Result<Vec<Recorded>> {
    replay::recorded_wikimedia_events()
        .into_iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)?;
            let id = value["meta"]["id"]
                .as_str()
                .context("a recorded event without meta.id")?
                .to_owned();
            let offset = value["meta"]["offset"].to_string();
            Ok(Recorded { line, id, offset })
        })
        .collect()
}

async fn phases(args: Args, work: &Path) -> anyhow::Result<()> {
    let n = args.events;
    let recorded = Arc::new(recorded()?);
    let lines: Vec<&str> = recorded.iter().map(|r| r.line).collect();
    let average_payload = lines.iter().map(|e| e.len()).sum::<usize>() as f64 / lines.len() as f64;
    let broker = Broker::start(args.broker, work)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("http_stream (NDJSON) → Kafka benchmark");
    println!("  broker   {}", broker.describe());
    println!(
        "  records  {n} per run; payload = recorded Wikimedia JSON, avg {average_payload:.0} B; \
         key = meta.id; position = meta.offset; 5 lineage headers; topics of {} partitions",
        common::PARTITIONS
    );
    println!("  producer {}", properties_line());
    println!("  machine  {cores} cores");
    println!();

    let long_n = n * args.rss_multiple;
    let warm_up = raw_run(&broker, &recorded, n, "warm-up").await?;
    print_row("broker warm-up (raw, not compared)", &warm_up);
    let raw = raw_run(&broker, &recorded, n, "n").await?;
    print_row("raw producer ceiling, N (rdkafka loop)", &raw);
    let short = daemon_run(&broker, &lines, n, "n", work).await?;
    print_row("daemon, N events", &short.figures);
    let raw_long = raw_run(&broker, &recorded, long_n, "kn").await?;
    print_row(
        &format!("raw producer ceiling, {}N", args.rss_multiple),
        &raw_long,
    );
    let long = daemon_run(&broker, &lines, long_n, "kn", work).await?;
    print_row(
        &format!("daemon, {}N events", args.rss_multiple),
        &long.figures,
    );
    print_comparison(
        n,
        args.rss_multiple,
        &raw,
        &short,
        &raw_long,
        &long,
        common::FEED_GOALS,
    );
    Ok(())
}

/// The raw producer ceiling for `n` records as the daemon makes them (payload, key =
/// `meta.id`, event id = `meta.offset`, no event type), into a fresh topic.
async fn raw_run(
    broker: &Broker,
    recorded: &Arc<Vec<Recorded>>,
    n: usize,
    tag: &str,
) -> anyhow::Result<common::Figures> {
    let lines: Vec<&str> = recorded.iter().map(|r| r.line).collect();
    let bytes = common::cycled_bytes(&lines, n);
    let recorded = Arc::clone(recorded);
    common::raw_run(
        broker,
        n,
        tag,
        "http://127.0.0.1:1/recentchange.ndjson",
        bytes,
        move |i, send| {
            let event = &recorded[i % recorded.len()];
            send(RawRecord {
                key: Some(event.id.as_bytes()),
                payload: event.line.as_bytes(),
                event_id: Some(&event.offset),
                event_type: None,
            })
        },
    )
    .await
}

/// Serves `n` recorded events as one NDJSON response on 127.0.0.1 and returns its URL. The
/// response stays open after the last line, as a live feed does (a response that ended would
/// be asked for again, and served again while the daemon still produces the first copy). The
/// server task ends with the runtime.
async fn ndjson_server(lines: &[&str], n: usize) -> anyhow::Result<String> {
    let mut body = Vec::with_capacity(common::cycled_bytes(lines, n) as usize + n);
    for i in 0..n {
        body.extend_from_slice(lines[i % lines.len()].as_bytes());
        body.push(b'\n');
    }
    let body = Bytes::from(body);
    let app = axum::Router::new().route(
        "/recentchange.ndjson",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) })
                    .chain(futures::stream::pending());
                (
                    [("content-type", "application/x-ndjson")],
                    axum::body::Body::from_stream(stream),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/recentchange.ndjson", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// Runs the `tributary` binary on an NDJSON response of `n` events until all are acknowledged.
async fn daemon_run(
    broker: &Broker,
    lines: &[&str],
    n: usize,
    label: &str,
    work: &Path,
) -> anyhow::Result<common::DaemonRun> {
    let topic = format!("bench.http_stream.{}.{label}", std::process::id());
    let dead_letter_topic = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dead_letter_topic]).await?;
    let url = ndjson_server(lines, n).await?;
    let source = format!(
        "type = \"http_stream\"\nurl = \"{url}\"\ntopic = \"{topic}\"\n\
         position = \"/meta/offset\"\nresume_param = \"since\"\nkey = \"/meta/id\"\n"
    );
    let bytes = common::cycled_bytes(lines, n);
    let dir = work.join(format!("daemon-{label}"));
    common::daemon_run(&broker.brokers(), &dir, &source, n, bytes).await
}
