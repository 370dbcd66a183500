//! Cluster mode, proven with real `tributary` processes as the replicas of one cluster on
//! Apache Kafka: six sources (two SSE and three WebSocket feeds that resume from a position,
//! and a REST walk) on three replicas, then
//! - `kill -9` of one replica: its sources resume on the others (the time is printed), with
//!   duplicates only after the killed replica's last stored position;
//! - one replica frozen (`SIGSTOP`) until its sources moved, then thawed (a zombie): the
//!   positions topic, read back write by write (`zombie`), shows every position it wrote after
//!   the takeover under an epoch below the new owner's, and the store's own load holding the
//!   new owner's position after each of them; the phase duplicates records only from the
//!   position the new owner started from, each once;
//! - `SIGTERM` of one replica (scale down): a clean handoff, no duplicate;
//! - a fourth replica (scale up): sources move with a clean handoff, no duplicate;
//! - every replica restarted: each source resumes from the Kafka store, no duplicate.
//!
//! At the end every topic is read back: nothing lost, every record's payload checked against
//! the feed, and the duplicates counted per scenario.

mod common;
#[path = "cluster_failover/zombie.rs"]
mod zombie;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use common::{feeds::*, process::*, *};
use rdkafka::{
    config::ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use tributary::{
    cli::demo::replay,
    record::Position,
    state::checkpoint::{KafkaStore, KafkaStoreConfig},
    state::cluster::assignment::control_partition,
};

/// Control partitions: one per source here, so that every source moves on its own.
const CONTROL_PARTITIONS: i32 = 6;
/// The cluster's name.
const CLUSTER: &str = "failover";
/// The positions topic.
const POSITIONS_TOPIC: &str = "failover.positions";

/// A source of the test: its name (also its topic's suffix) and its feed kind.
#[derive(Clone, Debug)]
struct Source {
    name: String,
    kind: Kind,
}

/// Six sources whose names fall on six different control partitions.
fn sources() -> Vec<Source> {
    let mut taken = BTreeSet::new();
    let mut sources = Vec::new();
    for kind in [
        Kind::Sse,
        Kind::Sse,
        Kind::Ws,
        Kind::Ws,
        Kind::Ws,
        Kind::Rest,
    ] {
        let name = (0..)
            .map(|n| format!("{}-{n}", kind.name()))
            .find(|name| {
                !sources.iter().any(|s: &Source| &s.name == name)
                    && !taken.contains(&control_partition(name, CONTROL_PARTITIONS))
            })
            .unwrap();
        taken.insert(control_partition(&name, CONTROL_PARTITIONS));
        sources.push(Source { name, kind });
    }
    sources
}

fn config(feeds: &Feeds, broker: &Broker, sources: &[Source], port: u16, replica: &str) -> String {
    let mut toml = format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "10s"

[checkpoint]
store = "kafka"
topic = "{POSITIONS_TOPIC}"
topic_replication_factor = 1
commit_interval = "50ms"

[cluster]
name = "{CLUSTER}"
partitions = {CONTROL_PARTITIONS}
replication_factor = 1
replica = "{replica}"
session_timeout = "6s"
handoff_timeout = "10s"

[server]
listen = "127.0.0.1:{port}"
"#,
        brokers = broker.brokers(),
    );
    for source in sources {
        // With a watermark, a REST walk that is done is not produced again when its source
        // moves to another replica: the next poll asks from the watermark on.
        let extra = match source.kind {
            Kind::Rest => r#"watermark = { field = "/n", param = "since" }"#,
            _ => "",
        };
        toml += &feeds.source_toml(
            source.kind,
            &source.name,
            &format!("c.{}", source.name),
            extra,
        );
    }
    toml
}

/// A replica process.
struct Replica {
    name: String,
    daemon: Daemon,
}

impl Replica {
    fn start(dir: &Path, feeds: &Feeds, broker: &Broker, sources: &[Source], name: &str) -> Self {
        let port = free_port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = write_config(&dir, &config(feeds, broker, sources, port, name));
        let daemon = Daemon::spawn(&path, port);
        Replica {
            name: name.to_owned(),
            daemon,
        }
    }

    /// The sources this replica runs now (from `/readyz`), empty while it is not up.
    async fn owned(&mut self) -> BTreeSet<String> {
        self.daemon.running_sources(&self.name).await
    }

    /// `tributary_records_produced_total{source}` on this replica.
    async fn produced(&self, source: &str) -> u64 {
        self.daemon.scrape().await.map_or(0, |scrape| {
            metric(&scrape, "tributary_records_produced_total", source)
        })
    }
}

/// The stored positions, as ranks: where each source's next record starts (the SSE event
/// index, the WebSocket sequence, the REST page; `u64::MAX` once the REST walk is done).
async fn resume_ranks(store: &KafkaStore, sources: &[Source]) -> HashMap<String, u64> {
    let stored = store.positions().await.unwrap();
    sources
        .iter()
        .map(|source| {
            let position = stored
                .get(&source.name)
                .and_then(|entry| entry.position.as_ref());
            (source.name.clone(), position_rank(source.kind, position))
        })
        .collect()
}

/// The rank of a stored position of a `kind` source (see [`resume_ranks`]): a record of the
/// topic whose rank is at least this one comes after the position.
fn position_rank(kind: Kind, position: Option<&Position>) -> u64 {
    let position = position.map(|p| p.as_str());
    match kind {
        Kind::Sse => position.map_or(0, |id| {
            replay::wikimedia_event_index(id).expect("a feed id") as u64 + 1
        }),
        Kind::Ws => position.map_or(0, |seq| seq.parse::<u64>().unwrap() + 1),
        Kind::Rest => position.map_or(0, |text| {
            let position: serde_json::Value = serde_json::from_str(text).unwrap();
            match position["walk"]["next"]["value"].as_str() {
                Some(next) => next.parse().unwrap(),
                None if position["walk"].is_null() => u64::MAX,
                None => 0,
            }
        }),
    }
}

/// What the topics hold now: per source, each record's copies and the highest rank.
struct Topics {
    copies: HashMap<String, HashMap<String, (usize, u64)>>,
}

impl Topics {
    async fn read(broker: &Broker, sources: &[Source]) -> Self {
        let recorded = replay::recorded_wikimedia_events();
        let mut copies = HashMap::new();
        for source in sources {
            let mut seen: HashMap<String, (usize, u64)> = HashMap::new();
            let mut last_in_partition: HashMap<i32, u64> = HashMap::new();
            for record in broker.read(&format!("c.{}", source.name)).await {
                let (key, rank) = identify(source.kind, &source.name, &record, &recorded);
                let entry = seen.entry(key).or_insert((0, rank));
                entry.0 += 1;
                if entry.0 == 1 && source.kind != Kind::Rest {
                    if let Some(previous) = last_in_partition.insert(record.partition, rank) {
                        assert!(previous < rank, "{}: {rank} after {previous}", source.name);
                    }
                }
            }
            copies.insert(source.name.clone(), seen);
        }
        Topics { copies }
    }

    fn duplicated(&self, source: &str) -> usize {
        self.copies[source].values().map(|(n, _)| n - 1).sum()
    }

    fn total_duplicated(&self) -> usize {
        self.copies
            .keys()
            .map(|source| self.duplicated(source))
            .sum()
    }

    /// The highest rank in `source`'s topic.
    fn max_rank(&self, source: &str) -> u64 {
        self.copies[source]
            .values()
            .map(|(_, rank)| *rank)
            .max()
            .unwrap_or(0)
    }
}

/// How many sources each replica runs.
fn per_replica(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for owner in owners.values() {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    counts
}

/// Waits until the replicas together run every source, each on exactly one replica, and each
/// of `moved` has produced on its new owner; returns the owners.
async fn wait_for_owners(
    replicas: &mut [Replica],
    sources: &[Source],
    moved: &BTreeSet<String>,
    before: &HashMap<String, u64>,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for replica in replicas.iter_mut() {
            for source in replica.owned().await {
                owners.entry(source).or_default().push(replica.name.clone());
            }
        }
        let single: BTreeMap<String, String> = owners
            .iter()
            .filter(|(_, on)| on.len() == 1)
            .map(|(source, on)| (source.clone(), on[0].clone()))
            .collect();
        assert!(
            owners.values().all(|on| on.len() == 1),
            "a source runs on two replicas: {owners:?}"
        );
        if single.len() == sources.len() {
            let mut producing = true;
            for source in moved {
                let owner = replicas.iter().find(|r| r.name == single[source]).unwrap();
                producing &=
                    owner.produced(source).await > before.get(source).copied().unwrap_or(0);
            }
            if producing {
                return single;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the sources were not all running after 60 s: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the topics, waits until every stored position has passed what they held (so that
/// whatever a handoff reads again is in), and reads them again.
async fn settle(broker: &Broker, store: &KafkaStore, sources: &[Source]) -> Topics {
    let moment = Topics::read(broker, sources).await;
    let reached: HashMap<String, u64> = sources
        .iter()
        .map(|s| (s.name.clone(), moment.max_rank(&s.name)))
        .collect();
    wait_past(store, sources, &reached).await;
    Topics::read(broker, sources).await
}

/// Waits until `replica` reports control partitions lost.
async fn wait_for_lost(replica: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lost = replica.daemon.scrape().await.is_some_and(|scrape| {
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
            replica.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each of `sources`' stored position has passed `ranks` (so that whatever the
/// topics held before has been read again, if it is read again at all).
async fn wait_past(store: &KafkaStore, sources: &[Source], ranks: &HashMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let stored = resume_ranks(store, sources).await;
        if sources
            .iter()
            .all(|s| stored[&s.name] > ranks.get(&s.name).copied().unwrap_or(0))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "positions did not pass {ranks:?}: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sources_and_hand_them_off_without_loss_on_apache_kafka() {
    scenarios(Broker::kafka(), 90, 200).await;
}

/// The same scenarios on librdkafka's mock cluster (`tributary dev-broker`), whose group
/// coordinator other processes reach through its bootstrap address. It has no Admin API, so
/// the test creates the positions and control topics as `dev-broker --config` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sources_and_hand_them_off_without_loss_on_the_mock_cluster() {
    let broker = Broker::mock();
    broker.create_topics(&[POSITIONS_TOPIC], 1).await;
    // One control topic of one partition per source, as `dev-broker --config` creates them.
    for source in sources() {
        broker
            .create_topics(
                &[&format!("tributary.{CLUSTER}.assignments.{}", source.name)],
                1,
            )
            .await;
    }
    // Its rebalances take longer (up to about 20 s): the feeds stay live longer, so that every
    // handoff still has records to move, at half the rate, since a mock partition keeps only
    // its last few MiB (common::PARTITIONS partitions per topic).
    scenarios(broker, 180, 100).await;
}

/// Every scenario, with feeds live for `seconds` at `rate` records/s.
async fn scenarios(broker: Broker, seconds: u64, rate: u32) {
    let sources = sources();
    for source in &sources {
        broker
            .create_topics(
                &[
                    &format!("c.{}", source.name),
                    &format!("c.{}.dlq", source.name),
                ],
                PARTITIONS,
            )
            .await;
    }
    let feeds = Feeds::start(seconds, rate, seconds as usize * 40).await;
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| Replica::start(dir.path(), &feeds, &broker, &sources, name);
    let mut replicas = vec![start("r1"), start("r2"), start("r3")];
    let all: BTreeSet<String> = sources.iter().map(|s| s.name.clone()).collect();
    // The replicas create the positions topic; the test reads it once it is there.
    let store = loop {
        let opened = KafkaStore::open(KafkaStoreConfig {
            connection: ClientConfig::new()
                .set("bootstrap.servers", broker.brokers())
                .clone(),
            topic: POSITIONS_TOPIC.into(),
            partitions: 1,
            replication_factor: 1,
            cluster: CLUSTER.into(),
            replica: "test".into(),
        })
        .await;
        match opened {
            Ok(store) => break store,
            Err(error) => eprintln!("positions topic not readable yet: {error}"),
        }
    };
    // The replicas join one by one: wait until the group has spread the sources over all
    // three.
    let started_at = Instant::now();
    let owners = loop {
        let owners = wait_for_owners(&mut replicas, &sources, &all, &HashMap::new()).await;
        if per_replica(&owners).len() == 3 {
            break owners;
        }
        assert!(
            started_at.elapsed() < Duration::from_secs(60),
            "the sources did not spread over the three replicas: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("cluster: 3 replicas own {:?}", per_replica(&owners));
    assert_eq!(
        per_replica(&owners).len(),
        3,
        "every replica runs sources: {owners:?}"
    );

    // kill -9: the coordinator notices after the session timeout; the others take over.
    let victim = replicas.remove(0);
    let victim_sources: BTreeSet<String> = owners
        .iter()
        .filter(|(_, owner)| **owner == victim.name)
        .map(|(source, _)| source.clone())
        .collect();
    let mut daemon = victim.daemon;
    let killed_at = Instant::now();
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let kill_ranks = resume_ranks(&store, &sources).await;
    let at_kill = Topics::read(&broker, &sources).await;
    let owners = wait_for_owners(&mut replicas, &sources, &victim_sources, &HashMap::new()).await;
    let failover = killed_at.elapsed();
    eprintln!(
        "cluster: kill -9 of r1: its sources {victim_sources:?} resumed on {:?} after {:.1} s",
        per_replica(&owners),
        failover.as_secs_f64()
    );
    // Whatever the killed replica produced after its last stored position is read again.
    let produced_by_victim: HashMap<String, u64> = victim_sources
        .iter()
        .map(|s| (s.clone(), at_kill.max_rank(s)))
        .collect();
    wait_past(&store, &sources, &produced_by_victim).await;
    let after_kill = Topics::read(&broker, &sources).await;
    let kill_duplicates = after_kill.total_duplicated();
    for source in &sources {
        let expected_zero = !victim_sources.contains(&source.name);
        if expected_zero {
            assert_eq!(
                after_kill.duplicated(&source.name),
                0,
                "{} did not move",
                source.name
            );
        }
        for (key, (copies, rank)) in &after_kill.copies[&source.name] {
            assert!(
                *copies == 1 || (*copies == 2 && *rank >= kill_ranks[&source.name]),
                "{}: {key} (rank {rank}) is there {copies} times; the stored rank at the kill was {}",
                source.name,
                kill_ranks[&source.name]
            );
        }
    }

    // A zombie: one replica frozen past the session timeout, then thawed.
    let (owners, after_zombie, zombie_duplicates) = zombie::phase(
        &broker,
        &store,
        &sources,
        &mut replicas,
        &owners,
        &after_kill,
    )
    .await;
    assert_eq!(
        after_zombie.total_duplicated(),
        kill_duplicates + zombie_duplicates
    );
    let kill_duplicates = after_zombie.total_duplicated();

    // SIGTERM (scale down): a clean handoff.
    let leaving = replicas.remove(0);
    let leaving_sources: BTreeSet<String> = owners
        .iter()
        .filter(|(_, owner)| **owner == leaving.name)
        .map(|(source, _)| source.clone())
        .collect();
    assert!(
        !leaving_sources.is_empty(),
        "{} owns no source",
        leaving.name
    );
    let before: HashMap<String, u64> = HashMap::new();
    let sigterm_at = Instant::now();
    assert!(leaving.daemon.terminate().await.success());
    let owners = wait_for_owners(&mut replicas, &sources, &leaving_sources, &before).await;
    eprintln!(
        "cluster: SIGTERM of r2: {leaving_sources:?} moved to {:?} in {:.1} s",
        per_replica(&owners),
        sigterm_at.elapsed().as_secs_f64()
    );
    let after_scale_down = settle(&broker, &store, &sources).await;
    assert_eq!(
        after_scale_down.total_duplicated(),
        kill_duplicates,
        "the SIGTERM handoff duplicated records"
    );

    // Scale up: a fourth replica takes some sources from the third.
    let r3_before: HashMap<String, u64> = {
        let mut counts = HashMap::new();
        for source in &sources {
            counts.insert(
                source.name.clone(),
                replicas[0].produced(&source.name).await,
            );
        }
        counts
    };
    let joined_at = Instant::now();
    replicas.push(start("r4"));
    let owners = loop {
        let owners = wait_for_owners(&mut replicas, &sources, &BTreeSet::new(), &r3_before).await;
        if owners.values().any(|owner| owner == "r4") {
            break owners;
        }
        assert!(
            joined_at.elapsed() < Duration::from_secs(60),
            "r4 got no source: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let moved: BTreeSet<String> = owners
        .iter()
        .filter(|(_, owner)| *owner == "r4")
        .map(|(source, _)| source.clone())
        .collect();
    // Only a live feed can show its source producing on r4: an SSE or WebSocket feed with at
    // least a minute left (a loaded machine may reach this phase near the feeds' end). For the
    // others owning is enough here; the final read shows that nothing was lost.
    let minute_left = feeds.existing_now() + 60 * u64::from(rate) < feeds.ws_frames;
    let producing: BTreeSet<String> = moved
        .iter()
        .filter(|name| {
            minute_left
                && sources
                    .iter()
                    .any(|s| &s.name == *name && matches!(s.kind, Kind::Sse | Kind::Ws))
        })
        .cloned()
        .collect();
    let owners = wait_for_owners(&mut replicas, &sources, &producing, &HashMap::new()).await;
    eprintln!(
        "cluster: r4 joined: {moved:?} moved to it in {:.1} s; owners {:?}",
        joined_at.elapsed().as_secs_f64(),
        per_replica(&owners)
    );
    let after_scale_up = settle(&broker, &store, &sources).await;
    assert_eq!(
        after_scale_up.total_duplicated(),
        kill_duplicates,
        "the scale-up handoff duplicated records"
    );

    // Restart every replica: each source resumes from the Kafka store.
    for replica in replicas.drain(..) {
        assert!(replica.daemon.terminate().await.success());
    }
    let restarted_at = Instant::now();
    let mut replicas = vec![start("r5"), start("r6"), start("r7")];
    // (A source whose feed has ended has nothing more to produce: owned is enough here; the
    // positions reaching the feeds' ends below show that every source went on.)
    let owners = wait_for_owners(&mut replicas, &sources, &BTreeSet::new(), &HashMap::new()).await;
    eprintln!(
        "cluster: all replicas restarted: running again in {:.1} s on {:?}",
        restarted_at.elapsed().as_secs_f64(),
        per_replica(&owners)
    );

    // To the feeds' ends, then everything read back.
    let ends: HashMap<String, u64> = sources
        .iter()
        .map(|s| {
            let end = match s.kind {
                Kind::Sse => feeds.sse_events as u64 - 1,
                Kind::Ws => feeds.ws_frames,
                Kind::Rest => u64::MAX - 1,
            };
            (s.name.clone(), end)
        })
        .collect();
    wait_past(&store, &sources, &ends).await;
    for replica in replicas.drain(..) {
        assert!(replica.daemon.terminate().await.success());
    }
    let end = Topics::read(&broker, &sources).await;
    for source in &sources {
        let expected = feeds.expected(source.kind);
        assert_eq!(
            end.copies[&source.name].len(),
            expected,
            "{}: records lost",
            source.name
        );
    }
    assert_eq!(
        end.total_duplicated(),
        kill_duplicates,
        "the restart of every replica duplicated records"
    );
    eprintln!(
        "cluster: 0 lost; duplicates: kill -9 and zombie {kill_duplicates} (zombie {zombie_duplicates}), SIGTERM 0, scale-up 0, restart-all 0; records per source {:?}",
        sources
            .iter()
            .map(|s| (s.name.clone(), feeds.expected(s.kind)))
            .collect::<Vec<_>>()
    );
}
