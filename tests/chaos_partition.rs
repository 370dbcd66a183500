//! One partition's leader down behind a selective transform, on a 3-node Apache Kafka cluster:
//! the records bound for that partition wait in the producer while the feed runs on and the
//! transform filters almost every event. Each filtered event and each record acknowledged
//! behind the stuck one keeps a slot in the source's acknowledgement window until the stuck
//! record is acknowledged; those slots take their share of the producer queue's budget, so
//! the daemon stops reading its feed (backpressure) once the budget is spent instead of
//! growing with the feed. After the node's return every kept record is in Kafka.
//!
//! `TRIBUTARY_CHAOS_OUTAGE_SECONDS` (default 60) sets how long the node stays down.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{process::*, *};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    ClientConfig,
};
use tributary::cli::demo::replay::{FeedEvent, ReplayOptions, ReplayServer};

const SOURCE: &str = "stuck";
/// Events in the feed.
const EVENTS: usize = 1_000_000;
/// Events served while every node is up.
const BEFORE: usize = 20_000;
/// The transform keeps one event in `KEEP`.
const KEEP: usize = 1_000;
const CHANNEL_MAX_RECORDS: u64 = 5_000;
const CHANNEL_MAX_BYTES: u64 = 1 << 20;
const QUEUE_KIB: u64 = 4 << 10;
/// What the process may hold beyond its resident memory before the outage plus the
/// configured budget (the issue's bound).
const SLACK_MIB: f64 = 32.0;

fn kept(i: usize) -> bool {
    i % KEEP == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_partition_behind_a_selective_transform_stays_within_the_memory_budget() {
    let outage = Duration::from_secs(
        std::env::var("TRIBUTARY_CHAOS_OUTAGE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let broker = Broker::kafka_cluster(3);
    let Broker::Kafka(cluster) = &broker else {
        unreachable!()
    };
    // One partition per node, one replica each: killing node 3 stops its partition only. The
    // dead-letter topic lives on node 1.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    let topics = [
        NewTopic::new(SOURCE, 3, TopicReplication::Variable(&[&[1], &[2], &[3]])),
        NewTopic::new("stuck.dlq", 1, TopicReplication::Variable(&[&[1]])),
    ];
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap_or_else(|(topic, code)| panic!("create `{topic}`: {code:?}"));
    }
    let events: Vec<FeedEvent> = (0..EVENTS)
        .map(|i| FeedEvent {
            id: i.to_string(),
            event_type: None,
            data: format!(r#"{{"id":{i},"k":"k{}"}}"#, i % 30),
        })
        .collect();
    let feed = ReplayServer::start(
        events,
        ReplayOptions {
            pause_before: Some(BEFORE),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = process_toml(
        &broker,
        dir.path(),
        SOURCE,
        &feed.url(),
        port,
        &format!(
            "key = \"/k\"\ntransform = \"select(.id % {KEEP} == 1)\"\n\
             channel_max_records = {CHANNEL_MAX_RECORDS}\nchannel_max_bytes = {CHANNEL_MAX_BYTES}"
        ),
    )
    .replace(
        "flush_timeout = \"20s\"",
        &format!(
            "flush_timeout = \"5s\"\nproducer = {{ \"queue.buffering.max.kbytes\" = \"{QUEUE_KIB}\" }}"
        ),
    );
    let config = write_config(dir.path(), &toml);
    let mut daemon = Daemon::spawn(&config, port);
    daemon
        .wait_for_metric("tributary_records_received_total", SOURCE, BEFORE as u64)
        .await;
    daemon
        .wait_for_produced(SOURCE, (BEFORE / KEEP) as u64)
        .await;
    let running_mib = peak_rss_mib(daemon.child.id());

    blocking(|| cluster.kill(Some(3))).unwrap();
    let down = Instant::now();
    feed.release();
    // Either the daemon stops reading (its channel fills: backpressure), or it reads the
    // whole feed while the partition is down (the window grows with the feed).
    let received = loop {
        let scrape = daemon.scrape().await.unwrap_or_default();
        let received = metric(&scrape, "tributary_records_received_total", SOURCE);
        if received >= EVENTS as u64
            || metric(&scrape, "tributary_channel_records", SOURCE) >= CHANNEL_MAX_RECORDS
        {
            break received;
        }
        assert!(
            down.elapsed() < Duration::from_secs(300),
            "neither backpressure nor the end of the feed: {received} events received"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    let stalled_mib = peak_rss_mib(daemon.child.id());

    blocking(|| cluster.start_again()).unwrap();
    let expected: BTreeSet<usize> = (0..EVENTS).filter(|&i| kept(i)).collect();
    daemon
        .wait_for_metric("tributary_records_received_total", SOURCE, EVENTS as u64)
        .await;
    daemon
        .wait_for_produced(SOURCE, expected.len() as u64)
        .await;
    let peak = peak_rss_mib(daemon.child.id());
    assert!(daemon.terminate().await.success());

    let held: Vec<usize> = broker
        .read(SOURCE)
        .await
        .iter()
        .map(|record| {
            let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            value["id"].as_u64().unwrap() as usize
        })
        .collect();
    let distinct: BTreeSet<usize> = held.iter().copied().collect();
    assert_eq!(distinct, expected, "every kept event is in Kafka");
    let budget_mib = (CHANNEL_MAX_BYTES / 1024 + QUEUE_KIB) as f64 / 1024.0;
    eprintln!(
        "chaos: one of 3 partitions down for {} s behind `select(.id % {KEEP} == 1)`: \
         {received} of {EVENTS} events read while it was down; peak RSS {stalled_mib:.1} MiB \
         during the outage, {peak:.1} MiB in all ({running_mib:.1} MiB before, so {:.1} MiB \
         more), budget {budget_mib:.0} MiB + {SLACK_MIB:.0} MiB; 0 lost",
        outage.as_secs(),
        peak - running_mib,
    );
    assert!(
        received < EVENTS as u64,
        "the daemon read the whole feed while a partition was down: nothing held it back"
    );
    assert!(
        peak - running_mib <= budget_mib + SLACK_MIB,
        "peak RSS {peak:.1} MiB is {:.1} MiB above the {running_mib:.1} MiB before the \
         outage: more than the configured channel and producer queue ({budget_mib:.0} MiB) + \
         {SLACK_MIB:.0} MiB",
        peak - running_mib
    );
}
