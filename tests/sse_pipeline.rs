//! End-to-end: SSE feeds on 127.0.0.1 → the daemon → a real Kafka-protocol broker, read back.
//!
//! Every scenario runs against Apache Kafka (the reference); the first two also against
//! librdkafka's mock cluster, the demo's broker.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tributary::{
    cli::demo::replay::{self, FeedEvent, ReplayOptions, ReplayServer},
    runtime::health::SourceState,
    state::checkpoint::FileStore,
};

async fn every_event_arrives_once_in_feed_order(broker: Broker) {
    const EVENTS: usize = 2_000;
    broker.create_topic("wiki").await;
    let feed = ReplayServer::start(replay::wikimedia_feed(EVENTS), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "wiki",
        &feed.url(),
        "wiki",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "wiki", EVENTS as u64).await;
    daemon.shutdown().await;

    assert_exactly_once_in_order(&broker.read("wiki").await, EVENTS, "wiki");
    assert!(broker.read("wiki.dlq").await.is_empty());
    let stored = FileStore::open(state.path()).unwrap().load("wiki").unwrap();
    assert_eq!(
        stored.map(|p| p.0.to_string()),
        Some(replay::wikimedia_event_id(EVENTS - 1)),
        "the last acknowledged id is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_feed_order_mock() {
    every_event_arrives_once_in_feed_order(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_feed_order_kafka() {
    every_event_arrives_once_in_feed_order(Broker::kafka()).await;
}

async fn feed_drops_resume_from_last_event_id(broker: Broker) {
    const EVENTS: usize = 1_000;
    broker.create_topic("drops").await;
    let feed = ReplayServer::start(
        replay::wikimedia_feed(EVENTS),
        ReplayOptions {
            drop_after: Some(300),
            drops: 3,
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "drops",
        &feed.url(),
        "drops",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "drops", EVENTS as u64).await;
    let reconnects = daemon
        .metrics()
        .registered("drops")
        .expect("a registered source")
        .reconnects
        .get();
    daemon.shutdown().await;

    let sent: Vec<Option<String>> = feed.stats().last_event_ids.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![
            None,
            Some(replay::wikimedia_event_id(299)),
            Some(replay::wikimedia_event_id(599)),
            Some(replay::wikimedia_event_id(899))
        ],
        "each reconnect sends the id of the last event read"
    );
    assert_eq!(reconnects, 3);
    assert_exactly_once_in_order(&broker.read("drops").await, EVENTS, "drops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_drops_resume_from_last_event_id_mock() {
    feed_drops_resume_from_last_event_id(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_drops_resume_from_last_event_id_kafka() {
    feed_drops_resume_from_last_event_id(Broker::kafka()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_resumes_from_its_checkpoint() {
    const EVENTS: usize = 1_200;
    let broker = Broker::kafka();
    broker.create_topic("restart").await;
    // The feed holds back every event after the first 500 (its connection stays open and
    // idle); the first daemon is stopped once they are acknowledged, so the second starts from
    // a stored position in the middle of the feed. (A dropped connection would not do: the
    // reconnect delay is jittered from zero, so the first daemon could read on before it
    // stopped.)
    let feed = ReplayServer::start(
        replay::wikimedia_feed(EVENTS),
        ReplayOptions {
            pause_before: Some(500),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "restart",
        &feed.url(),
        "restart",
        "reconnect = { initial_delay = \"60s\", max_delay = \"60s\" }",
    )
    .replace(
        "reconnect = { initial_delay = \"20ms\", max_delay = \"200ms\" }\n",
        "",
    );
    let first = start_daemon(&toml).await;
    wait_for_acknowledged(&first, "restart", 500).await;
    first.shutdown().await;
    let stored = FileStore::open(state.path())
        .unwrap()
        .load("restart")
        .unwrap()
        .map(|p| p.0.to_string());
    assert_eq!(stored, Some(replay::wikimedia_event_id(499)));

    feed.release();
    let second = start_daemon(&toml).await;
    wait_for_acknowledged(&second, "restart", (EVENTS - 500) as u64).await;
    second.shutdown().await;
    let sent = feed.stats().last_event_ids.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![None, Some(replay::wikimedia_event_id(499))],
        "the second daemon resumed from the checkpoint"
    );
    assert_exactly_once_in_order(&broker.read("restart").await, EVENTS, "restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_event_data_goes_to_the_dead_letter_topic() {
    let broker = Broker::kafka();
    broker.create_topic("mixed").await;
    let events: Vec<FeedEvent> = (0..100)
        .map(|i| FeedEvent {
            id: i.to_string(),
            event_type: None,
            data: if i % 10 == 3 {
                format!("{{not json {i}")
            } else {
                format!(r#"{{"n":{i}}}"#)
            },
        })
        .collect();
    let feed = ReplayServer::start(events, ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "mixed",
        &feed.url(),
        "mixed",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "mixed", 100).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    let good = broker.read("mixed").await;
    let dead = broker.read("mixed.dlq").await;
    assert_eq!(good.len(), 90);
    assert!(good
        .iter()
        .all(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).is_ok()));
    let mut dead_ids: Vec<u32> = dead
        .iter()
        .map(|r| r.header("tributary.event_id").unwrap().parse().unwrap())
        .collect();
    dead_ids.sort_unstable();
    assert_eq!(dead_ids, (0..10).map(|k| k * 10 + 3).collect::<Vec<_>>());
    for record in &dead {
        assert_eq!(record.header("tributary.error_kind"), Some("invalid_json"));
        assert!(record
            .header("tributary.error")
            .unwrap()
            .contains("not valid JSON"));
        assert!(
            record.payload.starts_with(b"{not json"),
            "the original data is kept"
        );
    }
    assert!(
        scrape.contains(
            r#"tributary_records_dead_lettered_total{kind="invalid_json",source="mixed"} 10"#
        ),
        "{scrape}"
    );
    assert_eq!(
        FileStore::open(state.path())
            .unwrap()
            .load("mixed")
            .unwrap()
            .map(|p| p.0.to_string()),
        Some("99".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_field_sets_the_minimum_reconnect_delay() {
    let broker = Broker::kafka();
    broker.create_topic("retry").await;
    let feed = ReplayServer::start(
        replay::wikimedia_feed(20),
        ReplayOptions {
            drop_after: Some(10),
            drops: 1,
            retry_ms: Some(1_500),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    // Without the retry field the reconnect would come within 20 ms (initial_delay).
    // `retry:` counts up to `reconnect.max_delay`, so that one is above it here.
    let daemon = start_daemon(
        &sse_config(
            &broker.brokers(),
            state.path(),
            "retry",
            &feed.url(),
            "retry",
            "",
        )
        .replace("max_delay = \"200ms\"", "max_delay = \"5s\""),
    )
    .await;
    wait_for_acknowledged(&daemon, "retry", 20).await;
    daemon.shutdown().await;
    let connected_at = feed.stats().connected_at.lock().unwrap().clone();
    assert_eq!(connected_at.len(), 2, "one drop, one reconnect");
    // The first connection serves its 10 events and ends at once; the next comes no sooner
    // than the server's `retry: 1500`.
    let waited = connected_at[1] - connected_at[0];
    assert!(
        waited >= Duration::from_millis(1_400),
        "reconnected after {waited:?}, before the server's retry: 1500"
    );
    assert_exactly_once_in_order(&broker.read("retry").await, 20, "retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_down_at_start_then_up_loses_nothing() {
    const EVENTS: usize = 500;
    let broker = Broker::kafka();
    broker.create_topic("outage").await;
    broker.down().await;
    let feed = ReplayServer::start(replay::wikimedia_feed(EVENTS), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "outage",
        &feed.url(),
        "outage",
        "",
    ))
    .await;
    let readyz = format!("http://{}/readyz", daemon.metrics_address());
    wait_until(
        "the source to read the feed",
        Duration::from_secs(30),
        || {
            daemon
                .metrics()
                .registered("outage")
                .expect("a registered source")
                .records_received
                .get()
                > 0
        },
    )
    .await;
    let (status, body) = http_get(&readyz).await;
    assert_eq!(status, 503, "not ready while the broker is down: {body}");
    assert!(body.contains(r#""kafka_reachable":false"#), "{body}");
    assert_eq!(
        daemon
            .metrics()
            .registered("outage")
            .expect("a registered source")
            .records_produced
            .get(),
        0
    );

    broker.up().await;
    wait_for_acknowledged(&daemon, "outage", EVENTS as u64).await;
    let (status, body) = http_get(&readyz).await;
    assert_eq!(status, 200, "{body}");
    daemon.shutdown().await;
    assert_exactly_once_in_order(&broker.read("outage").await, EVENTS, "outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_204_stops_the_source_without_reconnecting() {
    use axum::{http::StatusCode, routing::get, Router};
    let broker = Broker::kafka();
    broker.create_topic("gone").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new().route("/stream", get(|| async { StatusCode::NO_CONTENT })),
        )
        .await
    });
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "gone",
        &url,
        "gone",
        "",
    ))
    .await;
    wait_until("the source to finish", Duration::from_secs(30), || {
        matches!(daemon.health().get("gone"), Some(SourceState::Finished(_)))
    })
    .await;
    assert_eq!(
        daemon
            .metrics()
            .registered("gone")
            .expect("a registered source")
            .reconnects
            .get(),
        0
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_fails_the_source_and_readiness_says_why() {
    let broker = Broker::kafka();
    broker.create_topic("missing").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/nothing-here", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "missing",
        &url,
        "missing",
        "",
    ))
    .await;
    wait_until("the source to fail", Duration::from_secs(30), || {
        matches!(daemon.health().get("missing"), Some(SourceState::Failed(_)))
    })
    .await;
    // The source fails at once; the broker probe reports within its first round.
    let readyz = format!("http://{}/readyz", daemon.metrics_address());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = http_get(&readyz).await;
        if body.contains(r#""kafka_reachable":true"#) {
            break (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "the broker probe never succeeded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503);
    assert!(
        body.contains("HTTP 404") && body.contains("missing"),
        "{body}"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checkpoint_commits_are_counted_shown_in_readyz_and_retried() {
    const EVENTS: usize = 100;
    let broker = Broker::mock();
    broker.create_topic("disk").await;
    let feed = ReplayServer::start(
        replay::wikimedia_feed(EVENTS),
        ReplayOptions {
            pause_before: Some(50),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "disk",
        &feed.url(),
        "disk",
        "",
    ))
    .await;
    let metrics = daemon
        .metrics()
        .registered("disk")
        .expect("a registered source");
    wait_for_acknowledged(&daemon, "disk", 50).await;
    wait_until("a first commit", Duration::from_secs(30), || {
        metrics.checkpoint_commits.get() > 0
    })
    .await;
    // A directory where the file should be: the rename of every commit fails, even for root.
    let file = state.path().join("checkpoints.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    feed.release();
    wait_for_acknowledged(&daemon, "disk", EVENTS as u64).await;
    wait_until("a failed commit", Duration::from_secs(30), || {
        metrics.checkpoint_commit_failures.get() > 0
    })
    .await;
    let readyz = format!("http://{}/readyz", daemon.metrics_address());
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = http_get(&readyz).await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("checkpoint commits have failed"), "{body}");

    // The disk recovers: the next round commits, and readiness returns.
    std::fs::remove_dir(&file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&readyz).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.shutdown().await;
    let stored = FileStore::open(state.path()).unwrap().load("disk").unwrap();
    assert_eq!(
        stored.map(|p| p.to_string()),
        Some(replay::wikimedia_event_id(EVENTS - 1))
    );
}
