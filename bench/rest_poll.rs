//! Polled REST → Kafka: the REST source under a per-host request budget shared by several
//! sources, and unthrottled.
//!
//! ```text
//! cargo bench --bench rest_poll -- [--broker kafka|mock|tansu] [--scenario budget|unlimited|both]
//!                                  [--sources S] [--budget-pages P] [--budget R]
//!                                  [--latency-ms L] [--pages P] [--records-per-page N]
//! ```
//!
//! Both scenarios run the real `tributary` binary (release build) as a child process against one
//! broker on 127.0.0.1 (Apache Kafka or tansu as child processes, or librdkafka's mock cluster in this process)
//! and a JSON API served by this process (axum on 127.0.0.1). Collection `/items/<c>` is a list
//! of pages `{"data": [records], "next_cursor": "p00000001"}` (`null` on the last page) of
//! generated 200-byte JSON records with unique ids; every source walks one collection with
//! `pagination = { type = "cursor", … }`, `records = "/data"`, `key = "/id"`,
//! `interval = "1h"` (so exactly one walk) and produces to its own fresh topic of 8 partitions.
//!
//! 1. budget: S REST sources (default 8), each walking its own collection of P/S pages of 10
//!    records (P = 1000 by default), share `[rate_limits."127.0.0.1:<port>"]
//!    requests_per_second = R` (default 100, `burst = 1`). The API sleeps L ms (default 50)
//!    before answering each page, and enforces the same budget itself: a request that arrives
//!    when more than R requests (itself and the refused ones included) arrived in the last
//!    second is answered `429` with `Retry-After: 1`, at once. One source walks its pages one
//!    after the other, so it can do at most 1000/L pages/s: several are needed to reach the
//!    budget. Figures, from the API's log: requests/s from the first request to the last page
//!    served, as a fraction of R (target ≥ 0.95); it includes the tail where fewer than
//!    R/(1000/L) sources are still walking (their walks are as long but end at different
//!    times), so demand is below the budget. Hence also requests/s while demand exceeded the
//!    budget: the requests (429s included) from the first request until the first walk ended,
//!    over that time, as a fraction of R: the limiter's own utilisation; with the shortest,
//!    p1, median, p99 and longest gaps between consecutive requests in that span. Then 429
//!    answers (target 0); the busiest sliding second; the requests of each whole second; when
//!    each source's walk ended. Then, once `tributary_records_produced_total` (all sources)
//!    reaches the records generated: the topics read back, the daemon's own rate-limit wait,
//!    retries and status classes, its CPU per record and per request (from the first request
//!    on; its start-up and its idle CPU afterwards are shown apart) and its peak RSS.
//! 2. unlimited: no latency and no budget; one source walks P pages (default 5000) of N records
//!    (default 100). First the API's own ceiling (a bare reqwest client walking the same pages,
//!    this process's CPU), then the raw producer ceiling (one rdkafka producer with the daemon's
//!    settings sending the same records: payload, key and the lineage headers but
//!    `tributary.page`), then the daemon, timed from the first request the API saw until its
//!    `/metrics` reports every record acknowledged. Figures: pages/s, records/s, MB/s, CPU µs
//!    per record (in the table the daemon's whole process, start-up included, as in the other
//!    benchmarks; then apart), the daemon/raw ratio and the daemon's peak RSS.
//!
//! Figures are printed, never judged: this is a benchmark, not a test. See README.md,
//! "Benchmark". The generated API lives in `rest_poll/api.rs`, the daemon-side figures in
//! `rest_poll/daemon.rs`; the broker, the daemon process, the raw producer and the printing in
//! `common/`.

#[path = "rest_poll/api.rs"]
mod api;
mod common;
#[path = "rest_poll/daemon.rs"]
mod daemon;

use std::{
    fmt::Write as _,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use api::{cursor, push_record, record_id, Api, Log, Shape, RECORD_BYTES};
use common::{
    print_row, process_cpu, properties_line, scrape, Broker, BrokerKind, Daemon, Figures,
    RawRecord, PARTITIONS, SOURCE,
};
use daemon::{
    idle_cpu, print_cpu, print_daemon_counters, read_back_topic, rest_source, wait_acknowledged,
};

/// Records per page in the budget scenario.
const BUDGET_RECORDS_PER_PAGE: u32 = 10;
/// Default number of sources sharing the budget.
const DEFAULT_SOURCES: usize = 8;
/// Default number of pages of the budget scenario, all sources together.
const DEFAULT_BUDGET_PAGES: usize = 1000;
/// Default host budget, requests per second (the daemon's and the API's).
const DEFAULT_BUDGET: usize = 100;
/// Default latency of every page in the budget scenario, milliseconds.
const DEFAULT_LATENCY_MS: usize = 50;
/// Default number of pages of the unlimited scenario.
const DEFAULT_PAGES: usize = 5000;
/// Default records per page of the unlimited scenario.
const DEFAULT_RECORDS_PER_PAGE: usize = 100;

/// The usage text (`--help`, and after an argument error).
const USAGE: &str = "\
usage: cargo bench --bench rest_poll -- [--broker kafka|mock|tansu] [--scenario budget|unlimited|both]
                                       [--sources S] [--budget-pages P] [--budget R]
                                       [--latency-ms L] [--pages P] [--records-per-page N]

  --broker kafka        (default) Apache Kafka, one KRaft node (tests/kafka/kafka.sh; Java 17
                        and Maven), log on disk
  --broker mock         librdkafka's mock cluster, in the benchmark process
  --broker tansu        a tansu broker child process with in-memory storage, from
                        $TRIBUTARY_TEST_TANSU or ~/.cargo/bin/tansu
  --scenario X          budget, unlimited or both (default both)
  budget scenario (pages of 10 records):
  --sources S           REST sources sharing the host budget, one collection each (default 8)
  --budget-pages P      pages of all sources together (default 1000)
  --budget R            requests per second, of the daemon's [rate_limits] and of the API's
                        sliding 1 s window (default 100)
  --latency-ms L        the API's delay before answering each page (default 50)
  unlimited scenario (one source, no latency, no budget):
  --pages P             pages (default 5000)
  --records-per-page N  records per page (default 100)";

/// The command line.
struct Args {
    /// `--broker`.
    broker: BrokerKind,
    /// Run scenario 1 (`--scenario budget` or `both`).
    budget_scenario: bool,
    /// Run scenario 2 (`--scenario unlimited` or `both`).
    unlimited_scenario: bool,
    /// `--sources`: sources sharing the budget.
    sources: usize,
    /// `--budget-pages`: pages of scenario 1, all sources together.
    budget_pages: usize,
    /// `--budget`: requests per second.
    budget: usize,
    /// `--latency-ms`: the API's delay per page in scenario 1.
    latency: Duration,
    /// `--pages`: pages of scenario 2.
    pages: usize,
    /// `--records-per-page`: records per page of scenario 2.
    records_per_page: usize,
}

/// Parses the command line (see [`USAGE`]).
fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: BrokerKind::Kafka,
        budget_scenario: true,
        unlimited_scenario: true,
        sources: DEFAULT_SOURCES,
        budget_pages: DEFAULT_BUDGET_PAGES,
        budget: DEFAULT_BUDGET,
        latency: Duration::from_millis(DEFAULT_LATENCY_MS as u64),
        pages: DEFAULT_PAGES,
        records_per_page: DEFAULT_RECORDS_PER_PAGE,
    };
    common::parse_flags(|name, value| {
        match name {
            "--broker" => args.broker = common::broker_kind(&value("`kafka`, `mock` or `tansu`")?)?,
            "--scenario" => {
                (args.budget_scenario, args.unlimited_scenario) =
                    match value("`budget`, `unlimited` or `both`")?.as_str() {
                        "budget" => (true, false),
                        "unlimited" => (false, true),
                        "both" => (true, true),
                        other => return Err(format!("unknown scenario `{other}`")),
                    }
            }
            "--sources" => {
                args.sources = common::count(name, &value("a number")?, 1)?;
                if args.sources > 999 {
                    return Err("--sources must be at most 999".into());
                }
            }
            "--budget-pages" => args.budget_pages = common::count(name, &value("a number")?, 1)?,
            "--budget" => args.budget = common::count(name, &value("a number")?, 1)?,
            "--latency-ms" => {
                let millis = common::count(name, &value("a number of milliseconds")?, 0)?;
                args.latency = Duration::from_millis(millis as u64);
            }
            "--pages" => args.pages = common::count(name, &value("a number")?, 1)?,
            "--records-per-page" => {
                args.records_per_page = common::count(name, &value("a number")?, 1)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(args)
}

/// Usage and argument errors (exit code 2), then both scenarios.
fn main() -> ExitCode {
    common::main("rest_poll", USAGE, parse_args(), phases)
}

/// Both scenarios against one broker.
async fn phases(args: Args, work: &Path) -> anyhow::Result<()> {
    let broker = Broker::start(args.broker, work)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("REST poll → Kafka benchmark");
    println!("  broker   {}", broker.describe());
    println!(
        "  API      axum on 127.0.0.1 in this process; pages {{\"data\": [...], \"next_cursor\": …}} \
         of generated {RECORD_BYTES}-byte JSON records, unique `/id` = key; cursor pagination; \
         one topic of {PARTITIONS} partitions per source"
    );
    println!("  producer {}", properties_line());
    println!("  machine  {cores} cores");
    if args.budget_scenario {
        budget_scenario(&args, &broker, work).await?;
    }
    if args.unlimited_scenario {
        unlimited_scenario(&args, &broker, work).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: a shared host budget

/// S sources walking their collections under one host budget, against an API that adds
/// latency and enforces the same budget.
async fn budget_scenario(args: &Args, broker: &Broker, work: &Path) -> anyhow::Result<()> {
    let sources = args.sources;
    let shape = Shape {
        collections: sources as u32,
        pages: (args.budget_pages / sources).max(1) as u64,
        records_per_page: BUDGET_RECORDS_PER_PAGE,
        latency: args.latency,
        budget: Some(args.budget),
    };
    shape.check()?;
    let budget = args.budget;
    let total_pages = shape.collections as u64 * shape.pages;
    println!();
    println!(
        "Scenario 1 — host budget: {sources} REST sources × {} pages of {} records ({total_pages} \
         pages, {} records) share [rate_limits] requests_per_second = {budget}, burst = 1; the \
         API adds {} ms per page and answers 429 (Retry-After: 1) above {budget} requests in any \
         sliding second",
        shape.pages,
        shape.records_per_page,
        shape.records(),
        args.latency.as_millis(),
    );
    if !args.latency.is_zero() {
        let alone = 1.0 / args.latency.as_secs_f64();
        println!(
            "  (one source fetches its pages one after the other: at most {alone:.0} pages/s \
             alone; {sources} together at most {:.0}; the budget allows {budget})",
            alone * sources as f64,
        );
    }
    println!();

    let api = Api::start(shape).await?;
    let topics: Vec<String> = (0..sources)
        .map(|c| format!("bench.rest.budget.{}.{c}", std::process::id()))
        .collect();
    let mut all_topics: Vec<String> = topics.clone();
    all_topics.extend(topics.iter().map(|t| format!("{t}.dlq")));
    broker
        .create_topics(&all_topics.iter().map(String::as_str).collect::<Vec<_>>())
        .await?;
    let mut body = String::new();
    for (c, topic) in topics.iter().enumerate() {
        if c > 0 {
            write!(body, "\n[sources.{SOURCE}_{c}]\n")?;
        }
        body.push_str(&rest_source(&api.url(c as u32), topic));
    }
    write!(
        body,
        "\n[rate_limits.\"{}\"]\nrequests_per_second = {budget}\nburst = 1\n",
        api.address
    )?;
    let mut daemon = Daemon::start(&broker.brokers(), &work.join("daemon-budget"), &body)?;
    let acknowledged = wait_acknowledged(&mut daemon, &api, shape.records()).await;

    // What the API saw, printed even when the daemon did not deliver everything.
    let exchanges = api.exchanges();
    let Some(log) = Log::of(&exchanges, budget) else {
        acknowledged?;
        bail!("the API saw no request");
    };
    let span = log.last_page.duration_since(log.first_request);
    let seconds = span.as_secs_f64();
    println!(
        "{:<28} {} in {seconds:.2} s (first request → last page served): {} answered 200 \
         ({} distinct pages of {total_pages}), {} answered 429, {} other",
        "requests", log.requests, log.ok, log.distinct_pages, log.too_many, log.other,
    );
    let ok_rate = log.ok as f64 / seconds;
    println!(
        "{:<28} {ok_rate:.1} pages/s = {:.3} of the {budget} req/s budget   target ≥ 0.95   \
         (all requests, 429s included: {:.1}/s)",
        "rate, first req → last page",
        ok_rate / budget as f64,
        log.requests as f64 / seconds,
    );
    match log.saturated {
        Some(saturated) if !saturated.is_zero() => {
            let rate = log.saturated_requests as f64 / saturated.as_secs_f64();
            let demand = sources as f64 / args.latency.as_secs_f64();
            println!(
                "{:<28} {rate:.1} req/s (429s included) = {:.3} of the {budget} req/s budget: \
                 {} requests ({} answered 429) in {:.2} s, first request → first walk ended{}",
                "rate, demand > budget",
                rate / budget as f64,
                log.saturated_requests,
                log.saturated_too_many,
                saturated.as_secs_f64(),
                if demand > budget as f64 {
                    String::new()
                } else {
                    format!(" (but {sources} sources demand at most {demand:.0} req/s)")
                },
            );
            let gap = |q: f64| {
                log.saturated_gap(q)
                    .map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
            };
            println!(
                "{:<28} shortest {}, p1 {}, p50 {}, p99 {}, longest {} ms (1 s / {budget} = {:.1} \
                 ms), in that span",
                "gaps between requests",
                gap(0.0),
                gap(0.01),
                gap(0.5),
                gap(0.99),
                gap(1.0),
                1e3 / budget as f64,
            );
        }
        _ => println!("{:<28} -   (no walk ended)", "rate, demand > budget"),
    }
    println!("{:<28} {}   target 0", "429 answers", log.too_many);
    println!(
        "{:<28} {} requests (the API refuses above {budget}); shortest span of {} consecutive \
         requests {}",
        "busiest sliding second",
        log.busiest_second,
        budget + 1,
        log.shortest_span.map_or("-".to_owned(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        )),
    );
    println!(
        "{:<28} {}",
        "requests in each second",
        log.per_second
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let finished: Vec<f64> = log
        .finished
        .iter()
        .map(|d| d.map_or(f64::NAN, |d| d.as_secs_f64()))
        .collect();
    println!(
        "{:<28} {}",
        "walks ended (s)",
        finished
            .iter()
            .enumerate()
            .map(|(c, s)| format!("#{c} {s:.2}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!(
        "{:<28} {} ms",
        "daemon spawn → first request",
        log.first_request
            .saturating_duration_since(daemon.started)
            .as_millis()
    );
    let acknowledged = acknowledged?;
    println!(
        "{:<28} {} ms",
        "last page → all acknowledged",
        acknowledged
            .at
            .saturating_duration_since(log.last_page)
            .as_millis()
    );

    // What the daemon says, and what Kafka holds.
    let cpu = daemon.cpu()?;
    let idle = idle_cpu(&daemon).await?;
    let text = scrape(daemon.address).await.context("scraping /metrics")?;
    let peak_rss_kib = daemon.peak_rss_kib()?;
    let shutdown = daemon.stop()?;
    let served_records = log.ok as u64 * shape.records_per_page as u64;
    print_daemon_counters(&text, served_records);
    let mut read_back = 0usize;
    let mut distinct = 0usize;
    for topic in &topics {
        let (records, ids) = read_back_topic(broker, topic).await?;
        read_back += records;
        distinct += ids;
    }
    println!(
        "{:<28} {read_back} records ({distinct} distinct ids) in {sources} topics; {} records \
         generated: {}",
        "topics read back",
        shape.records(),
        if read_back as u64 == shape.records() && distinct as u64 == shape.records() {
            "equal"
        } else {
            "NOT equal"
        }
    );
    print_cpu(cpu, &acknowledged, idle, shape.records(), log.requests);
    println!(
        "{:<28} {:.1} MiB",
        "daemon peak RSS (VmHWM)",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "{:<28} {} ms",
        "daemon SIGTERM → exit",
        shutdown.as_millis()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: unlimited

/// One source walking many big pages as fast as it can, against the API's and the producer's
/// ceilings.
async fn unlimited_scenario(args: &Args, broker: &Broker, work: &Path) -> anyhow::Result<()> {
    let shape = Shape {
        collections: 1,
        pages: args.pages as u64,
        records_per_page: u32::try_from(args.records_per_page).context("--records-per-page")?,
        latency: Duration::ZERO,
        budget: None,
    };
    shape.check()?;
    let n = shape.records() as usize;
    let payload_bytes = shape.payload_bytes();
    println!();
    println!(
        "Scenario 2 — unlimited: 1 REST source walks {} pages of {} records ({n} records, \
         {:.1} MB of records); no latency, no budget",
        shape.pages,
        shape.records_per_page,
        payload_bytes as f64 / 1e6,
    );
    println!();

    let ceiling = api_ceiling(shape).await?;
    print_row("API ceiling (bare reqwest walk)", &ceiling);

    let per_page = shape.records_per_page as usize;
    let mut payload = String::with_capacity(RECORD_BYTES);
    let raw = common::raw_run(
        broker,
        n,
        "rest",
        "http://127.0.0.1:65535/items/0?cursor=p00000000",
        payload_bytes,
        move |i, send| {
            let (page, index) = ((i / per_page) as u64, (i % per_page) as u32);
            payload.clear();
            push_record(&mut payload, 0, page, index);
            let id = record_id(0, page, index);
            send(RawRecord {
                key: Some(id.as_bytes()),
                payload: payload.as_bytes(),
                event_id: Some(&id),
                event_type: None,
            })
        },
    )
    .await?;
    print_row("raw producer ceiling (rdkafka loop)", &raw);

    let api = Api::start(shape).await?;
    let topic = format!("bench.rest.unlimited.{}", std::process::id());
    let dead_letter_topic = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dead_letter_topic]).await?;
    let mut daemon = Daemon::start(
        &broker.brokers(),
        &work.join("daemon-unlimited"),
        &rest_source(&api.url(0), &topic),
    )?;
    let acknowledged = wait_acknowledged(&mut daemon, &api, n as u64).await;
    let exchanges = api.exchanges();
    let Some(log) = Log::of(&exchanges, usize::MAX) else {
        acknowledged?;
        bail!("the API saw no request");
    };
    let acknowledged = acknowledged?;
    let cpu = daemon.cpu()?;
    let idle = idle_cpu(&daemon).await?;
    let text = scrape(daemon.address).await.context("scraping /metrics")?;
    let peak_rss_kib = daemon.peak_rss_kib()?;
    let shutdown = daemon.stop()?;
    let figures = Figures {
        records: n,
        payload_bytes,
        elapsed: acknowledged.at.saturating_duration_since(log.first_request),
        cpu,
    };
    print_row("daemon, 1 REST source", &figures);

    println!();
    let walk = log.last_page.duration_since(log.first_request);
    println!(
        "{:<28} daemon {:.0} pages/s (first request → all acknowledged); walk {:.0} pages/s \
         (first request → last page served, {:.2} s); API ceiling {:.0} pages/s",
        "pages",
        shape.pages as f64 / figures.elapsed.as_secs_f64(),
        shape.pages as f64 / walk.as_secs_f64(),
        walk.as_secs_f64(),
        shape.pages as f64 / ceiling.elapsed.as_secs_f64(),
    );
    println!(
        "{:<28} {:.2}   (records/s)",
        "daemon / raw producer",
        figures.records_per_second() / raw.records_per_second()
    );
    println!(
        "{:<28} {} answered 200 ({} distinct pages of {}), {} other",
        "requests",
        log.ok,
        log.distinct_pages,
        shape.pages,
        log.requests - log.ok,
    );
    print_daemon_counters(&text, log.ok as u64 * shape.records_per_page as u64);
    print_cpu(cpu, &acknowledged, idle, shape.records(), log.requests);
    println!(
        "{:<28} {:.1} MiB",
        "daemon peak RSS (VmHWM)",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "{:<28} {} ms",
        "daemon spawn → first request",
        log.first_request
            .saturating_duration_since(daemon.started)
            .as_millis()
    );
    println!(
        "{:<28} {} ms",
        "last page → all acknowledged",
        acknowledged
            .at
            .saturating_duration_since(log.last_page)
            .as_millis()
    );
    println!(
        "{:<28} {} ms",
        "daemon SIGTERM → exit",
        shutdown.as_millis()
    );
    Ok(())
}

/// The API's own ceiling: a bare reqwest client (HTTP/1.1 keep-alive) walks every page of
/// collection 0 in order, reading each whole body; the cursor is computed, not parsed.
async fn api_ceiling(shape: Shape) -> anyhow::Result<Figures> {
    let api = Api::start(shape).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let started = Instant::now();
    let cpu_before = process_cpu(std::process::id())?;
    let mut bytes = 0u64;
    for page in 0..shape.pages {
        let mut url = api.url(0);
        if page > 0 {
            write!(url, "?cursor={}", cursor(page))?;
        }
        let response = client.get(&url).send().await?;
        ensure!(
            response.status() == reqwest::StatusCode::OK,
            "{url} answered {}",
            response.status()
        );
        bytes += response.bytes().await?.len() as u64;
    }
    let elapsed = started.elapsed();
    ensure!(bytes >= shape.payload_bytes(), "short pages: {bytes} bytes");
    Ok(Figures {
        records: shape.records() as usize,
        payload_bytes: shape.payload_bytes(),
        elapsed,
        cpu: process_cpu(std::process::id())?.saturating_sub(cpu_before),
    })
}
