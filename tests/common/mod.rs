//! Shared test fixtures: a real Kafka-protocol broker (Apache Kafka as child processes, or
//! librdkafka's mock cluster in-process), daemon configs, read-back and waiting helpers.
#![allow(dead_code)]

pub mod api;
pub mod feeds;
pub mod graphql_ws;
pub mod kafka;
pub mod metric_names;
pub mod process;
pub mod secrets;
pub mod tls;
pub mod ws;

use std::{
    collections::{BTreeMap, HashMap},
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use kafka::KafkaCluster;
use rdkafka::{mocking::MockCluster, producer::DefaultProducerContext};
use tokio_util::sync::CancellationToken;
use tributary::{
    cli::demo::kafka_admin::{self, ConsumedRecord},
    cli::demo::replay,
    config,
    runtime::daemon::{self, RunningDaemon},
};

/// Partitions per test topic (a mock partition keeps only 5 MiB, so spread the data).
pub const PARTITIONS: i32 = 8;

/// A Kafka-protocol broker bound to 127.0.0.1.
pub enum Broker {
    /// librdkafka's in-process mock cluster (the demo's broker).
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// Apache Kafka, the reference: KRaft nodes run by `tests/kafka/kafka.sh`.
    Kafka(KafkaCluster),
}

/// A free TCP port on 127.0.0.1 (bound then released), for a child process to listen on.
///
/// It is drawn below Linux's ephemeral range (32768–60999): a port from that range, released,
/// can be taken as the source port of any outgoing connection (a Kafka client's, a broker's)
/// before the child binds it; below it only another listener can take it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Broker {
    /// A fresh mock cluster with one broker.
    pub fn mock() -> Self {
        Broker::Mock(MockCluster::new(1).expect("start the mock cluster"))
    }

    /// A fresh single-node Apache Kafka cluster. Fails the test (never skips it) when the
    /// broker cannot start, e.g. without Java 17 or Maven: the message says what is missing.
    pub fn kafka() -> Self {
        Self::kafka_cluster(1)
    }

    /// A fresh Apache Kafka cluster of `nodes` nodes; topics get min(nodes, 3) replicas.
    pub fn kafka_cluster(nodes: usize) -> Self {
        let cluster = blocking(|| KafkaCluster::start(nodes))
            .unwrap_or_else(|e| panic!("Apache Kafka did not start: {e}"));
        Broker::Kafka(cluster)
    }

    /// `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Kafka(cluster) => cluster.bootstrap_servers().to_owned(),
        }
    }

    /// Creates `topic` and `topic.dlq` with [`PARTITIONS`] partitions each.
    pub async fn create_topic(&self, topic: &str) {
        self.create_topics(&[topic, &format!("{topic}.dlq")], PARTITIONS)
            .await;
    }

    /// Creates `topics` with `partitions` partitions each (Apache Kafka: through the Admin
    /// API, with min(nodes, 3) replicas).
    pub async fn create_topics(&self, topics: &[&str], partitions: i32) {
        match self {
            Broker::Mock(cluster) => {
                for name in topics {
                    cluster
                        .create_topic(name, partitions, 1)
                        .expect("create mock topic");
                }
            }
            Broker::Kafka(cluster) => {
                let list: Vec<(&str, i32)> = topics.iter().map(|t| (*t, partitions)).collect();
                let replication = cluster.nodes().min(3) as i32;
                // On a loaded machine the controller may take longer than the request's 30 s:
                // the topics are then still being created, and asking again is safe (a topic
                // that exists is fine).
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match kafka_admin::create_topics(
                        cluster.bootstrap_servers(),
                        &list,
                        replication,
                    )
                    .await
                    {
                        Ok(()) => break,
                        Err(rdkafka::error::KafkaError::AdminOp(
                            rdkafka::types::RDKafkaErrorCode::OperationTimedOut
                            | rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                        )) if attempts < 3 => continue,
                        Err(e) => panic!("create topics {topics:?}: {e}"),
                    }
                }
                // CreateTopics answers once the controller has the topics; a broker's metadata
                // cache may list them a moment later. Wait for it, so that what the test starts
                // next (a `check --connect`, a daemon) finds them.
                let brokers = cluster.bootstrap_servers().to_owned();
                let names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
                tokio::task::spawn_blocking(move || wait_for_metadata(&brokers, &names))
                    .await
                    .unwrap();
            }
        }
    }

    /// Takes the broker down: the mock broker refuses connections; every Apache Kafka node is
    /// killed with SIGKILL (its data stays on disk).
    pub async fn down(&self) {
        match self {
            Broker::Mock(cluster) => cluster.broker_down(1).expect("mock broker down"),
            Broker::Kafka(cluster) => {
                blocking(|| cluster.kill(None)).unwrap_or_else(|e| panic!("kill Apache Kafka: {e}"))
            }
        }
    }

    /// Brings the broker back after [`Broker::down`]: Apache Kafka starts again on the same
    /// ports with its data; this returns once every node is up.
    pub async fn up(&self) {
        match self {
            Broker::Mock(cluster) => cluster.broker_up(1).expect("mock broker up"),
            Broker::Kafka(cluster) => blocking(|| cluster.start_again())
                .unwrap_or_else(|e| panic!("start Apache Kafka again: {e}")),
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) every Apache Kafka node; see
    /// [`KafkaCluster::freeze`].
    pub async fn freeze(&self, stop: bool) {
        match self {
            Broker::Mock(_) => panic!("the mock cluster cannot be frozen; use Broker::kafka()"),
            Broker::Kafka(cluster) => cluster
                .freeze(stop)
                .unwrap_or_else(|e| panic!("freeze Apache Kafka: {e}")),
        }
    }

    /// The leader (its `node.id`; -1 while it has none) of each partition of `topic`, from the
    /// brokers' metadata. Apache Kafka nodes are numbered from 1, as [`KafkaCluster::kill`]
    /// numbers them.
    pub async fn partition_leaders(&self, topic: &str) -> BTreeMap<i32, i32> {
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        let brokers = self.brokers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .expect("a metadata client");
            let metadata = client
                .fetch_metadata(Some(&topic), Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("metadata of `{topic}`: {e}"));
            metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .map(|p| (p.id(), p.leader()))
                .collect()
        })
        .await
        .unwrap()
    }

    /// Every record of `topic`, read back from the broker.
    pub async fn read(&self, topic: &str) -> Vec<ConsumedRecord> {
        let brokers = self.brokers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            kafka_admin::read_topic(&brokers, &topic, Duration::from_secs(60))
        })
        .await
        .unwrap()
        .expect("read the topic back")
    }
}

/// Waits (at most 30 s) until the metadata of `brokers` lists each of `topics` with partitions.
fn wait_for_metadata(brokers: &str, topics: &[String]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a metadata client");
    let deadline = Instant::now() + Duration::from_secs(30);
    for topic in topics {
        loop {
            let listed = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .is_ok_and(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                });
            if listed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} is not in the metadata 30 s after its creation"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `work`, which blocks for seconds (a JVM starting), without stalling the other tasks of
/// a multi-threaded runtime.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A config with one SSE source named `source` (extra TOML lines appended to its table).
pub fn sse_config(
    brokers: &str,
    state: &Path,
    source: &str,
    url: &str,
    topic: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "20s"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:0"

[sources.{source}]
type = "sse"
url = "{url}"
topic = "{topic}"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
{extra}
"#,
        state = state.display()
    )
}

/// Starts the daemon in this process from TOML text.
pub async fn start_daemon(toml: &str) -> RunningDaemon {
    let config = config::parse_toml(toml)
        .and_then(|raw| raw.validate())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    daemon::start(config, CancellationToken::new())
        .await
        .expect("start the daemon")
}

/// Polls `condition` every 10 ms until it holds; fails the test (never passes) after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 60 s) until the async `condition` holds.
pub async fn wait_until_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after 60 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `source` of `daemon` has had `count` records acknowledged (own topic + DLQ).
pub async fn wait_for_acknowledged(daemon: &RunningDaemon, source: &str, count: u64) {
    let metrics = daemon
        .metrics()
        .registered(source)
        .expect("a registered source");
    let rendered = daemon.metrics().clone();
    let dead_lettered = move || dead_lettered_total(&rendered.render(), source);
    wait_until(
        &format!("{count} records of `{source}` acknowledged"),
        Duration::from_secs(120),
        || metrics.records_produced.get() + dead_lettered() >= count,
    )
    .await;
}

/// The sum of `tributary_records_dead_lettered_total` for `source` in a scrape.
pub fn dead_lettered_total(scrape: &str, source: &str) -> u64 {
    let prefix = "tributary_records_dead_lettered_total{";
    scrape
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("source=\"{source}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Index of each replayed Wikimedia event id.
pub fn wikimedia_index(count: usize) -> HashMap<String, usize> {
    (0..count)
        .map(|i| (replay::wikimedia_event_id(i), i))
        .collect()
}

/// Asserts that `records` hold each of the `count` replayed events exactly once, in feed order
/// within every partition, with key = event id, the recorded payload and lineage headers.
pub fn assert_exactly_once_in_order(records: &[ConsumedRecord], count: usize, source: &str) {
    let index = wikimedia_index(count);
    let recorded = replay::recorded_wikimedia_events();
    let mut seen = vec![0usize; count];
    let mut last_in_partition: HashMap<i32, usize> = HashMap::new();
    for record in records {
        let id = record
            .header("tributary.event_id")
            .expect("every record has tributary.event_id");
        let i = *index
            .get(id)
            .unwrap_or_else(|| panic!("unexpected event id {id}"));
        seen[i] += 1;
        assert_eq!(
            record.key.as_deref(),
            Some(id.as_bytes()),
            "key is the SSE id"
        );
        assert_eq!(
            record.payload,
            recorded[i % recorded.len()].as_bytes(),
            "payload of event {i}"
        );
        assert_eq!(record.header("tributary.source"), Some(source));
        assert!(record
            .header("tributary.url")
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
        let fetched_at = record
            .header("tributary.fetched_at")
            .expect("fetched_at header");
        assert!(
            humantime::parse_rfc3339(fetched_at).is_ok(),
            "fetched_at `{fetched_at}` is RFC 3339"
        );
        if let Some(previous) = last_in_partition.insert(record.partition, i) {
            assert!(
                previous < i,
                "partition {} has event {i} after event {previous}",
                record.partition
            );
        }
    }
    let lost: Vec<usize> = (0..count).filter(|&i| seen[i] == 0).collect();
    let duplicated: Vec<usize> = (0..count).filter(|&i| seen[i] > 1).collect();
    assert!(
        lost.is_empty(),
        "{} events lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "{} events duplicated, first {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
}

/// A minimal HTTP/1.1 GET (status, body) over a plain TCP connection.
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One scripted answer of a [`ScriptedServer`].
#[derive(Clone, Debug)]
pub struct Scripted {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body (an event stream for 200 answers), bytes as sent.
    pub body: bytes::Bytes,
    /// Keep the connection open (idle) after the body, as a live feed would.
    pub stay_open: bool,
}

impl Scripted {
    /// A 200 `text/event-stream` answer with `body`.
    pub fn events(body: &str, stay_open: bool) -> Self {
        Scripted {
            status: 200,
            headers: vec![("content-type", "text/event-stream".into())],
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            stay_open,
        }
    }
}

/// What a [`ScriptedServer`] saw of one request.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// When it arrived.
    pub at: Instant,
    /// Path and query.
    pub uri: String,
    /// Request headers (lowercase names).
    pub headers: HashMap<String, String>,
}

/// An HTTP server on 127.0.0.1 that answers the n-th request with the n-th scripted answer
/// (the last one once the script runs out) and records every request.
pub struct ScriptedServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
}

impl ScriptedServer {
    /// Starts the server with `script`.
    pub async fn start(script: Vec<Scripted>) -> Self {
        use axum::{body::Body, extract::Request, response::Response};
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let script = Arc::new(script);
        let handler_seen = Arc::clone(&seen);
        let handler = move |request: Request| {
            let seen = Arc::clone(&handler_seen);
            let script = Arc::clone(&script);
            async move {
                let index = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(SeenRequest {
                        at: Instant::now(),
                        uri: request.uri().to_string(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                    });
                    seen.len() - 1
                };
                let answer = script[index.min(script.len() - 1)].clone();
                let body =
                    futures::stream::once(
                        async move { Ok::<_, std::convert::Infallible>(answer.body) },
                    );
                let body = if answer.stay_open {
                    Body::from_stream(body.chain(futures::stream::pending()))
                } else {
                    Body::from_stream(body)
                };
                let mut response = Response::builder().status(answer.status);
                for (name, value) in &answer.headers {
                    response = response.header(*name, value);
                }
                response.body(body).unwrap()
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handler);
        tokio::spawn(async move { axum::serve(listener, app).await });
        ScriptedServer { base_url, seen }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// A daemon config without sources (append `[sources.…]` tables); state in `state`.
pub fn daemon_config(brokers: &str, state: &Path, rest: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:0"
{rest}
"#,
        state = state.display()
    )
}

/// Waits until metric `name{source}` (summed over other labels) of an in-process daemon
/// reaches `count`.
pub async fn wait_for_metric(daemon: &RunningDaemon, name: &str, source: &str, count: u64) {
    let metrics = daemon.metrics().clone();
    wait_until(
        &format!("{name}{{source=\"{source}\"}} to reach {count}"),
        Duration::from_secs(60),
        || process::metric(&metrics.render(), name, source) >= count,
    )
    .await;
}

/// The keys (as text) of every record of `topic`, sorted.
pub async fn sorted_keys(broker: &Broker, topic: &str) -> Vec<String> {
    let mut keys: Vec<String> = broker
        .read(topic)
        .await
        .iter()
        .map(|r| String::from_utf8(r.key.clone().expect("a keyed record")).unwrap())
        .collect();
    keys.sort();
    keys
}

/// Creates topic `name` (and its DLQ) and starts a daemon whose only source is
/// `[sources.<name>]` with the TOML lines `table` (which set `topic = "<name>"`).
pub async fn start_with_source(
    broker: &Broker,
    state: &Path,
    name: &str,
    table: &str,
) -> RunningDaemon {
    broker.create_topic(name).await;
    start_daemon(&daemon_config(
        &broker.brokers(),
        state,
        &format!("\n[sources.{name}]\n{table}"),
    ))
    .await
}

/// An SSE body of `events` (id, data), each `id: N` and `data: …`.
pub fn sse_body(events: &[(String, String)]) -> String {
    events
        .iter()
        .map(|(id, data)| format!("id: {id}\ndata: {data}\n\n"))
        .collect()
}

/// `len` letters that compress badly (xorshift), different for every `seed`.
pub fn noise(seed: u64, len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// Creates `topic` (one partition, one replica) with the topic configs `configs`
/// (`max.message.bytes`, `message.timestamp.before.max.ms`, …), through the Admin API.
pub async fn create_topic_with(brokers: &str, topic: &str, configs: &[(&str, &str)]) {
    use rdkafka::{
        admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
        client::DefaultClientContext,
        ClientConfig,
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let results = admin
        .create_topics(&[new_topic], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("create `{topic}`: {code:?}"));
    }
}

/// The Kafka store on `topic` of `broker`, for `cluster`, as a reader of the positions the
/// daemons commit (it claims nothing until asked to).
pub async fn positions_store(
    broker: &Broker,
    topic: &str,
    cluster: &str,
) -> tributary::state::checkpoint::KafkaStore {
    let mut connection = rdkafka::ClientConfig::new();
    connection.set("bootstrap.servers", broker.brokers());
    tributary::state::checkpoint::KafkaStore::open(tributary::state::checkpoint::KafkaStoreConfig {
        connection,
        topic: topic.into(),
        partitions: 1,
        replication_factor: 1,
        cluster: cluster.into(),
        replica: "reader".into(),
    })
    .await
    .expect("open the positions topic")
}
