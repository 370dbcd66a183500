//! Hot reload with the real binary on Apache Kafka: SIGHUP (and `--watch-config`) applies a
//! new config source by source. Each SSE source reads its own live feed server, whose
//! connection count shows which sources reconnected.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use common::{process::*, *};
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    state::checkpoint::FileStore,
};

/// A live feed: 200 events per second for a minute.
async fn feed() -> ReplayServer {
    ReplayServer::start_wikimedia(
        12_000,
        ReplayOptions {
            events_per_second: Some(200),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap()
}

fn connections(feed: &ReplayServer) -> usize {
    feed.stats().connections.load(Ordering::SeqCst)
}

fn source(name: &str, feed: &ReplayServer, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "sse"
url = "{url}"
topic = "{name}"
{extra}
"#,
        url = feed.url()
    )
}

fn header(broker: &Broker, dir: &Path, port: u16) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "10s"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:{port}"
"#,
        brokers = broker.brokers(),
        state = dir.join("state").display(),
    )
}

/// The value of `tributary_config_reloads_total{outcome}`.
async fn reloads(daemon: &Daemon, outcome: &str) -> u64 {
    let scrape = daemon.scrape().await.unwrap_or_default();
    let prefix = format!("tributary_config_reloads_total{{outcome=\"{outcome}\"}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

async fn wait_for_reloads(daemon: &mut Daemon, outcome: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reloads(daemon, outcome).await < count {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("the daemon exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no reload with outcome {outcome} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_starts_stops_and_restarts_sources_and_leaves_the_others_connected() {
    let broker = Broker::kafka();
    for name in ["a", "b", "c", "d", "e"] {
        broker.create_topic(name).await;
    }
    let feeds = [
        feed().await,
        feed().await,
        feed().await,
        feed().await,
        feed().await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let head = header(&broker, dir.path(), port);
    let config = write_config(
        dir.path(),
        &[
            head.clone(),
            source("a", &feeds[0], ""),
            source("b", &feeds[1], ""),
            source("c", &feeds[2], ""),
            source("d", &feeds[3], ""),
        ]
        .concat(),
    );
    let mut daemon = Daemon::spawn(&config, port);
    for name in ["a", "b", "c", "d"] {
        daemon.wait_for_produced(name, 100).await;
    }
    let before: Vec<usize> = feeds.iter().map(connections).collect();

    // c's settings change, d goes, e comes; a and b stay as they are.
    write_config(
        dir.path(),
        &[
            head.clone(),
            source("a", &feeds[0], ""),
            source("b", &feeds[1], ""),
            source("c", &feeds[2], "max_event_bytes = 4194304"),
            source("e", &feeds[4], ""),
        ]
        .concat(),
    );
    send_signal(&daemon.child, libc::SIGHUP);
    wait_for_reloads(&mut daemon, "applied", 1).await;
    daemon.wait_for_produced("e", 100).await;
    let c_before = daemon
        .scrape()
        .await
        .map_or(0, |s| metric(&s, "tributary_records_produced_total", "c"));
    daemon.wait_for_produced("c", c_before + 100).await;
    let after: Vec<usize> = feeds.iter().map(connections).collect();
    eprintln!("hot reload: feed connections a..e before {before:?}, after {after:?}");
    assert_eq!(after[0], before[0], "a reconnected");
    assert_eq!(after[1], before[1], "b reconnected");
    assert_eq!(after[2], before[2] + 1, "c did not restart once");
    assert_eq!(after[3], before[3], "d reconnected after it was removed");
    assert_eq!(after[4], 1, "e did not start");
    // c's new instance asked its feed for what follows the position its old one stored.
    let c_requests = feeds[2].stats().last_event_ids.lock().unwrap().clone();
    assert_eq!(c_requests.len(), 2, "c's requests: {c_requests:?}");
    assert_eq!(c_requests[0], None, "c's first instance started afresh");
    let resumed_from = c_requests[1]
        .as_deref()
        .and_then(replay::wikimedia_event_index)
        .unwrap_or_else(|| {
            panic!(
                "c restarted without a stored position as Last-Event-ID: {:?}",
                c_requests[1]
            )
        });
    let (_, readiness) = http_get(&format!("http://127.0.0.1:{port}/readyz")).await;
    assert!(
        !readiness.contains("\"d\""),
        "d is still listed: {readiness}"
    );
    // d's series left the scrape; c's (restarted, not removed) go on.
    let scrape = daemon.scrape().await.expect("a scrape");
    assert!(
        !scrape.contains("source=\"d\""),
        "d's series outlived it: {}",
        scrape
            .lines()
            .filter(|line| line.contains("source=\"d\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metric(&scrape, "tributary_records_produced_total", "c") >= c_before + 100);

    // d stopped cleanly: its position is its last record in Kafka.
    let store = FileStore::open(dir.path().join("state")).unwrap();
    let stored = store.load("d").unwrap().expect("d's position is stored");
    let d_records = broker.read("d").await;
    let last = d_records
        .iter()
        .map(|r| replay::wikimedia_event_index(r.header("tributary.event_id").unwrap()).unwrap())
        .max()
        .unwrap();
    assert_eq!(
        replay::wikimedia_event_index(stored.as_str()),
        Some(last),
        "d's stored position is not its last produced record"
    );

    // An invalid file changes nothing.
    std::fs::write(&config, "[kafka\nbrokers = ").unwrap();
    send_signal(&daemon.child, libc::SIGHUP);
    wait_for_reloads(&mut daemon, "invalid", 1).await;
    // A Kafka setting needs a restart: nothing changes.
    write_config(
        dir.path(),
        &[
            head.replace("flush_timeout = \"10s\"", "flush_timeout = \"20s\""),
            source("a", &feeds[0], ""),
        ]
        .concat(),
    );
    send_signal(&daemon.child, libc::SIGHUP);
    wait_for_reloads(&mut daemon, "restart_required", 1).await;
    let b_now = daemon
        .scrape()
        .await
        .map_or(0, |s| metric(&s, "tributary_records_produced_total", "b"));
    daemon.wait_for_produced("b", b_now + 100).await;
    let unchanged: Vec<usize> = feeds.iter().map(connections).collect();
    assert_eq!(unchanged, after, "a refused reload changed connections");
    assert_eq!(reloads(&daemon, "applied").await, 1);
    assert!(daemon.terminate().await.success());

    // c's records: each event once, none skipped. The old instance produced up to the
    // position it stored; had the new one resumed before it, those records would be here
    // twice; after it, some would be missing.
    let mut copies: BTreeMap<usize, usize> = BTreeMap::new();
    for record in broker.read("c").await {
        let id = record.header("tributary.event_id").unwrap();
        *copies
            .entry(replay::wikimedia_event_index(id).unwrap())
            .or_default() += 1;
    }
    let again: Vec<usize> = copies
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&i, _)| i)
        .collect();
    assert!(
        again.is_empty(),
        "c produced events again after resuming from event {resumed_from}: {again:?}"
    );
    let last = *copies.keys().next_back().unwrap();
    assert!(
        last > resumed_from,
        "c's new instance produced nothing after event {resumed_from}"
    );
    let missing: Vec<usize> = (0..=last).filter(|i| !copies.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "c skipped events around the restart from event {resumed_from}: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let broker = Broker::kafka();
    for name in ["a", "b"] {
        broker.create_topic(name).await;
    }
    let feeds = [feed().await, feed().await];
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let head = header(&broker, dir.path(), port);
    let config = write_config(
        dir.path(),
        &[head.clone(), source("a", &feeds[0], "")].concat(),
    );
    let mut daemon = Daemon::spawn_with(&config, port, |command| {
        command.arg("--watch-config").env("RUST_LOG", "warn");
    });
    daemon.wait_for_produced("a", 100).await;
    // As a ConfigMap update does: a new file renamed over the old one.
    let next = dir.path().join("next.toml");
    std::fs::write(
        &next,
        [head, source("a", &feeds[0], ""), source("b", &feeds[1], "")].concat(),
    )
    .unwrap();
    std::fs::rename(&next, &config).unwrap();
    wait_for_reloads(&mut daemon, "applied", 1).await;
    daemon.wait_for_produced("b", 100).await;
    assert_eq!(connections(&feeds[0]), 1, "a reconnected");
    assert!(daemon.terminate().await.success());
}
