//! Chaos, part two: hostile feeds and producer faults, each among sources that keep flowing.
//!
//! One daemon (in this process, on Apache Kafka) runs a well-behaved SSE source next to feeds
//! that misbehave: a line that never ends, a gzip bomb, a huge WebSocket message, an id that
//! cannot be sent back, a `retry:` of decades, a cross-origin redirect, and slowloris clients
//! on its webhook listener. Each ends as the book's "Failure modes" page says, and the good source
//! delivers every record exactly once. A second test deletes a topic mid-run, feeds a record
//! larger than `message.max.bytes`, and has `check` refuse a `transactional.id`: no position
//! moves past a record Kafka does not hold. A third has a WebSocket peer stop reading: the
//! daemon's sends time out and it reconnects.

mod common;

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{body::Body, response::Response, routing::get, Router};
use common::{process::metric, ws::*, *};
use futures::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    runtime::health::SourceState,
    state::checkpoint::FileStore,
};

/// Serves `router` on 127.0.0.1 and returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

fn event_stream(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

/// The hostile HTTP feeds, one path each, and how often each was asked.
struct HostileFeeds {
    base: String,
    retry_connections: Arc<AtomicUsize>,
    stolen: Arc<AtomicUsize>,
}

async fn hostile_feeds() -> HostileFeeds {
    let stolen = Arc::new(AtomicUsize::new(0));
    let thief = {
        let stolen = Arc::clone(&stolen);
        serve(Router::new().fallback(move || {
            stolen.fetch_add(1, Ordering::SeqCst);
            async { "{}" }
        }))
        .await
    };
    let retry_connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&retry_connections);
    // 16 MiB of zeros in one JSON string: about 16 KiB once gzipped.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(br#"{"data":[{"id":"x","blob":""#)
        .unwrap();
    for _ in 0..16 {
        encoder.write_all(&vec![b'0'; 1 << 20]).unwrap();
    }
    encoder.write_all(br#""}]}"#).unwrap();
    let bomb = bytes::Bytes::from(encoder.finish().unwrap());
    let router = Router::new()
        // One good event, then a `data:` line that never ends (64 KiB chunks, 64 MiB).
        .route(
            "/huge-line",
            get(|| async {
                let head = futures::stream::once(async {
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                        b"id: 1\ndata: {\"n\":1}\n\ndata: ",
                    ))
                });
                let chunk = bytes::Bytes::from(vec![b'x'; 64 << 10]);
                let tail = futures::stream::iter((0..1024).map(move |_| Ok(chunk.clone())));
                event_stream(Body::from_stream(futures::StreamExt::chain(head, tail)))
            }),
        )
        // An id with a control character, then a good one; then the stream idles.
        .route(
            "/bad-id",
            get(|| async {
                let body = futures::StreamExt::chain(
                    futures::stream::once(async {
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                            b"id: a\x01b\ndata: {\"n\":1}\n\nid: 2\ndata: {\"n\":2}\n\n",
                        ))
                    }),
                    futures::stream::pending(),
                );
                event_stream(Body::from_stream(body))
            }),
        )
        // `retry:` of 31 years, one event, then the stream ends.
        .route(
            "/huge-retry",
            get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    event_stream(Body::from(format!(
                        "retry: 999999999999\nid: r{n}\ndata: {{\"n\":{n}}}\n\n"
                    )))
                }
            }),
        )
        // A redirect to another origin (the thief).
        .route(
            "/redirect",
            get(move || {
                let target = format!("{thief}/steal");
                async move {
                    Response::builder()
                        .status(302)
                        .header("location", target)
                        .body(Body::empty())
                        .unwrap()
                }
            }),
        )
        .route(
            "/bomb",
            get(move || {
                let bomb = bomb.clone();
                async move {
                    Response::builder()
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .body(Body::from(bomb))
                        .unwrap()
                }
            }),
        );
    HostileFeeds {
        base: serve(router).await,
        retry_connections,
        stolen,
    }
}

fn sse_source(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "sse"
url = "{url}"
topic = "{name}"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
headers = {{ "X-Api-Key" = "hostile-secret" }}
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_feeds_end_as_specified_while_the_good_source_delivers_everything() {
    const GOOD_EVENTS: usize = 20_000;
    let broker = Broker::kafka();
    let sources = [
        "good",
        "huge_line",
        "bad_id",
        "huge_retry",
        "redirect",
        "bomb",
        "huge_frame",
    ];
    for source in sources {
        broker.create_topic(source).await;
    }
    let feeds = hostile_feeds().await;
    let good = ReplayServer::start_wikimedia(
        GOOD_EVENTS,
        ReplayOptions {
            events_per_second: Some(2_000),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let ws = WsServer::start(|_, _, mut socket| async move {
        read_texts(&mut socket, 1).await;
        let _ = socket.send(Message::text(r#"{"seq":1}"#)).await;
        // 1 MiB in one message, over the configured 64 KiB.
        let huge = format!(r#"{{"seq":2,"blob":"{}"}}"#, "y".repeat(1 << 20));
        let _ = socket.send(Message::text(huge)).await;
        idle(socket).await;
    })
    .await;
    let base = &feeds.base;
    let webhook_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let toml = [
        daemon_config(&broker.brokers(), state.path(), "")
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:0\"\nwebhook_listen = \"127.0.0.1:{webhook_port}\"\nheader_read_timeout = \"1s\"\nmax_connections = 8"),
            ),
        sse_source("good", &good.url(), ""),
        sse_source("huge_line", &format!("{base}/huge-line"), "max_event_bytes = 65536"),
        sse_source("bad_id", &format!("{base}/bad-id"), ""),
        sse_source("huge_retry", &format!("{base}/huge-retry"), ""),
        sse_source("redirect", &format!("{base}/redirect"), ""),
        format!(
            r#"
[sources.bomb]
type = "rest"
url = "{base}/bomb"
topic = "bomb"
records = "/data"
interval = "1h"
max_body_bytes = 1048576
retry = {{ max_attempts = 2, initial_delay = "10ms", max_delay = "50ms" }}
"#
        ),
        format!(
            r#"
[sources.huge_frame]
type = "websocket"
url = "{}"
topic = "huge_frame"
subscribe = ['{{"op":"subscribe"}}']
max_message_bytes = 65536
max_frame_bytes = 65536
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
"#,
            ws.url
        ),
        r#"
[sources.hook]
type = "webhook"
topic = "good"
signature = { scheme = "github", secrets = ["hook-secret"] }
"#
        .to_owned(),
    ]
    .concat();
    let daemon = start_daemon(&toml).await;
    let metrics = daemon.metrics().clone();

    // Slowloris: more half-open requests than the webhook listener takes.
    let mut slow = Vec::new();
    for _ in 0..12 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", webhook_port)).await {
            let _ = stream
                .write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\n")
                .await;
            slow.push(stream);
        }
    }

    let counted = |name: &str, source: &str| metric(&metrics.render(), name, source);
    wait_until(
        "the oversized line to be cut",
        Duration::from_secs(60),
        || counted("tributary_oversized_events_total", "huge_line") >= 1,
    )
    .await;
    wait_until(
        "the unsendable id to be counted",
        Duration::from_secs(60),
        || {
            counted("tributary_invalid_event_ids_total", "bad_id") >= 1
                && counted("tributary_records_produced_total", "bad_id") >= 2
        },
    )
    .await;
    wait_until(
        "reconnects within reconnect.max_delay despite `retry:`",
        Duration::from_secs(60),
        || feeds.retry_connections.load(Ordering::SeqCst) >= 3,
    )
    .await;
    wait_until(
        "the gzip bomb to fail its poll",
        Duration::from_secs(60),
        || {
            metrics
                .render()
                .lines()
                .any(|l| l.starts_with("tributary_polls_total{outcome=\"failed\",source=\"bomb\"}"))
        },
    )
    .await;
    wait_until(
        "the huge frame to end its connection",
        Duration::from_secs(60),
        || ws.accepted().len() >= 2,
    )
    .await;
    wait_until(
        "the redirect to stop its source",
        Duration::from_secs(60),
        || {
            matches!(
                daemon.health().get("redirect"),
                Some(SourceState::Failed(_))
            )
        },
    )
    .await;
    let Some(SourceState::Failed(reason)) = daemon.health().get("redirect") else {
        unreachable!()
    };
    assert!(
        reason.contains("/steal") && reason.contains("not followed"),
        "{reason}"
    );
    assert_eq!(
        feeds.stolen.load(Ordering::SeqCst),
        0,
        "nothing reached the other origin"
    );
    // Every slow client is disconnected by the header timeout; the listener then takes
    // requests again.
    for mut stream in slow {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("a slow client is disconnected within 30 s");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "no answer to a half request"
        );
    }
    for source in ["huge_line", "bad_id", "huge_retry", "bomb", "huge_frame"] {
        assert!(
            !matches!(daemon.health().get(source), Some(SourceState::Failed(_))),
            "{source} is retried, not stopped"
        );
    }

    wait_for_acknowledged(&daemon, "good", GOOD_EVENTS as u64).await;
    daemon.shutdown().await;
    let records: Vec<_> = broker
        .read("good")
        .await
        .into_iter()
        .filter(|r| r.header("tributary.source") == Some("good"))
        .collect();
    assert_exactly_once_in_order(&records, GOOD_EVENTS, "good");
    let stored = FileStore::open(state.path()).unwrap().load("good").unwrap();
    assert_eq!(
        stored.map(|p| p.as_str().to_owned()),
        Some(replay::wikimedia_event_id(GOOD_EVENTS - 1))
    );
}

/// Deletes `topic` through the Admin API.
async fn delete_topic(broker: &Broker, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    let results = admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(
        results.iter().all(Result::is_ok),
        "delete {topic}: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_faults_never_move_a_position_past_a_record_kafka_lacks() {
    const DOOMED_EVENTS: usize = 20_000;
    const BIG_EVENTS: usize = 100;
    let broker = Broker::kafka();
    broker.create_topic("doomed").await;
    broker.create_topic("big").await;
    // A live feed whose topic is deleted while it runs.
    let doomed = ReplayServer::start_wikimedia(
        DOOMED_EVENTS,
        ReplayOptions {
            events_per_second: Some(1_000),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    // A feed with one event of 2 MiB, over the producer's `message.max.bytes` (1 MB).
    let mut events = replay::wikimedia_feed(BIG_EVENTS);
    events[50].data = format!(r#"{{"blob":"{}"}}"#, "z".repeat(2 << 20));
    let big = ReplayServer::start(events, ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let toml = [
        daemon_config(&broker.brokers(), state.path(), ""),
        sse_source("doomed", &doomed.url(), ""),
        sse_source("big", &big.url(), ""),
    ]
    .concat();
    let daemon = start_daemon(&toml).await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "doomed", 1_000).await;
    delete_topic(&broker, "doomed").await;

    // The deleted topic stops its source, with the topic named, and its position stays within
    // what Kafka acknowledged.
    wait_until(
        "the deleted topic to stop its source",
        Duration::from_secs(120),
        || matches!(daemon.health().get("doomed"), Some(SourceState::Failed(_))),
    )
    .await;
    let Some(SourceState::Failed(reason)) = daemon.health().get("doomed") else {
        unreachable!()
    };
    assert!(reason.contains("doomed"), "{reason}");
    assert!(
        metric(
            &daemon.metrics().render(),
            "tributary_pipeline_faults_total",
            "doomed"
        ) >= 1
    );
    // The record too large for Kafka is a stub in the dead-letter topic; the rest flow on.
    wait_for_acknowledged(&daemon, "big", BIG_EVENTS as u64).await;
    let acknowledged = metric(
        &daemon.metrics().render(),
        "tributary_records_produced_total",
        "doomed",
    );
    daemon.shutdown().await;

    let store = FileStore::open(state.path()).unwrap();
    let stored = store
        .load("doomed")
        .unwrap()
        .expect("a position was stored");
    let index = replay::wikimedia_event_index(stored.as_str()).unwrap();
    assert!(
        (index as u64) < acknowledged,
        "the position (event {index}) is within the {acknowledged} records Kafka acknowledged"
    );
    assert!(
        doomed.stats().events_served.load(Ordering::Relaxed) > acknowledged,
        "records were read after the deletion, and not acknowledged"
    );
    assert_eq!(
        store.load("big").unwrap().map(|p| p.as_str().to_owned()),
        Some(replay::wikimedia_event_id(BIG_EVENTS - 1))
    );
    let produced = broker.read("big").await;
    assert_eq!(produced.len(), BIG_EVENTS - 1);
    let dead = broker.read("big.dlq").await;
    assert_eq!(dead.len(), 1, "one stub");
    let stub = &dead[0];
    assert_eq!(
        stub.header("tributary.event_id"),
        Some(replay::wikimedia_event_id(50).as_str())
    );
    assert_eq!(
        stub.header("tributary.error_kind"),
        Some("message_too_large")
    );
    assert_eq!(
        stub.header("tributary.original_size"),
        Some(((2 << 20) + 11).to_string().as_str())
    );
    assert!(stub.payload.len() <= 4096);

    // A transactional producer is refused before it can run.
    let config = state.path().join("transactional.toml");
    std::fs::write(
        &config,
        toml.replace(
            "flush_timeout = \"5s\"",
            "flush_timeout = \"5s\"\nproducer = { \"transactional.id\" = \"x\" }",
        ),
    )
    .unwrap();
    let output = std::process::Command::new(common::process::binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("transactional.id"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_stops_reading_is_reconnected_after_send_timeout() {
    // The first connection reads the subscribe message and then never reads again, so the
    // daemon's 1 MiB heartbeats fill the socket buffers and a send blocks.
    let ws = WsServer::start(|index, _, mut socket| async move {
        read_texts(&mut socket, 1).await;
        if index == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        idle(socket).await;
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("stalled").await;
    let state = tempfile::tempdir().unwrap();
    let toml = [
        daemon_config(&broker.brokers(), state.path(), ""),
        format!(
            r#"
[sources.stalled]
type = "websocket"
url = "{}"
topic = "stalled"
subscribe = ['{{"op":"subscribe"}}']
heartbeat = {{ message = "{}", interval = "10ms" }}
send_timeout = "500ms"
ping_interval = "1h"
read_timeout = "1h"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
"#,
            ws.url,
            "h".repeat(1 << 20)
        ),
    ]
    .concat();
    let daemon = start_daemon(&toml).await;
    // Neither pings nor the read timeout can end the first connection within the test: only
    // the send timeout can.
    wait_until(
        "a second connection after the send timeout",
        Duration::from_secs(30),
        || ws.accepted().len() >= 2,
    )
    .await;
    let accepted = ws.accepted();
    assert!(
        accepted[1].at.duration_since(accepted[0].at) >= Duration::from_millis(500),
        "the first connection lasted at least send_timeout"
    );
    assert!(
        metric(
            &daemon.metrics().render(),
            "tributary_reconnects_total",
            "stalled"
        ) >= 1
    );
    daemon.shutdown().await;
}
