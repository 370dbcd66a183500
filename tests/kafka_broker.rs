//! The test rig's Apache Kafka (`tests/kafka/kafka.sh`) does what the stand-ins cannot, so that
//! the suites that rely on it test what they say: a log that survives a crash and a clean
//! stop, transactions whose aborted records `read_committed` readers never see, a group
//! coordinator that splits partitions between members, and a 3-node cluster that keeps
//! acknowledging `acks=all` records with one node down.

mod common;

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use common::{kafka::SCRIPT, *};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    producer::{
        BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer,
        ThreadedProducer,
    },
    util::Timeout,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn producer(brokers: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("create the producer")
}

/// Produces `values` to `topic` (key = value) and awaits every acknowledgement.
async fn produce_all(producer: &FutureProducer, topic: &str, values: &[String]) {
    let deliveries: Vec<_> = values
        .iter()
        .map(|value| producer.send(FutureRecord::to(topic).key(value).payload(value), TIMEOUT))
        .collect();
    for delivery in deliveries {
        delivery.await.expect("an acknowledged record");
    }
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

async fn payloads(broker: &Broker, topic: &str) -> BTreeSet<String> {
    broker
        .read(topic)
        .await
        .into_iter()
        .map(|record| String::from_utf8(record.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_survives_a_kill_9_and_a_clean_stop() {
    let broker = Broker::kafka();
    let Broker::Kafka(cluster) = &broker else {
        unreachable!()
    };
    broker.create_topics(&["durable"], 4).await;
    let before_crash = numbered("before-crash", 100);
    produce_all(&producer(&broker.brokers(), &[]), "durable", &before_crash).await;

    broker.down().await;
    broker.up().await;
    let before_stop = numbered("before-stop", 100);
    produce_all(&producer(&broker.brokers(), &[]), "durable", &before_stop).await;
    blocking(|| {
        cluster.stop(None).unwrap();
        cluster.start_again().unwrap();
    });

    let expected: BTreeSet<String> = before_crash.into_iter().chain(before_stop).collect();
    assert_eq!(payloads(&broker, "durable").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_are_hidden_from_read_committed_readers() {
    let broker = Broker::kafka();
    broker.create_topics(&["transactions"], 2).await;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("transactional.id", "rig-test")
        .create()
        .expect("create the transactional producer");
    let send_all = |values: &[String]| {
        for value in values {
            producer
                .send(BaseRecord::to("transactions").key(value).payload(value))
                .map_err(|(error, _)| error)
                .expect("enqueue a record");
        }
    };
    let aborted = numbered("aborted", 20);
    let committed = numbered("committed", 20);
    blocking(|| {
        producer.init_transactions(TIMEOUT).expect("InitProducerId");
        producer.begin_transaction().unwrap();
        send_all(&aborted);
        producer.flush(Timeout::After(TIMEOUT)).unwrap();
        producer.abort_transaction(TIMEOUT).expect("EndTxn(abort)");
        producer.begin_transaction().unwrap();
        send_all(&committed);
        producer
            .commit_transaction(TIMEOUT)
            .expect("EndTxn(commit)");
    });
    assert_eq!(
        payloads(&broker, "transactions").await,
        committed.into_iter().collect(),
        "a read_committed reader sees the committed records only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_split_the_partitions_between_them() {
    const PARTITIONS: i32 = 6;
    let broker = Broker::kafka();
    broker.create_topics(&["grouped"], PARTITIONS).await;
    let member = || -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .set("group.id", "rig-group")
            .create()
            .expect("create a group member");
        consumer.subscribe(&["grouped"]).unwrap();
        consumer
    };
    let (first, second) = (member(), member());
    let assigned = |consumer: &BaseConsumer| -> BTreeSet<i32> {
        consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|element| element.partition())
            .collect()
    };
    // Membership moves only while the members poll; poll both until every partition has
    // exactly one owner and both members own some.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (ours, theirs) = loop {
        blocking(|| {
            first.poll(Duration::from_millis(100));
            second.poll(Duration::from_millis(100));
        });
        let (ours, theirs) = (assigned(&first), assigned(&second));
        if !ours.is_empty()
            && !theirs.is_empty()
            && ours.len() + theirs.len() == PARTITIONS as usize
        {
            break (ours, theirs);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no balanced assignment within 60 s: {ours:?} and {theirs:?}"
        );
    };
    assert!(ours.is_disjoint(&theirs), "{ours:?} and {theirs:?} overlap");
    let all: BTreeSet<i32> = ours.union(&theirs).copied().collect();
    assert_eq!(all, (0..PARTITIONS).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_acknowledges_with_one_node_killed() {
    let broker = Broker::kafka_cluster(3);
    let Broker::Kafka(cluster) = &broker else {
        unreachable!()
    };
    assert_eq!(broker.brokers().split(',').count(), 3);
    broker.create_topics(&["replicated"], 3).await;
    let producer = producer(&broker.brokers(), &[]);
    let before = numbered("three-up", 50);
    produce_all(&producer, "replicated", &before).await;

    blocking(|| cluster.kill(Some(2))).unwrap();
    let degraded = numbered("two-up", 50);
    produce_all(&producer, "replicated", &degraded).await;
    blocking(|| cluster.start_again()).unwrap();

    let expected: BTreeSet<String> = before.into_iter().chain(degraded).collect();
    assert_eq!(payloads(&broker, "replicated").await, expected);
}

/// The first `name` on `PATH`, symlinks resolved.
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .and_then(|path| std::fs::canonicalize(path).ok())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH"))
}

/// Runs `kafka.sh start` in a fresh folder with `env`; its exit code and stderr.
fn start_with(env: &[(&str, PathBuf)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    // bash by its full path: `env` may replace PATH.
    let mut command = Command::new(on_path("bash"));
    command
        .arg(SCRIPT)
        .arg("start")
        .arg(dir.path().join("cluster"));
    command.env("TRIBUTARY_TOOLS_DIR", dir.path().join("tools"));
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run kafka.sh");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_java_the_script_fails_and_says_what_to_install() {
    let (code, stderr) = start_with(&[("JAVA_HOME", PathBuf::from("/nonexistent-jdk"))]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Java not found") && stderr.contains("Java 17 or newer"),
        "{stderr}"
    );
}

#[test]
fn without_maven_the_script_fails_and_says_what_to_install() {
    // A PATH with `sed` only (the Java check reads `java -XshowSettings` with it); Java is
    // found through JAVA_HOME, Maven nowhere, and the jar cache is empty.
    let java_home = on_path("java")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let tools = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(on_path("sed"), tools.path().join("sed")).unwrap();
    let (code, stderr) = start_with(&[("JAVA_HOME", java_home), ("PATH", tools.path().to_owned())]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Maven not found") && stderr.contains("apt-get install maven"),
        "{stderr}"
    );
}

/// Whether process `pid` runs (a zombie, dead but not reaped, does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[test]
fn nodes_are_killed_when_the_process_that_owns_them_exits() {
    let mut owner = Command::new("sleep").arg("600").spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg(SCRIPT)
        .arg("start")
        .arg(dir.path())
        .args(["--owner", &owner.id().to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pid = std::fs::read_to_string(dir.path().join("node-1/pid")).unwrap();
    let pid = pid.trim();
    assert!(alive(pid), "the node runs while its owner does");

    owner.kill().unwrap();
    owner.wait().unwrap();
    // The watchdog looks once a second; the wait ends as soon as the node is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "node {pid} outlived its owner by 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
