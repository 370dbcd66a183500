//! The Kafka checkpoint store on Apache Kafka: the compacted topic it creates, the positions it
//! reads back, the owner epoch that fences a replica that lost a source, and the refusal of a
//! topic without compaction.

mod common;

use common::Broker;
use rdkafka::{
    admin::{AdminClient, AdminOptions, ResourceSpecifier},
    client::DefaultClientContext,
    config::ClientConfig,
};
use tributary::{
    checkpoint::{CheckpointStore, KafkaStore, KafkaStoreConfig},
    error::CheckpointError,
    record::Position,
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
