//! Webhooks with `delivery = "exactly_once"`, on Apache Kafka: a request is answered 2xx only
//! after the transaction that holds its record has committed, so a `read_committed` reader
//! finds the record as soon as the sender has its answer; the transaction commits once the
//! source goes idle (`kafka.transaction_idle`), not at the end of a long interval; a record Kafka refuses aborts the
//! transaction, its sender is answered 503, and the source, rewound, still serves its route
//! and ends by dead-lettering the record the sender sends again.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn values(records: &[tributary::cli::demo::kafka_admin::ConsumedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|record| String::from_utf8_lossy(&record.payload).into_owned())
        .collect()
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> (u16, String) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_after_the_commit_and_a_refused_record_rewinds_without_loss() {
    let broker = Broker::kafka();
    create_topic_with(&broker.brokers(), "hooks", &[("max.message.bytes", "4000")]).await;
    broker.create_topic("hooks.dlq").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"
# Longer than the webhook's ack_timeout: a request is answered 200 only because the source
# went idle and its transaction committed then.
transaction_interval = "10m"
transaction_idle = "100ms"

[checkpoint]
store = "kafka"
dir = "{state}"

[server]
listen = "127.0.0.1:0"

[sources.hooks]
type = "webhook"
topic = "hooks"
signature = {{ scheme = "none" }}
delivery = "exactly_once"
ack_timeout = "20s"
retry_after = "1s"
"#,
        brokers = broker.brokers(),
        state = state.path().display(),
    ))
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/webhooks/hooks", daemon.webhook_address());

    // Answered after the commit: the record is there for a read_committed reader at once.
    for n in 0..3 {
        let body = format!(r#"{{"n":{n}}}"#);
        let (status, text) = post(&client, &url, &body).await;
        assert_eq!(status, 200, "{text}");
        let held = values(&broker.read("hooks").await);
        assert!(
            held.contains(&body),
            "answered 200 before its transaction committed: {held:?}"
        );
    }

    // Too large for the topic: the broker refuses it, the transaction is aborted and the
    // sender answered 503; its retries end in the dead-letter topic, through the same route.
    // Noise: lz4 would shrink a repeated letter under the limit.
    let large = format!(r#"{{"n":"large","pad":"{}"}}"#, noise(7, 6000));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut refusals = 0;
    loop {
        let (status, text) = post(&client, &url, &large).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        refusals += 1;
        assert!(
            Instant::now() < deadline,
            "the large event was never settled: {refusals} answers of 503"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(refusals >= 1, "the refused record was answered 200 at once");
    // And the source still takes new events after its rewinds.
    let (status, text) = post(&client, &url, r#"{"n":3}"#).await;
    assert_eq!(status, 200, "{text}");
    // Counted once committed: the refused record's aborted attempts count nowhere.
    let scrape = daemon.metrics().render();
    let counted = |name| common::process::metric(&scrape, name, "hooks");
    assert_eq!(
        (
            counted("tributary_records_produced_total"),
            counted("tributary_records_dead_lettered_total")
        ),
        (4, 1),
        "records produced and dead-lettered, as committed"
    );
    daemon.shutdown().await;

    let held = values(&broker.read("hooks").await);
    let mut sorted = held.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#],
        "each small event once, the large one not: {held:?}"
    );
    let dead = broker.read("hooks.dlq").await;
    assert_eq!(dead.len(), 1, "the large event is dead-lettered once");
    assert_eq!(
        dead[0].header("tributary.error_kind"),
        Some("message_too_large")
    );
}
