//! Exactly-once in cluster mode, with real `tributary` processes as the replicas on Apache
//! Kafka: an SSE source with `delivery = "exactly_once"` moves between replicas
//! - by a failover: its owner is killed with SIGKILL, another replica takes it over;
//! - from a zombie: its owner is frozen (SIGSTOP) until a third replica took it over, then
//!   thawed: its transactional producer was fenced by the new owner's `init_transactions`, so
//!   it commits nothing more;
//!
//! and the topic, read back with `isolation.level=read_committed`, holds every event of the
//! feed exactly once, in feed order per partition.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use common::{feeds::*, process::*, *};
use tributary::cli::demo::replay;

const CLUSTER: &str = "eos";
const POSITIONS_TOPIC: &str = "eos.positions";
const TOPIC: &str = "eos.sse";

fn config(feeds: &Feeds, broker: &Broker, port: u16, replica: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "10s"
transaction_interval = "200ms"

[checkpoint]
store = "kafka"
topic = "{POSITIONS_TOPIC}"
topic_replication_factor = 1

[cluster]
name = "{CLUSTER}"
partitions = 1
replication_factor = 1
replica = "{replica}"
session_timeout = "6s"
handoff_timeout = "10s"

[server]
listen = "127.0.0.1:{port}"
{source}"#,
        brokers = broker.brokers(),
        source = feeds.source_toml(Kind::Sse, "sse", TOPIC, "delivery = \"exactly_once\""),
    )
}

/// A replica process.
struct Replica {
    name: &'static str,
    daemon: Daemon,
}

impl Replica {
    fn start(dir: &Path, feeds: &Feeds, broker: &Broker, name: &'static str) -> Self {
        let port = free_port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = write_config(&dir, &config(feeds, broker, port, name));
        Replica {
            name,
            daemon: Daemon::spawn(&path, port),
        }
    }

    /// Transactions of the source this replica committed so far.
    async fn committed(&self) -> Option<u64> {
        let scrape = self.daemon.scrape().await?;
        Some(
            scrape
                .lines()
                .filter(|line| {
                    line.starts_with("tributary_transactions_total{")
                        && line.contains("outcome=\"committed\"")
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }

    /// Waits until this replica has committed more than `after` transactions of the source:
    /// it owns the source and its transactions go through.
    async fn wait_committing(&mut self, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(committed) = self.committed().await.filter(|c| *c > after) {
                return committed;
            }
            if let Some(status) = self.daemon.child.try_wait().unwrap() {
                panic!("{} exited early with {status}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not commit a transaction of the source",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this replica reports its partitions lost (it learnt that it was out of the
    /// group).
    async fn wait_for_lost(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lost = self.daemon.scrape().await.is_some_and(|scrape| {
                scrape.lines().any(|line| {
                    line.starts_with("tributary_cluster_rebalances_total{event=\"lost\"}")
                        && !line.ends_with(" 0")
                })
            });
            if lost {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not report its partitions lost",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until the source's committed position is the feed's last event.
async fn wait_for_the_end(broker: &Broker, feeds: &Feeds) {
    let store = positions_store(broker, POSITIONS_TOPIC, CLUSTER).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let positions = store.positions().await.expect("read the positions");
        let next = positions
            .get("sse")
            .and_then(|entry| entry.position.as_ref())
            .map_or(0, |id| {
                replay::wikimedia_event_index(id.as_str()).expect("a feed id") + 1
            });
        if next >= feeds.sse_events {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the committed position did not reach the feed's end: {next} of {}",
            feeds.sse_events
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_a_thawed_zombie_leave_every_event_exactly_once() {
    let broker = Broker::kafka();
    broker.create_topic(TOPIC).await;
    // Live through the three owners and their takeovers (each waits for the session timeout).
    let feeds = Feeds::start(90, 500, 10).await;
    let dir = tempfile::tempdir().unwrap();

    let mut first = Replica::start(dir.path(), &feeds, &broker, "r1");
    first.wait_committing(0).await;
    let mut second = Replica::start(dir.path(), &feeds, &broker, "r2");

    // Failover: the owner is killed; the other replica takes the source over once the group's
    // session timeout passed, fencing the killed producer's open transaction.
    let failover = Instant::now();
    first.daemon.child.kill().unwrap();
    first.daemon.child.wait().unwrap();
    let before_freeze = second.wait_committing(0).await;
    let failover = failover.elapsed();

    // A zombie: the owner is frozen until a third replica took the source over, then thawed.
    let mut third = Replica::start(dir.path(), &feeds, &broker, "r3");
    send_signal(&second.daemon.child, libc::SIGSTOP);
    let takeover = Instant::now();
    third.wait_committing(0).await;
    let takeover = takeover.elapsed();
    send_signal(&second.daemon.child, libc::SIGCONT);
    let thawed = second
        .committed()
        .await
        .expect("the thawed replica answers");
    second.wait_for_lost().await;
    let after_loss = second
        .committed()
        .await
        .expect("the thawed replica answers");
    assert_eq!(
        after_loss, thawed,
        "the thawed zombie committed a transaction after its source was taken over"
    );

    wait_for_the_end(&broker, &feeds).await;
    let records = broker.read(TOPIC).await;
    let recorded = replay::recorded_wikimedia_events();
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut last_in_partition: HashMap<i32, u64> = HashMap::new();
    for record in &records {
        let (key, rank) = identify(Kind::Sse, "sse", record, &recorded);
        let count = copies.entry(key.clone()).or_default();
        *count += 1;
        assert_eq!(*count, 1, "event {key} is there twice under read_committed");
        if let Some(previous) = last_in_partition.insert(record.partition, rank) {
            assert!(
                previous < rank,
                "partition {} has {rank} after {previous}",
                record.partition
            );
        }
    }
    assert_eq!(copies.len(), feeds.sse_events, "events lost");
    for replica in [second, third] {
        assert!(replica.daemon.terminate().await.success());
    }
    eprintln!(
        "exactly-once cluster: {} events, failover in {:.1} s, zombie takeover in {:.1} s; the zombie had committed {before_freeze}+ transactions and none after the takeover; 0 lost, 0 duplicated",
        feeds.sse_events,
        failover.as_secs_f64(),
        takeover.as_secs_f64()
    );
}
