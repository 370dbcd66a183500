//! Refusals of a whole batch, on Apache Kafka: the broker judges a topic's `max.message.bytes`
//! against a whole batch, and names the invalid records of a batch (KIP-467) while the others
//! share its refusal. Only a record refused on its own may reach the dead-letter topic; its
//! batch-mates are sent again, alone, and reach their topic whole.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use tributary::state::checkpoint::FileStore;

fn stored(state: &std::path::Path, source: &str) -> Option<String> {
    FileStore::open(state)
        .unwrap()
        .load(source)
        .unwrap()
        .map(|p| p.to_string())
}

/// 300 events of about 20 KB, each well under the topic's `max.message.bytes` of 100,000
/// bytes, whose batches are not: every event reaches the topic whole. One event of 150 KB is
/// too large on its own: the broker refuses it again when it is sent alone, and only it
/// reaches the dead-letter topic, as a stub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_topics_limit_loses_no_content() {
    const EVENTS: usize = 300;
    const LARGE: usize = 150;
    let broker = Broker::kafka();
    create_topic_with(
        &broker.brokers(),
        "batched",
        &[("max.message.bytes", "100000")],
    )
    .await;
    broker.create_topic("batched.dlq").await;
    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            let len = if i == LARGE { 150_000 } else { 20_000 };
            (
                i.to_string(),
                format!(r#"{{"n":{i},"blob":"{}"}}"#, noise(i as u64, len)),
            )
        })
        .collect();
    let feed = ScriptedServer::start(vec![Scripted::events(&sse_body(&events), true)]).await;
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "batched",
        &format!("{}/stream", feed.base_url),
        "batched",
        "",
    );
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "batched", EVENTS as u64).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    let mut held: Vec<usize> = broker
        .read("batched")
        .await
        .iter()
        .map(|record| {
            let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            let n = value["n"].as_u64().unwrap() as usize;
            assert_eq!(record.payload, events[n].1.as_bytes(), "event {n} whole");
            n
        })
        .collect();
    held.sort_unstable();
    let expected: Vec<usize> = (0..EVENTS).filter(|&i| i != LARGE).collect();
    assert_eq!(held, expected, "every event but the oversized one, once");

    let dead = broker.read("batched.dlq").await;
    assert_eq!(dead.len(), 1, "only the oversized event is dead-lettered");
    assert_eq!(dead[0].header("tributary.event_id"), Some("150"));
    assert_eq!(
        dead[0].header("tributary.error_kind"),
        Some("message_too_large")
    );
    assert_eq!(
        dead[0].header("tributary.original_size"),
        Some(events[LARGE].1.len().to_string().as_str())
    );
    assert_eq!(dead_lettered_total(&scrape, "batched"), 1, "{scrape}");
    assert_eq!(
        stored(state.path(), "batched").as_deref(),
        Some("299"),
        "the position covers every event"
    );
}

/// A topic that refuses timestamps older than a day, and one event 400 days old among 200:
/// that event alone reaches the dead-letter topic (`invalid_timestamp`); the 199 others, some
/// of which shared its batch, reach the topic with their own timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_timestamp_dead_letters_only_its_own_record() {
    const EVENTS: usize = 200;
    const OLD: usize = 100;
    let broker = Broker::kafka();
    create_topic_with(
        &broker.brokers(),
        "stamped",
        &[("message.timestamp.before.max.ms", "86400000")],
    )
    .await;
    broker.create_topic("stamped.dlq").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stamp = |i: usize| {
        if i == OLD {
            now - 400 * 86_400_000
        } else {
            now - 1_000 + i as u64
        }
    };
    let events: Vec<(String, String)> = (1..=EVENTS)
        .map(|i| {
            (
                i.to_string(),
                format!(
                    r#"{{"n":{i},"ts":{},"pad":"{}"}}"#,
                    stamp(i),
                    noise(i as u64, 180)
                ),
            )
        })
        .collect();
    let feed = ScriptedServer::start(vec![Scripted::events(&sse_body(&events), true)]).await;
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "stamped",
        &format!("{}/stream", feed.base_url),
        "stamped",
        "timestamp = \"/ts\"\ntimestamp_unit = \"milliseconds\"",
    );
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "stamped", EVENTS as u64).await;
    daemon.shutdown().await;

    let mut held: Vec<usize> = broker
        .read("stamped")
        .await
        .iter()
        .map(|record| {
            let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            let n = value["n"].as_u64().unwrap() as usize;
            eprintln!(
                "{n} {:?} {} {:?}",
                record.timestamp,
                stamp(n),
                record.header("tributary.event_time")
            );
            n
        })
        .collect();
    held.sort_unstable();
    let expected: Vec<usize> = (1..=EVENTS).filter(|&i| i != OLD).collect();
    assert_eq!(held, expected, "every event but the old one, once");

    let dead = broker.read("stamped.dlq").await;
    let dead_ids: Vec<&str> = dead
        .iter()
        .filter_map(|r| r.header("tributary.event_id"))
        .collect();
    assert_eq!(dead_ids, ["100"], "only the old event is dead-lettered");
    assert_eq!(
        dead[0].header("tributary.error_kind"),
        Some("invalid_timestamp")
    );
    assert_eq!(stored(state.path(), "stamped").as_deref(), Some("200"));
}

/// A producer queue budget of 32 KiB and records of 8 KB into a topic whose limit two of them
/// exceed: nearly every delivery fails with its batch, and each failed record keeps its share
/// of the budget until it is sent again. The pump, waiting for budget for the next record,
/// takes those failures back meanwhile, so it never waits on bytes only they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_never_leave_the_pump_waiting_for_their_budget() {
    const EVENTS: usize = 200;
    let broker = Broker::kafka();
    create_topic_with(
        &broker.brokers(),
        "starved",
        &[("max.message.bytes", "12000")],
    )
    .await;
    broker.create_topic("starved.dlq").await;
    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            (
                i.to_string(),
                format!(r#"{{"n":{i},"blob":"{}"}}"#, noise(1_000 + i as u64, 8_000)),
            )
        })
        .collect();
    let feed = ScriptedServer::start(vec![Scripted::events(&sse_body(&events), true)]).await;
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "starved",
        &format!("{}/stream", feed.base_url),
        "starved",
        "",
    )
    .replace(
        "flush_timeout = \"20s\"",
        "flush_timeout = \"20s\"\nproducer = { \"queue.buffering.max.kbytes\" = \"32\", \"linger.ms\" = \"50\" }",
    );
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "starved", EVENTS as u64).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    let refused: u64 = scrape
        .lines()
        .filter(|l| {
            l.starts_with("tributary_kafka_errors_total{") && l.contains("message_too_large")
        })
        .filter(|l| l.contains("source=\"starved\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    assert!(refused > 0, "Kafka refused batches: {scrape}");
    let mut held: Vec<usize> = broker
        .read("starved")
        .await
        .iter()
        .map(|record| {
            let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            value["n"].as_u64().unwrap() as usize
        })
        .collect();
    held.sort_unstable();
    assert_eq!(held, (0..EVENTS).collect::<Vec<_>>(), "every event, once");
    assert!(broker.read("starved.dlq").await.is_empty());
}
