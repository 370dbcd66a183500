//! Chaos, exactly-once: one `tributary` process runs an SSE, a WebSocket and a REST source with
//! `delivery = "exactly_once"` against Apache Kafka, with live feeds on 127.0.0.1 that resume
//! from a position, and is killed with SIGKILL at random moments. Read back with
//! `isolation.level=read_committed`, every topic holds each record exactly once, in feed order
//! per partition: no loss and no duplicate, whenever the kills came.
//!
//! `TRIBUTARY_CHAOS_RESTARTS` (default 10) and `TRIBUTARY_CHAOS_SEED` (default: the clock)
//! change the run; the test prints its figures.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{feeds::*, process::*, *};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tributary::cli::demo::replay;

/// The three sources, their topics and their feeds.
const SOURCES: [&str; 3] = ["sse", "ws", "rest"];

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

/// What one source's topic held, read with `read_committed`.
#[derive(Debug, Default)]
struct Held {
    distinct: usize,
    duplicated: Vec<String>,
}

/// Reads `source`'s topic: each record's identity, its copies, and feed order per partition
/// among the first copies.
async fn held(broker: &Broker, source: &str) -> Held {
    let records = broker.read(&format!("chaos.{source}")).await;
    let recorded = replay::recorded_wikimedia_events();
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut last_in_partition: HashMap<i32, u64> = HashMap::new();
    for record in &records {
        let (key, rank) = identify(kind(source), source, record, &recorded);
        let count = copies.entry(key).or_default();
        *count += 1;
        if *count == 1 && source != "rest" {
            if let Some(previous) = last_in_partition.insert(record.partition, rank) {
                assert!(
                    previous < rank,
                    "{source}: partition {} has {rank} after {previous}",
                    record.partition
                );
            }
        }
    }
    Held {
        distinct: copies.len(),
        duplicated: copies
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(key, n)| format!("{key}×{n}"))
            .collect(),
    }
}

/// Waits until every source's committed position (read from the Kafka store, as the daemon
/// reads it) is at the end of its feed: the SSE and WebSocket feeds' last record, the REST
/// walk done.
async fn wait_for_the_end(
    broker: &Broker,
    feeds: &Feeds,
    daemon: &mut Daemon,
    feed_seconds: u64,
    restarts: u64,
) {
    let store = positions_store(broker, "chaos.positions", "default").await;
    // The REST walk takes as long as the feeds (at most 100 pages/s) when nothing stops it;
    // each restart stops it for up to `transaction.timeout.ms` (10 s) while the killed
    // transactions are aborted. Past that, 4 minutes.
    let deadline = feeds.started + Duration::from_secs(feed_seconds + 10 * restarts + 240);
    loop {
        let positions = store.positions().await.expect("read the positions");
        let stored = |source: &str| {
            positions
                .get(source)
                .and_then(|entry| entry.position.as_ref())
                .map(|p| p.as_str().to_owned())
        };
        let sse = stored("sse").map_or(0, |id| {
            replay::wikimedia_event_index(&id).expect("a feed id") + 1
        });
        let ws = stored("ws").map_or(0, |seq| seq.parse::<u64>().unwrap() + 1);
        let rest_done = stored("rest").is_some_and(|text| {
            let position: serde_json::Value = serde_json::from_str(&text).unwrap();
            position["walk"].is_null()
        });
        if sse >= feeds.sse_events && ws > feeds.ws_frames && rest_done {
            return;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("the daemon exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the committed positions did not reach the feeds' ends: sse {sse}/{}, ws {ws}/{}, rest done {rest_done}",
            feeds.sse_events,
            feeds.ws_frames
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_duplicates_nothing_read_committed() {
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
    // Live for about 15 s per restart: every kill lands while records flow. A start after a
    // kill fences the killed producers and reads the positions past their open transactions,
    // which the coordinator aborts within `transaction.timeout.ms` (10 s).
    let seconds = 15 * restarts + 10;
    // The REST walk (at most 100 pages/s) lasts about half the run: kills land in it, and it
    // ends in time however many restarts interrupt it.
    let feeds = Feeds::start(seconds, 500, seconds as usize * 50).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = feeds
        .config(
            &broker,
            dir.path(),
            port,
            "transaction_interval = \"200ms\"",
            "delivery = \"exactly_once\"",
        )
        .replace(
            "[checkpoint]\n",
            "[checkpoint]\nstore = \"kafka\"\ntopic = \"chaos.positions\"\n",
        );
    let config = write_config(dir.path(), &toml);

    let started = Instant::now();
    let mut moments = Vec::new();
    for _ in 0..restarts {
        let mut daemon = Daemon::spawn(&config, port);
        for source in ["sse", "ws"] {
            daemon
                .wait_for_metric("tributary_transactions_total", source, 1)
                .await;
        }
        let moment = Duration::from_millis(rng.random_range(0..1500));
        tokio::time::sleep(moment).await;
        daemon.child.kill().unwrap(); // SIGKILL: an open transaction is left behind.
        daemon.child.wait().unwrap();
        moments.push(moment.as_millis());
    }
    let killing = started.elapsed();

    let mut last = Daemon::spawn(&config, port);
    wait_for_the_end(&broker, &feeds, &mut last, seconds, restarts).await;
    assert!(last.terminate().await.success());
    let mut report = Vec::new();
    for source in SOURCES {
        let expected = feeds.expected(kind(source));
        let held = held(&broker, source).await;
        assert!(
            held.duplicated.is_empty(),
            "{source}: duplicated under read_committed: {:?}",
            held.duplicated
        );
        assert_eq!(held.distinct, expected, "{source}: records lost");
        report.push(format!("{source} {expected} records"));
    }
    eprintln!(
        "chaos exactly-once: {restarts} kill -9 restarts in {:.1} s (seed {seed}, kills {moments:?} ms after the first commit): 0 lost, 0 duplicated; {}",
        killing.as_secs_f64(),
        report.join(", ")
    );
}
