//! End-to-end: WebSocket servers on 127.0.0.1 → the daemon → librdkafka's mock cluster, read
//! back. The Coinbase test replays recorded real frames (`tests/data/coinbase-ws`, XFree86 1.1:
//! "This product includes software developed by Bryant Moscon (http://www.bryantmoscon.com/)").

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{ws::*, *};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};
use tributary::runtime::health::SourceState;

/// A daemon config with one WebSocket source named `source` (topic of the same name).
fn ws_config(
    brokers: &str,
    state: &std::path::Path,
    source: &str,
    url: &str,
    extra: &str,
) -> String {
    sse_config(brokers, state, source, url, source, extra)
        .replace("type = \"sse\"", "type = \"websocket\"")
}

/// The recorded Coinbase session: the client's subscribe messages and the server's frames.
fn coinbase_recording() -> (Vec<String>, Vec<String>) {
    let text = include_str!("data/coinbase-ws/COINBASE.ws.28.0");
    let mut sent = Vec::new();
    let mut received = Vec::new();
    for line in text.lines() {
        if let Some((_, json)) = line
            .split_once(" <- ")
            .and_then(|(_, rest)| rest.split_once(": "))
        {
            sent.push(json.to_owned());
        } else if line.contains(" <-> ") {
            continue;
        } else if let Some((_, json)) = line.split_once(": ") {
            received.push(json.to_owned());
        }
    }
    (sent, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_coinbase_frames_arrive_once_in_order_per_product() {
    let (subscribe, frames) = coinbase_recording();
    assert_eq!((subscribe.len(), frames.len()), (3, 9_946));
    let expected_subscribe = subscribe.clone();
    let served = frames.clone();
    let subscribed: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&subscribed);
    let server = WsServer::start(move |_, _, mut socket| {
        let served = served.clone();
        let seen = Arc::clone(&seen);
        let expected = expected_subscribe.len();
        async move {
            let texts = read_texts(&mut socket, expected).await;
            seen.lock().unwrap().extend(texts);
            for frame in served {
                if socket.send(Message::text(frame)).await.is_err() {
                    return;
                }
            }
            idle(socket).await;
        }
    })
    .await;

    let broker = Broker::kafka();
    broker.create_topic("coinbase").await;
    let state = tempfile::tempdir().unwrap();
    let subscribe_toml: Vec<String> = subscribe.iter().map(|m| format!("'{m}'")).collect();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "coinbase",
        &server.url,
        &format!(
            r#"subscribe = [{}]
key = "/product_id"
filter = {{ pointer = "/type", values = ["l2update", "ticker", "match", "snapshot", "last_match"] }}"#,
            subscribe_toml.join(", ")
        ),
    ))
    .await;
    let data_frames: Vec<&String> = frames
        .iter()
        .filter(|f| !f.contains(r#""type":"subscriptions""#))
        .collect();
    wait_for_acknowledged(&daemon, "coinbase", data_frames.len() as u64).await;
    let metrics = daemon
        .metrics()
        .registered("coinbase")
        .expect("a registered source");
    let (filtered, received) = (
        metrics.records_filtered.get(),
        metrics.records_received.get(),
    );
    daemon.shutdown().await;

    assert_eq!(
        *subscribed.lock().unwrap(),
        subscribe,
        "the recorded subscribe messages were sent"
    );
    assert_eq!(
        filtered, 3,
        "the 3 `subscriptions` answers are filtered out"
    );
    assert_eq!(received, frames.len() as u64);
    let records = broker.read("coinbase").await;
    assert_eq!(records.len(), data_frames.len(), "each frame once");
    let mut by_product: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for record in &records {
        let key = String::from_utf8(record.key.clone().expect("keyed by product")).unwrap();
        by_product
            .entry(key)
            .or_default()
            .push(record.payload.clone());
    }
    let mut expected: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for frame in &data_frames {
        let value: serde_json::Value = serde_json::from_str(frame).unwrap();
        let product = value["product_id"].as_str().unwrap().to_owned();
        expected
            .entry(product)
            .or_default()
            .push(frame.as_bytes().to_vec());
    }
    assert_eq!(by_product.len(), expected.len());
    for (product, payloads) in &expected {
        assert!(
            by_product[product] == *payloads,
            "product {product}: the topic order differs from the feed order"
        );
    }
}

fn numbered(seq: u64) -> String {
    format!(r#"{{"type":"tick","seq":{seq},"price":"{}.5"}}"#, 100 + seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_resume_from_the_position_gaps_are_counted_and_malformed_frames_dead_lettered() {
    // Connection 0 sends seq 1..=300 and drops without a close frame. Later connections resume
    // after the `after` query parameter (the URL template's `{position}`): they skip seq 450
    // (a gap), send one malformed frame, and stop at 600.
    let server = WsServer::start(|index, uri, mut socket| async move {
        read_texts(&mut socket, 1).await;
        let after = after_param(&uri);
        let end = if index == 0 { 300 } else { 600 };
        for seq in after + 1..=end {
            if seq == 450 {
                continue;
            }
            if seq == 500 {
                socket.send(Message::text("{malformed")).await.unwrap();
            }
            socket.send(Message::text(numbered(seq))).await.unwrap();
        }
        if index == 0 {
            return; // dropped: the TCP connection closes without a close frame
        }
        idle(socket).await;
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("ticks").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "ticks",
        &format!("{}/feed?after={{position}}", server.url),
        r#"subscribe = ['{"op":"subscribe","after":"{position}"}']
sequence = "/seq"
key = "/type""#,
    ))
    .await;
    // 599 good records and 1 dead-lettered one.
    wait_for_acknowledged(&daemon, "ticks", 600).await;
    let metrics = daemon
        .metrics()
        .registered("ticks")
        .expect("a registered source");
    let (gaps, reconnects) = (metrics.sequence_gaps.get(), metrics.reconnects.get());
    daemon.shutdown().await;

    let accepted = server.accepted();
    assert_eq!(accepted[0].uri, "/feed?after=");
    assert_eq!(
        accepted[1].uri, "/feed?after=300",
        "resumed after the last position read"
    );
    assert_eq!(reconnects, 1);
    assert_eq!(gaps, 1, "seq 450 was skipped");
    let seqs: Vec<u64> = broker
        .read("ticks")
        .await
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("tributary.event_id"),
                Some(
                    serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["seq"]
                        .to_string()
                        .as_str()
                )
            );
            serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let in_order = seqs.windows(2).all(|w| w[0] < w[1]);
    assert!(in_order, "one key, one partition: feed order");
    let expected: Vec<u64> = (1..=600).filter(|&s| s != 450).collect();
    assert_eq!(seqs, expected);
    let dead = broker.read("ticks.dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, b"{malformed");
    assert_eq!(dead[0].header("tributary.error_kind"), Some("invalid_json"));
    let stored = tributary::state::checkpoint::FileStore::open(state.path()).unwrap();
    assert_eq!(
        stored.load("ticks").unwrap().map(|p| p.0.to_string()),
        Some("600".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_pings_is_reconnected() {
    // Connection 0 subscribes, sends one frame, then stops reading its socket, so pings get
    // no pong. Connection 1 behaves.
    let server = WsServer::start(|index, _, mut socket| async move {
        read_texts(&mut socket, 1).await;
        socket
            .send(Message::text(numbered(index as u64 + 1)))
            .await
            .unwrap();
        if index == 0 {
            std::future::pending::<()>().await;
        }
        idle(socket).await;
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("pings").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "pings",
        &server.url,
        r#"subscribe = ['{"op":"subscribe"}']
ping_interval = "100ms"
pong_timeout = "300ms"
read_timeout = "60s""#,
    ))
    .await;
    wait_for_acknowledged(&daemon, "pings", 2).await;
    let reconnects = daemon
        .metrics()
        .registered("pings")
        .expect("a registered source")
        .reconnects
        .get();
    daemon.shutdown().await;
    let accepted = server.accepted();
    assert_eq!(reconnects, 1);
    let waited = accepted[1].at - accepted[0].at;
    assert!(
        waited >= Duration::from_millis(300),
        "reconnected after {waited:?}, before the pong timeout"
    );
    assert!(
        waited < Duration::from_secs(10),
        "reconnected after {waited:?}: by the read timeout, not the pong timeout"
    );
}

/// The server closes each connection with the next of `closes`; the last one must stop the
/// source. Returns the reason the source failed with.
async fn close_codes(source: &str, closes: Vec<(CloseCode, &'static str)>) -> String {
    let count = closes.len();
    let closes = Arc::new(closes);
    let server = WsServer::start(move |index, _, mut socket| {
        let closes = Arc::clone(&closes);
        async move {
            read_texts(&mut socket, 1).await;
            socket
                .send(Message::text(numbered(index as u64 + 1)))
                .await
                .unwrap();
            let (code, reason) = closes[index.min(closes.len() - 1)];
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
            idle(socket).await;
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic(source).await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        source,
        &server.url,
        r#"subscribe = ['{"op":"subscribe"}']"#,
    ))
    .await;
    wait_until("the source to fail", Duration::from_secs(30), || {
        matches!(daemon.health().get(source), Some(SourceState::Failed(_)))
    })
    .await;
    let Some(SourceState::Failed(why)) = daemon.health().get(source) else {
        unreachable!()
    };
    assert!(!daemon.health().readiness(true).ready);
    wait_for_acknowledged(&daemon, source, count as u64).await;
    daemon.shutdown().await;
    assert_eq!(
        server.accepted().len(),
        count,
        "every close but the last reconnects; the last does not"
    );
    why
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_and_going_away_reconnect_policy_violation_stops_with_the_reason() {
    let why = close_codes(
        "policy",
        vec![
            (CloseCode::Normal, "bye"),
            (CloseCode::Away, "restarting"),
            (CloseCode::Policy, "too many subscriptions"),
        ],
    )
    .await;
    assert!(
        why.contains("1008") && why.contains("too many subscriptions"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_data_stops_with_the_reason() {
    let why = close_codes(
        "unsupported",
        vec![
            (CloseCode::Error, "internal error"),
            (CloseCode::Unsupported, "binary frames only"),
        ],
    )
    .await;
    assert!(
        why.contains("1003") && why.contains("binary frames only"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_data_is_reconnected_after_the_read_timeout() {
    // Connection 0 sends one frame, then only answers pings (pongs are not data).
    let server = WsServer::start(|index, _, mut socket| async move {
        read_texts(&mut socket, 1).await;
        socket
            .send(Message::text(numbered(index as u64 + 1)))
            .await
            .unwrap();
        idle(socket).await;
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("silent").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "silent",
        &server.url,
        r#"subscribe = ['{"op":"subscribe"}']
ping_interval = "50ms"
read_timeout = "400ms""#,
    ))
    .await;
    wait_for_acknowledged(&daemon, "silent", 2).await;
    daemon.shutdown().await;
    let accepted = server.accepted();
    let waited = accepted[1].at - accepted[0].at;
    assert!(
        waited >= Duration::from_millis(400),
        "reconnected after {waited:?}, before the read timeout, although pongs kept coming"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_triggers_a_resubscribe_when_asked() {
    // Connection 0 sends 1, 2, then 5 (3 and 4 are missing); a resubscribe starts at 100.
    let server = WsServer::start(|index, _, mut socket| async move {
        read_texts(&mut socket, 1).await;
        let sequences: &[u64] = if index == 0 { &[1, 2, 5] } else { &[100, 101] };
        for &seq in sequences {
            socket.send(Message::text(numbered(seq))).await.unwrap();
        }
        idle(socket).await;
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("gaps").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "gaps",
        &format!("{}/?after={{position}}", server.url),
        r#"subscribe = ['{"op":"subscribe"}']
sequence = "/seq"
resubscribe_on_gap = true"#,
    ))
    .await;
    wait_for_acknowledged(&daemon, "gaps", 5).await;
    let metrics = daemon
        .metrics()
        .registered("gaps")
        .expect("a registered source");
    let (gaps, reconnects) = (metrics.sequence_gaps.get(), metrics.reconnects.get());
    daemon.shutdown().await;
    assert_eq!(
        gaps, 1,
        "the jump 2 → 5; the new subscription's 100 is not a gap"
    );
    assert_eq!(reconnects, 1);
    let accepted = server.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        accepted[1].uri, "/?after=2",
        "the resubscribe asks again from before the gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_websocket_configs_name_the_field() {
    let text = r#"
[kafka]
brokers = "localhost:9092"
[sources.ws]
type = "websocket"
url = "https://not-a-websocket.example.com"
topic = "t"
sequence_scope = "/product_id"
filter = { pointer = "type", values = [] }
"#;
    let errors = tributary::config::parse_toml(text)
        .unwrap()
        .validate()
        .err()
        .expect("invalid")
        .to_string();
    for field in [
        "sources.ws.url",
        "sources.ws.sequence_scope",
        "sources.ws.filter.pointer",
        "sources.ws.filter.values",
    ] {
        assert!(errors.contains(field), "`{field}` missing from: {errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_resumes_from_the_stored_sequence() {
    use common::process::{process_toml, write_config, Daemon};
    use tributary::state::checkpoint::FileStore;
    const FRAMES: u64 = 20_000;
    // Every connection resumes after the `after` query parameter (`{position}`). The first
    // one stops at half the feed and holds, so the kill always lands mid-stream.
    let server = WsServer::start(|index, uri, mut socket| async move {
        read_texts(&mut socket, 1).await;
        let after = after_param(&uri);
        let last = if index == 0 { FRAMES / 2 } else { FRAMES };
        for seq in after + 1..=last {
            if socket.send(Message::text(numbered(seq))).await.is_err() {
                return;
            }
        }
        idle(socket).await;
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("crash").await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = process_toml(&broker, state.path(), "crash", "unused", port, "")
        .replace("type = \"sse\"", "type = \"websocket\"")
        .replace(
            "url = \"unused\"",
            &format!(
                "url = \"{}/?after={{position}}\"\nsubscribe = ['{{\"op\":\"subscribe\"}}']\nsequence = \"/seq\"\nkey = \"/seq\"",
                server.url
            ),
        );
    let config = write_config(state.path(), &toml);

    let mut first = Daemon::spawn(&config, port);
    first.wait_for_produced("crash", FRAMES / 3).await;
    first
        .wait_for_metric("tributary_checkpoint_commits_total", "crash", 1)
        .await;
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    let stored: u64 = FileStore::open(state.path().join("state"))
        .unwrap()
        .load("crash")
        .unwrap()
        .expect("a position was committed before the kill")
        .as_str()
        .parse()
        .unwrap();
    assert!(
        stored <= FRAMES / 2,
        "the kill came mid-stream: the stored sequence {stored} is before the frames not yet sent"
    );

    let mut second = Daemon::spawn(&config, port);
    second.wait_for_produced("crash", FRAMES - stored).await;
    assert!(second.terminate().await.success());
    assert_eq!(
        server.accepted()[1].uri,
        format!("/?after={stored}"),
        "the restarted daemon resumed from the stored sequence"
    );
    let mut copies: HashMap<u64, usize> = HashMap::new();
    let mut last_in_partition: HashMap<i32, u64> = HashMap::new();
    for record in broker.read("crash").await {
        let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        let seq = value["seq"].as_u64().unwrap();
        // Identity, not counts: the frame as sent, keyed and labelled by its sequence.
        assert_eq!(record.payload, numbered(seq).as_bytes());
        assert_eq!(record.key.as_deref(), Some(seq.to_string().as_bytes()));
        assert_eq!(record.header("tributary.source"), Some("crash"));
        let copy = copies.entry(seq).or_default();
        *copy += 1;
        // Per-partition order: the first copy of each frame comes after every earlier frame
        // of its partition (a re-sent copy repeats an earlier stretch after the restart).
        if *copy == 1 {
            if let Some(previous) = last_in_partition.insert(record.partition, seq) {
                assert!(
                    previous < seq,
                    "partition {} has frame {seq} after frame {previous}",
                    record.partition
                );
            }
        }
    }
    let lost: Vec<u64> = (1..=FRAMES).filter(|s| !copies.contains_key(s)).collect();
    assert!(lost.is_empty(), "{} frames lost", lost.len());
    let duplicated: Vec<u64> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        duplicated.iter().all(|&s| s > stored),
        "only frames after the stored position may be duplicated"
    );
    eprintln!(
        "websocket kill -9 after sequence {stored} of {FRAMES} was stored: {} frames duplicated, 0 lost",
        duplicated.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_stops_the_source_reading_its_socket() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const FRAMES: u64 = 20_000;
    const CHANNEL: u64 = 50;
    const PRODUCER_QUEUE: u64 = 100;
    const PUMP_BATCH: u64 = 1024;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    // When the server's current send began (`None` between sends).
    let sending: Arc<Mutex<Option<Instant>>> = Arc::default();
    let send_began = Arc::clone(&sending);
    let server = WsServer::start(move |_, _, mut socket| {
        let counter = Arc::clone(&counter);
        let send_began = Arc::clone(&send_began);
        async move {
            read_texts(&mut socket, 1).await;
            // ~1 KB frames, so that socket buffers cannot hold the whole feed.
            let padding = "x".repeat(1000);
            for seq in 1..=FRAMES {
                let frame = format!(r#"{{"seq":{seq},"pad":"{padding}"}}"#);
                *send_began.lock().unwrap() = Some(Instant::now());
                if socket.send(Message::text(frame)).await.is_err() {
                    return;
                }
                *send_began.lock().unwrap() = None;
                counter.fetch_add(1, Ordering::Relaxed);
            }
            idle(socket).await;
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("stall").await;
    broker.down().await;
    let state = tempfile::tempdir().unwrap();
    let toml = ws_config(
        &broker.brokers(),
        state.path(),
        "stall",
        &server.url,
        &format!("subscribe = ['{{\"op\":\"subscribe\"}}']\nsequence = \"/seq\"\nchannel_max_records = {CHANNEL}"),
    )
    .replace(
        "flush_timeout = \"20s\"",
        &format!("flush_timeout = \"20s\"\n[kafka.producer]\n\"queue.buffering.max.messages\" = \"{PRODUCER_QUEUE}\""),
    );
    let daemon = start_daemon(&toml).await;
    let metrics = daemon
        .metrics()
        .registered("stall")
        .expect("a registered source");
    // The steady state, awaited: the channel full, and the server's send stuck because the
    // socket is no longer read (its buffers full). A pump still moving records into the
    // producer queue lets the source read on, so the send moves and the wait goes on.
    wait_until(
        "the channel to fill and the server's send to stop moving",
        Duration::from_secs(60),
        || {
            metrics.channel_records.get() as u64 >= CHANNEL
                && sending
                    .lock()
                    .unwrap()
                    .is_some_and(|began| began.elapsed() >= Duration::from_secs(1))
        },
    )
    .await;
    // What the daemon read is bounded by its buffers, not by the feed.
    let received = metrics.records_received.get();
    assert!(
        received <= CHANNEL + PRODUCER_QUEUE + PUMP_BATCH + 1,
        "read {received} frames while the broker was down"
    );
    assert!(
        sent.load(Ordering::Relaxed) < FRAMES,
        "the server could send every frame: the socket was still read"
    );
    broker.up().await;
    wait_for_acknowledged(&daemon, "stall", FRAMES).await;
    daemon.shutdown().await;
    assert_eq!(broker.read("stall").await.len() as u64, FRAMES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent_and_binary_frames_are_records() {
    let heartbeats: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&heartbeats);
    let server = WsServer::start(move |_, _, mut socket| {
        let seen = Arc::clone(&seen);
        async move {
            read_texts(&mut socket, 1).await;
            socket
                .send(Message::binary(numbered(1).into_bytes()))
                .await
                .unwrap();
            // Collect two heartbeats, then stay.
            let texts = read_texts(&mut socket, 2).await;
            seen.lock().unwrap().extend(texts);
            socket.send(Message::text(numbered(2))).await.unwrap();
            idle(socket).await;
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("beats").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "beats",
        &server.url,
        r#"subscribe = ['{"op":"subscribe"}']
heartbeat = { message = '{"op":"ping"}', interval = "50ms" }"#,
    ))
    .await;
    // The second record is only sent after two heartbeats arrived.
    wait_for_acknowledged(&daemon, "beats", 2).await;
    daemon.shutdown().await;
    assert_eq!(*heartbeats.lock().unwrap(), [r#"{"op":"ping"}"#; 2]);
    let mut payloads: Vec<Vec<u8>> = broker
        .read("beats")
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect();
    payloads.sort();
    assert_eq!(
        payloads,
        [numbered(1).into_bytes(), numbered(2).into_bytes()],
        "the binary frame's bytes are the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_ends_the_connection_not_the_memory() {
    // Connection 0 sends a message of 2 MiB, then a small one; connection 1 a small one.
    let server = WsServer::start(|index, _, mut socket| async move {
        read_texts(&mut socket, 1).await;
        if index == 0 {
            let huge = format!(r#"{{"blob":"{}"}}"#, "x".repeat(2 << 20));
            let _ = socket.send(Message::text(huge)).await;
            let _ = socket.send(Message::text(numbered(1))).await;
        } else {
            socket.send(Message::text(numbered(2))).await.unwrap();
        }
        idle(socket).await;
    })
    .await;
    let broker = Broker::mock();
    broker.create_topic("capped").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "capped",
        &server.url,
        r#"subscribe = ['{"op":"subscribe"}']
max_message_bytes = 1048576
max_frame_bytes = 1048576"#,
    ))
    .await;
    wait_for_acknowledged(&daemon, "capped", 1).await;
    let metrics = daemon
        .metrics()
        .registered("capped")
        .expect("a registered source");
    let (received, reconnects) = (metrics.records_received.get(), metrics.reconnects.get());
    daemon.shutdown().await;
    assert_eq!(
        received, 1,
        "neither the huge message nor what followed it on that connection"
    );
    assert!(
        reconnects >= 1,
        "the oversized message ended the connection"
    );
    assert!(server.accepted().len() >= 2);
    let records = broker.read("capped").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, numbered(2).as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_size_caps_name_the_field() {
    let toml = ws_config(
        "127.0.0.1:9",
        std::path::Path::new("/tmp"),
        "caps",
        "ws://127.0.0.1:9",
        "max_message_bytes = 1024\nmax_frame_bytes = 4096\nsend_timeout = \"0s\"",
    );
    let errors = tributary::config::parse_toml(&toml)
        .unwrap()
        .validate()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(errors.contains("sources.caps.max_frame_bytes"), "{errors}");
    assert!(errors.contains("sources.caps.send_timeout"), "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_follows_no_redirect_so_credentials_stay_put() {
    let elsewhere = ScriptedServer::start(vec![Scripted::events("", true)]).await;
    let moved = ScriptedServer::start(vec![Scripted {
        status: 307,
        headers: vec![("location", format!("{}/feed", elsewhere.base_url))],
        body: bytes::Bytes::new(),
        stay_open: false,
    }])
    .await;
    let broker = Broker::mock();
    broker.create_topic("moved").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ws_config(
        &broker.brokers(),
        state.path(),
        "moved",
        &moved.base_url.replace("http://", "ws://"),
        r#"headers = { Authorization = "Bearer ws-secret" }"#,
    ))
    .await;
    let health = daemon.health().clone();
    wait_until("the source to fail", Duration::from_secs(30), || {
        matches!(health.get("moved"), Some(SourceState::Failed(_)))
    })
    .await;
    daemon.shutdown().await;
    assert_eq!(moved.requests().len(), 1, "one handshake, not retried");
    assert!(
        elsewhere.requests().is_empty(),
        "the handshake went to another origin"
    );
}

/// The record stage on a WebSocket source: the Coinbase example's program and templates on the
/// recorded frames, through Apache Kafka: only the `match` messages, with numeric price and size,
/// one topic per product, keyed by product, stamped with their trade time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coinbase_example_routes_recorded_matches_per_product() {
    let (subscribe, frames) = coinbase_recording();
    let matches: Vec<serde_json::Value> = frames
        .iter()
        .map(|f| serde_json::from_str::<serde_json::Value>(f).unwrap())
        .filter(|f| f["type"] == "match")
        .collect();
    let mut products: Vec<String> = matches
        .iter()
        .map(|m| m["product_id"].as_str().unwrap().to_owned())
        .collect();
    products.sort();
    products.dedup();
    assert!(products.len() > 1, "matches of several products");
    let served = frames.clone();
    let expected_subscribe = subscribe.len();
    let server = WsServer::start(move |_, _, mut socket| {
        let served = served.clone();
        async move {
            read_texts(&mut socket, expected_subscribe).await;
            for frame in served {
                if socket.send(Message::text(frame)).await.is_err() {
                    return;
                }
            }
            idle(socket).await;
        }
    })
    .await;
    let broker = Broker::kafka();
    let topics: Vec<String> = products
        .iter()
        .map(|p| format!("coinbase.match.{p}"))
        .chain(["coinbase.match.dlq".to_owned()])
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    broker.create_topics(&names, 1).await;
    let example = include_str!("../config/transform-coinbase.toml");
    let program = example.split("'''").nth(1).expect("the example's program");
    let state = tempfile::tempdir().unwrap();
    let subscribe_toml: Vec<String> = subscribe.iter().map(|m| format!("'{m}'")).collect();
    let toml = ws_config(
        &broker.brokers(),
        state.path(),
        "cb",
        &server.url,
        &format!(
            "subscribe = [{}]\ndead_letter_topic = \"coinbase.match.dlq\"\nkey = \"{{/product_id}}\"\n\
             transform = '''{program}'''\ntimestamp = \"/time\"",
            subscribe_toml.join(", ")
        ),
    )
    .replace("topic = \"cb\"", "topic = \"coinbase.match.{/product_id}\"");
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "cb", matches.len() as u64).await;
    let metrics = daemon.metrics().registered("cb").unwrap();
    wait_until("every frame transformed", Duration::from_secs(60), || {
        metrics.records_filtered.get() == (frames.len() - matches.len()) as u64
    })
    .await;
    daemon.shutdown().await;

    assert!(broker.read("coinbase.match.dlq").await.is_empty());
    let mut read = 0;
    for product in &products {
        let records = broker.read(&format!("coinbase.match.{product}")).await;
        let expected: Vec<&serde_json::Value> = matches
            .iter()
            .filter(|m| m["product_id"] == product.as_str())
            .collect();
        assert_eq!(records.len(), expected.len(), "{product}");
        for (record, original) in records.iter().zip(expected) {
            let shaped: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            assert_eq!(record.key.as_deref(), Some(product.as_bytes()));
            let price: f64 = original["price"].as_str().unwrap().parse().unwrap();
            assert_eq!(shaped["price"].as_f64(), Some(price));
            assert!(shaped["size"].is_number());
            assert_eq!(shaped["trade_id"], original["trade_id"], "feed order");
            let time = chrono::DateTime::parse_from_rfc3339(original["time"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            assert_eq!(
                record.timestamp,
                Some(time),
                "the trade time is the Kafka timestamp"
            );
        }
        read += records.len();
    }
    assert_eq!(read, matches.len());
}
