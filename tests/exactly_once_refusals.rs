//! Refusals inside a transaction, on Apache Kafka, for a source with
//! `delivery = "exactly_once"`: a batch the broker refuses dooms the open transaction; it is
//! aborted, the source rewinds to its last committed position, and the refused records come
//! again alone. Read with `read_committed`, the topic then holds every event once, and only the
//! record refused on its own reaches the dead-letter topic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tributary::cli::demo::replay::{FeedEvent, ReplayOptions, ReplayServer};

/// Waits until `source`'s position committed in the Kafka store is `position`.
async fn wait_for_committed(broker: &Broker, source: &str, position: &str) {
    let store = positions_store(broker, "tributary.positions", "default").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let positions = store.positions().await.expect("read the positions");
        let stored = positions
            .get(source)
            .and_then(|entry| entry.position.as_ref())
            .map(|p| p.to_string());
        if stored.as_deref() == Some(position) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the committed position is {stored:?}, not {position}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 300 events of about 20 KB under a topic limit of 100,000 bytes that their batches pass,
/// and one of 150 KB that is too large on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_aborts_rewinds_and_loses_nothing_exactly_once() {
    const EVENTS: usize = 300;
    const LARGE: usize = 150;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("tributary=debug"))
        .try_init();
    let broker = Broker::kafka();
    create_topic_with(
        &broker.brokers(),
        "eos.batched",
        &[("max.message.bytes", "100000")],
    )
    .await;
    broker.create_topic("eos.batched.dlq").await;
    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            let len = if i == LARGE { 150_000 } else { 20_000 };
            (
                i.to_string(),
                format!(r#"{{"n":{i},"blob":"{}"}}"#, noise(i as u64, len)),
            )
        })
        .collect();
    // The feed resumes from Last-Event-ID, as a rewind needs.
    let feed = ReplayServer::start(
        events
            .iter()
            .map(|(id, data)| FeedEvent {
                id: id.clone(),
                event_type: None,
                data: data.clone(),
            })
            .collect(),
        ReplayOptions::default(),
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "batched",
        &feed.url(),
        "eos.batched",
        "delivery = \"exactly_once\"",
    )
    .replace("[checkpoint]\n", "[checkpoint]\nstore = \"kafka\"\n");
    let daemon = start_daemon(&toml).await;
    wait_for_committed(&broker, "batched", "299").await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    let mut held: Vec<usize> = broker
        .read("eos.batched")
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
    assert_eq!(
        held, expected,
        "every event but the oversized one, exactly once"
    );
    let dead = broker.read("eos.batched.dlq").await;
    assert_eq!(
        dead.len(),
        1,
        "only the oversized event is dead-lettered, once"
    );
    assert_eq!(dead[0].header("tributary.event_id"), Some("150"));
    assert_eq!(
        dead[0].header("tributary.error_kind"),
        Some("message_too_large")
    );
    let aborted: u64 = scrape
        .lines()
        .filter(|line| {
            line.starts_with("tributary_transactions_total{")
                && line.contains("outcome=\"aborted\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    assert!(aborted >= 1, "the refusals aborted a transaction: {scrape}");
}
