//! What the benchmarks share: the broker (Apache Kafka or tansu as child processes, or
//! librdkafka's mock cluster),
//! topic creation, the `tributary` daemon as a child process (config, spawn, `/metrics`
//! scrapes, SIGTERM), the raw rdkafka producer ceiling, figures and their printing, `/proc`
//! readers and argument parsing. Each bench target compiles its own copy (`mod common;`), so
//! what one bench does not use is allowed to be dead code.
#![allow(dead_code)]

mod broker;
mod daemon;
mod raw;

use std::{fs, net::TcpListener, path::Path, process::ExitCode, time::Duration};

use anyhow::Context as _;
use tributary::sinks::kafka::{DEFAULT_PROPERTIES, ENFORCED_PROPERTIES};

pub use broker::Broker;
// Each bench uses a different part of what is re-exported.
#[allow(unused_imports)]
pub use daemon::{
    daemon_run, http_get, http_get_response, metric, metric_sum, metric_where, poll_until, scrape,
    Daemon, DaemonRun, HttpResponse, Produced, EXACTLY_ONCE,
};
#[allow(unused_imports)]
pub use raw::{raw_run, RawRecord, SendRecord};

/// Partitions of every topic the benchmarks create.
pub const PARTITIONS: i32 = 8;
/// The daemon's source name (the `source` label of its metrics).
pub const SOURCE: &str = "bench";
/// How often the daemon's `/metrics` is scraped while it runs.
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(20);
/// A run whose produced count does not move for this long is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Arguments and main

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Kafka,
    Tansu,
    Mock,
}

/// Walks `--name value` and `--name=value` arguments. `handle(name, value)` returns whether it
/// knew `name`; `value(what)` takes the flag's value (`what` names it in the error). `-h` and
/// `--help` give `Err("")`; `--bench`, which `cargo bench` appends, is ignored.
pub fn parse_flags(
    mut handle: impl FnMut(&str, &mut dyn FnMut(&str) -> Result<String, String>) -> Result<bool, String>,
) -> Result<(), String> {
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--bench" => {}
            "-h" | "--help" => return Err(String::new()),
            other => {
                if !handle(other, &mut value)? {
                    return Err(format!("unknown argument `{other}`"));
                }
            }
        }
    }
    Ok(())
}

/// The value of `--broker`.
pub fn broker_kind(value: &str) -> Result<BrokerKind, String> {
    match value {
        "kafka" => Ok(BrokerKind::Kafka),
        "tansu" => Ok(BrokerKind::Tansu),
        "mock" => Ok(BrokerKind::Mock),
        other => Err(format!("unknown broker `{other}`")),
    }
}

/// A count of at least `min` (`_` separators allowed), for flag `name`.
pub fn count(name: &str, text: &str, min: usize) -> Result<usize, String> {
    let value: usize = text
        .replace('_', "")
        .parse()
        .map_err(|e| format!("{name}: {e}"))?;
    if value < min {
        return Err(format!("{name} must be at least {min}"));
    }
    Ok(value)
}

/// A bench's `main`: usage and argument errors (exit code 2), a two-thread tokio runtime, and
/// `phases` run in a temporary directory that is kept, with the logs, when it fails.
pub fn main<A>(
    program: &str,
    usage: &str,
    args: Result<A, String>,
    phases: impl AsyncFnOnce(A, &Path) -> anyhow::Result<()>,
) -> ExitCode {
    let args = match args {
        Ok(args) => args,
        Err(message) => {
            if message.is_empty() {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            eprintln!("{program}: {message}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let result = runtime.block_on(async {
        let work = tempfile::tempdir().context("creating a temporary directory")?;
        let result = phases(args, work.path()).await;
        if result.is_err() {
            eprintln!("logs and configs kept in {}", work.keep().display());
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The panic messages and the last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.contains("panicked at"))
        .flat_map(|(i, _)| lines[i..(i + 2).min(lines.len())].iter().copied())
        .collect();
    shown.extend(&lines[lines.len().saturating_sub(10)..]);
    shown.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Figures

/// One timed phase.
pub struct Figures {
    pub records: usize,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// CPU time (user + system) the producing process spent: a figure that, unlike
    /// throughput, does not depend on what else the two cores were doing.
    pub cpu: Duration,
}

impl Figures {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn cpu_micros_per_record(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.records as f64
    }
    pub fn megabytes_per_second(&self) -> f64 {
        self.payload_bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Total bytes of the first `count` items of `recorded` cycled.
pub fn cycled_bytes<S: AsRef<[u8]>>(recorded: &[S], count: usize) -> u64 {
    let cycle: u64 = recorded.iter().map(|e| e.as_ref().len() as u64).sum();
    let whole = (count / recorded.len()) as u64 * cycle;
    let rest: u64 = recorded[..count % recorded.len()]
        .iter()
        .map(|e| e.as_ref().len() as u64)
        .sum();
    whole + rest
}

pub fn print_row(label: &str, figures: &Figures) {
    println!(
        "{label:<40} {:>9} records {:>7.2} s {:>10.0} records/s {:>7.1} MB/s {:>6.2} CPU µs/record",
        figures.records,
        figures.elapsed.as_secs_f64(),
        figures.records_per_second(),
        figures.megabytes_per_second(),
        figures.cpu_micros_per_record(),
    );
}

/// The daemon's producer properties: its defaults, then the ones the delivery guarantee fixes.
pub fn producer_properties() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    DEFAULT_PROPERTIES.iter().chain(ENFORCED_PROPERTIES)
}

pub fn properties_line() -> String {
    producer_properties()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The default `channel_max_bytes` of a source (the benchmarks keep it): bytes.
pub const CHANNEL_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Memory above the configured budget that a run may use (code, runtime, TLS, sockets,
/// librdkafka's threads): KiB.
pub const RSS_HEADROOM_KIB: u64 = 32 * 1024;

/// The memory the operator configured for one source: its channel (`channel_max_bytes`) plus
/// the producer queue (`queue.buffering.max.kbytes`), KiB.
pub fn memory_budget_kib() -> u64 {
    let queue_kib = producer_properties()
        .filter(|(key, _)| *key == "queue.buffering.max.kbytes")
        .last()
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0u64);
    CHANNEL_MAX_BYTES / 1024 + queue_kib
}

/// The closing lines of `--exactly-once`: the exactly-once daemon runs of N and K·N records
/// against the at-least-once runs of the same lengths (`short`, `long`).
pub fn print_exactly_once(
    k: usize,
    short: &DaemonRun,
    long: &DaemonRun,
    eos_short: &DaemonRun,
    eos_long: &DaemonRun,
) {
    println!(
        "exactly-once / at-least-once {:.2} (N)   {:.2} ({k}N)   target ≥ 0.80 (1 s transactions)",
        eos_short.figures.records_per_second() / short.figures.records_per_second(),
        eos_long.figures.records_per_second() / long.figures.records_per_second(),
    );
    println!(
        "  spawn → first record       {} / {} ms (N)   {} / {} ms ({k}N)   exactly-once (first commit) / at-least-once (first ack)",
        eos_short.first_record.as_millis(),
        short.first_record.as_millis(),
        eos_long.first_record.as_millis(),
        long.first_record.as_millis(),
    );
    println!(
        "CPU per record              {:.1} / {:.1} µs (N)   {:.1} / {:.1} µs ({k}N)   exactly-once / at-least-once",
        eos_short.figures.cpu_micros_per_record(),
        short.figures.cpu_micros_per_record(),
        eos_long.figures.cpu_micros_per_record(),
        long.figures.cpu_micros_per_record(),
    );
}

/// What a feed benchmark aims at: the daemon against the raw producer of the same length.
#[derive(Clone, Copy, Debug)]
pub struct Goals {
    /// Lowest daemon / raw producer throughput ratio.
    pub min_ratio: f64,
    /// Highest daemon / raw producer CPU time per record ratio.
    pub max_cpu_ratio: f64,
}

/// The goals of a feed benchmark without a record stage: the daemon at 0.8 of the raw
/// producer's pace or better, for at most 1.2 times its CPU per record.
pub const FEED_GOALS: Goals = Goals {
    min_ratio: 0.80,
    max_cpu_ratio: 1.20,
};

/// The comparison lines of a daemon run against the raw producer run of the same length
/// (`label`: `N`, `4N`): throughput ratio, then CPU µs per record of each and their ratio,
/// each next to its goal.
pub fn comparison_lines(label: &str, raw: &Figures, daemon: &Figures, goals: Goals) -> [String; 2] {
    let ratio = daemon.records_per_second() / raw.records_per_second();
    let (daemon_cpu, raw_cpu) = (daemon.cpu_micros_per_record(), raw.cpu_micros_per_record());
    let cpu_ratio = daemon_cpu / raw_cpu;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let label = format!("({label})");
    [
        format!(
            "daemon / raw producer {label:<5}   {ratio:>5.2}                       goal ≥ {:.2}: {}",
            goals.min_ratio,
            verdict(ratio >= goals.min_ratio),
        ),
        format!(
            "CPU per record {label:<5}          {daemon_cpu:>5.2} / {raw_cpu:>5.2} µs = {cpu_ratio:>4.2}   goal ≤ {:.2}: {}   daemon / raw",
            goals.max_cpu_ratio,
            verdict(cpu_ratio <= goals.max_cpu_ratio),
        ),
    ]
}

/// The closing lines of a feed benchmark: a daemon run of N and of K·N records, each against
/// the raw producer ceiling of the same length, next to the bench's `goals`.
#[allow(clippy::too_many_arguments)]
pub fn print_comparison(
    n: usize,
    k: usize,
    raw: &Figures,
    short: &DaemonRun,
    raw_long: &Figures,
    long: &DaemonRun,
    goals: Goals,
) {
    println!();
    let long_label = format!("{k}N");
    for line in comparison_lines("N", raw, &short.figures, goals)
        .into_iter()
        .chain(comparison_lines(
            &long_label,
            raw_long,
            &long.figures,
            goals,
        ))
    {
        println!("{line}");
    }
    println!(
        "daemon peak RSS (VmHWM)     {:.1} MiB (N = {n})   {:.1} MiB ({k}N = {})   ratio {:.2}",
        short.peak_rss_kib as f64 / 1024.0,
        long.peak_rss_kib as f64 / 1024.0,
        n * k,
        long.peak_rss_kib as f64 / short.peak_rss_kib.max(1) as f64
    );
    let budget = memory_budget_kib();
    let verdict = |peak: u64| {
        if peak <= budget + RSS_HEADROOM_KIB {
            "within"
        } else {
            "OVER"
        }
    };
    println!(
        "memory budget               {:.1} MiB (channel {:.0} + producer queue {:.0}); peak ≤ budget + {} MiB: {} (N), {} ({k}N)",
        budget as f64 / 1024.0,
        CHANNEL_MAX_BYTES as f64 / 1024.0 / 1024.0,
        (budget - CHANNEL_MAX_BYTES / 1024) as f64 / 1024.0,
        RSS_HEADROOM_KIB / 1024,
        verdict(short.peak_rss_kib),
        verdict(long.peak_rss_kib),
    );
    println!(
        "daemon spawn → first ack    {} ms (N)   {} ms ({k}N)",
        short.first_record.as_millis(),
        long.first_record.as_millis(),
    );
    println!(
        "daemon SIGTERM → exit       {} ms (N)   {} ms ({k}N)",
        short.shutdown.as_millis(),
        long.shutdown.as_millis(),
    );
    println!(
        "dead-lettered records       {} (N)   {} ({k}N)   expected 0",
        short.dead_lettered, long.dead_lettered,
    );
}

// ---------------------------------------------------------------------------------------------
// /proc

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat` (clock ticks
/// of 10 ms, the Linux default `USER_HZ`).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let after_name = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        Ok(fields.get(index).context("short /proc stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after `state` (field 3).
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A `kB` field (`VmHWM:`, `VmRSS:`) of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no `{field}` line"))
}

/// A field of `/proc/<pid>/status` that holds a plain count (`Threads:`).
pub fn proc_status_count(pid: u32, field: &str) -> anyhow::Result<u64> {
    // The same layout as the `kB` fields, without the unit.
    proc_status_kib(pid, field)
}

/// Open file descriptors of process `pid`: the entries of `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count())
}

/// The soft and hard limits on open files of process `pid` (`Max open files` of
/// `/proc/<pid>/limits`, as written there: a number or `unlimited`).
pub fn open_files_limit(pid: u32) -> anyhow::Result<(String, String)> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits"))?;
    limits
        .lines()
        .find_map(|line| {
            let mut words = line.strip_prefix("Max open files")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .context("no `Max open files` line in /proc/<pid>/limits")
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit; child
/// processes spawned afterwards inherit it (setrlimit(2): limits pass through fork and execve).
/// Returns the soft limit before and after, and the hard limit.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit(2) reads the struct we pass; a soft limit equal to the hard limit is
    // always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, limit.rlim_cur, limit.rlim_max))
}
