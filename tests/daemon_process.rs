//! The `tributary` binary as operators run it: `kill -9` mid-stream and restart, SIGTERM,
//! `tributary check`, and the `/metrics` scrape checked by promtool.
//!
//! The daemon runs as a child process; the SSE feed (replayed Wikimedia events) and the Kafka
//! broker (librdkafka's mock cluster) run in the test process, on 127.0.0.1.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{process::*, *};
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    state::checkpoint::FileStore,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    const EVENTS: usize = 20_000;
    let broker = Broker::kafka();
    broker.create_topic("crash").await;
    // The feed holds its second half back until after the kill, so the kill lands mid-stream.
    let feed = ReplayServer::start(
        replay::wikimedia_feed(EVENTS),
        ReplayOptions {
            pause_before: Some(EVENTS / 2),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        state.path(),
        &process_toml(&broker, state.path(), "crash", &feed.url(), port, ""),
    );

    let mut first = Daemon::spawn(&config, port);
    first.wait_for_produced("crash", EVENTS as u64 / 3).await;
    first
        .wait_for_metric("tributary_checkpoint_commits_total", "crash", 1)
        .await;
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    let stored = FileStore::open(state.path().join("state"))
        .unwrap()
        .load("crash")
        .unwrap()
        .expect("a position was committed before the kill");
    let checkpoint = replay::wikimedia_event_index(stored.as_str()).unwrap();
    assert!(
        checkpoint < EVENTS / 2,
        "the kill came mid-stream: the stored position {checkpoint} is before the events not yet served"
    );
    feed.release();

    let mut second = Daemon::spawn(&config, port);
    second
        .wait_for_produced("crash", (EVENTS - checkpoint - 1) as u64)
        .await;
    let status = second.terminate().await;
    assert!(status.success(), "SIGTERM ends the daemon with 0: {status}");
    let resumed_with = feed.stats().last_event_ids.lock().unwrap().clone();
    assert_eq!(
        resumed_with,
        vec![None, Some(stored.0.to_string())],
        "the restarted daemon resumed from the stored position"
    );

    let records = broker.read("crash").await;
    let index = wikimedia_index(EVENTS);
    let mut copies: HashMap<usize, usize> = HashMap::new();
    for record in &records {
        let id = record.header("tributary.event_id").unwrap();
        *copies.entry(index[id]).or_default() += 1;
    }
    let lost: Vec<usize> = (0..EVENTS).filter(|i| !copies.contains_key(i)).collect();
    assert!(
        lost.is_empty(),
        "{} events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let duplicated: Vec<usize> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        duplicated.iter().all(|&i| i > checkpoint),
        "only events after the stored position ({checkpoint}) may be duplicated"
    );
    assert!(copies.values().all(|&n| n <= 2));
    eprintln!(
        "kill -9 after {checkpoint} stored of {EVENTS}: {} events duplicated (produced but not yet checkpointed), 0 lost",
        duplicated.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_commits_the_last_acknowledged_position() {
    const EVENTS: usize = 3_000;
    let broker = Broker::kafka();
    broker.create_topic("term").await;
    let feed = ReplayServer::start(replay::wikimedia_feed(EVENTS), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    // A commit interval far longer than the test: only the shutdown's own commit can store
    // the last position.
    let config = write_config(
        state.path(),
        &process_toml(&broker, state.path(), "term", &feed.url(), port, "").replace(
            "commit_interval = \"50ms\"",
            "commit_interval = \"1h\"\ncommit_every_records = 1000000",
        ),
    );
    let mut daemon = Daemon::spawn(&config, port);
    daemon.wait_for_produced("term", EVENTS as u64).await;
    let status = daemon.terminate().await;
    assert!(status.success(), "{status}");
    let stored = FileStore::open(state.path().join("state"))
        .unwrap()
        .load("term")
        .unwrap();
    assert_eq!(
        stored.map(|p| p.0.to_string()),
        Some(replay::wikimedia_event_id(EVENTS - 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_scrape_passes_promtool() {
    let broker = Broker::kafka();
    broker.create_topic("scrape").await;
    let feed = ReplayServer::start(replay::wikimedia_feed(200), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        state.path(),
        &process_toml(&broker, state.path(), "scrape", &feed.url(), port, ""),
    );
    let mut daemon = Daemon::spawn(&config, port);
    daemon.wait_for_produced("scrape", 200).await;
    // A commit round has run since records arrived: the checkpoint series exist.
    daemon
        .wait_for_metric("tributary_checkpoint_commits_total", "scrape", 1)
        .await;
    let scrape = daemon.scrape().await.unwrap();
    // Asked for gzip, as Prometheus asks, the scrape comes compressed.
    let compressed = reqwest::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    let compressed = compressed.bytes().await.unwrap();
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut unzipped,
    )
    .unwrap();
    assert!(compressed.len() < unzipped.len());
    assert!(unzipped.contains("tributary_records_produced_total{source=\"scrape\"} 200"));
    assert!(daemon.terminate().await.success());

    for family in [
        "tributary_records_received_total",
        "tributary_records_produced_total",
        "tributary_record_bytes_total",
        "tributary_http_requests_total",
        "tributary_connected",
        "tributary_channel_records",
        "tributary_channel_bytes",
        "tributary_kafka_delivery_seconds",
        "tributary_checkpoint_commits_total",
        "tributary_checkpoint_age_seconds",
    ] {
        assert!(
            scrape.contains(&format!("# TYPE {family} ")),
            "{family} missing from:\n{scrape}"
        );
    }
    assert_eq!(
        metric(&scrape, "tributary_records_produced_total", "scrape"),
        200
    );

    let promtool = std::env::var("TRIBUTARY_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut check = match Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot run `{promtool}` ({error}): install Debian's `prometheus` package (bash .ci/run does)"
        ),
    };
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_prints_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        dir.path(),
        r#"
[kafka]
brokers = ""
[kafka.producer]
"enable.idempotence" = "false"
[sources.wiki]
type = "sse"
url = "ftp://example.org/stream"
topic = "has space"
"#,
    );
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let errors = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "kafka.brokers",
        "kafka.producer.enable.idempotence",
        "sources.wiki.url",
        "sources.wiki.topic",
        "source `wiki`",
    ] {
        assert!(
            errors.contains(needle),
            "`{needle}` missing from:\n{errors}"
        );
    }

    let unknown = write_config(
        dir.path(),
        "[kafka]\nbrokers = \"localhost:9092\"\nbrokerz = \"typo\"\n",
    );
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&unknown)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("brokerz"));
}

#[test]
fn every_example_config_is_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // Give every `${env:NAME}` the example references a value; `${file:…}` references
        // in examples are commented out.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut command = Command::new(binary());
        command.args(["check", "--config"]).arg(&path);
        for reference in text.split("${env:").skip(1) {
            let name = reference.split('}').next().unwrap();
            // Valid for every scheme, including Standard Webhooks' `whsec_<base64>`.
            command.env(name, "whsec_ZXhhbXBsZS1zZWNyZXQ=");
        }
        // AWS SigV4 examples read the keys (and a profile) as the AWS CLI does.
        let aws = tempfile::tempdir().unwrap();
        let credentials = aws.path().join("credentials");
        std::fs::write(
            &credentials,
            "[ops]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = example\n",
        )
        .unwrap();
        command
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "example")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{} is invalid:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "config/ holds the example configs");
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[kafka]
flush_timeout = "5s"
[sources.wiki]
type = "sse"
url = "https://stream.wikimedia.org/v2/stream/recentchange"
topic = "wikimedia.recentchange"
"#,
    );
    let check = |brokers: Option<&str>| {
        let mut command = Command::new(binary());
        command.args(["check", "--config"]).arg(&config);
        command.env_remove("TRIBUTARY__KAFKA__BROKERS");
        if let Some(brokers) = brokers {
            command.env("TRIBUTARY__KAFKA__BROKERS", brokers);
        }
        command.output().unwrap()
    };
    let without = check(None);
    assert_eq!(without.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without.stderr).contains("brokers"));
    let with = check(Some("kafka-0:9092,kafka-1:9092"));
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_down_exits_within_the_flush_timeout() {
    let broker = Broker::kafka();
    broker.create_topic("down").await;
    broker.down().await;
    let feed = ReplayServer::start(replay::wikimedia_feed(5_000), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        state.path(),
        &process_toml(
            &broker,
            state.path(),
            "down",
            &feed.url(),
            port,
            "channel_max_records = 10",
        )
        .replace(
            "flush_timeout = \"20s\"",
            "flush_timeout = \"1s\"\n[kafka.producer]\n\"queue.buffering.max.messages\" = \"10\"",
        ),
    );
    let daemon = Daemon::spawn(&config, port);
    // Wait until the source is blocked: the channel is full behind the full producer queue.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scrape = daemon.scrape().await.unwrap_or_default();
        if metric(&scrape, "tributary_channel_records", "down") >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the channel never filled:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    let status = daemon.terminate().await;
    let took = stopping.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(10),
        "shutdown took {took:?} with a 1 s flush timeout"
    );
    let stored = FileStore::open(state.path().join("state"))
        .unwrap()
        .load("down")
        .unwrap();
    assert_eq!(
        stored, None,
        "nothing was acknowledged, so nothing is stored"
    );
}

#[test]
fn the_demo_reports_no_loss_and_no_duplicates() {
    let output = Command::new(binary())
        .args(["demo", "--json", "--events", "3000"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["events_served"], 3000);
    assert_eq!(report["records_in_kafka"], 3000, "{report}");
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["restarts"], 1);
    assert_eq!(
        report["resumed_from"],
        replay::wikimedia_event_id(1499),
        "the restart happens midway, from the stored position"
    );
    assert!(
        report["feed_connections"].as_u64().unwrap() >= 3,
        "the first connection, one after the drop, one after the restart: {report}"
    );
    assert!(
        report.get("metrics_url").is_none(),
        "no URL of a daemon that has stopped: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_directory_exits_1_and_names_the_holder() {
    // No broker is needed: the store is opened before any record moves.
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = sse_config(
        "127.0.0.1:9",
        &state.path().join("state"),
        "locked",
        "http://127.0.0.1:9/stream",
        "locked",
        "",
    );
    let first_config = write_config(
        state.path(),
        &toml.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let mut first = Daemon::spawn(&first_config, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.scrape().await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the first daemon never served /metrics"
        );
        assert!(
            first.child.try_wait().unwrap().is_none(),
            "the first daemon exited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second_dir = tempfile::tempdir().unwrap();
    let second_config = write_config(second_dir.path(), &toml);
    let second = Command::new(binary())
        .args(["run", "--config"])
        .arg(&second_config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "locked by another tributary process (pid {})",
            first.child.id()
        )),
        "{stderr}"
    );
}

/// Waits up to `limit` for `child` to exit; fails the test if it does not.
async fn exit_within(child: &mut std::process::Child, limit: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the daemon did not exit within {limit:?} {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_neither_crashes_nor_wedges_the_shutdown() {
    use std::io::BufRead as _;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = sse_config(
        "127.0.0.1:9",
        &state.path().join("state"),
        "piped",
        "http://127.0.0.1:9/stream",
        "piped",
        "",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = write_config(state.path(), &toml);
    // As `tributary run … 2>&1 | head -3` does: read three lines, then close the pipe.
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = String::new();
    for _ in 0..3 {
        stderr.read_line(&mut lines).unwrap();
    }
    drop(stderr);
    assert!(
        !lines.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal: {lines:?}"
    );
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    while try_http_get(&metrics).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon never served /metrics"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(&child, libc::SIGINT);
    let code = exit_within(&mut child, Duration::from_secs(30), "after SIGINT").await;
    assert_eq!(
        code, 0,
        "a clean shutdown, though its log lines had nowhere to go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_shutdown_exits_at_once() {
    // Records wait for a broker that never answers, so the first signal's shutdown would wait
    // the whole flush timeout.
    let feed = ReplayServer::start(replay::wikimedia_feed(1_000), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = sse_config(
        "127.0.0.1:9",
        &state.path().join("state"),
        "stuck",
        &feed.url(),
        "stuck",
        "",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    .replace("flush_timeout = \"20s\"", "flush_timeout = \"120s\"");
    let config = write_config(state.path(), &toml);
    let mut daemon = Daemon::spawn(&config, port);
    daemon
        .wait_for_metric("tributary_records_received_total", "stuck", 1)
        .await;
    send_signal(&daemon.child, libc::SIGTERM);
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = try_http_get(&readyz).await.unwrap_or_default();
        if body.contains(r#""state":"stopped""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the source never stopped: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(&daemon.child, libc::SIGTERM);
    let code = exit_within(
        &mut daemon.child,
        Duration::from_secs(10),
        "after a second SIGTERM",
    )
    .await;
    assert_eq!(code, 1);
    let stored = FileStore::open(state.path().join("state"))
        .unwrap()
        .load("stuck")
        .unwrap();
    assert_eq!(stored, None, "nothing reached Kafka, so nothing is stored");
}
