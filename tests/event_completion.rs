//! The event is the unit of completion, on a 2-node Apache Kafka cluster: a webhook whose
//! transform splits it into records bound for topics on different nodes is answered 2xx only
//! once Kafka holds every one of them. While one node is down the sender gets 503 and sends
//! again later, so no record of the event is lost.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    ClientConfig,
};

/// Creates each topic of `topics` (name, node) with one partition whose only replica is on
/// that node (1-based `node.id`).
async fn create_topics_on(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let assignments: Vec<[i32; 1]> = topics.iter().map(|(_, node)| [*node]).collect();
    let replicas: Vec<[&[i32]; 1]> = assignments.iter().map(|a| [&a[..]]).collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&replicas)
        .map(|((name, _), replicas)| {
            NewTopic::new(name, 1, TopicReplication::Variable(&replicas[..]))
        })
        .collect();
    for result in admin
        .create_topics(&new_topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap_or_else(|(topic, code)| panic!("create `{topic}`: {code:?}"));
    }
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

fn values(records: &[tributary::cli::demo::kafka_admin::ConsumedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_webhook_is_answered_only_when_every_record_is_in_kafka() {
    let broker = Broker::kafka_cluster(2);
    let Broker::Kafka(cluster) = &broker else {
        unreachable!()
    };
    // `w1` lives on node 2 only, `w0` and the dead-letter topic on node 1.
    create_topics_on(&broker.brokers(), &[("w0", 1), ("w1", 2), ("split.dlq", 1)]).await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:0"

[sources.split]
type = "webhook"
topic = "{{/t}}"
dead_letter_topic = "split.dlq"
transform = ".items[]"
signature = {{ scheme = "none" }}
ack_timeout = "3s"
retry_after = "1s"
"#,
        brokers = broker.brokers(),
        state = state.path().display(),
    ))
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/webhooks/split", daemon.webhook_address());

    // Both nodes up: the split event is answered once both records are in Kafka.
    let warm = r#"{"items":[{"t":"w1","n":0},{"t":"w0","n":0}]}"#;
    assert_eq!(post(&client, &url, warm).await.0, 200);

    // Node 2 down: the record for `w1` waits in the producer while the one for `w0` (the
    // event's last) is acknowledged. The sender must not hear 2xx.
    blocking(|| cluster.kill(Some(2))).unwrap();
    let split = r#"{"items":[{"t":"w1","n":1},{"t":"w0","n":1}]}"#;
    let (status, text) = post(&client, &url, split).await;
    assert_eq!(
        status, 503,
        "answered while the record for `w1` was not in Kafka: {text}"
    );
    let produced = daemon
        .metrics()
        .registered("split")
        .unwrap()
        .records_produced;
    assert_eq!(produced.get(), 3, "the record for `w0` is in Kafka");

    // Node 2 back: the waiting record is delivered, the event completes, and the sender's
    // retry is answered 2xx.
    blocking(|| cluster.start_again()).unwrap();
    wait_for_acknowledged(&daemon, "split", 4).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = post(&client, &url, split).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retry was never answered 200: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.shutdown().await;
    for (topic, n) in [("w1", 1), ("w0", 1)] {
        let held = values(&broker.read(topic).await);
        assert!(
            held.contains(&format!(r#"{{"t":"{topic}","n":{n}}}"#)),
            "`{topic}` holds the event's record: {held:?}"
        );
    }
}
