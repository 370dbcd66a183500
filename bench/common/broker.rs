//! A Kafka-protocol broker on 127.0.0.1: Apache Kafka (one KRaft node, run by
//! `tests/kafka/kafka.sh`, log on disk), tansu as a child process, or librdkafka's mock cluster.

// The test rig's Apache Kafka cluster, shared with the tests.
#[path = "../../tests/common/kafka.rs"]
mod kafka;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use rdkafka::{mocking::MockCluster, producer::DefaultProducerContext};
use tributary::cli::demo::kafka_admin;

use super::{free_port, tail, BrokerKind, PARTITIONS};

/// A Kafka-protocol broker on 127.0.0.1, stopped when dropped.
pub enum Broker {
    Kafka(kafka::KafkaCluster),
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu {
        child: Child,
        brokers: String,
        version: String,
    },
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Broker {
    /// Starts a broker; tansu's log goes to `logs/tansu.log`.
    pub fn start(kind: BrokerKind, logs: &Path) -> anyhow::Result<Self> {
        match kind {
            BrokerKind::Mock => Ok(Broker::Mock(
                MockCluster::new(1).context("starting librdkafka's mock cluster")?,
            )),
            BrokerKind::Tansu => Self::tansu(logs),
            BrokerKind::Kafka => Ok(Broker::Kafka(
                kafka::KafkaCluster::start(1).map_err(anyhow::Error::msg)?,
            )),
        }
    }

    fn tansu(logs: &Path) -> anyhow::Result<Self> {
        let binary = match std::env::var_os("TRIBUTARY_TEST_TANSU") {
            Some(path) => PathBuf::from(path),
            None => std::env::var_os("HOME")
                .map(|home| Path::new(&home).join(".cargo/bin/tansu"))
                .unwrap_or_default(),
        };
        if !binary.is_file() {
            bail!(
                "tansu not found at `{}`: install it (`cargo install tansu`) or set \
                 TRIBUTARY_TEST_TANSU to its path, or run with `--broker mock`",
                binary.display()
            );
        }
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = fs::File::create(logs.join("tansu.log"))?;
        let mut child = Command::new(&binary)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting `{}`", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "tansu exited ({status}) before listening; its log:\n{}",
                    tail(&logs.join("tansu.log"))
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tansu did not accept connections on 127.0.0.1:{port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Broker::Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
            version,
        })
    }

    pub fn brokers(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Tansu { brokers, .. } => brokers.clone(),
            Broker::Kafka(cluster) => cluster.bootstrap_servers().to_owned(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Broker::Mock(_) => format!(
                "librdkafka mock cluster (in the benchmark process) at {}",
                self.brokers()
            ),
            Broker::Tansu { version, .. } => format!(
                "{} (child process, memory storage) at {}",
                if version.is_empty() { "tansu" } else { version },
                self.brokers()
            ),
            Broker::Kafka(cluster) => format!(
                "Apache Kafka {} (one KRaft node, child process, log on disk in {}) at {}",
                kafka::KafkaCluster::version().unwrap_or_default(),
                cluster.dir().display(),
                self.brokers()
            ),
        }
    }

    /// Creates `topics` with [`PARTITIONS`] partitions each.
    pub async fn create_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        match self {
            Broker::Mock(cluster) => {
                for topic in topics {
                    cluster
                        .create_topic(topic, PARTITIONS, 1)
                        .with_context(|| format!("creating mock topic `{topic}`"))?;
                }
            }
            Broker::Tansu { .. } | Broker::Kafka(_) => {
                let list: Vec<(&str, i32)> = topics.iter().map(|t| (*t, PARTITIONS)).collect();
                kafka_admin::create_topics(&self.brokers(), &list, 1)
                    .await
                    .with_context(|| format!("creating topics {topics:?}"))?;
            }
        }
        Ok(())
    }
}
