//! The daemon side of the REST benchmark: the source table, waiting for every record to be
//! acknowledged (from `/metrics`), CPU and counter figures, and reading the topics back.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tributary::{cli::demo::kafka_admin, router::HEADER_EVENT_ID};

use crate::{
    api::Api,
    common::{scrape, Broker, Daemon, SCRAPE_INTERVAL, STALL_TIMEOUT},
};

/// Longest wait for the topics to be read back.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the daemon's idle CPU is sampled after the last acknowledgement.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);

/// `[sources.<name>]`'s lines for a REST source walking `url` into `topic`.
pub(crate) fn rest_source(url: &str, topic: &str) -> String {
    format!(
        r#"type = "rest"
url = "{url}"
topic = "{topic}"
records = "/data"
key = "/id"
interval = "1h"
max_pages_per_poll = 100000
pagination = {{ type = "cursor", cursor = "/next_cursor", param = "cursor" }}
"#
    )
}

/// When every record was acknowledged, and the daemon's CPU time when the API saw its first
/// request (its start-up, within a scrape interval).
pub(crate) struct Acknowledged {
    /// The scrape that saw the last record acknowledged.
    pub(crate) at: Instant,
    /// The daemon's CPU time when the API's log first held a request.
    pub(crate) cpu_at_first_request: Option<Duration>,
}

/// Scrapes `/metrics` until `tributary_records_produced_total` of all sources reaches `n`;
/// gives up when the count does not move for [`STALL_TIMEOUT`].
pub(crate) async fn wait_acknowledged(
    daemon: &mut Daemon,
    api: &Api,
    n: u64,
) -> anyhow::Result<Acknowledged> {
    let mut produced = 0u64;
    let mut last_progress = Instant::now();
    let mut cpu_at_first_request = None;
    loop {
        daemon.check_running(&format!(
            "after {produced} of {n} records were acknowledged"
        ))?;
        if cpu_at_first_request.is_none() && api.requested() {
            cpu_at_first_request = Some(daemon.cpu()?);
        }
        if let Ok(text) = scrape(daemon.address).await {
            let now = metric_all(&text, "tributary_records_produced_total", "") as u64;
            if now > produced {
                produced = now;
                last_progress = Instant::now();
            }
            if produced >= n {
                return Ok(Acknowledged {
                    at: Instant::now(),
                    cpu_at_first_request,
                });
            }
        }
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(daemon.fail(format!(
                "no progress for {STALL_TIMEOUT:?}: {produced} of {n} records produced"
            )));
        }
        tokio::time::sleep(SCRAPE_INTERVAL).await;
    }
}

/// The daemon's CPU time (user + system) during `IDLE_SAMPLE` after its work is done.
pub(crate) async fn idle_cpu(daemon: &Daemon) -> anyhow::Result<Duration> {
    let before = daemon.cpu()?;
    tokio::time::sleep(IDLE_SAMPLE).await;
    Ok(daemon.cpu()?.saturating_sub(before))
}

/// Prints the daemon's CPU: whole process, start-up (spawn → first request), and idle.
pub(crate) fn print_cpu(
    cpu: Duration,
    acknowledged: &Acknowledged,
    idle: Duration,
    records: u64,
    requests: usize,
) {
    let startup = acknowledged.cpu_at_first_request.unwrap_or_default();
    let working = cpu.saturating_sub(startup);
    println!(
        "{:<28} {:.1} µs per record, {:.0} µs per request from the first request on ({:.2} s); \
         start-up {:.2} s; idle afterwards {:.0} ms per s",
        "daemon CPU",
        working.as_secs_f64() * 1e6 / records as f64,
        working.as_secs_f64() * 1e6 / requests as f64,
        working.as_secs_f64(),
        startup.as_secs_f64(),
        idle.as_secs_f64() * 1e3 / IDLE_SAMPLE.as_secs_f64(),
    );
}

/// The sum of metric `family` over every series (all sources) whose labels contain `label`.
pub(crate) fn metric_all(scrape: &str, family: &str, label: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The daemon's own counters, all sources together, against the records the API served.
pub(crate) fn print_daemon_counters(text: &str, served_records: u64) {
    let count = |family: &str, label: &str| metric_all(text, family, label) as u64;
    let produced = count("tributary_records_produced_total", "");
    println!(
        "{:<28} {served_records} served (in 200 answers), {} received, {produced} \
         acknowledged (produced_total), {} dead-lettered, {} duplicates left out: {}",
        "records",
        count("tributary_records_received_total", ""),
        count("tributary_records_dead_lettered_total", ""),
        count("tributary_records_duplicate_total", ""),
        if produced == served_records {
            "equal"
        } else {
            "NOT equal"
        }
    );
    let classes: Vec<String> = ["2xx", "3xx", "4xx", "5xx", "error"]
        .iter()
        .map(|class| {
            let label = format!("status_class=\"{class}\"");
            format!("{class} {}", count("tributary_http_requests_total", &label))
        })
        .collect();
    println!(
        "{:<28} pages {}; HTTP {}; retries {}; polls complete {}, failed {}; rate-limit wait \
         {:.2} s (all sources)",
        "daemon counters",
        count("tributary_pages_total", ""),
        classes.join(", "),
        count("tributary_retries_total", ""),
        count("tributary_polls_total", "outcome=\"complete\""),
        count("tributary_polls_total", "outcome=\"failed\""),
        metric_all(text, "tributary_rate_limit_wait_seconds_total", ""),
    );
}

/// Reads `topic` back: its records and its distinct `tributary.event_id`s.
pub(crate) async fn read_back_topic(
    broker: &Broker,
    topic: &str,
) -> anyhow::Result<(usize, usize)> {
    let (brokers, name) = (broker.brokers(), topic.to_owned());
    let records = tokio::task::spawn_blocking(move || {
        kafka_admin::read_topic(&brokers, &name, READ_BACK_TIMEOUT)
    })
    .await?
    .with_context(|| format!("reading back `{topic}`"))?;
    let ids: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.header(HEADER_EVENT_ID))
        .collect();
    Ok((records.len(), ids.len()))
}
