//! The zombie phase judged from the positions topic itself. A replica frozen (SIGSTOP) past
//! its session timeout loses its sources to another replica; thawed, it goes on for a moment
//! as their owner (its committer writes what Kafka acknowledged meanwhile) until it learns
//! that its partitions were lost. Here the topic is read back write by write:
//! - each source's new owner claimed it with an epoch above every earlier write of it;
//! - whatever the zombie wrote after that claim carries the epoch it lost, below the claim's;
//! - the store's own loading code, reading the topic as it stood right after each of those
//!   late writes, holds the new owner's position: a late write never moves it (backwards or
//!   forwards);
//! - the phase duplicates only records of the sources taken over, at most once each, and only
//!   from the position the new owner started from.

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::Message,
    Offset, TopicPartitionList,
};
use tributary::state::checkpoint::StoredPosition;

use super::*;

/// Where the loads of [`assert_late_writes_fenced`] read: a topic of their own, so that the
/// replicas never see the copies.
const PROBE_TOPIC: &str = "failover.positions.after-zombie";

/// One write of the positions topic, as a replica made it.
#[derive(Clone, Debug)]
pub struct PositionWrite {
    /// Its offset (every write of a source is in one partition).
    pub offset: i64,
    /// Its value, as written.
    value: Vec<u8>,
    /// Its value, decoded.
    pub stored: StoredPosition,
}

/// The zombie phase: the first of `replicas` (which runs some of `sources`, as `owners` says)
/// is frozen (SIGSTOP) past its session timeout, the other takes its sources over, then it is
/// thawed: it learns that it lost them, stops them and rejoins. Asserts, from the positions
/// topic, that its writes after the takeover were fenced, and from the topics (`before`: as
/// they were before the phase) the bound on what it duplicated. Returns the owners after it
/// rejoined, the topics once settled, and how many records the phase duplicated.
pub async fn phase(
    broker: &Broker,
    store: &KafkaStore,
    sources: &[Source],
    replicas: &mut [Replica],
    owners: &BTreeMap<String, String>,
    before: &Topics,
) -> (BTreeMap<String, String>, Topics, usize) {
    // A zombie: one replica frozen (SIGSTOP) past the session timeout. The other takes its
    // sources over; thawed, it learns that it lost them and stops them. Until it learns it,
    // it may still write positions: the positions topic must show them fenced.
    let zombie = replicas[0].name.clone();
    let zombie_sources: BTreeSet<String> = owners
        .iter()
        .filter(|(_, owner)| **owner == zombie)
        .map(|(source, _)| source.clone())
        .collect();
    assert!(!zombie_sources.is_empty(), "{zombie} owns no source");
    send_signal(&replicas[0].daemon.child, libc::SIGSTOP);
    let frozen_at = Instant::now();
    // What was written before the freeze (read while the others wait for the session
    // timeout): any write of another store after it is a new owner's.
    let before_freeze = position_log(broker).await;
    // The frozen replica cannot answer: only the other one is asked.
    let new_owners = wait_for_owners(
        &mut replicas[1..],
        sources,
        &zombie_sources,
        &HashMap::new(),
    )
    .await;
    let taken_over = frozen_at.elapsed();
    send_signal(&replicas[0].daemon.child, libc::SIGCONT);
    wait_for_lost(&replicas[0]).await;
    // It joins again, and the group gives it sources back (clean handoffs).
    let owners = loop {
        let owners = wait_for_owners(replicas, sources, &BTreeSet::new(), &HashMap::new()).await;
        if per_replica(&owners).len() == 2 {
            break owners;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(90),
            "the thawed replica got no source back: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "cluster: {zombie} frozen: {zombie_sources:?} taken over after {:.1} s; thawed, it stopped them (partitions lost); owners {:?}",
        taken_over.as_secs_f64(),
        per_replica(&owners)
    );
    let after_zombie = settle(broker, store, sources).await;
    // The zombie stopped its sources before it rejoined: every write it made as their owner
    // is in the topic now.
    let log = position_log(broker).await;
    let takeovers: Vec<Takeover> = sources
        .iter()
        .filter(|source| zombie_sources.contains(&source.name))
        .map(|source| {
            Takeover::read(
                source,
                &before_freeze[&source.name],
                &log[&source.name],
                &zombie,
                &new_owners[&source.name],
            )
        })
        .collect();
    assert_late_writes_fenced(broker, &log, &takeovers).await;
    let zombie_duplicates = assert_duplicates_bounded(before, &after_zombie, &takeovers);
    eprintln!(
        "cluster: zombie: late writes fenced {:?}; {zombie_duplicates} records duplicated, each once, none before the new owner's start {:?}",
        takeovers
            .iter()
            .map(|t| (t.name().to_owned(), t.late_writes(), t.epoch()))
            .collect::<Vec<_>>(),
        takeovers
            .iter()
            .map(|t| (t.name().to_owned(), t.claim_rank()))
            .collect::<Vec<_>>()
    );
    (owners, after_zombie, zombie_duplicates)
}

/// Every write of this cluster in the positions topic, per source, in log order.
pub async fn position_log(broker: &Broker) -> BTreeMap<String, Vec<PositionWrite>> {
    let brokers = broker.brokers();
    let records = tokio::task::spawn_blocking(move || read_to_end(&brokers))
        .await
        .unwrap();
    let mut log: BTreeMap<String, Vec<PositionWrite>> = BTreeMap::new();
    for (offset, key, value) in records {
        let (cluster, source): (String, String) = serde_json::from_slice(&key).unwrap();
        if cluster != CLUSTER {
            continue;
        }
        let stored = serde_json::from_slice(&value).unwrap_or_else(|e| {
            panic!("{source}: a position record that is not a stored position ({e})")
        });
        log.entry(source).or_default().push(PositionWrite {
            offset,
            value,
            stored,
        });
    }
    for writes in log.values_mut() {
        writes.sort_by_key(|write| write.offset);
    }
    log
}

/// The `(offset, key, value)` of every record of the positions topic below the end each
/// partition had when the read started. (`Broker::read` waits for each partition's EOF, which
/// a topic written every 50 ms may not report.) Blocking.
fn read_to_end(brokers: &str) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "failover-positions-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(POSITIONS_TOPIC), TIMEOUT)
        .unwrap();
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(POSITIONS_TOPIC, partition.id(), TIMEOUT)
            .unwrap();
        if high > low {
            ends.insert(partition.id(), high);
            assignment
                .add_partition_offset(POSITIONS_TOPIC, partition.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while !ends.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the positions topic was not read to its end in 60 s: {ends:?} left"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("read the positions topic");
            let end = ends.get(&message.partition()).copied().unwrap_or(0);
            if message.offset() < end {
                let key = message.key().expect("a position record has a key");
                let value = message.payload().unwrap_or_default();
                records.push((message.offset(), key.to_vec(), value.to_vec()));
            }
        }
        let positions = consumer.position().unwrap();
        ends.retain(|&partition, end| {
            !matches!(
                positions.find_partition(POSITIONS_TOPIC, partition).map(|p| p.offset()),
                Some(Offset::Offset(next)) if next >= *end
            )
        });
    }
    records
}

/// The write a reader of `log` (one source's writes, in log order) holds at its end under the
/// store's rule: a write is admitted when its epoch is above the held one's, or the same epoch
/// from the same owner.
fn admitted(log: &[PositionWrite]) -> Option<&PositionWrite> {
    log.iter()
        .fold(None, |held: Option<&PositionWrite>, write| {
            let admits = held.is_none_or(|held| {
                write.stored.epoch > held.stored.epoch
                    || (write.stored.epoch == held.stored.epoch
                        && write.stored.owner == held.stored.owner)
            });
            if admits {
                Some(write)
            } else {
                held
            }
        })
}

/// What the positions topic shows of one source taken over from the frozen replica.
pub struct Takeover {
    source: Source,
    /// The new owner's claim: the first write of another store after the freeze.
    claim: PositionWrite,
    /// The zombie's writes after the claim, under the epoch it had lost.
    late: Vec<PositionWrite>,
    /// The zombie's last write before the freeze.
    last_before: PositionWrite,
}

impl Takeover {
    /// Reads the takeover of `source` from `log` (its writes now), given `before` (its writes
    /// when `zombie` was frozen) and the replica that ran it after the freeze; asserts that
    /// the claim's epoch is above every earlier write and that only the zombie wrote below it
    /// afterwards, never anyone at it but the new owner.
    pub fn read(
        source: &Source,
        before: &[PositionWrite],
        log: &[PositionWrite],
        zombie: &str,
        new_owner: &str,
    ) -> Self {
        let name = &source.name;
        let last = before
            .last()
            .unwrap_or_else(|| panic!("{name}: no position was stored before the freeze"));
        assert_eq!(
            last.stored.replica, zombie,
            "{name}: the last write before the freeze is not the frozen owner's: {last:?}"
        );
        let zombie_owner = last.stored.owner.clone();
        assert!(zombie_owner.is_some(), "{name}: a write without owner id");
        let at = log
            .iter()
            .position(|w| w.offset > last.offset && w.stored.owner != zombie_owner)
            .unwrap_or_else(|| panic!("{name}: no other replica claimed it after the freeze"));
        let claim = log[at].clone();
        assert_eq!(
            claim.stored.replica, new_owner,
            "{name}: the first write after the freeze by another store is not the new owner's"
        );
        let highest_before = log[..at].iter().map(|w| w.stored.epoch).max().unwrap_or(0);
        assert!(
            claim.stored.epoch > highest_before,
            "{name}: the new owner claimed it with epoch {}, not above the epoch {highest_before} written before: its writes and the zombie's cannot be told apart",
            claim.stored.epoch
        );
        // The claim holds the position the new owner starts from: the one a reader held.
        assert_eq!(
            claim.stored.position,
            admitted(&log[..at]).and_then(|w| w.stored.position.clone()),
            "{name}: the new owner did not start from the last admitted position"
        );
        let mut late = Vec::new();
        for write in &log[at + 1..] {
            if write.stored.epoch < claim.stored.epoch {
                assert_eq!(
                    write.stored.owner, zombie_owner,
                    "{name}: a write below the new owner's epoch that is not the zombie's: {write:?}"
                );
                late.push(write.clone());
            } else if write.stored.epoch == claim.stored.epoch {
                assert_eq!(
                    write.stored.owner, claim.stored.owner,
                    "{name}: a write at the new owner's epoch {} by another store: {write:?}",
                    claim.stored.epoch
                );
            }
        }
        Takeover {
            source: source.clone(),
            claim,
            late,
            last_before: last.clone(),
        }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The rank the new owner started from (see [`position_rank`]).
    pub fn claim_rank(&self) -> u64 {
        position_rank(self.source.kind, self.claim.stored.position.as_ref())
    }

    /// The new owner's epoch.
    pub fn epoch(&self) -> u64 {
        self.claim.stored.epoch
    }

    /// How many positions the zombie wrote after it had lost the source.
    pub fn late_writes(&self) -> usize {
        self.late.len()
    }
}

/// Loads the positions with the store's own code ([`KafkaStore::positions`]) as a replica
/// starting right after each late write of the zombie would have read them, and asserts that
/// each load holds the new owner's write (the one the store's rule admits last), never the
/// zombie's, and not behind the position the new owner started from. The writes of the source
/// up to each late write are copied byte for byte to [`PROBE_TOPIC`], under a key of their
/// own per late write (`<source>@<offset>`). Whether the thawed zombie writes before it learns
/// that it lost its sources is a race, so each source also gets a late write that is certain
/// (`<source>@replay`): all its writes, then the zombie's last write before the freeze again.
pub async fn assert_late_writes_fenced(
    broker: &Broker,
    log: &BTreeMap<String, Vec<PositionWrite>>,
    takeovers: &[Takeover],
) {
    // (key, the writes of the source up to the late one, the late one, its takeover)
    let mut probes: Vec<(String, Vec<PositionWrite>, &PositionWrite, &Takeover)> = Vec::new();
    for takeover in takeovers {
        let writes = &log[takeover.name()];
        for late in &takeover.late {
            let prefix = writes
                .iter()
                .take_while(|w| w.offset <= late.offset)
                .cloned()
                .collect();
            let name = format!("{}@{}", takeover.name(), late.offset);
            probes.push((name, prefix, late, takeover));
        }
        let replay = &takeover.last_before;
        let mut prefix = writes.clone();
        prefix.push(replay.clone());
        probes.push((
            format!("{}@replay", takeover.name()),
            prefix,
            replay,
            takeover,
        ));
    }
    if let Broker::Mock(_) = broker {
        // No Admin API: the topic is made as the positions topic is (the store creates it
        // compacted on Apache Kafka).
        broker.create_topics(&[PROBE_TOPIC], 1).await;
    }
    let probe = KafkaStore::open(KafkaStoreConfig {
        connection: ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .clone(),
        topic: PROBE_TOPIC.into(),
        partitions: 1,
        replication_factor: 1,
        cluster: CLUSTER.into(),
        replica: "probe".into(),
    })
    .await
    .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut copies = Vec::new();
    let mut expected = Vec::new();
    for (name, prefix, late, takeover) in &probes {
        let key = serde_json::to_vec(&(CLUSTER, name)).unwrap();
        for write in prefix {
            copies.push((key.clone(), write.value.clone()));
        }
        let held = admitted(prefix)
            .expect("a prefix with writes")
            .stored
            .clone();
        expected.push((name, held, *late, *takeover));
    }
    // Sent in order (idempotent producer): each key's writes keep their order.
    let sent = futures::future::join_all(copies.iter().map(|(key, value)| {
        producer.send(
            FutureRecord::to(PROBE_TOPIC).key(key).payload(value),
            Duration::from_secs(30),
        )
    }))
    .await;
    for result in sent {
        result.map_err(|(e, _)| e).expect("copy a position write");
    }
    let loaded = probe.positions().await.unwrap();
    for (name, held, late, takeover) in expected {
        let loaded = loaded
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name}: the store loaded nothing"));
        assert_ne!(
            loaded, &late.stored,
            "{name}: the store loaded the zombie's late write (epoch {}, below the new owner's {}) as the position",
            late.stored.epoch,
            takeover.epoch()
        );
        assert!(
            loaded.epoch >= takeover.epoch(),
            "{name}: the store holds a write of epoch {} after the new owner claimed {}: {loaded:?}",
            loaded.epoch,
            takeover.epoch()
        );
        assert_eq!(
            loaded, &held,
            "{name}: the store does not hold the new owner's last write before the late one"
        );
        let rank = position_rank(takeover.source.kind, loaded.position.as_ref());
        assert!(
            rank >= takeover.claim_rank(),
            "{name}: the position moved back to rank {rank}, behind the new owner's start {}",
            takeover.claim_rank()
        );
    }
}

/// Asserts the bound on what the zombie phase duplicated, from the topics `before` it and
/// `after` it: only records of the sources taken over, each at most once more, and only
/// records at or after the position the new owner started from (what the zombie produced past
/// its last stored position, and after it was thawed). Returns how many were duplicated.
pub fn assert_duplicates_bounded(before: &Topics, after: &Topics, takeovers: &[Takeover]) -> usize {
    let mut duplicated = 0;
    for (source, records) in &after.copies {
        let takeover = takeovers.iter().find(|t| t.name() == source);
        for (key, &(copies, rank)) in records {
            let earlier = before.copies[source]
                .get(key)
                .map_or(1, |(n, _)| (*n).max(1));
            if copies <= earlier {
                continue;
            }
            duplicated += copies - earlier;
            let Some(takeover) = takeover else {
                panic!("{source}: {key} (rank {rank}) was duplicated, yet the source was not taken from the zombie");
            };
            assert_eq!(
                copies,
                earlier + 1,
                "{source}: {key} (rank {rank}) is there {copies} times, {earlier} before the zombie phase"
            );
            assert!(
                rank >= takeover.claim_rank(),
                "{source}: {key} (rank {rank}) was duplicated, but the new owner started from rank {}",
                takeover.claim_rank()
            );
        }
    }
    duplicated
}
