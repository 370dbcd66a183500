//! With the brokers down, librdkafka reports every failed connection attempt; the daemon's log
//! must stay readable: identical lines once, and few lines in all.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{process::*, *};
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    sinks::kafka::client_log::{MAX_LINES_PER_WINDOW, WINDOW},
};

/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_logs_a_bounded_number_of_kafka_lines() {
    let broker = Broker::kafka();
    broker.create_topic("noise").await;
    let feed = ReplayServer::start(
        replay::wikimedia_feed(20_000),
        ReplayOptions {
            events_per_second: Some(200),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &process_toml(&broker, dir.path(), "noise", &feed.url(), port, ""),
    );
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let mut daemon = Daemon::spawn_with(&config, port, |command| {
        command.env("RUST_LOG", "warn").stderr(Stdio::from(log));
    });
    daemon.wait_for_produced("noise", 100).await;

    broker.down().await;
    // The outage is seen: /readyz reports the brokers unreachable.
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if try_http_get(&ready_url)
            .await
            .is_some_and(|(_, body)| body.contains("\"kafka_reachable\":false"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the outage was never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The outage itself: librdkafka retries its connections all along.
    tokio::time::sleep(OUTAGE).await;
    broker.up().await;
    let before = metric(
        &daemon.scrape().await.unwrap_or_default(),
        "tributary_records_produced_total",
        "noise",
    );
    daemon.wait_for_produced("noise", before + 100).await;
    let status = daemon.terminate().await;
    assert!(status.success(), "{status}");

    let stderr = std::fs::read_to_string(&log_path).unwrap();
    let kafka_lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("librdkafka") || line.contains("kafka client error"))
        .collect();
    assert!(
        !kafka_lines.is_empty(),
        "the outage is in the log:\n{stderr}"
    );
    assert!(
        started.elapsed() < WINDOW,
        "the test ran within one window of the limiter"
    );
    assert!(
        kafka_lines.len() <= MAX_LINES_PER_WINDOW,
        "{} librdkafka lines for a {OUTAGE:?} outage:\n{}",
        kafka_lines.len(),
        kafka_lines.join("\n")
    );
    // Each message once (within one window of the limiter): the same failure is not
    // repeated, and rdkafka's double hand-over of error events is not printed twice.
    let mut seen = std::collections::HashSet::new();
    for line in &kafka_lines {
        let message = line.split_once("Z ").map_or(*line, |(_, rest)| rest);
        let message = message.split(" held_back=").next().unwrap_or(message);
        let message = match message.split_once(" (after ") {
            Some((before, after)) => {
                format!(
                    "{before}{}",
                    after.split_once(')').map_or("", |(_, rest)| rest)
                )
            }
            None => message.to_owned(),
        };
        assert!(
            seen.insert(message.clone()),
            "logged more than once: {message}\n{}",
            kafka_lines.join("\n")
        );
    }
}
