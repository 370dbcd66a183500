//! WebSocket → Kafka throughput: the `tributary` daemon against a plain rdkafka producer loop.
//!
//! ```text
//! cargo bench --bench websocket_to_kafka -- [--broker kafka|mock|tansu] [--frames N] [--rss-multiple K] [--exactly-once]
//! ```
//!
//! The feed is a WebSocket server in this process (tokio-tungstenite, 127.0.0.1) that waits for
//! the client's subscribe message, then sends N text frames as fast as it can: the recorded
//! Coinbase frames of `tests/data/coinbase-ws/COINBASE.ws.28.0` (level2, ticker and matches;
//! the `subscriptions` acknowledgements left out), unmodified, cycled to reach N. The data is
//! from cryptofeed (XFree86 1.1): "This product includes software developed by Bryant Moscon
//! (http://www.bryantmoscon.com/)".
//!
//! Phases, all against one broker on 127.0.0.1 (Apache Kafka or tansu as child
//! processes, or librdkafka's mock cluster in this process), each into a fresh topic with 8 partitions:
//!
//! 1. feed ceiling: how fast the server hands N frames to a bare WebSocket client that only
//!    reads them (shows the feed is not the bottleneck);
//! 2. raw producer ceiling: one rdkafka producer with the daemon's settings sends the same N
//!    records (payload = frame text, key = `product_id`, the 3 lineage headers of a WebSocket
//!    record without `sequence`: source, url, fetched_at) as fast as it can, timed until every
//!    delivery is acknowledged (after one such run that only warms the broker up);
//! 3. the daemon: the real `tributary` binary (release build) as a child process, with one
//!    `type = "websocket"` source (`key = "/product_id"`) reading the N frames; timed from
//!    spawn until its `/metrics` reports N records produced (acknowledged). Its peak RSS
//!    (VmHWM) is read before it is stopped with SIGTERM;
//! 4. the daemon again on K·N frames, to show that peak RSS does not grow with the feed.
//!
//! It prints records/s, MB/s (payload), CPU µs/record, the daemon/raw ratio and peak RSS.
//! Figures are printed, never judged: this is a benchmark, not a test.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use common::{
    print_comparison, print_row, process_cpu, properties_line, Broker, BrokerKind, Figures, Goals,
    RawRecord, PARTITIONS,
};
use futures::{SinkExt, StreamExt};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The goals of this bench: the daemon at 0.9 of the raw producer's pace or better, for at
/// most 1.2 times its CPU per record.
const GOALS: Goals = Goals {
    min_ratio: 0.90,
    max_cpu_ratio: 1.20,
};
/// Default number of frames per run.
const DEFAULT_FRAMES: usize = 200_000;
/// Default size of the long daemon run, in multiples of `--frames`.
const DEFAULT_RSS_MULTIPLE: usize = 4;
/// The recorded session, relative to the package root.
const RECORDING: &str = "tests/data/coinbase-ws/COINBASE.ws.28.0";
/// The subscribe message the daemon sends (the server waits for one text message).
const SUBSCRIBE: &str = r#"{"type":"subscribe"}"#;
/// Connections one feed server accepts before it stops accepting.
const MAX_CONNECTIONS: usize = 8;
/// How long a connection may take to subscribe, and how long it is kept open afterwards.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_LIMIT: Duration = Duration::from_secs(600);
/// Frames written between two flushes of the server's socket.
const FLUSH_EVERY: usize = 256;

const USAGE: &str = "\
usage: cargo bench --bench websocket_to_kafka -- [--broker kafka|mock|tansu] [--frames N] [--rss-multiple K]

  --broker kafka   (default) Apache Kafka, one KRaft node (tests/kafka/kafka.sh; Java 17
                   and Maven), log on disk
  --broker mock    librdkafka's mock cluster, in the benchmark process
  --broker tansu   a tansu broker child process with in-memory storage, from
                   $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --frames N       frames per run (default 200000), the recorded Coinbase frames cycled
  --rss-multiple K the second daemon run reads K*N frames (default 4)
  --exactly-once   also runs the daemon with `delivery = \"exactly_once\"` (the Kafka store,
                   1 s transactions) for N and K*N frames, and compares it with at-least-once";

struct Args {
    broker: BrokerKind,
    frames: usize,
    rss_multiple: usize,
    exactly_once: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Kafka,
        frames: DEFAULT_FRAMES,
        rss_multiple: DEFAULT_RSS_MULTIPLE,
        exactly_once: false,
    };
    common::parse_flags(|name, value| {
        match name {
            "--broker" => args.broker = common::broker_kind(&value("`kafka`, `mock` or `tansu`")?)?,
            "--frames" => args.frames = common::count(name, &value("a number")?, 1)?,
            "--rss-multiple" => args.rss_multiple = common::count(name, &value("a number")?, 2)?,
            "--exactly-once" => args.exactly_once = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(args)
}

fn main() -> ExitCode {
    common::main("websocket_to_kafka", USAGE, parse_args(), phases)
}

/// The recorded frames and their keys.
struct Recorded {
    /// Frame texts, in recorded order.
    texts: Vec<String>,
    /// The same, ready to send (cloning is a reference count).
    frames: Vec<Utf8Bytes>,
    /// Each frame's `product_id` (what `key = "/product_id"` gives), if it has one.
    keys: Vec<Option<String>>,
}

impl Recorded {
    fn load() -> anyhow::Result<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORDING);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the recorded frames `{}`", path.display()))?;
        let texts: Vec<String> = text
            .lines()
            .filter(|line| !line.contains(" <- ") && !line.contains(" <-> "))
            .filter_map(|line| line.split_once(": ").map(|(_, json)| json))
            .filter(|json| !json.contains(r#""type":"subscriptions""#))
            .map(str::to_owned)
            .collect();
        if texts.is_empty() {
            bail!("no received frames in `{}`", path.display());
        }
        let keys = texts
            .iter()
            .map(|json| {
                let value: serde_json::Value = serde_json::from_str(json).ok()?;
                Some(match value.pointer("/product_id")? {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
            })
            .collect();
        let frames = texts.iter().map(|t| Utf8Bytes::from(t.clone())).collect();
        Ok(Recorded {
            texts,
            frames,
            keys,
        })
    }

    fn bytes(&self, n: usize) -> u64 {
        common::cycled_bytes(&self.texts, n)
    }
}

async fn phases(args: Args, work: &Path) -> anyhow::Result<()> {
    let n = args.frames;
    let recorded = Arc::new(Recorded::load()?);
    let average = recorded.bytes(recorded.texts.len()) as f64 / recorded.texts.len() as f64;
    let keyless = recorded.keys.iter().filter(|k| k.is_none()).count();
    let broker = Broker::start(args.broker, work)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("WebSocket → Kafka benchmark");
    println!("  broker   {}", broker.describe());
    println!(
        "  records  {n} per run; payload = {} recorded Coinbase frames cycled, avg {average:.0} B \
         ({keyless} without product_id); key = product_id; 3 lineage headers; topics of \
         {PARTITIONS} partitions",
        recorded.texts.len()
    );
    println!("  producer {}", properties_line());
    println!("  machine  {cores} cores");
    println!();

    let feed = feed_ceiling(n, &recorded).await?;
    print_row("feed ceiling (ws server → bare client)", &feed);

    // As in sse_to_kafka: each daemon run right after a raw run of the same length.
    let long_n = n * args.rss_multiple;
    // A first raw run warms the broker up (a JVM broker's first records run interpreted
    // code) and is not compared.
    let warm_up = raw_run(&broker, n, "warm-up", &recorded).await?;
    print_row("broker warm-up (raw, not compared)", &warm_up);
    let raw = raw_run(&broker, n, "n", &recorded).await?;
    print_row("raw producer ceiling, N (rdkafka loop)", &raw);
    let short = daemon_run(&broker, n, "n", work, &recorded, false).await?;
    print_row("daemon, N frames", &short.figures);
    let raw_long = raw_run(&broker, long_n, "kn", &recorded).await?;
    print_row(
        &format!("raw producer ceiling, {}N", args.rss_multiple),
        &raw_long,
    );
    let long = daemon_run(&broker, long_n, "kn", work, &recorded, false).await?;
    print_row(
        &format!("daemon, {}N frames", args.rss_multiple),
        &long.figures,
    );

    print_comparison(n, args.rss_multiple, &raw, &short, &raw_long, &long, GOALS);
    if args.exactly_once {
        println!();
        // The cluster's first transactional producer creates the transaction state topic and
        // loads its coordinator: a cost paid once per Kafka cluster, not per run.
        let warm_up = daemon_run(&broker, n / 10, "eos-warm-up", work, &recorded, true).await?;
        print_row("exactly-once warm-up (not compared)", &warm_up.figures);
        let eos_short = daemon_run(&broker, n, "eos-n", work, &recorded, true).await?;
        print_row("daemon exactly-once, N frames", &eos_short.figures);
        let eos_long = daemon_run(&broker, long_n, "eos-kn", work, &recorded, true).await?;
        print_row(
            &format!("daemon exactly-once, {}N frames", args.rss_multiple),
            &eos_long.figures,
        );
        common::print_exactly_once(args.rss_multiple, &short, &long, &eos_short, &eos_long);
    }
    Ok(())
}

/// The raw producer ceiling for `n` records: payload = frame, key = product_id, no event id
/// or type (a WebSocket record has them only with `sequence`).
async fn raw_run(
    broker: &Broker,
    n: usize,
    tag: &str,
    recorded: &Arc<Recorded>,
) -> anyhow::Result<Figures> {
    let records = Arc::clone(recorded);
    let url = "ws://127.0.0.1:1/";
    let tag = format!("ws.{tag}");
    common::raw_run(broker, n, &tag, url, recorded.bytes(n), move |i, send| {
        let at = i % records.texts.len();
        send(RawRecord {
            key: records.keys[at].as_deref().map(str::as_bytes),
            payload: records.texts[at].as_bytes(),
            event_id: None,
            event_type: None,
        })
    })
    .await
}

/// Runs the `tributary` binary on a feed of `n` frames until all are acknowledged (with
/// `exactly_once`, committed).
async fn daemon_run(
    broker: &Broker,
    n: usize,
    label: &str,
    work: &Path,
    recorded: &Arc<Recorded>,
    exactly_once: bool,
) -> anyhow::Result<common::DaemonRun> {
    let topic = format!("bench.ws.{}.{label}", std::process::id());
    let dead_letter_topic = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dead_letter_topic]).await?;
    let feed = WsFeed::start(Arc::clone(recorded), n).await?;
    let mut source = format!(
        "type = \"websocket\"\nurl = \"{url}\"\nsubscribe = ['{SUBSCRIBE}']\n\
         key = \"/product_id\"\ntopic = \"{topic}\"\n",
        url = feed.url()
    );
    if exactly_once {
        source.push_str(common::EXACTLY_ONCE);
        source.push('\n');
    }
    let dir = work.join(format!("daemon-ws-{label}"));
    let run = common::daemon_run(&broker.brokers(), &dir, &source, n, recorded.bytes(n)).await;
    drop(feed);
    run
}

// ---------------------------------------------------------------------------------------------
// The feed

/// A WebSocket server on 127.0.0.1 that sends `n` recorded frames to every connection after
/// its first text message. Stopped (with its connections) when dropped.
struct WsFeed {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WsFeed {
    async fn start(recorded: Arc<Recorded>, n: usize) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts the connections.
            let mut connections = JoinSet::new();
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let _ = stream.set_nodelay(true);
                let recorded = Arc::clone(&recorded);
                connections.spawn(async move {
                    if let Err(error) = serve(stream, &recorded, n).await {
                        eprintln!("websocket feed: connection ended: {error}");
                    }
                });
            }
            // Keep the connections (and so the task) alive until the feed is dropped.
            while connections.join_next().await.is_some() {}
        });
        Ok(WsFeed { address, task })
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.address)
    }
}

impl Drop for WsFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: the handshake, the subscribe message, `n` frames, then reads (so pings are
/// answered) until the client leaves or [`IDLE_LIMIT`].
async fn serve(stream: tokio::net::TcpStream, recorded: &Recorded, n: usize) -> anyhow::Result<()> {
    let mut socket = tokio_tungstenite::accept_async(stream).await?;
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(_))) => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => bail!("the client left before subscribing"),
            }
        }
    })
    .await
    .context("no subscribe message")??;
    let frames = &recorded.frames;
    for i in 0..n {
        // `feed` buffers (the socket is written when the buffer is full); flushing now and
        // then keeps the client busy without a write per frame.
        socket
            .feed(Message::Text(frames[i % frames.len()].clone()))
            .await?;
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            socket.flush().await?;
        }
    }
    socket.flush().await?;
    let _ = tokio::time::timeout(IDLE_LIMIT, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    Ok(())
}

/// Reads `n` frames from a feed with a bare tokio-tungstenite client that only counts them,
/// from connect to the last frame.
async fn feed_ceiling(n: usize, recorded: &Arc<Recorded>) -> anyhow::Result<Figures> {
    let feed = WsFeed::start(Arc::clone(recorded), n).await?;
    let started = Instant::now();
    let cpu_before = process_cpu(std::process::id())?;
    let (mut socket, _) = tokio_tungstenite::connect_async(feed.url())
        .await
        .context("connecting to the feed")?;
    socket.send(Message::text(SUBSCRIBE)).await?;
    let read = async {
        let mut frames = 0usize;
        while frames < n {
            match socket.next().await {
                Some(Ok(Message::Text(_))) => frames += 1,
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("after {frames} of {n} frames: {error}"),
                None => bail!("the feed closed after {frames} of {n} frames"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .context("the feed ceiling took over 300 s")??;
    let elapsed = started.elapsed();
    let cpu = process_cpu(std::process::id())?.saturating_sub(cpu_before);
    let _ = socket.close(None).await;
    Ok(Figures {
        records: n,
        payload_bytes: recorded.bytes(n),
        elapsed,
        cpu,
    })
}
