//! `GET /api/v1/sources` and `tributary status` against a running daemon (the release binary
//! in CI, as operators run it) on Apache Kafka: one SSE source streaming recorded Wikimedia
//! events, one WebSocket source whose server refuses connections.

mod common;

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{process::*, *};
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    status::StatusReport,
};

/// Runs `tributary status` with `args`.
fn status(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("status")
        .args(args)
        .output()
        .expect("run tributary status")
}

/// Asks the daemon until `ready` holds for its report; fails the test after a minute.
async fn report_when(base: &str, ready: impl Fn(&StatusReport) -> bool) -> StatusReport {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(report) = tributary::status::table::fetch(base).await {
            if ready(&report) {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "the status never showed what the test waits for: {report:#?}"
            );
        }
        assert!(Instant::now() < deadline, "the daemon never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(dir: &Path, broker: &Broker, feed: &str, refused: u16, port: u16) -> String {
    process_toml(broker, dir, "wiki", feed, port, "")
        + &format!(
            r#"
[sources.ticks]
type = "websocket"
url = "ws://127.0.0.1:{refused}/"
topic = "ticks"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
"#
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_source_as_json_and_as_a_table() {
    const EVENTS: usize = 2_000;
    let broker = Broker::kafka();
    for topic in ["wiki", "ticks"] {
        broker.create_topic(topic).await;
    }
    let feed = ReplayServer::start(replay::wikimedia_feed(EVENTS), ReplayOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Nothing listens there: the WebSocket source keeps failing to connect.
    let refused = free_port();
    let path = write_config(
        dir.path(),
        &config(dir.path(), &broker, &feed.url(), refused, port),
    );
    let mut daemon = Daemon::spawn(&path, port);
    daemon.wait_for_produced("wiki", EVENTS as u64).await;
    let base = format!("http://127.0.0.1:{port}");

    // The last position is stored once Kafka holds the last event.
    let last_id = replay::wikimedia_feed(EVENTS).last().unwrap().id.clone();
    let report = report_when(&base, |report| {
        report
            .sources
            .iter()
            .any(|s| s.name == "wiki" && s.position.as_deref() == Some(last_id.as_str()))
            && report
                .sources
                .iter()
                .any(|s| s.name == "ticks" && s.reconnects_total >= 2)
    })
    .await;
    assert_eq!(report.replica, "single");
    assert!(report.kafka_reachable);
    let names: Vec<&str> = report.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ticks", "wiki"]);
    let wiki = &report.sources[1];
    assert_eq!(
        (
            wiki.kind.as_str(),
            wiki.state.as_str(),
            wiki.replica.as_str()
        ),
        ("sse", "connected", "single")
    );
    assert_eq!(wiki.records_received_total, EVENTS as u64);
    assert!(wiki.records_per_second > 0.0, "{wiki:?}");
    assert!(wiki.position_committed_at.is_some() && wiki.position_age_seconds.is_some());
    assert!(wiki.last_event_age_seconds.is_some_and(|age| age < 600.0));
    assert_eq!(wiki.dead_letters_total, 0);
    assert_eq!(wiki.last_error, None);
    let ticks = &report.sources[0];
    assert_eq!(ticks.kind, "websocket");
    assert_eq!(ticks.state, "reconnecting");
    assert_eq!(ticks.position, None);
    assert_eq!(ticks.records_received_total, 0);
    let error = ticks.last_error.as_deref().expect("the refused connection");
    assert!(error.contains(&refused.to_string()), "{error}");
    assert!(ticks.last_error_at.is_some());

    // The command, asked by URL and by the daemon's config.
    for args in [
        vec!["--url", base.as_str()],
        vec!["--config", path.to_str().unwrap()],
    ] {
        let table = status(&args);
        assert!(table.status.success(), "{table:?}");
        let text = String::from_utf8(table.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("replica single; Kafka reachable; 2 source(s)"),
            "{text}"
        );
        assert!(lines[1].starts_with("SOURCE"), "{text}");
        assert!(
            lines[2].starts_with("ticks") && lines[2].contains("reconnecting"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("wiki") && lines[3].contains("connected"),
            "{text}"
        );
        assert!(text.contains("last errors:\n  ticks ("), "{text}");
        assert!(
            lines.iter().all(|line| line.chars().count() <= 100),
            "{text}"
        );
    }
    let json = status(&["--url", &base, "--json"]);
    assert!(json.status.success(), "{json:?}");
    let parsed: StatusReport = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed.sources.len(), 2);
    assert_eq!(
        parsed.sources[1].position.as_deref(),
        Some(last_id.as_str())
    );

    assert!(daemon.terminate().await.success());
    // No daemon: a clear error and exit code 1.
    let gone = status(&["--url", &base]);
    assert_eq!(gone.status.code(), Some(1));
    let stderr = String::from_utf8(gone.stderr).unwrap();
    assert!(
        stderr.contains("tributary status: cannot read") && stderr.contains("/api/v1/sources"),
        "{stderr}"
    );
}
