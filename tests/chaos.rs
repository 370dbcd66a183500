//! Chaos: one `tributary` process runs an SSE, a WebSocket and a REST source together against
//! Apache Kafka, with live feeds on 127.0.0.1 that resume from a position, and is disturbed:
//! killed with SIGKILL at random moments, or cut off from a broker that is frozen (SIGSTOP)
//! and then killed for a whole outage. Every test reads the topics back and checks each
//! record's identity: nothing lost, duplicates only where a kill came after the last commit,
//! per-partition order kept.
//!
//! `TRIBUTARY_CHAOS_RESTARTS` (default 10), `TRIBUTARY_CHAOS_OUTAGE_SECONDS` (default 60) and
//! `TRIBUTARY_CHAOS_SEED` (default: the clock) change the runs; each test prints its figures.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use common::{feeds::*, process::*, *};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tributary::{cli::demo::replay, state::checkpoint::FileStore};

/// The three sources, their topics and their feeds.
const SOURCES: [&str; 3] = ["sse", "ws", "rest"];

/// The feed kind of a chaos source (each is named after its kind).
fn kind(source: &str) -> Kind {
    match source {
        "sse" => Kind::Sse,
        "ws" => Kind::Ws,
        _ => Kind::Rest,
    }
}
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Where each source's next unacknowledged record may start, from its stored position: the
/// rank (SSE event index, WebSocket sequence, REST page) from which records may be produced
/// again after a restart. 0 when nothing is stored.
fn resume_ranks(dir: &Path) -> HashMap<&'static str, u64> {
    let store = FileStore::open(dir.join("state")).unwrap();
    let stored = |source| store.load(source).unwrap().map(|p| p.as_str().to_owned());
    let sse = stored("sse").map_or(0, |id| {
        replay::wikimedia_event_index(&id).expect("a feed id") as u64 + 1
    });
    let ws = stored("ws").map_or(0, |seq| seq.parse::<u64>().unwrap() + 1);
    // A walk in progress stores the next page; between walks, the walk is done.
    let rest = stored("rest").map_or(0, |text| {
        let position: serde_json::Value = serde_json::from_str(&text).unwrap();
        match position["walk"]["next"]["value"].as_str() {
            Some(next) => next.parse().unwrap(),
            None if position["walk"].is_null() => u64::MAX,
            None => 0,
        }
    });
    HashMap::from([("sse", sse), ("ws", ws), ("rest", rest)])
}

/// What one source's topic held.
#[derive(Debug)]
struct Delivery {
    lost: usize,
    duplicated: usize,
}

/// Checks `source`'s topic: each record's identity; none of the `expected` missing; a record
/// present `c` times only if `c - 1` kills left its rank unacknowledged (at or after the
/// stored resume rank, see [`resume_ranks`]) or `c == 2` when `one_more_allowed`; the first
/// copies in feed order per partition.
async fn check_topic(
    broker: &Broker,
    source: &str,
    expected: usize,
    kills: &[HashMap<&'static str, u64>],
    one_more_allowed: bool,
) -> Delivery {
    let records = broker.read(&format!("chaos.{source}")).await;
    let recorded = replay::recorded_wikimedia_events();
    let mut copies: HashMap<String, (usize, u64)> = HashMap::new();
    let mut last_in_partition: HashMap<i32, u64> = HashMap::new();
    for record in &records {
        let (key, rank) = identify(kind(source), source, record, &recorded);
        let entry = copies.entry(key.clone()).or_insert((0, rank));
        entry.0 += 1;
        if entry.0 == 1 && source != "rest" {
            if let Some(previous) = last_in_partition.insert(record.partition, rank) {
                assert!(
                    previous < rank,
                    "{source}: partition {} has {rank} after {previous}",
                    record.partition
                );
            }
        }
        let replays =
            kills.iter().filter(|k| k[source] <= rank).count() + usize::from(one_more_allowed);
        assert!(
            entry.0 <= 1 + replays,
            "{source}: record {key} is there {} times, but only {replays} kills came before its position was stored",
            entry.0
        );
    }
    Delivery {
        lost: expected.saturating_sub(copies.len()),
        duplicated: copies.values().map(|(n, _)| n - 1).sum(),
    }
}

/// Waits until every source's stored position is at the end of its feed: the SSE and WebSocket
/// feeds' last record, the REST walk done.
async fn wait_for_the_end(dir: &Path, feeds: &Feeds, daemon: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ranks = resume_ranks(dir);
        if ranks["sse"] >= feeds.sse_events as u64
            && ranks["ws"] > feeds.ws_frames
            && ranks["rest"] == u64::MAX
        {
            return;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("the daemon exited early with {status}");
        }
        if Instant::now() >= deadline {
            let scrape = daemon.scrape().await.unwrap_or_default();
            let metrics: Vec<&str> = scrape.lines().filter(|l| !l.starts_with('#')).collect();
            panic!(
                "the stored positions did not reach the feeds' ends: {ranks:?}\n{}",
                metrics.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_duplicates_only_what_was_not_committed() {
    let restarts = env_number("TRIBUTARY_CHAOS_RESTARTS", 10);
    let seed = env_number(
        "TRIBUTARY_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = Broker::kafka();
    for source in SOURCES {
        broker.create_topic(&format!("chaos.{source}")).await;
    }
    // Live for about 2 s per restart: every kill lands while records flow. The REST walk (at
    // most 100 pages/s) needs as long as the feeds of the daemon's run time, so it is still
    // going at the last kill (a restart after the walk would walk the collection again).
    let seconds = 2 * restarts + 4;
    let feeds = Feeds::start(seconds, 1000, seconds as usize * 100).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &feeds.config(&broker, dir.path(), port, "", ""));

    let mut kills = Vec::new();
    let started = Instant::now();
    for _ in 0..restarts {
        let mut daemon = Daemon::spawn(&config, port);
        // Up and moving (a source whose feed is done has nothing more to move).
        let before = resume_ranks(dir.path());
        for source in ["sse", "ws"] {
            if before[source] < feeds.expected(kind(source)) as u64 {
                daemon
                    .wait_for_metric("tributary_records_produced_total", source, 1)
                    .await;
            }
        }
        let moment = Duration::from_millis(rng.random_range(0..1500));
        tokio::time::sleep(moment).await;
        daemon.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
        daemon.child.wait().unwrap();
        kills.push(resume_ranks(dir.path()));
    }
    let killing = started.elapsed();

    let mut last = Daemon::spawn(&config, port);
    wait_for_the_end(dir.path(), &feeds, &mut last).await;
    assert!(last.terminate().await.success());
    let mut report = Vec::new();
    for source in SOURCES {
        let delivery =
            check_topic(&broker, source, feeds.expected(kind(source)), &kills, false).await;
        assert_eq!(delivery.lost, 0, "{source}: {delivery:?}");
        report.push(format!(
            "{source} {} records, {} duplicated",
            feeds.expected(kind(source)),
            delivery.duplicated
        ));
    }
    eprintln!(
        "chaos: {restarts} kill -9 restarts in {:.1} s (seed {seed}): 0 lost; {}",
        killing.as_secs_f64(),
        report.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_frozen_then_killed_loses_nothing_within_the_memory_budget() {
    const CHANNEL_MAX_BYTES: u64 = 4 << 20;
    const QUEUE_KIB: u64 = 16 << 10;
    // What the process may hold beyond its resident memory before the outages plus the
    // configured budget: the allocator's free lists and per-thread arenas, librdkafka's
    // batches and buffers.
    const SLACK_MIB: f64 = 16.0;
    let outage = Duration::from_secs(env_number("TRIBUTARY_CHAOS_OUTAGE_SECONDS", 60));
    let broker = Broker::kafka();
    for source in SOURCES {
        broker.create_topic(&format!("chaos.{source}")).await;
    }
    // Live through both outages and their drains, at 1000 records/s (about 1 MB/s of SSE
    // payload): each outage holds back far more than the configured memory.
    let feeds = Feeds::start(2 * outage.as_secs() + 40, 1000, 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &feeds.config(
            &broker,
            dir.path(),
            port,
            &format!("producer = {{ \"queue.buffering.max.kbytes\" = \"{QUEUE_KIB}\" }}"),
            &format!("channel_max_bytes = {CHANNEL_MAX_BYTES}"),
        ),
    );
    let budget_mib = (3 * CHANNEL_MAX_BYTES / 1024 + QUEUE_KIB) as f64 / 1024.0;
    let mut daemon = Daemon::spawn(&config, port);
    for source in ["sse", "ws"] {
        daemon
            .wait_for_metric("tributary_records_produced_total", source, 1000)
            .await;
    }

    let running_mib = peak_rss_mib(daemon.child.id());
    let mut drains = Vec::new();
    for how in ["frozen (SIGSTOP)", "killed (SIGKILL) and restarted"] {
        if how.starts_with("frozen") {
            broker.freeze(true).await;
            tokio::time::sleep(outage).await;
            broker.freeze(false).await;
        } else {
            broker.down().await;
            tokio::time::sleep(outage).await;
            broker.up().await;
        }
        let back = Instant::now();
        let due = feeds.existing_now();
        for source in ["sse", "ws"] {
            daemon
                .wait_for_metric("tributary_records_produced_total", source, due)
                .await;
        }
        drains.push(format!(
            "{how}: drained in {:.1} s",
            back.elapsed().as_secs_f64()
        ));
    }
    wait_for_the_end(dir.path(), &feeds, &mut daemon).await;
    let peak = peak_rss_mib(daemon.child.id());
    assert!(daemon.terminate().await.success());
    let mut report = Vec::new();
    for source in SOURCES {
        // Without a kill every record is produced once; the idempotent producer's retries
        // after the outage are not duplicates. One extra copy is reported, not failed.
        let delivery = check_topic(&broker, source, feeds.expected(kind(source)), &[], true).await;
        assert_eq!(delivery.lost, 0, "{source}: {delivery:?}");
        report.push(format!("{source} {} duplicated", delivery.duplicated));
    }
    eprintln!(
        "chaos: two {} s broker outages at 1000 records/s per feed: 0 lost; {}; {}; peak RSS {peak:.1} MiB ({running_mib:.1} MiB before the outages, so {:.1} MiB more), budget {budget_mib:.0} MiB + {SLACK_MIB:.0} MiB",
        outage.as_secs(),
        drains.join("; "),
        report.join(", "),
        peak - running_mib,
    );
    assert!(
        peak - running_mib <= budget_mib + SLACK_MIB,
        "peak RSS {peak:.1} MiB is {:.1} MiB above the {running_mib:.1} MiB before the outages: more than the configured channels and producer queue ({budget_mib:.0} MiB) + {SLACK_MIB:.0} MiB",
        peak - running_mib
    );
}
