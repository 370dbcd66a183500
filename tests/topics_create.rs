//! `tributary topics create` through the binary, against Apache Kafka: every fixed topic and
//! dead-letter topic a config names is created once, existing ones are left, templated ones
//! are listed, and a refusal exits 1.

mod common;

use std::process::Output;

use common::{
    process::{binary, write_config},
    Broker,
};

fn topics_create(config: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(binary())
        .args(["topics", "create", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run tributary topics create")
}

fn config(brokers: &str, state: &std::path::Path, fixed: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
dir = "{state}"

[sources.wiki]
type = "sse"
url = "http://127.0.0.1:9/stream"
topic = "{fixed}"

[sources.routed]
type = "sse"
url = "http://127.0.0.1:9/stream"
topic = "{{/t}}"
dead_letter_topic = "routed.dead"
"#,
        state = state.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_what_the_config_names_once_and_lists_templated_topics() {
    let broker = Broker::kafka();
    // Already there: left as it is.
    broker.create_topics(&["wiki.dlq"], 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config(&broker.brokers(), &dir.path().join("state"), "wiki"),
    );
    let first = topics_create(&path, &["--partitions", "3"]);
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert!(first.status.success(), "{stdout}\n{:?}", first.stderr);
    assert_eq!(
        stdout.lines().take(3).collect::<Vec<_>>(),
        [
            "routed.dead: created",
            "wiki: created",
            "wiki.dlq: exists (left as it is)"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("source `routed`: its `topic` is a template"),
        "{stdout}"
    );
    assert_eq!(broker.partition_leaders("wiki").await.len(), 3);
    assert_eq!(broker.partition_leaders("routed.dead").await.len(), 3);
    assert_eq!(broker.partition_leaders("wiki.dlq").await.len(), 1);

    // Again: nothing to do.
    let again = topics_create(&path, &[]);
    let stdout = String::from_utf8(again.stdout).unwrap();
    assert!(again.status.success(), "{stdout}");
    assert_eq!(
        stdout.matches("exists (left as it is)").count(),
        3,
        "{stdout}"
    );

    // More replicas than brokers: refused, named, exit 1.
    let path = write_config(
        dir.path(),
        &config(&broker.brokers(), &dir.path().join("state"), "ticks"),
    );
    let refused = topics_create(&path, &["--replication-factor", "3"]);
    let stdout = String::from_utf8(refused.stdout).unwrap();
    assert_eq!(refused.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ticks: REFUSED: "), "{stdout}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("the brokers refused a topic"),
        "{:?}",
        refused.stderr
    );
    assert!(broker.partition_leaders("ticks").await.is_empty());
}
