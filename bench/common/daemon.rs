//! The `tributary` binary as a child process: its config, spawn, `/metrics` scrapes, SIGTERM.

use std::{
    fs,
    future::Future,
    io::ErrorKind,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    free_port, proc_status_kib, process_cpu, tail, Figures, SCRAPE_INTERVAL, SOURCE, STALL_TIMEOUT,
};

/// A daemon run.
pub struct DaemonRun {
    pub figures: Figures,
    /// Spawn → first record acknowledged (process start, producer, feed connection).
    pub first_record: Duration,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Records the daemon sent to the dead-letter topic (expected: 0).
    pub dead_lettered: u64,
    /// SIGTERM → exit.
    pub shutdown: Duration,
}

/// The `tributary` binary as a child process; killed if still running when dropped (after an
/// error).
pub struct Daemon {
    child: Child,
    /// Its `server.listen`: `/metrics`, `/readyz`, webhook routes.
    pub address: SocketAddr,
    /// Its stderr.
    pub log_path: PathBuf,
    /// Just before the spawn.
    pub started: Instant,
}

/// What [`Daemon::wait_produced`] saw.
pub struct Produced {
    /// Spawn → first record acknowledged.
    pub first_record: Option<Duration>,
    /// Spawn → the wanted count acknowledged.
    pub elapsed: Duration,
    /// The last scrape.
    pub scrape: String,
}

impl Daemon {
    /// Writes `dir/tributary.toml` (the broker, a file checkpoint store in `dir/state`, the
    /// server on a free port, and `[sources.bench]` with the lines of `source_body`) and runs
    /// `tributary run` on it, its stderr in `dir/tributary.log`.
    pub fn start(brokers: &str, dir: &Path, source_body: &str) -> anyhow::Result<Self> {
        Self::start_sources(brokers, dir, &format!("[sources.{SOURCE}]\n{source_body}"))
    }

    /// As [`Daemon::start`], with `sources` as the configuration's sources: whole
    /// `[sources.<name>]` tables, named as the caller wants.
    pub fn start_sources(brokers: &str, dir: &Path, sources: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let port = free_port()?;
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let config_path = dir.join("tributary.toml");
        // An exactly-once source needs the Kafka store; each run has a positions topic of its
        // own.
        // Exactly-once runs commit on the interval alone (1 s transactions, as the comparison
        // is stated), not after `transaction_max_records`, which at these rates would commit
        // several times a second.
        let kafka_extra = if sources.contains(EXACTLY_ONCE) {
            "transaction_max_records = 1000000000\n"
        } else {
            ""
        };
        let checkpoint = if sources.contains(EXACTLY_ONCE) {
            format!(
                "store = \"kafka\"\ntopic = \"bench.positions.{}.{port}\"",
                std::process::id()
            )
        } else {
            format!("dir = \"{}\"", dir.join("state").display())
        };
        fs::write(
            &config_path,
            format!(
                r#"[kafka]
brokers = "{brokers}"
{kafka_extra}
[checkpoint]
{checkpoint}

[server]
listen = "{address}"

{sources}"#,
            ),
        )?;
        let log_path = dir.join("tributary.log");
        let log = fs::File::create(&log_path)?;
        let started = Instant::now();
        // `TRIBUTARY_BINARY` runs another build (an earlier commit's, to compare).
        let binary = std::env::var("TRIBUTARY_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tributary").to_owned());
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning the tributary binary")?;
        Ok(Daemon {
            child,
            address,
            log_path,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error with `message` and the tail of the daemon's log.
    pub fn fail(&self, message: String) -> anyhow::Error {
        anyhow::anyhow!(
            "{message}\nthe daemon's log ({}):\n{}",
            self.log_path.display(),
            tail(&self.log_path)
        )
    }

    /// An error if the daemon has exited.
    pub fn check_running(&mut self, doing: &str) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => Err(self.fail(format!("the daemon exited ({status}) {doing}"))),
            None => Ok(()),
        }
    }

    /// Scrapes `/metrics` until `tributary_records_produced_total` reaches `n`; gives up when
    /// it does not move for [`STALL_TIMEOUT`].
    pub async fn wait_produced(&mut self, n: u64) -> anyhow::Result<Produced> {
        let mut first_record = None;
        let mut produced = 0u64;
        let mut last_progress = Instant::now();
        let scrape_text = loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.fail(format!(
                    "the daemon exited ({status}) after {produced} of {n} records"
                )));
            }
            if let Ok(text) = scrape(self.address).await {
                let now = metric(&text, "tributary_records_produced_total");
                if now > produced {
                    produced = now;
                    last_progress = Instant::now();
                    first_record.get_or_insert_with(|| self.started.elapsed());
                }
                if produced >= n {
                    break text;
                }
            }
            if last_progress.elapsed() > STALL_TIMEOUT {
                return Err(self.fail(format!(
                    "no progress for {STALL_TIMEOUT:?}: {produced} of {n} records produced"
                )));
            }
            tokio::time::sleep(SCRAPE_INTERVAL).await;
        };
        Ok(Produced {
            first_record,
            elapsed: self.started.elapsed(),
            scrape: scrape_text,
        })
    }

    /// Peak resident set (VmHWM) so far, KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid();
        proc_status_kib(pid, "VmHWM:").with_context(|| format!("reading /proc/{pid}/status"))
    }

    /// CPU time (user + system) so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        process_cpu(self.pid())
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) with a pid of our own child process and a valid signal number.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("SIGTERM: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the daemon did not exit within {timeout:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM (60 s to exit); an error, with the log, unless it exits 0. Returns how long
    /// the exit took.
    pub fn stop(&mut self) -> anyhow::Result<Duration> {
        let stopping = Instant::now();
        let status = self.terminate(Duration::from_secs(60))?;
        let shutdown = stopping.elapsed();
        if !status.success() {
            return Err(self.fail(format!("the daemon exited with {status} after SIGTERM")));
        }
        Ok(shutdown)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The source line that makes a benchmark source exactly-once (the daemon then runs with the
/// Kafka store).
pub const EXACTLY_ONCE: &str = "delivery = \"exactly_once\"";

/// Runs the daemon with `[sources.bench]` = `source_body` (in `dir`) until it has produced `n`
/// records (an exactly-once source: until the transaction that holds the last of them has
/// committed), then stops it. The feed must be up; `payload_bytes` is the payload of the `n`.
pub async fn daemon_run(
    brokers: &str,
    dir: &Path,
    source_body: &str,
    n: usize,
    payload_bytes: u64,
) -> anyhow::Result<DaemonRun> {
    let mut daemon = Daemon::start(brokers, dir, source_body)?;
    // An exactly-once source counts its records produced when their transaction commits.
    let produced = daemon.wait_produced(n as u64).await?;
    let peak_rss_kib = daemon.peak_rss_kib()?;
    let dead_lettered = metric(&produced.scrape, "tributary_records_dead_lettered_total");
    let cpu = daemon.cpu()?;
    let shutdown = daemon.stop()?;
    Ok(DaemonRun {
        figures: Figures {
            records: n,
            payload_bytes,
            elapsed: produced.elapsed,
            cpu,
        },
        first_record: produced.first_record.unwrap_or(produced.elapsed),
        peak_rss_kib,
        dead_lettered,
        shutdown,
    })
}

/// `GET path` over a fresh connection (HTTP/1.0: the body ends at close, unchunked); the whole
/// response, status line included.
pub async fn http_get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    let request = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::with_capacity(16 * 1024);
        stream.read_to_end(&mut response).await?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into()))
}

/// A response read by [`http_get_response`].
pub struct HttpResponse {
    /// The status line and headers, without the blank line that ends them.
    pub head: String,
    /// The body, as sent (not decoded).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// `GET path` with the extra request `headers` over a fresh connection (HTTP/1.0: the body
/// ends at close, unchunked), within `timeout`; the head and the raw body bytes apart.
pub async fn http_get_response(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let request = async {
        let mut stream = TcpStream::connect(address).await?;
        let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::with_capacity(64 * 1024);
        stream.read_to_end(&mut response).await?;
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "no end of headers"))?;
        Ok(HttpResponse {
            head: String::from_utf8_lossy(&response[..end]).into_owned(),
            body: response[end + 4..].to_vec(),
        })
    };
    tokio::time::timeout(timeout, request)
        .await
        .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into()))
}

/// `GET /metrics`.
pub async fn scrape(address: SocketAddr) -> std::io::Result<String> {
    http_get(address, "/metrics").await
}

/// The sum of metric `family` over the series of the benchmark's source in a scrape.
pub fn metric(scrape: &str, family: &str) -> u64 {
    metric_where(scrape, family, "")
}

/// Like [`metric`], over the series whose labels also contain `label` (e.g. `outcome="x"`).
pub fn metric_where(scrape: &str, family: &str, label: &str) -> u64 {
    let source = format!("source=\"{SOURCE}\"");
    scrape
        .lines()
        .filter(|line| {
            line.strip_prefix(family).is_some_and(|rest| {
                rest.starts_with('{') && rest.contains(&source) && rest.contains(label)
            })
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The sum of metric `family` over every series in a scrape (all sources).
pub fn metric_sum(scrape: &str, family: &str) -> u64 {
    scrape
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Polls `check` every 20 ms until it gives `Some`, for at most `timeout`.
pub async fn poll_until<T, Fut>(timeout: Duration, mut check: impl FnMut() -> Fut) -> Option<T>
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(value) = check().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
