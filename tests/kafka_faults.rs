//! Kafka's refusals, on Apache Kafka: a record too large for Kafka reaches the dead-letter topic
//! as a stub (its first bytes, size and SHA-256), whether the producer refuses it before sending
//! or the broker refuses it for its topic in a delivery report; a topic that does not exist stops
//! its source with the cause in `/readyz`, and no position moves past a record Kafka does not
//! hold.

mod common;

use std::time::Duration;

use common::*;
use sha2::Digest as _;
use tributary::{runtime::health::SourceState, state::checkpoint::FileStore};

/// A JSON event whose `blob` is `len` bytes of text that compresses badly.
fn incompressible_event(len: usize) -> String {
    format!(r#"{{"blob":"{}"}}"#, noise(0, len))
}

/// Events 1 and 3 small, event 2 `huge`.
fn small_huge_small(huge: &str) -> Vec<(String, String)> {
    vec![
        ("1".to_owned(), r#"{"n":1}"#.to_owned()),
        ("2".to_owned(), huge.to_owned()),
        ("3".to_owned(), r#"{"n":3}"#.to_owned()),
    ]
}

/// The value of `tributary_kafka_errors_total{kind="message_too_large"}` for `source`.
fn too_large_refusals(scrape: &str, source: &str) -> u64 {
    let series =
        format!(r#"tributary_kafka_errors_total{{kind="message_too_large",source="{source}"}} "#);
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().unwrap())
}

/// Asserts what the daemon left in Kafka and in its store for [`small_huge_small`] from SSE
/// source `source` into `topic`: events 1 and 3 whole in the topic, event 2 as one stub in the
/// dead-letter topic (its key, first 4 KiB, lineage, error naming the topic, original size and
/// SHA-256), and the position past all three.
async fn assert_only_a_stub_of_the_huge_event(
    broker: &Broker,
    state: &std::path::Path,
    source: &str,
    topic: &str,
    huge: &str,
) {
    let mut produced: Vec<String> = broker
        .read(topic)
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.payload).unwrap())
        .collect();
    produced.sort();
    assert_eq!(produced, [r#"{"n":1}"#, r#"{"n":3}"#]);

    let dead = broker.read(&format!("{topic}.dlq")).await;
    assert_eq!(dead.len(), 1, "one stub");
    let stub = &dead[0];
    assert_eq!(stub.key.as_deref(), Some(&b"2"[..]), "the key stays");
    assert_eq!(stub.payload, huge.as_bytes()[..4096], "the first 4 KiB");
    assert_eq!(stub.header("tributary.source"), Some(source));
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
    assert!(error.contains(&format!("topic `{topic}`")), "{error}");
    assert_eq!(
        stub.header("tributary.original_size"),
        Some(huge.len().to_string().as_str())
    );
    assert_eq!(
        stub.header("tributary.original_sha256"),
        Some(hex::encode(sha2::Sha256::digest(huge.as_bytes())).as_str())
    );

    let stored = FileStore::open(state).unwrap().load(source).unwrap();
    assert_eq!(
        stored.map(|p| p.to_string()).as_deref(),
        Some("3"),
        "every record is held by Kafka (the stub stands for the second)"
    );
}

/// The producer's `message.max.bytes` is 100,000 bytes and the topic takes the broker's default
/// (about 1 MB): librdkafka refuses the 300,000-byte record when it is handed over, before any
/// batch, and that refusal alone sends its stub to the dead-letter topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_producers_message_max_bytes_reaches_the_dead_letter_topic_as_a_stub() {
    const LIMIT: usize = 100_000;
    let broker = Broker::kafka();
    broker.create_topic("big").await;
    let huge = incompressible_event(300_000);
    let feed = ScriptedServer::start(vec![Scripted::events(
        &sse_body(&small_huge_small(&huge)),
        true,
    )])
    .await;
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

    assert_only_a_stub_of_the_huge_event(&broker, state.path(), "big", "big", &huge).await;
    assert_eq!(dead_lettered_total(&scrape, "big"), 1, "{scrape}");
    assert_eq!(
        too_large_refusals(&scrape, "big"),
        1,
        "one refusal, the producer's at send time (the broker's would come in a delivery report \
         and again when the record is sent alone): {scrape}"
    );
}

/// The topic's `max.message.bytes` is 100,000 bytes and the producer keeps its default
/// `message.max.bytes` (1,000,000): the producer sends the 300,000-byte record and the broker
/// refuses it, in a delivery report. Refused with its batch, it is sent again alone; refused
/// alone, its stub reaches the dead-letter topic, built from the record the delivery report gave
/// back, and the position moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_its_topic_is_refused_by_the_broker_and_its_stub_reaches_the_dead_letter_topic(
) {
    let broker = Broker::kafka();
    create_topic_with(
        &broker.brokers(),
        "capped",
        &[("max.message.bytes", "100000")],
    )
    .await;
    broker.create_topics(&["capped.dlq"], 1).await;
    let huge = incompressible_event(300_000);
    let feed = ScriptedServer::start(vec![Scripted::events(
        &sse_body(&small_huge_small(&huge)),
        true,
    )])
    .await;
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "capped",
        &format!("{}/stream", feed.base_url),
        "capped",
        "",
    );
    assert!(
        !toml.contains("message.max.bytes"),
        "the producer's default"
    );
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "capped", 3).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    assert_only_a_stub_of_the_huge_event(&broker, state.path(), "capped", "capped", &huge).await;
    assert_eq!(dead_lettered_total(&scrape, "capped"), 1, "{scrape}");
    assert!(
        too_large_refusals(&scrape, "capped") >= 2,
        "the broker refused the record in a delivery report, then again when it was sent \
         alone: {scrape}"
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
