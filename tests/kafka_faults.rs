//! Kafka's refusals, on Apache Kafka: a record too large for Kafka reaches the dead-letter topic
//! as a stub (its first bytes, size and SHA-256); a topic that does not exist stops its source
//! with the cause in `/readyz`, and no position moves past a record Kafka does not hold.

mod common;

use std::time::Duration;

use common::*;
use sha2::Digest as _;
use tributary::{checkpoint::FileStore, health::SourceState};

/// An SSE body of `events` (id, data), each `id: N` and `data: …`.
fn sse_body(events: &[(String, String)]) -> String {
    events
        .iter()
        .map(|(id, data)| format!("id: {id}\ndata: {data}\n\n"))
        .collect()
}

/// A JSON event whose `blob` is `len` bytes of text that compresses badly.
fn incompressible_event(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let blob: String = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    format!(r#"{{"blob":"{blob}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_kafka_reaches_the_dead_letter_topic_as_a_stub() {
    const LIMIT: usize = 100_000;
    let broker = Broker::kafka();
    broker.create_topic("big").await;
    let huge = incompressible_event(300_000);
    let events = vec![
        ("1".to_owned(), r#"{"n":1}"#.to_owned()),
        ("2".to_owned(), huge.clone()),
        ("3".to_owned(), r#"{"n":3}"#.to_owned()),
    ];
    let feed = ScriptedServer::start(vec![Scripted::events(&sse_body(&events), true)]).await;
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "big",
        &format!("{}/stream", feed.base_url),
        "big",
        "",
    )
    .replace(
        "flush_timeout = \"20s\"",
        &format!("flush_timeout = \"20s\"\n[kafka.producer]\n\"message.max.bytes\" = \"{LIMIT}\""),
    );
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "big", 3).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    let produced: Vec<String> = broker
        .read("big")
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.payload).unwrap())
        .collect();
    assert_eq!(produced.len(), 2, "{produced:?}");
    assert!(produced.iter().all(|p| p.starts_with(r#"{"n":"#)));

    let dead = broker.read("big.dlq").await;
    assert_eq!(dead.len(), 1, "one stub");
    let stub = &dead[0];
    assert_eq!(stub.key.as_deref(), Some(&b"2"[..]), "the key stays");
    assert_eq!(stub.payload, huge.as_bytes()[..4096], "the first 4 KiB");
    assert_eq!(stub.header("tributary.source"), Some("big"));
    assert_eq!(stub.header("tributary.event_id"), Some("2"));
    assert_eq!(stub.header("tributary.event_type"), Some("message"));
    assert!(stub
        .header("tributary.url")
        .is_some_and(|url| url.ends_with("/stream")));
    assert!(stub.header("tributary.fetched_at").is_some());
    assert_eq!(
        stub.header("tributary.error_kind"),
        Some("message_too_large")
    );
    let error = stub.header("tributary.error").unwrap();
    assert!(error.contains("topic `big`"), "{error}");
    assert_eq!(
        stub.header("tributary.original_size"),
        Some(huge.len().to_string().as_str())
    );
    assert_eq!(
        stub.header("tributary.original_sha256"),
        Some(hex::encode(sha2::Sha256::digest(huge.as_bytes())).as_str())
    );
    assert_eq!(dead_lettered_total(&scrape, "big"), 1, "{scrape}");

    let stored = FileStore::open(state.path()).unwrap().load("big").unwrap();
    assert_eq!(
        stored.map(|p| p.to_string()).as_deref(),
        Some("3"),
        "every record is held by Kafka (the stub stands for the second)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_stops_the_source_and_its_position_stays() {
    let broker = Broker::kafka();
    let events: Vec<(String, String)> = (1..=20)
        .map(|i| (i.to_string(), format!(r#"{{"n":{i}}}"#)))
        .collect();
    let feed = ScriptedServer::start(vec![Scripted::events(&sse_body(&events), true)]).await;
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "typo",
        &format!("{}/stream", feed.base_url),
        "typo",
        "",
    );
    let daemon = start_daemon(&toml).await;
    let health = daemon.health().clone();
    wait_until("the source to fail", Duration::from_secs(60), || {
        matches!(health.get("typo"), Some(SourceState::Failed(_)))
    })
    .await;
    let Some(SourceState::Failed(reason)) = health.get("typo") else {
        unreachable!()
    };
    assert!(
        reason.contains("topic `typo` does not exist; create it"),
        "{reason}"
    );
    let (status, body) = http_get(&format!("http://{}/readyz", daemon.metrics_address())).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("does not exist"), "{body}");
    let scrape = daemon.metrics().render();
    assert!(
        scrape.contains(r#"tributary_pipeline_faults_total{kind="unknown_topic",source="typo"} 1"#),
        "{scrape}"
    );
    assert_eq!(
        daemon
            .metrics()
            .registered("typo")
            .expect("a registered source")
            .records_produced
            .get(),
        0
    );
    daemon.shutdown().await;
    assert_eq!(
        FileStore::open(state.path()).unwrap().load("typo").unwrap(),
        None,
        "nothing reached Kafka, so no position is stored"
    );

    // Once the operator creates the topics, a restart reads every event: none was skipped.
    broker.create_topic("typo").await;
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "typo", 20).await;
    daemon.shutdown().await;
    let mut keys = sorted_keys(&broker, "typo").await;
    keys.sort_by_key(|k| k.parse::<u32>().unwrap());
    let expected: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(keys, expected);
}
