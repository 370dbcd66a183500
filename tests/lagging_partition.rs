//! A lagging partition, on a 3-node Apache Kafka cluster: the node that holds one partition's
//! only replica is killed, so that partition's records wait in the producer while the other
//! partitions' records are acknowledged and run ahead. The stored position must stay before
//! the first record Kafka does not hold; after `kill -9` of the daemon, the node's return and
//! a restart, every record is in Kafka.
//!
//! The daemon is the `tributary` binary; the SSE feed runs in the test process on 127.0.0.1.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use common::{process::*, *};
use tributary::{
    cli::demo::kafka_admin::{self, ConsumedRecord},
    cli::demo::replay::{FeedEvent, ReplayOptions, ReplayServer},
    state::checkpoint::FileStore,
};

const SOURCE: &str = "lagging";
/// Partitions of the topic; each has one replica.
const TOPIC_PARTITIONS: i32 = 3;
/// Distinct record keys; event `i` has key `k{i % KEYS}`.
const KEYS: usize = 12;
/// Events served while every node is up; the rest are held back until a node is killed.
const BEFORE: usize = 60;
/// Events in the feed.
const EVENTS: usize = 300;

fn key(i: usize) -> String {
    format!("k{}", i % KEYS)
}

fn data(i: usize) -> String {
    format!(r#"{{"k":"{}","n":{i}}}"#, key(i))
}

/// Event `i` has id `i` and a JSON payload whose `/k` is the record key.
fn feed_events() -> Vec<FeedEvent> {
    (0..EVENTS)
        .map(|i| FeedEvent {
            id: i.to_string(),
            event_type: None,
            data: data(i),
        })
        .collect()
}

/// The feed index of `record` (its `tributary.event_id`), after checking that its key and
/// payload are that event's.
fn feed_index(record: &ConsumedRecord) -> usize {
    let id = record
        .header("tributary.event_id")
        .expect("every record has tributary.event_id");
    let i: usize = id
        .parse()
        .ok()
        .filter(|i| *i < EVENTS)
        .unwrap_or_else(|| panic!("unexpected event id `{id}`"));
    assert_eq!(
        record.key.as_deref(),
        Some(key(i).as_bytes()),
        "key of event {i}"
    );
    assert_eq!(record.payload, data(i).as_bytes(), "payload of event {i}");
    i
}

/// The feed index of the stored position, if one is stored.
fn stored_index(state: &Path) -> Option<usize> {
    FileStore::open(state)
        .unwrap()
        .load(SOURCE)
        .unwrap()
        .map(|position| position.as_str().parse().expect("a feed event id"))
}

/// Waits until the committer has run a round that began after this call. Every round sets
/// `tributary_checkpoint_age_seconds` (whole seconds), so the first value other than the
/// current one comes from a later round; it writes the position of every acknowledgement
/// counted before this call.
async fn wait_for_a_commit_round(daemon: &Daemon) {
    let age = |scrape: &str| metric(scrape, "tributary_checkpoint_age_seconds", SOURCE);
    let before = age(&daemon.scrape().await.expect("the daemon serves /metrics"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if daemon.scrape().await.is_some_and(|s| age(&s) != before) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no commit round within 30 s (checkpoint age stuck at {before} s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A position that moved past an unacknowledged record (the other partitions' later
/// acknowledgements taken as covering it) is stored before the `kill -9`: the check against
/// what Kafka holds then fails, naming the stored event and the first one Kafka lacks; had it
/// passed, the restart would resume after the held-back records and lose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_partition_holds_the_position_back_and_kill_9_loses_nothing() {
    let broker = Broker::kafka_cluster(3);
    let Broker::Kafka(cluster) = &broker else {
        unreachable!()
    };
    // One replica per partition: a partition's leader is its only copy, so killing that node
    // makes the partition unavailable while the others go on. The dead-letter topic is
    // replicated and stays writable.
    kafka_admin::create_topics(&broker.brokers(), &[(SOURCE, TOPIC_PARTITIONS)], 1)
        .await
        .unwrap_or_else(|e| panic!("create `{SOURCE}`: {e}"));
    broker.create_topics(&["lagging.dlq"], 1).await;
    let feed = ReplayServer::start(
        feed_events(),
        ReplayOptions {
            pause_before: Some(BEFORE),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let config = write_config(
        dir.path(),
        &process_toml(
            &broker,
            dir.path(),
            SOURCE,
            &feed.url(),
            port,
            "key = \"/k\"",
        ),
    );

    // Every node up: the first BEFORE events reach Kafka; reading them back shows the
    // partition of each key.
    let mut first = Daemon::spawn(&config, port);
    first.wait_for_produced(SOURCE, BEFORE as u64).await;
    wait_until(
        "the position of the last event served to be stored",
        Duration::from_secs(60),
        || stored_index(&state) == Some(BEFORE - 1),
    )
    .await;
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    for record in broker.read(SOURCE).await {
        let i = feed_index(&record);
        let known = *partition_of_key.entry(key(i)).or_insert(record.partition);
        assert_eq!(known, record.partition, "key {} in two partitions", key(i));
    }
    assert_eq!(partition_of_key.len(), KEYS, "every key was served");
    let partition = |i: usize| partition_of_key[&key(i)];

    // The node to kill: of those whose partitions hold some but not all of the events still
    // to come, the one whose first such event comes last, so that the position can move past
    // the pause before it must stop.
    let leaders = broker.partition_leaders(SOURCE).await;
    let held_back_by = |node: i32| -> BTreeSet<usize> {
        (BEFORE..EVENTS)
            .filter(|&i| leaders[&partition(i)] == node)
            .collect()
    };
    let node = leaders
        .values()
        .copied()
        .filter(|&node| {
            let held = held_back_by(node);
            !held.is_empty() && held.len() < EVENTS - BEFORE
        })
        .max_by_key(|&node| held_back_by(node).first().copied())
        .unwrap_or_else(|| panic!("one node leads every partition: {leaders:?}"));
    let held_back = held_back_by(node);
    let first_unheld = *held_back.first().unwrap();
    assert!(
        first_unheld > BEFORE,
        "the position can move after the kill"
    );
    assert!(
        (first_unheld..EVENTS).any(|i| !held_back.contains(&i)),
        "records after the first held-back one are acknowledged"
    );
    blocking(|| cluster.kill(Some(node as usize))).unwrap();
    feed.release();

    // The other partitions run ahead; the lagging one's records wait in the producer.
    let acknowledged = (EVENTS - held_back.len()) as u64;
    first
        .wait_for_metric("tributary_records_received_total", SOURCE, EVENTS as u64)
        .await;
    first.wait_for_produced(SOURCE, acknowledged).await;
    wait_until(
        "the position to reach the last event before the first held-back one",
        Duration::from_secs(60),
        || stored_index(&state) >= Some(first_unheld - 1),
    )
    .await;
    wait_for_a_commit_round(&first).await;
    let scrape = first.scrape().await.unwrap();
    assert_eq!(
        metric(&scrape, "tributary_records_produced_total", SOURCE),
        acknowledged,
        "no record of the partitions led by node {node} was acknowledged while it was down"
    );
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    let stored = stored_index(&state).expect("a position is stored");

    // What Kafka holds once the node is back: everything but the held-back records, and the
    // stored position is before the first record it does not hold.
    blocking(|| cluster.start_again()).unwrap();
    let held: BTreeSet<usize> = broker.read(SOURCE).await.iter().map(feed_index).collect();
    let missing: BTreeSet<usize> = (0..EVENTS).filter(|i| !held.contains(i)).collect();
    assert_eq!(
        missing, held_back,
        "Kafka holds every record but those of the partitions led by node {node}"
    );
    let first_missing = *missing.first().unwrap();
    assert!(
        stored < first_missing,
        "the stored position (event {stored}) covers event {first_missing}, which Kafka does not hold"
    );

    // A restart resumes from the stored position and brings every record to Kafka.
    let mut second = Daemon::spawn(&config, port);
    second
        .wait_for_produced(SOURCE, (EVENTS - 1 - stored) as u64)
        .await;
    let status = second.terminate().await;
    assert!(status.success(), "SIGTERM ends the daemon with 0: {status}");
    assert_eq!(
        feed.stats().last_event_ids.lock().unwrap().clone(),
        vec![None, Some(stored.to_string())],
        "the restarted daemon resumed from the stored position"
    );

    let mut records = broker.read(SOURCE).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut copies = vec![0usize; EVENTS];
    let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for record in &records {
        let i = feed_index(record);
        assert_eq!(record.partition, partition(i), "event {i}'s partition");
        copies[i] += 1;
        by_partition.entry(record.partition).or_default().push(i);
    }
    let lost: Vec<usize> = (0..EVENTS).filter(|&i| copies[i] == 0).collect();
    assert!(lost.is_empty(), "{} events lost: {lost:?}", lost.len());
    let duplicated: Vec<usize> = (0..EVENTS).filter(|&i| copies[i] > 1).collect();
    assert!(
        duplicated.iter().all(|&i| i > stored && copies[i] == 2),
        "only events after the stored position ({stored}) are duplicated, once: {duplicated:?}"
    );
    for (partition, events) in &by_partition {
        // The first daemon's records, then the restarted one's (all after the stored
        // position), each run in feed order.
        let restarts: Vec<usize> = (1..events.len())
            .filter(|&k| events[k] <= events[k - 1])
            .collect();
        assert!(
            restarts.len() <= 1 && restarts.iter().all(|&k| events[k] > stored),
            "partition {partition} is out of feed order: {events:?}"
        );
        let mut seen = BTreeSet::new();
        let firsts: Vec<usize> = events.iter().copied().filter(|&i| seen.insert(i)).collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}'s first copies are out of feed order: {firsts:?}"
        );
    }
    eprintln!(
        "node {node} down: {} events held back from event {first_unheld}, position stored at {stored}, {} duplicated after the restart, 0 lost",
        held_back.len(),
        duplicated.len()
    );
}
