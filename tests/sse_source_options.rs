//! SSE source options end to end, each against a scripted HTTP server on 127.0.0.1 and a
//! Kafka broker: request headers and URLs with secrets, the `event:` type filter, keys from a
//! JSON pointer, the read timeout, `Retry-After`, backpressure from a stalled broker, and the
//! `max_event_bytes` cap on a line that never ends.

mod common;

use std::time::Duration;

use common::*;
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    runtime::health::SourceState,
    state::checkpoint::FileStore,
};

/// Writes `value` to a file in `dir` and returns its path (for `${file:…}` references).
fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_url_secrets_event_filter_and_key_pointer() {
    let broker = Broker::kafka();
    broker.create_topic("edits").await;
    let mut body = String::new();
    for i in 0..30 {
        let kind = ["edit", "log", "message"][i % 3];
        if kind != "message" {
            body.push_str(&format!("event: {kind}\n"));
        }
        body.push_str(&format!(
            "id: {i}\ndata: {{\"meta\":{{\"id\":\"change-{i}\"}},\"kind\":\"{kind}\"}}\n\n"
        ));
    }
    let server = ScriptedServer::start(vec![Scripted::events(&body, true)]).await;
    let state = tempfile::tempdir().unwrap();
    let token = secret_file(state.path(), "token", "s3cret-token");
    let api_key = secret_file(state.path(), "key", "k3y-in-url");
    let toml = sse_config(
        &broker.brokers(),
        &state.path().join("state"),
        "edits",
        &format!(
            "{}/stream?api_key=${{file:{api_key}}}&lang=en",
            server.base_url
        ),
        "edits",
        &format!(
            r#"headers = {{ Authorization = "Bearer ${{file:{token}}}", "X-Client" = "tributary-test" }}
event_types = ["edit"]
key = "/meta/id""#
        ),
    );
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "edits", 10).await;
    let scrape = daemon.metrics().render();
    let readiness = serde_json::to_string(&daemon.health().readiness(true)).unwrap();
    let received = daemon
        .metrics()
        .registered("edits")
        .expect("a registered source")
        .records_received
        .get();
    daemon.shutdown().await;

    let request = &server.requests()[0];
    assert_eq!(request.headers["authorization"], "Bearer s3cret-token");
    assert_eq!(request.headers["x-client"], "tributary-test");
    assert_eq!(request.headers["accept"], "text/event-stream");
    assert!(
        request.uri.contains("api_key=k3y-in-url"),
        "{}",
        request.uri
    );

    let records = broker.read("edits").await;
    let mut keys: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    keys.sort_by_key(|k| k["change-".len()..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..30).step_by(3).map(|i| format!("change-{i}")).collect();
    assert_eq!(keys, expected, "only `edit` events, keyed by /meta/id");
    assert_eq!(received, 30, "every event is counted as received");
    for record in &records {
        assert_eq!(record.header("tributary.event_type"), Some("edit"));
        let url = record.header("tributary.url").unwrap();
        assert!(
            !url.contains("k3y-in-url"),
            "the URL header is redacted: {url}"
        );
        assert!(url.contains("lang=en"), "{url}");
    }
    for text in [&scrape, &readiness] {
        assert!(!text.contains("s3cret") && !text.contains("k3y"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_reconnected_after_the_read_timeout() {
    let broker = Broker::kafka();
    broker.create_topic("quiet").await;
    let event = |i: u32| format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
    let server = ScriptedServer::start(vec![
        Scripted::events(&(event(1) + &event(2)), true),
        Scripted::events(&(event(3) + &event(4)), true),
        // Later reconnects (the read timeout fires on every silent connection) get no events.
        Scripted::events("", true),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "quiet",
        &format!("{}/stream", server.base_url),
        "quiet",
        "read_timeout = \"400ms\"",
    ))
    .await;
    wait_for_acknowledged(&daemon, "quiet", 4).await;
    let reconnects = daemon
        .metrics()
        .registered("quiet")
        .expect("a registered source")
        .reconnects
        .get();
    daemon.shutdown().await;

    let requests = server.requests();
    assert!(reconnects >= 1);
    assert_eq!(
        requests[1].headers.get("last-event-id").map(String::as_str),
        Some("2")
    );
    let silent_for = requests[1].at - requests[0].at;
    assert!(
        silent_for >= Duration::from_millis(400),
        "reconnected after {silent_for:?}, before the read timeout"
    );
    let payloads: Vec<String> = broker
        .read("quiet")
        .await
        .iter()
        .map(|r| r.header("tributary.event_id").unwrap().to_owned())
        .collect();
    let mut sorted = payloads.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_503_delays_the_reconnect() {
    let broker = Broker::kafka();
    broker.create_topic("busy").await;
    let server = ScriptedServer::start(vec![
        Scripted {
            status: 503,
            headers: vec![("retry-after", "1".into())],
            body: "busy".into(),
            stay_open: false,
        },
        Scripted::events("id: 1\ndata: {\"ok\":true}\n\n", true),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    // Without Retry-After the reconnect would come within 20 ms (initial_delay).
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "busy",
        &format!("{}/stream", server.base_url),
        "busy",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "busy", 1).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    let requests = server.requests();
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(1_000),
        "reconnected after {waited:?}, before Retry-After: 1"
    );
    assert!(
        scrape.contains(r#"tributary_http_requests_total{source="busy",status_class="5xx"} 1"#),
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_stops_the_source_reading_and_loses_nothing() {
    const EVENTS: usize = 20_000;
    const CHANNEL: u64 = 50;
    const PRODUCER_QUEUE: u64 = 100;
    const PUMP_BATCH: u64 = 1024;
    let broker = Broker::kafka();
    broker.create_topic("stall").await;
    broker.down().await;
    let feed = ReplayServer::start(replay::wikimedia_feed(EVENTS), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "stall",
        &feed.url(),
        "stall",
        &format!("channel_max_records = {CHANNEL}"),
    )
    .replace(
        "flush_timeout = \"20s\"",
        &format!(
            "flush_timeout = \"20s\"\n[kafka.producer]\n\"queue.buffering.max.messages\" = \"{PRODUCER_QUEUE}\""
        ),
    );
    let daemon = start_daemon(&toml).await;
    let metrics = daemon
        .metrics()
        .registered("stall")
        .expect("a registered source");
    // The steady state, awaited: the channel full, and the feed's writes stuck (the socket is
    // no longer read, its buffers full), seen as no event served for a second. A pump still
    // moving records into the producer queue lets the source read on, so the wait goes on.
    let served_now = || {
        feed.stats()
            .events_served
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut last = (served_now(), std::time::Instant::now());
    wait_until(
        "the channel to fill and the feed's writes to stop moving",
        Duration::from_secs(60),
        || {
            let served = served_now();
            if served != last.0 {
                last = (served, std::time::Instant::now());
            }
            metrics.channel_records.get() as u64 >= CHANNEL
                && last.1.elapsed() >= Duration::from_secs(1)
        },
    )
    .await;
    // What the daemon read is bounded by its buffers, not by the feed.
    let received = metrics.records_received.get();
    let bound = CHANNEL + PRODUCER_QUEUE + PUMP_BATCH + 1;
    assert!(
        received <= bound,
        "{received} records read with the broker down; at most {bound} fit in the channel, the pump's batch and the producer queue"
    );
    let served = served_now();
    assert!(
        served < EVENTS as u64,
        "the feed could write all {EVENTS} events: the socket was still read"
    );

    broker.up().await;
    wait_for_acknowledged(&daemon, "stall", EVENTS as u64).await;
    daemon.shutdown().await;
    assert_exactly_once_in_order(&broker.read("stall").await, EVENTS, "stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_authenticate_connects_and_a_401_fetches_a_new_one() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    // The token endpoint hands out token-1, token-2, …
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&issued);
    let tokens = common::api::ApiServer::start(move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            common::api::json(
                200,
                format!(
                    r#"{{"access_token":"token-{n}","token_type":"Bearer","expires_in":3600}}"#
                ),
                &[],
            )
        }
    })
    .await;
    // The feed refuses the first connect (a revoked token), then streams.
    let feed = ScriptedServer::start(vec![
        Scripted {
            status: 401,
            headers: vec![],
            body: bytes::Bytes::new(),
            stay_open: false,
        },
        Scripted::events(
            "id: 1\ndata: {\"ok\":1}\n\nid: 2\ndata: {\"ok\":2}\n\n",
            true,
        ),
    ])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("authed").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "authed",
        &format!("{}/stream", feed.base_url),
        "authed",
        &format!(
            r#"auth = {{ type = "oauth2_client_credentials", token_url = "{}/token", client_id = "id", client_secret = "secret" }}"#,
            tokens.base
        ),
    ))
    .await;
    wait_for_acknowledged(&daemon, "authed", 2).await;
    daemon.shutdown().await;
    let seen: Vec<Option<String>> = feed
        .requests()
        .iter()
        .map(|r| r.headers.get("authorization").cloned())
        .collect();
    assert_eq!(
        seen,
        [Some("Bearer token-1".into()), Some("Bearer token-2".into())]
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert_eq!(broker.read("authed").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_field_is_clamped_to_the_reconnect_max_delay() {
    let broker = Broker::mock();
    broker.create_topic("patient").await;
    // The first answer asks for a retry of ~31 years, then ends; the second one stays open.
    let server = ScriptedServer::start(vec![
        Scripted::events("retry: 999999999999\nid: 1\ndata: {\"n\":1}\n\n", false),
        Scripted::events("id: 2\ndata: {\"n\":2}\n\n", true),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    // `sse_config` sets `reconnect.max_delay` to 200 ms.
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "patient",
        &format!("{}/stream", server.base_url),
        "patient",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "patient", 2).await;
    daemon.shutdown().await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one reconnect");
    assert_eq!(
        requests[1].headers.get("last-event-id").map(String::as_str),
        Some("1")
    );
    assert_eq!(sorted_keys(&broker, "patient").await, ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_field_in_a_block_without_data_sets_the_reconnect_delay() {
    let broker = Broker::mock();
    broker.create_topic("paced").await;
    // `retry:` alone in its block (WHATWG HTML §9.2.6 sets the reconnection time at once),
    // then an event without one; the stream ends, the second answer stays open.
    let server = ScriptedServer::start(vec![
        Scripted::events("retry: 1500\n\nid: 1\ndata: {\"n\":1}\n\n", false),
        Scripted::events("id: 2\ndata: {\"n\":2}\n\n", true),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    // Without the field the reconnect would come within 20 ms (`reconnect.initial_delay`).
    let daemon = start_daemon(
        &sse_config(
            &broker.brokers(),
            state.path(),
            "paced",
            &format!("{}/stream", server.base_url),
            "paced",
            "",
        )
        .replace("max_delay = \"200ms\"", "max_delay = \"5s\""),
    )
    .await;
    wait_for_acknowledged(&daemon, "paced", 2).await;
    daemon.shutdown().await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one reconnect");
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(1_400),
        "reconnected after {waited:?}, before the server's retry: 1500"
    );
    assert_eq!(sorted_keys(&broker, "paced").await, ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_that_is_not_utf8_is_dead_lettered_as_invalid_json() {
    let broker = Broker::mock();
    broker.create_topic("bytes").await;
    // The second event's data holds a byte that is not UTF-8, inside a JSON string.
    let mut body = b"id: 1\ndata: {\"n\":1}\n\nid: 2\ndata: {\"n\":\"\xFF\"}\n\n".to_vec();
    body.extend_from_slice(b"id: 3\ndata: {\"n\":3}\n\n");
    let server = ScriptedServer::start(vec![Scripted {
        body: body.into(),
        ..Scripted::events("", true)
    }])
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "bytes",
        &format!("{}/stream", server.base_url),
        "bytes",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "bytes", 3).await;
    daemon.shutdown().await;
    assert_eq!(
        server.requests().len(),
        1,
        "the connection was never dropped"
    );
    let good = broker.read("bytes").await;
    let mut ids: Vec<&str> = good
        .iter()
        .map(|r| r.header("tributary.event_id").unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["1", "3"]);
    let dead = broker.read("bytes.dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("tributary.event_id"), Some("2"));
    assert_eq!(dead[0].header("tributary.error_kind"), Some("invalid_json"));
    assert_eq!(
        &dead[0].payload[..],
        b"{\"n\":\"\xFF\"}",
        "the bytes as sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_cannot_be_sent_back_is_never_the_position() {
    let broker = Broker::mock();
    broker.create_topic("odd").await;
    // `bad\u{1}id` is a legal SSE id but no legal header value: a reconnect that sent it as
    // Last-Event-ID could never be made.
    let server = ScriptedServer::start(vec![
        Scripted::events(
            "id: 1\ndata: {\"n\":1}\n\nid: bad\u{1}id\ndata: {\"n\":2}\n\n",
            false,
        ),
        Scripted::events("id: 3\ndata: {\"n\":3}\n\n", true),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "odd",
        &format!("{}/stream", server.base_url),
        "odd",
        "",
    ))
    .await;
    wait_for_acknowledged(&daemon, "odd", 3).await;
    let invalid = daemon
        .metrics()
        .registered("odd")
        .expect("a registered source")
        .invalid_event_ids
        .get();
    daemon.shutdown().await;
    assert_eq!(invalid, 1);
    let requests = server.requests();
    assert_eq!(
        requests[1].headers.get("last-event-id").map(String::as_str),
        Some("1"),
        "the reconnect resumes after the last id that can be sent"
    );
    assert_eq!(
        sorted_keys(&broker, "odd").await,
        ["1", "3", "bad\u{1}id"],
        "the record keeps its own id as its key"
    );
    let stored = FileStore::open(state.path()).unwrap().load("odd").unwrap();
    assert_eq!(stored.map(|p| p.to_string()).as_deref(), Some("3"));
}

/// A server that answers every request with `status` and `Location: <target>/stream`.
async fn redirecting(status: u16, target: &str) -> ScriptedServer {
    ScriptedServer::start(vec![Scripted {
        status,
        headers: vec![("location", format!("{target}/stream"))],
        body: bytes::Bytes::new(),
        stay_open: false,
    }])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    // The other origin records every request it gets; it must get none.
    let elsewhere = ScriptedServer::start(vec![Scripted::events("data: {}\n\n", true)]).await;
    let moved = redirecting(307, &elsewhere.base_url).await;
    let found = redirecting(302, &elsewhere.base_url).await;
    let broker = Broker::mock();
    broker.create_topic("moved").await;
    broker.create_topic("found").await;
    let state = tempfile::tempdir().unwrap();
    let source = |name: &str, server: &ScriptedServer| {
        format!(
            r#"
[sources.{name}]
type = "sse"
url = "{}/stream"
topic = "{name}"
auth = {{ type = "bearer", token = "bearer-secret" }}
headers = {{ "X-Api-Key" = "key-secret" }}
"#,
            server.base_url
        )
    };
    let sources = source("moved", &moved) + &source("found", &found);
    let daemon = start_daemon(&daemon_config(&broker.brokers(), state.path(), &sources)).await;
    let health = daemon.health().clone();
    wait_until("both sources to fail", Duration::from_secs(30), || {
        ["moved", "found"]
            .iter()
            .all(|name| matches!(health.get(name), Some(SourceState::Failed(_))))
    })
    .await;
    daemon.shutdown().await;
    assert!(
        elsewhere.requests().is_empty(),
        "the other origin was contacted: {:?}",
        elsewhere.requests()
    );
    for name in ["moved", "found"] {
        let Some(SourceState::Failed(reason)) = health.get(name) else {
            unreachable!()
        };
        assert!(reason.contains("not followed"), "{name}: {reason}");
        assert!(!reason.contains("secret"), "{name}: {reason}");
    }
    let Some(SourceState::Failed(reason)) = health.get("found") else {
        unreachable!()
    };
    assert!(
        reason.contains(&format!("{}/stream", elsewhere.base_url)),
        "a 302 names its target: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth2_client_secret_never_follows_a_redirect() {
    let elsewhere = ScriptedServer::start(vec![Scripted {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"access_token":"stolen","token_type":"Bearer","expires_in":3600}"#.into(),
        stay_open: false,
    }])
    .await;
    let tokens = redirecting(307, &elsewhere.base_url).await;
    let feed = ScriptedServer::start(vec![Scripted::events("data: {}\n\n", true)]).await;
    let broker = Broker::mock();
    broker.create_topic("token").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "token",
        &format!("{}/stream", feed.base_url),
        "token",
        &format!(
            r#"auth = {{ type = "oauth2_client_credentials", token_url = "{}/token", client_id = "id", client_secret = "client-secret" }}"#,
            tokens.base_url
        ),
    ))
    .await;
    wait_until("a token request", Duration::from_secs(30), || {
        !tokens.requests().is_empty()
    })
    .await;
    let health = daemon.health().clone();
    wait_until(
        "the source to fail or retry",
        Duration::from_secs(30),
        || {
            matches!(
                health.get("token"),
                Some(SourceState::Failed(_) | SourceState::Reconnecting { .. })
            )
        },
    )
    .await;
    daemon.shutdown().await;
    assert!(
        elsewhere.requests().is_empty(),
        "the client secret went to another origin"
    );
    assert!(feed.requests().is_empty(), "no token, no connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_past_max_event_bytes_ends_the_connection_before_it_is_buffered() {
    use futures::StreamExt as _;
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc,
    };
    const CAP: usize = 64 * 1024;
    const CHUNK: usize = 64 * 1024;
    const ENDLESS: usize = 64 * 1024 * 1024;
    /// Marks the first answer's body as dropped (its connection closed).
    struct Closed(Arc<AtomicBool>);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let (sent, closed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (sent_by_feed, closed_by_feed) = (Arc::clone(&sent), Arc::clone(&closed));
    let answered = Arc::new(AtomicUsize::new(0));
    // The first answer: three events, then a `data:` line that never ends (64 MiB, then
    // silence); later answers: event 4.
    let server = common::api::ApiServer::start(move |_request| {
        let first = answered.fetch_add(1, SeqCst) == 0;
        let (sent, closed) = (Arc::clone(&sent_by_feed), Arc::clone(&closed_by_feed));
        async move {
            let event = |i: u32| format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
            let head = if first {
                event(1) + &event(2) + &event(3) + "data: "
            } else {
                event(4)
            };
            let line = bytes::Bytes::from(vec![b'x'; CHUNK]);
            // Only the first answer has the guard and sends the line; it stays open after.
            let guard = first.then(|| Closed(closed));
            let endless = futures::stream::unfold(guard, move |guard| {
                let (line, sent) = (line.clone(), Arc::clone(&sent));
                async move {
                    if guard.is_none() || sent.load(SeqCst) >= ENDLESS {
                        std::future::pending::<()>().await;
                    }
                    sent.fetch_add(CHUNK, SeqCst);
                    Some((Ok(line), guard))
                }
            });
            let body = futures::stream::once(async move {
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(head))
            })
            .chain(endless);
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from_stream(body))
                .unwrap()
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("capped").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "capped",
        &format!("{}/stream", server.base),
        "capped",
        &format!("max_event_bytes = {CAP}"),
    ))
    .await;
    wait_for_acknowledged(&daemon, "capped", 4).await;
    wait_until(
        "the first answer's connection to close",
        Duration::from_secs(30),
        || closed.load(SeqCst),
    )
    .await;
    let metrics = daemon
        .metrics()
        .registered("capped")
        .expect("a registered source");
    let (oversized, reconnects) = (metrics.oversized_events.get(), metrics.reconnects.get());
    daemon.shutdown().await;

    assert_eq!(oversized, 1, "one oversized line counted");
    assert!(reconnects >= 1);
    let sent = sent.load(SeqCst);
    assert!(
        sent < ENDLESS,
        "the feed wrote all {ENDLESS} bytes of the line before the daemon hung up"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one reconnect: {requests:?}");
    assert_eq!(requests[1].header("last-event-id"), Some("3"));
    assert_eq!(sorted_keys(&broker, "capped").await, ["1", "2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_on_every_connection_backs_off_and_shows_as_reconnecting() {
    const CAP: usize = 4096;
    // Every answer: 200, then at once an event over the cap (a feed that resends it after each
    // reconnect, as it would from the same Last-Event-ID).
    let server = common::api::ApiServer::start(|_request| async move {
        let body = format!("id: 1\ndata: {}\n\n", "x".repeat(4 * CAP));
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from(body))
            .unwrap()
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("stuck").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "stuck",
        &format!("{}/stream", server.base),
        "stuck",
        &format!("max_event_bytes = {CAP}"),
    ))
    .await;
    // Each connection that read no event is a failed attempt: they add up, and `/readyz`
    // turns not ready at three in a row.
    wait_until(
        "the source to show three failed reconnects in a row",
        Duration::from_secs(30),
        || {
            matches!(
                daemon.health().get("stuck"),
                Some(SourceState::Reconnecting { attempts, .. }) if attempts >= 3
            )
        },
    )
    .await;
    assert!(!daemon.health().readiness(true).ready);
    let metrics = daemon.metrics().registered("stuck").unwrap();
    assert!(metrics.oversized_events.get() >= 3);
    assert_eq!(metrics.records_received.get(), 0);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_reported_with_its_cause() {
    let broker = Broker::kafka();
    broker.create_topic("closed").await;
    let state = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let url = format!("http://127.0.0.1:{}/stream", common::free_port());
    let daemon = start_daemon(&sse_config(
        &broker.brokers(),
        state.path(),
        "closed",
        &url,
        "closed",
        "",
    ))
    .await;
    // hyper says only "client error (Connect)"; the cause under it is what an operator needs.
    wait_until(
        "the source to report the refused connection",
        Duration::from_secs(30),
        || {
            matches!(
                daemon.health().get("closed"),
                Some(SourceState::Reconnecting { error, .. }) if error.contains("Connection refused")
            )
        },
    )
    .await;
    daemon.shutdown().await;
}
