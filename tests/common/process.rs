//! The `tributary` binary as a child process: spawn it with a config file, scrape its
//! `/metrics`, stop it with SIGTERM or SIGKILL.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{http_get, sse_config, Broker};

pub const BINARY: &str = env!("CARGO_BIN_EXE_tributary");

/// The binary the daemon tests run: `TRIBUTARY_BINARY` when set (CI sets the release build,
/// whose memory the chaos suite holds to the configured budget), else the one cargo built.
pub fn binary() -> String {
    std::env::var("TRIBUTARY_BINARY").unwrap_or_else(|_| BINARY.to_owned())
}

/// A daemon child process and the address of its `/metrics`.
pub struct Daemon {
    /// The child process.
    pub child: Child,
    metrics_url: String,
}

impl Daemon {
    pub fn spawn(config: &Path, metrics_port: u16) -> Self {
        Self::spawn_with(config, metrics_port, |command| {
            // `TRIBUTARY_DAEMON_LOG` (a `RUST_LOG` filter) shows more of a failing run.
            let filter = std::env::var("TRIBUTARY_DAEMON_LOG").unwrap_or_else(|_| "warn".into());
            command.env("RUST_LOG", filter);
        })
    }

    /// Like [`Daemon::spawn`], with `setup` adding to the child's command (environment,
    /// where stderr goes); stdout is discarded unless `setup` redirects it.
    pub fn spawn_with(config: &Path, metrics_port: u16, setup: impl FnOnce(&mut Command)) -> Self {
        let mut command = Command::new(binary());
        command
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null());
        setup(&mut command);
        let child = command.spawn().expect("start the tributary binary");
        Daemon {
            child,
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        }
    }

    /// The sources this daemon runs now (the keys of `/readyz`'s `sources`), empty while it is
    /// not up. Fails the test when the daemon (`name`, for the message) has exited.
    #[allow(dead_code)] // Used by the cluster suites only.
    pub async fn running_sources(&mut self, name: &str) -> std::collections::BTreeSet<String> {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("replica {name} exited early with {status}");
        }
        let url = self.metrics_url.replace("/metrics", "/readyz");
        let Some((_, body)) = try_http_get(&url).await else {
            return Default::default();
        };
        let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
        readiness["sources"]
            .as_object()
            .map(|sources| sources.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The `/metrics` text, or `None` while the server is not up yet.
    pub async fn scrape(&self) -> Option<String> {
        try_http_get(&self.metrics_url)
            .await
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    }

    /// Waits until `tributary_records_produced_total{source}` reaches `count`.
    pub async fn wait_for_produced(&mut self, source: &str, count: u64) {
        self.wait_for_metric("tributary_records_produced_total", source, count)
            .await;
    }

    /// Waits until metric `name{source}` reaches `count`.
    pub async fn wait_for_metric(&mut self, name: &str, source: &str, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(scrape) = self.scrape().await {
                if metric(&scrape, name, source) >= count {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the daemon exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name} to reach {count}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the unlabelled metric `name` reaches `value`.
    pub async fn wait_for_metric_value(&mut self, name: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(scrape) = self.scrape().await {
                let current = scrape
                    .lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.parse::<f64>().ok());
                if current.is_some_and(|current| current >= value as f64) {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the daemon exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name} to reach {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        send_signal(&self.child, libc::SIGTERM);
        let mut daemon = self;
        tokio::task::spawn_blocking(move || daemon.child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    /// A test that fails leaves no daemon behind (it would hold the test's pipes open).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` to `child`.
pub fn send_signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: `pid` is our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// A GET that returns `None` when nothing listens yet.
pub async fn try_http_get(url: &str) -> Option<(u16, String)> {
    let host = url.strip_prefix("http://")?.split('/').next()?;
    tokio::net::TcpStream::connect(host).await.ok()?;
    Some(http_get(url).await)
}

/// The value of `name{source="…"}` in a scrape (0 when absent).
pub fn metric(scrape: &str, name: &str, source: &str) -> u64 {
    let label = format!("source=\"{source}\"");
    scrape
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The config of a daemon child process: one SSE source named `source` (topic of the same
/// name) reading `feed`, state under `<dir>/state`, metrics on `port`.
pub fn process_toml(
    broker: &Broker,
    dir: &Path,
    source: &str,
    feed: &str,
    port: u16,
    extra: &str,
) -> String {
    sse_config(
        &broker.brokers(),
        &dir.join("state"),
        source,
        feed,
        source,
        extra,
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
}

pub fn write_config(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("tributary.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Peak resident set (VmHWM) of process `pid`, MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("a VmHWM line");
    kib / 1024.0
}
