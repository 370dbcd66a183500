//! The Kafka checkpoint store on Apache Kafka: the compacted topic it creates, the positions it
//! reads back (all of them, however many), the owner epoch that fences a replica that lost a
//! source (after a tombstone too, and at an equal epoch from another owner), and the refusal of
//! a topic whose `cleanup.policy` is not exactly `compact`.

mod common;

use common::Broker;
use std::time::Duration;

use rdkafka::{
    admin::{
        AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
    },
    client::DefaultClientContext,
    config::ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use tributary::{
    error::CheckpointError,
    record::Position,
    state::checkpoint::{compaction, CheckpointStore, Compaction, KafkaStore, KafkaStoreConfig},
};

fn store_config(broker: &Broker, topic: &str, cluster: &str, replica: &str) -> KafkaStoreConfig {
    KafkaStoreConfig {
        connection: ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .clone(),
        topic: topic.into(),
        partitions: 3,
        replication_factor: 1,
        cluster: cluster.into(),
        replica: replica.into(),
    }
}

fn position(text: &str) -> Position {
    Position(text.into())
}

async fn stored(store: &KafkaStore, source: &str) -> Option<String> {
    store
        .positions()
        .await
        .unwrap()
        .get(source)
        .and_then(|entry| entry.position.as_ref())
        .map(|p| p.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_creates_a_compacted_topic_and_a_new_owner_fences_the_old_one() {
    let broker = Broker::kafka();
    let first = KafkaStore::open(store_config(&broker, "positions", "east", "a"))
        .await
        .unwrap();
    // Created with log compaction.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic("positions")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    assert_eq!(
        resource
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref()),
        Some("compact")
    );

    assert_eq!(first.acquire("wiki").await.unwrap(), None);
    first
        .commit(vec![("wiki".into(), position("10"))])
        .await
        .unwrap();
    first
        .commit(vec![("wiki".into(), position("11"))])
        .await
        .unwrap();

    // A second replica takes the source over: it reads the last position, and from its claim
    // on the old owner's writes are ignored.
    let second = KafkaStore::open(store_config(&broker, "positions", "east", "b"))
        .await
        .unwrap();
    assert_eq!(second.acquire("wiki").await.unwrap(), Some(position("11")));
    first
        .commit(vec![("wiki".into(), position("12"))])
        .await
        .unwrap();
    let reader = KafkaStore::open(store_config(&broker, "positions", "east", "reader"))
        .await
        .unwrap();
    assert_eq!(stored(&reader, "wiki").await.as_deref(), Some("11"));
    let entry = reader.positions().await.unwrap()["wiki"].clone();
    assert_eq!((entry.epoch, entry.replica.as_str()), (2, "b"));
    second
        .commit(vec![("wiki".into(), position("13"))])
        .await
        .unwrap();
    assert_eq!(stored(&reader, "wiki").await.as_deref(), Some("13"));

    // Another cluster on the same topic sees none of it.
    let west = KafkaStore::open(store_config(&broker, "positions", "west", "w"))
        .await
        .unwrap();
    assert!(west.positions().await.unwrap().is_empty());

    // overwrite (positions set/reset) wins over the owner's epoch.
    reader.overwrite("wiki", None).await.unwrap();
    assert_eq!(stored(&reader, "wiki").await, None);
    second
        .commit(vec![("wiki".into(), position("14"))])
        .await
        .unwrap();
    assert_eq!(stored(&reader, "wiki").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_positions_topic_without_compaction_is_refused() {
    let broker = Broker::kafka();
    broker.create_topics(&["plain"], 1).await;
    let error = match KafkaStore::open(store_config(&broker, "plain", "east", "a")).await {
        Ok(_) => panic!("a topic without compaction was accepted"),
        Err(error) => error,
    };
    assert!(
        matches!(&error, CheckpointError::NotCompacted { policy, .. } if policy == "delete"),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("`plain`") && text.contains("cleanup.policy=compact"),
        "{text}"
    );
}

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap()
}

/// Produces one record to the positions topic by hand, as another writer would: `value` is
/// `None` for a tombstone.
async fn produce_by_hand(broker: &Broker, topic: &str, key: &str, value: Option<&str>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    let mut record = FutureRecord::<str, str>::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(error, _)| error)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_delete_positions_topic_is_refused_until_it_is_compact_alone() {
    let broker = Broker::kafka();
    let admin = admin(&broker);
    let created = admin
        .create_topics(
            &[NewTopic::new("both", 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact,delete")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let config = store_config(&broker, "both", "east", "a");

    // `tributary check --connect` asks the same question.
    assert_eq!(
        compaction(&config).await.unwrap(),
        Compaction::NotCompacted {
            policy: "compact,delete".into()
        }
    );
    let error = match KafkaStore::open(config.clone()).await {
        Ok(_) => panic!("a `compact,delete` topic was accepted"),
        Err(error) => error,
    };
    assert!(
        matches!(&error, CheckpointError::NotCompacted { topic, policy } if topic == "both" && policy == "compact,delete"),
        "{error}"
    );
    let text = error.to_string();
    for part in [
        "`both`",
        "`cleanup.policy=compact,delete`",
        "--entity-name both --add-config cleanup.policy=compact",
        "without `delete`",
    ] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }

    // The fix the message gives makes the topic acceptable.
    let altered = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("both")).set("cleanup.policy", "compact")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    assert_eq!(compaction(&config).await.unwrap(), Compaction::Compacted);
    KafkaStore::open(config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_keeps_the_fence_so_a_stale_owner_stays_refused_after_a_new_owner_acquired() {
    let broker = Broker::kafka();
    let old = KafkaStore::open(store_config(&broker, "positions", "east", "old"))
        .await
        .unwrap();
    assert_eq!(old.acquire("wiki").await.unwrap(), None);
    old.commit(vec![("wiki".into(), position("10"))])
        .await
        .unwrap();
    // Someone deletes the position by hand.
    produce_by_hand(&broker, "positions", r#"["east","wiki"]"#, None).await;

    // The new owner starts afresh, with an epoch above the old owner's.
    let new = KafkaStore::open(store_config(&broker, "positions", "east", "new"))
        .await
        .unwrap();
    assert_eq!(new.acquire("wiki").await.unwrap(), None);
    // The old owner, not knowing it lost the source, writes once more: refused.
    old.commit(vec![("wiki".into(), position("stale"))])
        .await
        .unwrap();
    let reader = KafkaStore::open(store_config(&broker, "positions", "east", "reader"))
        .await
        .unwrap();
    let entry = reader.positions().await.unwrap()["wiki"].clone();
    assert_eq!(
        (entry.position, entry.epoch, entry.replica.as_str()),
        (None, 2, "new")
    );
    new.commit(vec![("wiki".into(), position("20"))])
        .await
        .unwrap();
    assert_eq!(stored(&reader, "wiki").await.as_deref(), Some("20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_the_owners_epoch_from_another_owner_is_refused() {
    let broker = Broker::kafka();
    let owner = KafkaStore::open(store_config(&broker, "positions", "east", "a"))
        .await
        .unwrap();
    owner.acquire("wiki").await.unwrap();
    owner
        .commit(vec![("wiki".into(), position("10"))])
        .await
        .unwrap();
    let claimed = owner.positions().await.unwrap()["wiki"].clone();
    assert_eq!(claimed.epoch, 1);
    // Another replica that read the same epoch as the owner before the owner's claim landed
    // claims epoch 1 too, and writes under it (here by hand: the race itself cannot be timed).
    // It has the owner's replica id as well, as replicas sharing `cluster.replica` would.
    produce_by_hand(
        &broker,
        "positions",
        r#"["east","wiki"]"#,
        Some(r#"{"position":"racer","written_at":"2026-01-01T00:00:00Z","replica":"a","epoch":1,"owner":"another"}"#),
    )
    .await;
    let reader = KafkaStore::open(store_config(&broker, "positions", "east", "reader"))
        .await
        .unwrap();
    assert_eq!(stored(&reader, "wiki").await.as_deref(), Some("10"));
    // The owner still writes under its epoch, several times.
    for next in ["11", "12"] {
        owner
            .commit(vec![("wiki".into(), position(next))])
            .await
            .unwrap();
        assert_eq!(stored(&reader, "wiki").await.as_deref(), Some(next));
    }
    // The next acquisition goes above both.
    let next = KafkaStore::open(store_config(&broker, "positions", "east", "b"))
        .await
        .unwrap();
    assert_eq!(next.acquire("wiki").await.unwrap(), Some(position("12")));
    assert_eq!(reader.positions().await.unwrap()["wiki"].epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_store_loads_every_position_of_a_topic_with_a_thousand_writes() {
    let broker = Broker::kafka();
    let writer = KafkaStore::open(store_config(&broker, "positions", "east", "w"))
        .await
        .unwrap();
    let sources: Vec<String> = (0..20).map(|n| format!("source-{n}")).collect();
    for source in &sources {
        writer.acquire(source).await.unwrap();
    }
    let rounds = 50;
    for round in 0..rounds {
        writer
            .commit(
                sources
                    .iter()
                    .map(|source| (source.clone(), position(&format!("{source}@{round}"))))
                    .collect(),
            )
            .await
            .unwrap();
    }

    let fresh = KafkaStore::open(store_config(&broker, "positions", "east", "fresh"))
        .await
        .unwrap();
    let load = fresh.initial_load();
    assert_eq!(load.partitions, 3);
    // Every claim and every commit was read (compaction has not run on the active segments).
    assert_eq!(load.records, (sources.len() * (rounds + 1)) as u64);
    let positions = fresh.positions().await.unwrap();
    assert_eq!(positions.len(), sources.len());
    for source in &sources {
        assert_eq!(
            positions[source].position,
            Some(position(&format!("{source}@{}", rounds - 1))),
            "{source}"
        );
    }
}
