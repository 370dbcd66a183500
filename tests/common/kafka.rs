//! Apache Kafka on 127.0.0.1 for the tests and the benchmarks: a KRaft cluster of one or more
//! nodes, each a JVM run by `tests/kafka/kafka.sh` (which fetches the broker's jars from Maven
//! Central once and caches them). The cluster's config, logs and data live in a temporary
//! folder, so a node killed or stopped starts again with its data. The nodes are killed when
//! the cluster is dropped, and by the script's watchdog if this process dies first.
//!
//! This file only needs `std` and `tempfile`: the benchmarks include it by path.

use std::{path::Path, process::Command};

/// The script that runs the brokers.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/kafka.sh");

/// An Apache Kafka cluster of `nodes` KRaft nodes (each a broker and a controller).
pub struct KafkaCluster {
    dir: tempfile::TempDir,
    bootstrap_servers: String,
    nodes: usize,
}

impl KafkaCluster {
    /// Starts a new cluster of `nodes` nodes and waits until every one is up.
    ///
    /// # Errors
    /// Java or Maven is missing, the jars cannot be fetched, or a node does not start; the
    /// message is the script's, with the end of the node's log.
    pub fn start(nodes: usize) -> Result<Self, String> {
        Self::start_with(nodes, &[])
    }

    /// Starts a new cluster of one node that also listens for SASL_PLAINTEXT, SASL_SSL and
    /// SSL (`kafka.sh start --security`); [`KafkaCluster::security`] says how to reach them.
    /// [`KafkaCluster::bootstrap_servers`] stays the PLAINTEXT listener, for the tests' own
    /// admin clients and readers.
    ///
    /// # Errors
    /// As [`KafkaCluster::start`], and `openssl` is missing.
    pub fn start_secure() -> Result<Self, String> {
        Self::start_with(1, &["--security"])
    }

    fn start_with(nodes: usize, extra: &[&str]) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("tributary-kafka-")
            .tempdir()
            .map_err(|e| format!("cannot create a folder for the Kafka cluster: {e}"))?;
        let owner = std::process::id().to_string();
        let nodes_arg = nodes.to_string();
        let mut args = vec![
            "start",
            path_arg(dir.path())?,
            "--nodes",
            &nodes_arg,
            "--owner",
            &owner,
        ];
        args.extend_from_slice(extra);
        let bootstrap_servers = run(&args)?;
        Ok(KafkaCluster {
            dir,
            bootstrap_servers,
            nodes,
        })
    }

    /// `bootstrap.servers`: every node's listener.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The folder that holds each node's config (`node-N/server.properties`), log
    /// (`node-N/broker.log`) and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills node `node` (1-based), or every node, with SIGKILL: a crash. The data on disk stays.
    ///
    /// # Errors
    /// The script failed.
    pub fn kill(&self, node: Option<usize>) -> Result<(), String> {
        self.signal("kill", node)
    }

    /// Stops node `node`, or every node, cleanly (SIGTERM: a controlled shutdown).
    ///
    /// # Errors
    /// The script failed.
    pub fn stop(&self, node: Option<usize>) -> Result<(), String> {
        self.signal("stop", node)
    }

    /// Freezes every node with SIGSTOP (`stop == true`) or thaws it with SIGCONT: a frozen
    /// broker keeps its sockets open and answers nothing, as a hung JVM or a paused VM does.
    ///
    /// # Errors
    /// A node's pid file is missing or `kill` failed.
    pub fn freeze(&self, stop: bool) -> Result<(), String> {
        for node in 1..=self.nodes() {
            let pid_file = self.dir().join(format!("node-{node}/pid"));
            let pid = std::fs::read_to_string(&pid_file)
                .map_err(|e| format!("{}: {e}", pid_file.display()))?;
            let signal = if stop { "-STOP" } else { "-CONT" };
            let status = Command::new("kill")
                .args([signal, pid.trim()])
                .status()
                .map_err(|e| format!("kill {signal}: {e}"))?;
            if !status.success() {
                return Err(format!("kill {signal} {} failed: {status}", pid.trim()));
            }
        }
        Ok(())
    }

    /// Starts every node that is not running again, on its ports and with its data, and waits
    /// until each is up.
    ///
    /// # Errors
    /// A node does not start (the message has the end of its log).
    pub fn start_again(&self) -> Result<(), String> {
        let owner = std::process::id().to_string();
        run(&["start", path_arg(self.dir())?, "--owner", &owner]).map(drop)
    }

    /// How to reach the SASL and SSL listeners of a cluster started with
    /// [`KafkaCluster::start_secure`] (`kafka.sh security DIR`).
    ///
    /// # Errors
    /// The cluster was not started with them, or the script failed.
    pub fn security(&self) -> Result<Security, String> {
        let text = run(&["security", path_arg(self.dir())?])?;
        let values: std::collections::HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let value = |key: &str| {
            values
                .get(key)
                .map(|v| (*v).to_owned())
                .ok_or_else(|| format!("`kafka.sh security` printed no {key}:\n{text}"))
        };
        Ok(Security {
            sasl_plaintext: value("SASL_PLAINTEXT")?,
            sasl_ssl: value("SASL_SSL")?,
            ssl: value("SSL")?,
            username: value("SASL_USERNAME")?,
            password: value("SASL_PASSWORD")?,
            ca: value("CA")?,
            client_cert: value("CLIENT_CERT")?,
            client_key: value("CLIENT_KEY")?,
            untrusted_ca: value("UNTRUSTED_CA")?,
            untrusted_cert: value("UNTRUSTED_CERT")?,
            untrusted_key: value("UNTRUSTED_KEY")?,
        })
    }

    /// The Apache Kafka version the script runs (`TRIBUTARY_KAFKA_VERSION`, or its default).
    ///
    /// # Errors
    /// The script failed.
    pub fn version() -> Result<String, String> {
        run(&["version"])
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        (1..=self.nodes)
            .map(|node| {
                let path = self.dir().join(format!("node-{node}/broker.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!("== {}\n{tail}\n", path.display())
            })
            .collect()
    }

    fn signal(&self, command: &str, node: Option<usize>) -> Result<(), String> {
        let node = node.map(|n| n.to_string());
        let mut args = vec![command, path_arg(self.dir())?];
        args.extend(node.as_deref());
        run(&args).map(drop)
    }
}

/// The SASL and SSL listeners of a cluster started with [`KafkaCluster::start_secure`], and
/// the credentials and PEM files made for it.
#[derive(Clone, Debug)]
pub struct Security {
    /// `bootstrap.servers` of the SASL_PLAINTEXT listener (SCRAM-SHA-512 and PLAIN).
    pub sasl_plaintext: String,
    /// `bootstrap.servers` of the SASL_SSL listener (SCRAM-SHA-512 and PLAIN).
    pub sasl_ssl: String,
    /// `bootstrap.servers` of the SSL listener (a client certificate is required).
    pub ssl: String,
    /// The SASL user, for both mechanisms.
    pub username: String,
    /// Its password (random, made when the cluster was created).
    pub password: String,
    /// The CA that signed the brokers' and the client's certificates (PEM).
    pub ca: String,
    /// A client certificate the brokers accept, and its key (PEM).
    pub client_cert: String,
    pub client_key: String,
    /// A CA that signed neither the brokers' certificates nor the client's (PEM).
    pub untrusted_ca: String,
    /// A client certificate from that CA, which the brokers do not trust, and its key (PEM).
    pub untrusted_cert: String,
    pub untrusted_key: String,
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("Apache Kafka's logs at the failure:\n{}", self.log_tail(40));
        }
        if let Err(error) = self.kill(None) {
            eprintln!("{error}");
        }
    }
}

fn path_arg(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("`{}` is not UTF-8", path.display()))
}

/// Runs the script with `args`; its trimmed stdout, or an error with its stderr.
fn run(args: &[&str]) -> Result<String, String> {
    let output = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `bash {SCRIPT}`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{SCRIPT} {}` failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
