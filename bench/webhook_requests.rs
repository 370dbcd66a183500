//! Webhook requests → Kafka: requests per second and latency of the `tributary` daemon's webhook
//! receiver, which answers 2xx only after Kafka has acknowledged the record.
//!
//! ```text
//! cargo bench --bench webhook_requests -- [--broker kafka|mock|tansu] [--requests R] [--duration S]
//!                                         [--concurrency C]
//! ```
//!
//! The real `tributary` binary (release build) runs as a child process with one
//! `type = "webhook"` source (`signature = { scheme = "github", … }`, route `/webhooks/bench`
//! on `server.listen`, 127.0.0.1) producing to a fresh topic with 8 partitions on one broker
//! (Apache Kafka or tansu as child processes, or librdkafka's mock cluster in this process). Once `/readyz`
//! shows the source connected, C concurrent tokio tasks (reqwest, HTTP/1.1 keep-alive) POST
//! signed requests until R requests were sent or S seconds passed: each body is one recorded
//! Wikimedia `recentchange` event (`data/wikimedia`, about 1 KB of JSON), signed with
//! `X-Hub-Signature-256` (HMAC-SHA256, `GitHubScheme::sign`), with a unique
//! `X-GitHub-Delivery` (the record key and `tributary.event_id`). A request's latency is from
//! sending it until its whole answer is read.
//!
//! It prints requests/s (2xx answers only; the others are counted by status and printed), the
//! p50/p90/p99/max latency of the 2xx answers, the daemon's CPU µs per 2xx request and peak RSS,
//! and finally whether the topic (read back) and `tributary_records_produced_total` hold exactly
//! as many records as there were 2xx answers. Figures are printed, never judged: this is a
//! benchmark, not a test.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use common::{
    http_get, metric, metric_where, poll_until, properties_line, scrape, Broker, BrokerKind,
    Daemon, PARTITIONS, SOURCE,
};
use tributary::{
    cli::demo::{kafka_admin, replay},
    sources::webhook::signature::GitHubScheme,
};

/// Default number of requests.
const DEFAULT_REQUESTS: usize = 50_000;
/// Default number of concurrent clients.
const DEFAULT_CONCURRENCY: usize = 32;
/// The webhook secret of the benchmark's source.
const SECRET: &str = "tributary-bench-secret";
/// Longest wait for one answer (the daemon's own `ack_timeout` is 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
usage: cargo bench --bench webhook_requests -- [--broker kafka|mock|tansu] [--requests R] [--duration S]
                                              [--concurrency C]

  --broker kafka   (default) Apache Kafka, one KRaft node (tests/kafka/kafka.sh; Java 17
                   and Maven), log on disk
  --broker mock    librdkafka's mock cluster, in the benchmark process
  --broker tansu   a tansu broker child process with in-memory storage, from
                   $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --requests R     requests to send (default 50000; unlimited with --duration alone)
  --duration S     stop sending after S seconds (default: no limit; R bounds the run)
  --concurrency C  concurrent clients, each with one request in flight (default 32)";

struct Args {
    broker: BrokerKind,
    requests: Option<usize>,
    duration: Option<Duration>,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Kafka,
        requests: None,
        duration: None,
        concurrency: DEFAULT_CONCURRENCY,
    };
    common::parse_flags(|name, value| {
        match name {
            "--broker" => args.broker = common::broker_kind(&value("`kafka`, `mock` or `tansu`")?)?,
            "--requests" => args.requests = Some(common::count(name, &value("a number")?, 1)?),
            "--duration" => {
                let seconds = common::count(name, &value("a number of seconds")?, 1)?;
                args.duration = Some(Duration::from_secs(seconds as u64));
            }
            "--concurrency" => args.concurrency = common::count(name, &value("a number")?, 1)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(args)
}

fn main() -> ExitCode {
    common::main("webhook_requests", USAGE, parse_args(), phases)
}

/// One request body and its signature.
struct Signed {
    body: Bytes,
    signature: reqwest::header::HeaderValue,
}

/// What one client task saw.
#[derive(Default)]
struct Tally {
    /// Latencies of the 2xx answers.
    latencies: Vec<Duration>,
    /// Other answers, by status.
    refused: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection error, timeout), with the first error.
    failed: u64,
    first_error: Option<String>,
}

async fn phases(args: Args, work: &Path) -> anyhow::Result<()> {
    // With only a duration, the count is unbounded: the deadline bounds the run.
    let limit = match (args.requests, args.duration) {
        (Some(requests), _) => requests,
        (None, Some(_)) => usize::MAX,
        (None, None) => DEFAULT_REQUESTS,
    };
    let bodies: Arc<Vec<Signed>> = Arc::new(
        replay::recorded_wikimedia_events()
            .into_iter()
            .map(|event| Signed {
                signature: GitHubScheme::sign(SECRET, event.as_bytes())
                    .parse()
                    .expect("a hex signature is a valid header value"),
                body: Bytes::from_static(event.as_bytes()),
            })
            .collect(),
    );
    let average = bodies.iter().map(|b| b.body.len()).sum::<usize>() as f64 / bodies.len() as f64;
    let broker = Broker::start(args.broker, work)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Webhook requests → Kafka benchmark");
    println!("  broker   {}", broker.describe());
    println!(
        "  requests {} with {} concurrent clients (reqwest, HTTP/1.1 keep-alive); body = a \
         recorded Wikimedia event, avg {average:.0} B; GitHub X-Hub-Signature-256; unique \
         X-GitHub-Delivery; topic of {PARTITIONS} partitions",
        match (limit, args.duration) {
            (usize::MAX, Some(d)) => format!("for {} s", d.as_secs()),
            (n, Some(d)) => format!("{n} (or {} s)", d.as_secs()),
            (n, None) => n.to_string(),
        },
        args.concurrency,
    );
    println!("  producer {}", properties_line());
    println!("  machine  {cores} cores");
    println!();

    let topic = format!("bench.webhook.{}", std::process::id());
    let dead_letter_topic = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dead_letter_topic]).await?;
    let source = format!(
        "type = \"webhook\"\ntopic = \"{topic}\"\n\
         signature = {{ scheme = \"github\", secrets = [\"{SECRET}\"] }}\n"
    );
    let mut daemon = Daemon::start(&broker.brokers(), &work.join("daemon-webhook"), &source)?;
    let address = daemon.address;
    let ready = poll_until(Duration::from_secs(30), || async move {
        let answer = http_get(address, "/readyz").await.ok()?;
        let ok = answer.split_whitespace().nth(1) == Some("200")
            && answer.contains(r#""state":"connected""#);
        ok.then_some(())
    })
    .await;
    daemon.check_running("before it was ready")?;
    if ready.is_none() {
        return Err(daemon.fail("the webhook source was not connected within 30 s".into()));
    }
    let ready_after = daemon.started.elapsed();

    // The load.
    let url = format!("http://{address}/webhooks/{SOURCE}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = daemon.cpu()?;
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, url, bodies, next) = (
            client.clone(),
            url.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
        );
        clients.spawn(async move { load(client, &url, &bodies, &next, limit, deadline).await });
    }
    let mut tally = Tally::default();
    while let Some(joined) = clients.join_next().await {
        let one = joined.context("a client task panicked")?;
        tally.latencies.extend(one.latencies);
        for (status, count) in one.refused {
            *tally.refused.entry(status).or_default() += count;
        }
        tally.failed += one.failed;
        tally.first_error = tally.first_error.or(one.first_error);
    }
    let elapsed = started.elapsed();
    let cpu = daemon.cpu()?.saturating_sub(cpu_before);
    let peak_rss_kib = daemon.peak_rss_kib()?;
    let sent = next.load(Ordering::Relaxed).min(limit);

    let ok = tally.latencies.len();
    let refused: u64 = tally.refused.values().sum();
    tally.latencies.sort_unstable();
    let millis = |d: Duration| d.as_secs_f64() * 1e3;
    let percentile = |p: f64| {
        let rank = ((p * ok as f64).ceil() as usize).clamp(1, ok.max(1));
        tally
            .latencies
            .get(rank - 1)
            .map_or(f64::NAN, |d| millis(*d))
    };
    println!(
        "{:<28} {sent} sent in {:.2} s: {ok} answered 2xx, {refused} other statuses, {} without answer",
        "requests",
        elapsed.as_secs_f64(),
        tally.failed,
    );
    println!(
        "{:<28} {:.0} requests/s (2xx only)",
        "throughput",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<28} p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        "latency of 2xx answers",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        tally.latencies.last().map_or(f64::NAN, |d| millis(*d)),
    );
    let statuses: Vec<String> = tally
        .refused
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    println!(
        "{:<28} {}",
        "non-2xx answers by status",
        if statuses.is_empty() {
            "none".to_owned()
        } else {
            statuses.join("   ")
        }
    );
    if let Some(error) = &tally.first_error {
        println!("{:<28} {error}", "first request error");
    }
    println!(
        "{:<28} {:.1} CPU µs per 2xx request ({:.2} s CPU in {:.2} s)",
        "daemon CPU",
        cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
        cpu.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "{:<28} {:.1} MiB",
        "daemon peak RSS (VmHWM)",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "{:<28} {} ms",
        "daemon spawn → ready",
        ready_after.as_millis()
    );

    // What Kafka holds.
    let text = scrape(address).await.context("scraping /metrics")?;
    let produced = metric(&text, "tributary_records_produced_total");
    let dead_lettered = metric(&text, "tributary_records_dead_lettered_total");
    let outcomes: Vec<String> = [
        "accepted",
        "duplicate",
        "overloaded",
        "delivery_timeout",
        "bad_request",
        "too_large",
    ]
    .iter()
    .map(|outcome| {
        let label = format!("outcome=\"{outcome}\"");
        let count = metric_where(&text, "tributary_webhook_requests_total", &label);
        format!("{outcome} {count}")
    })
    .collect();
    let shutdown = daemon.stop()?;
    let (brokers, read_topic) = (broker.brokers(), topic.clone());
    let records = tokio::task::spawn_blocking(move || {
        kafka_admin::read_topic(&brokers, &read_topic, Duration::from_secs(120))
    })
    .await?
    .with_context(|| format!("reading back `{topic}`"))?;
    let mut ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.header(tributary::router::HEADER_EVENT_ID))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    println!("{:<28} {}", "daemon webhook outcomes", outcomes.join("   "));
    println!(
        "{:<28} {} records ({} distinct delivery ids); produced_total {produced}; \
         dead-lettered {dead_lettered}; 2xx answers {ok}: {}",
        "topic read back",
        records.len(),
        ids.len(),
        if records.len() == ok && produced == ok as u64 {
            "equal"
        } else {
            "NOT equal"
        }
    );
    println!(
        "{:<28} {} ms",
        "daemon SIGTERM → exit",
        shutdown.as_millis()
    );
    Ok(())
}

/// One client: takes request numbers from `next` until `limit` or `deadline`, one request in
/// flight at a time.
async fn load(
    client: reqwest::Client,
    url: &str,
    bodies: &[Signed],
    next: &AtomicUsize,
    limit: usize,
    deadline: Option<Instant>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= limit {
            break;
        }
        let signed = &bodies[i % bodies.len()];
        let started = Instant::now();
        let answer = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-github-event", "push")
            .header(
                "x-github-delivery",
                format!("bench-{}-{i}", std::process::id()),
            )
            .header("x-hub-signature-256", signed.signature.clone())
            .body(signed.body.clone())
            .send()
            .await;
        let outcome = match answer {
            // The whole answer is read, so the connection can be reused.
            Ok(response) => {
                let status = response.status();
                response.bytes().await.map(|_| status)
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(status) if status.is_success() => tally.latencies.push(started.elapsed()),
            Ok(status) => *tally.refused.entry(status.as_u16()).or_default() += 1,
            Err(error) => {
                tally.failed += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{error:?}"));
            }
        }
    }
    tally
}
