//! Cluster mode balances sources, not partitions: six SSE sources (names not chosen to fall
//! apart) on three `tributary` processes on Apache Kafka settle at 2/2/2; after `kill -9` of
//! one, the two others settle at 3/3 and keep the sources they had. Every sample of the
//! replicas' `/readyz` is checked: no source is ever listed by two replicas at once.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use common::{feeds::*, process::*, *};

/// The cluster's name.
const CLUSTER: &str = "balance";
/// How long the replicas may take to settle after a change (the kill's session timeout, 6 s,
/// included).
const SETTLE: Duration = Duration::from_secs(90);

fn config(feeds: &Feeds, broker: &Broker, sources: &[String], port: u16, replica: &str) -> String {
    let mut toml = format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"

[checkpoint]
store = "kafka"
topic = "{CLUSTER}.positions"
topic_replication_factor = 1

[cluster]
name = "{CLUSTER}"
replication_factor = 1
replica = "{replica}"
session_timeout = "6s"
handoff_timeout = "5s"

[server]
listen = "127.0.0.1:{port}"
"#,
        brokers = broker.brokers(),
    );
    for source in sources {
        toml += &feeds.source_toml(Kind::Sse, source, &format!("b.{source}"), "");
    }
    toml
}

/// A replica process.
struct Replica {
    name: String,
    daemon: Daemon,
}

impl Replica {
    fn start(dir: &Path, feeds: &Feeds, broker: &Broker, sources: &[String], name: &str) -> Self {
        let port = free_port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = write_config(&dir, &config(feeds, broker, sources, port, name));
        Replica {
            name: name.to_owned(),
            daemon: Daemon::spawn(&path, port),
        }
    }

    /// The sources this replica runs now (from `/readyz`), empty while it is not up.
    async fn owned(&mut self) -> BTreeSet<String> {
        self.daemon.running_sources(&self.name).await
    }
}

/// Samples every replica twice in turn (r1 r2 r3 r1 r2 r3) and returns the second round.
/// Fails the test when a source is listed by a replica in both of its samples and by another
/// replica in a sample taken between them: it had two owners at that moment (a source that
/// merely moved between two samples is not counted).
async fn sample(replicas: &mut [Replica]) -> BTreeMap<String, BTreeSet<String>> {
    let mut samples: Vec<(String, BTreeSet<String>)> = Vec::new();
    for _ in 0..2 {
        for replica in replicas.iter_mut() {
            samples.push((replica.name.clone(), replica.owned().await));
        }
    }
    let count = replicas.len();
    for first in 0..count {
        let (owner, before) = &samples[first];
        let after = &samples[first + count].1;
        for source in before.intersection(after) {
            for (other, between) in &samples[first + 1..first + count] {
                assert!(
                    !between.contains(source),
                    "source {source} was run by {owner} and {other} at once: {samples:?}"
                );
            }
        }
    }
    samples.split_off(count).into_iter().collect()
}

/// Waits until every source runs on exactly one replica and the replicas run `counts`
/// sources (in any order); returns who runs what.
async fn settle(
    replicas: &mut [Replica],
    sources: &[String],
    counts: &[usize],
) -> BTreeMap<String, BTreeSet<String>> {
    let started = Instant::now();
    loop {
        let owned = sample(replicas).await;
        let listed: Vec<&String> = owned.values().flatten().collect();
        let mut per_replica: Vec<usize> = owned.values().map(BTreeSet::len).collect();
        per_replica.sort_unstable();
        if listed.len() == sources.len()
            && listed.iter().collect::<BTreeSet<_>>().len() == sources.len()
            && per_replica == counts
        {
            return owned;
        }
        assert!(
            started.elapsed() < SETTLE,
            "the replicas did not settle at {counts:?} within {SETTLE:?}: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_sources_on_three_replicas_settle_two_each_and_three_each_after_a_kill() {
    let broker = Broker::kafka();
    let sources: Vec<String> = (0..6).map(|n| format!("wiki-{n}")).collect();
    for source in &sources {
        broker
            .create_topics(&[&format!("b.{source}"), &format!("b.{source}.dlq")], 1)
            .await;
    }
    let feeds = Feeds::start(300, 10, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| Replica::start(dir.path(), &feeds, &broker, &sources, name))
        .collect();
    let at_start = settle(&mut replicas, &sources, &[2, 2, 2]).await;
    eprintln!("three replicas: {at_start:?}");

    let victim = replicas.remove(0);
    let mut daemon = victim.daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let killed_at = Instant::now();
    let after_kill = settle(&mut replicas, &sources, &[3, 3]).await;
    eprintln!(
        "kill -9 of {}: {after_kill:?} after {:.1} s",
        victim.name,
        killed_at.elapsed().as_secs_f64()
    );
    for (replica, owned) in &after_kill {
        assert!(
            owned.is_superset(&at_start[replica]),
            "{replica} gave up sources it had: {:?} then {owned:?}",
            at_start[replica]
        );
    }
}
