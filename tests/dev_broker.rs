//! `tributary dev-broker`: the mock cluster as a process, with the topics a config needs.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use common::process::{binary, write_config};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

#[test]
fn dev_broker_serves_the_topics_a_config_needs_and_warns_that_it_is_for_development() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[kafka]
brokers = "127.0.0.1:9092"

[checkpoint]
store = "kafka"

[cluster]
name = "try"
partitions = 4

[sources.wiki]
type = "sse"
url = "http://127.0.0.1:1/stream"
topic = "wiki"
"#,
    );
    let mut child = Command::new(binary())
        .args(["dev-broker", "--topic", "extra:2", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let bootstrap = line
        .trim()
        .strip_prefix("bootstrap.servers=")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_owned();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut topics: Vec<(String, usize)> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        [
            ("extra".to_owned(), 2),
            ("tributary.positions".to_owned(), 1),
            ("tributary.try.assignments.wiki".to_owned(), 1),
            ("wiki".to_owned(), 3),
            ("wiki.dlq".to_owned(), 3),
        ]
    );
    common::process::send_signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("DEVELOPMENT ONLY"), "{stderr}");
}
