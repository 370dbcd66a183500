//! End-to-end: signed webhook requests to the daemon's HTTP server → librdkafka's mock
//! cluster, read back. A 2xx answer must mean Kafka has the record.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use tributary::{
    runtime::daemon::RunningDaemon,
    runtime::health::SourceState,
    sources::webhook::signature::{GitHubScheme, StandardWebhooksScheme},
};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
/// A Standard Webhooks secret (`whsec_` + base64 of "tributary-test-secret-32-bytes!!").
const STANDARD_SECRET: &str = "whsec_dHJpYnV0YXJ5LXRlc3Qtc2VjcmV0LTMyLWJ5dGVzISE=";

fn webhook_config(brokers: &str, state: &std::path::Path, extra_sources: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:0"
{extra_sources}
"#,
        state = state.display()
    )
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(daemon: &RunningDaemon) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{}", daemon.webhook_address()),
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        if !headers.iter().any(|(name, _)| *name == "content-type") {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn github(&self, delivery: &str, body: &str, secret: &str) -> (u16, String) {
        self.post(
            "/webhooks/github",
            &[
                (
                    "x-hub-signature-256",
                    GitHubScheme::sign(secret, body.as_bytes()),
                ),
                ("x-github-delivery", delivery.to_owned()),
            ],
            body,
        )
        .await
    }

    async fn standard(&self, id: &str, timestamp: u64, body: &str) -> (u16, String) {
        let signature =
            StandardWebhooksScheme::sign(STANDARD_SECRET, id, timestamp, body.as_bytes()).unwrap();
        self.post(
            "/webhooks/standard",
            &[
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
            ],
            body,
        )
        .await
    }
}

fn outcome_count(scrape: &str, source: &str, outcome: &str) -> u64 {
    let series =
        format!(r#"tributary_webhook_requests_total{{outcome="{outcome}",source="{source}"}} "#);
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_deliveries_are_produced_once_and_bad_ones_refused() {
    let broker = Broker::kafka();
    broker.create_topic("github").await;
    broker.create_topic("standard").await;
    let state = tempfile::tempdir().unwrap();
    let secret_file = state.path().join("github-secret");
    std::fs::write(&secret_file, GITHUB_SECRET).unwrap();
    let daemon = start_daemon(&webhook_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.github]
type = "webhook"
topic = "github"
signature = {{ scheme = "github", secrets = ["old-secret", "${{file:{}}}"] }}

[sources.standard]
type = "webhook"
topic = "standard"
signature = {{ scheme = "standard_webhooks", secrets = ["{STANDARD_SECRET}"] }}
max_body_bytes = 2048
"#,
            secret_file.display()
        ),
    ))
    .await;
    // A webhook source serving its route is `listening` (it holds no connection of its own).
    wait_until(
        "the webhook sources to listen",
        Duration::from_secs(30),
        || {
            ["github", "standard"]
                .iter()
                .all(|name| daemon.health().get(name) == Some(SourceState::Listening))
        },
    )
    .await;
    let client = Client::new(&daemon);

    // GitHub: signed with the current secret (the second of the rotation list).
    let push = r#"{"ref":"refs/heads/main","after":"abc"}"#;
    assert_eq!(
        client.github("delivery-1", push, GITHUB_SECRET).await.0,
        200
    );
    assert_eq!(
        client.github("delivery-1", push, GITHUB_SECRET).await.0,
        200,
        "a redelivery is answered 2xx"
    );
    // Another event (the same body would be a duplicate, whatever its delivery id).
    let next_push = r#"{"ref":"refs/heads/main","after":"abd"}"#;
    assert_eq!(
        client.github("delivery-2", next_push, "old-secret").await.0,
        200,
        "the old secret still works"
    );
    let (status, text) = client.github("delivery-3", push, "forged").await;
    assert_eq!(status, 401, "{text}");
    assert!(!text.contains(GITHUB_SECRET));

    // Standard Webhooks.
    let event = r#"{"type":"invoice.paid","id":"in_1"}"#;
    let now = now_seconds();
    assert_eq!(client.standard("msg_1", now, event).await.0, 200);
    assert_eq!(
        client.standard("msg_1", now, event).await.0,
        200,
        "replayed id"
    );
    assert_eq!(
        client.standard("msg_2", now - 3600, event).await.0,
        401,
        "expired"
    );
    assert_eq!(
        client
            .post(
                "/webhooks/standard",
                &[
                    ("webhook-id", "msg_3".into()),
                    ("webhook-timestamp", now.to_string()),
                    ("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl".into())
                ],
                event
            )
            .await
            .0,
        401,
        "forged"
    );
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(4096));
    assert_eq!(
        client.standard("msg_4", now, &big).await.0,
        413,
        "too large"
    );
    assert_eq!(client.standard("msg_5", now, "not json").await.0, 400);
    let (status, _) = client
        .post(
            "/webhooks/standard",
            &[("content-type", "text/plain".into())],
            event,
        )
        .await;
    assert_eq!(status, 415);

    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    let github = broker.read("github").await;
    let mut deliveries: Vec<&str> = github
        .iter()
        .map(|r| r.header("tributary.event_id").unwrap())
        .collect();
    deliveries.sort_unstable();
    assert_eq!(
        deliveries,
        ["delivery-1", "delivery-2"],
        "each delivery once"
    );
    for (delivery, body) in [("delivery-1", push), ("delivery-2", next_push)] {
        let record = github
            .iter()
            .find(|r| r.header("tributary.event_id") == Some(delivery))
            .unwrap();
        assert_eq!(record.payload, body.as_bytes(), "{delivery}");
    }
    assert_eq!(
        github[0]
            .key
            .as_deref()
            .map(|k| std::str::from_utf8(k).unwrap()),
        github[0].header("tributary.event_id")
    );
    let standard = broker.read("standard").await;
    assert_eq!(standard.len(), 1);
    assert_eq!(standard[0].header("tributary.event_id"), Some("msg_1"));
    for (source, outcome, count) in [
        ("github", "accepted", 2),
        ("github", "duplicate", 1),
        ("github", "rejected_signature", 1),
        ("standard", "accepted", 1),
        ("standard", "duplicate", 1),
        ("standard", "rejected_timestamp", 1),
        ("standard", "rejected_signature", 1),
        ("standard", "too_large", 1),
        ("standard", "bad_request", 2),
    ] {
        assert_eq!(
            outcome_count(&scrape, source, outcome),
            count,
            "{source} {outcome}:\n{scrape}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_2xx_before_kafka_has_the_record() {
    let broker = Broker::kafka();
    broker.create_topic("hooks").await;
    broker.down().await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&webhook_config(
        &broker.brokers(),
        state.path(),
        r#"
[sources.hooks]
type = "webhook"
topic = "hooks"
signature = { scheme = "none" }
event_id = { pointer = "/id" }
ack_timeout = "500ms"
retry_after = "2s"
"#,
    ))
    .await;
    let client = Client::new(&daemon);
    let body = r#"{"id":"evt_1","amount":42}"#;
    let response = client
        .http
        .post(format!("{}/webhooks/hooks", client.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        503,
        "the broker is down: no 2xx"
    );
    assert_eq!(response.headers()["retry-after"], "2");
    // A retry while the first copy waits in the producer: still no 2xx, and no second copy.
    assert_eq!(client.post("/webhooks/hooks", &[], body).await.0, 503);

    broker.up().await;
    wait_for_acknowledged(&daemon, "hooks", 1).await;
    // The delivery is recorded just after the acknowledgement: retry as a sender would.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, text) = loop {
        let (status, text) = client.post("/webhooks/hooks", &[], body).await;
        if status != 503 || std::time::Instant::now() > deadline {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        status, 200,
        "once Kafka has it, the retry is a duplicate: {text}"
    );
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(broker.read("hooks").await.len(), 1, "produced once");
    assert_eq!(outcome_count(&scrape, "hooks", "delivery_timeout"), 1);
    assert!(outcome_count(&scrape, "hooks", "duplicate") >= 2);
    assert_eq!(outcome_count(&scrape, "hooks", "accepted"), 0);
}

#[test]
fn webhook_configs_are_validated() {
    let text = r#"
[kafka]
brokers = "localhost:9092"
[sources.a]
type = "webhook"
topic = "a"
signature = { scheme = "standard_webhooks", secrets = ["not-whsec"] }
[sources.b]
type = "webhook"
topic = "b"
signature = { scheme = "github", secrets = [] }
[sources.c]
type = "webhook"
topic = "c"
signature = { scheme = "none", secrets = ["x"], prefix = "sha256=" }
[sources.d]
type = "webhook"
topic = "d"
path = "/webhooks/a"
signature = { scheme = "none" }
[sources.e]
type = "webhook"
topic = "e"
path = "/webhooks/:id"
signature = { scheme = "none" }
[sources.f]
type = "webhook"
topic = "f"
signature = { scheme = "none" }
max_body_bytes = 1000001
"#;
    let errors = tributary::config::parse_toml(text)
        .unwrap()
        .validate()
        .err()
        .expect("invalid")
        .to_string();
    for field in [
        "sources.a.signature",
        "sources.b.signature",
        "sources.c.signature.secrets",
        "sources.c.signature.prefix",
        "sources.d.path",
        "sources.e.path",
        "sources.f.max_body_bytes",
    ] {
        assert!(errors.contains(field), "`{field}` missing from: {errors}");
    }
    assert!(
        !errors.contains("not-whsec"),
        "secrets stay out of errors: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_answers_503_with_retry_after() {
    let broker = Broker::kafka();
    broker.create_topic("busy").await;
    broker.down().await;
    let state = tempfile::tempdir().unwrap();
    // One record fits in the producer queue, one waits in the pump, one in the channel.
    let daemon = start_daemon(
        &webhook_config(
            &broker.brokers(),
            state.path(),
            r#"
[sources.busy]
type = "webhook"
topic = "busy"
signature = { scheme = "none" }
event_id = { pointer = "/id" }
ack_timeout = "60s"
retry_after = "3s"
channel_max_records = 1
"#,
        )
        .replace(
            "flush_timeout = \"5s\"",
            "flush_timeout = \"5s\"\n[kafka.producer]\n\"queue.buffering.max.messages\" = \"1\"",
        ),
    )
    .await;
    let client = std::sync::Arc::new(Client::new(&daemon));
    let mut waiting = Vec::new();
    for i in 0..3 {
        let client = std::sync::Arc::clone(&client);
        waiting.push(tokio::spawn(async move {
            client
                .post("/webhooks/busy", &[], &format!(r#"{{"id":"evt_{i}"}}"#))
                .await
                .0
        }));
        // Each request must take its place before the next one comes.
        let metrics = daemon
            .metrics()
            .registered("busy")
            .expect("a registered source");
        wait_until(
            "the request to reach the pipeline",
            Duration::from_secs(30),
            || metrics.records_received.get() > i,
        )
        .await;
    }
    let metrics = daemon
        .metrics()
        .registered("busy")
        .expect("a registered source");
    wait_until("the channel to fill", Duration::from_secs(30), || {
        metrics.channel_records.get() >= 1
    })
    .await;
    let response = client
        .http
        .post(format!("{}/webhooks/busy", client.base))
        .header("content-type", "application/json")
        .body(r#"{"id":"evt_3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "3");

    broker.up().await;
    for request in waiting {
        assert_eq!(request.await.unwrap(), 200, "answered once Kafka has it");
    }
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(outcome_count(&scrape, "busy", "overloaded"), 1);
    assert_eq!(outcome_count(&scrape, "busy", "accepted"), 3);
    assert_eq!(broker.read("busy").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_can_have_their_own_listen_address() {
    let broker = Broker::kafka();
    broker.create_topic("apart").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(
        &webhook_config(
            &broker.brokers(),
            state.path(),
            r#"
[sources.apart]
type = "webhook"
topic = "apart"
signature = { scheme = "none" }
"#,
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nwebhook_listen = \"127.0.0.1:0\"",
        ),
    )
    .await;
    assert_ne!(daemon.webhook_address(), daemon.metrics_address());
    let client = Client::new(&daemon);
    assert_eq!(client.post("/webhooks/apart", &[], "{}").await.0, 200);
    let (status, _) = http_get(&format!("http://{}/metrics", daemon.webhook_address())).await;
    assert_eq!(status, 404, "the webhook address serves only webhooks");
    let on_metrics_port = reqwest::Client::new()
        .post(format!(
            "http://{}/webhooks/apart",
            daemon.metrics_address()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(on_metrics_port.status().as_u16(), 404);
    daemon.shutdown().await;
    assert_eq!(broker.read("apart").await.len(), 1);
}

/// A sender that stalls in its body, with a `body_timeout` far longer than the shutdown may
/// take: the shutdown answers it 503 with `Retry-After` and closes its connection, and returns
/// within `kafka.flush_timeout` (plus a margin), not after the `body_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_does_not_hold_the_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
    /// What the shutdown may take: its flush deadline and a margin for the rest.
    const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
    const BODY_TIMEOUT: Duration = Duration::from_secs(120);
    const _: () = assert!(
        BODY_TIMEOUT.as_secs() > SHUTDOWN_BOUND.as_secs()
            && SHUTDOWN_BOUND.as_secs() > FLUSH_TIMEOUT.as_secs()
    );
    let broker = Broker::kafka();
    broker.create_topic("slow").await;
    let state = tempfile::tempdir().unwrap();
    // One request at a time: a request refused as overloaded shows the stalled one is in its
    // body.
    let toml = webhook_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.slow]
type = "webhook"
topic = "slow"
signature = {{ scheme = "none" }}
body_timeout = "{}s"
max_concurrent_requests = 1
retry_after = "7s"
"#,
            BODY_TIMEOUT.as_secs()
        ),
    )
    .replace(
        "flush_timeout = \"5s\"",
        &format!("flush_timeout = \"{}s\"", FLUSH_TIMEOUT.as_secs()),
    );
    let daemon = start_daemon(&toml).await;
    let client = Client::new(&daemon);
    assert_eq!(client.post("/webhooks/slow", &[], "{}").await.0, 200);

    // Headers and part of the announced body, then silence.
    let mut stalled = tokio::net::TcpStream::connect(daemon.webhook_address())
        .await
        .unwrap();
    stalled
        .write_all(
            b"POST /webhooks/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"half\":",
        )
        .await
        .unwrap();
    // A probe of the wrong content type is answered 415 while the request slot is free, and
    // 503 once the stalled request holds it (it is then waiting for its body).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = client
            .post(
                "/webhooks/slow",
                &[("content-type", "text/plain".into())],
                "{}",
            )
            .await;
        if status == 503 {
            assert!(text.contains("too many requests at once"), "{text}");
            break;
        }
        assert_eq!(status, 415, "{text}");
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled request never reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(SHUTDOWN_BOUND, daemon.shutdown()).await;
    let took = started.elapsed();
    assert!(
        stopped.is_ok(),
        "the shutdown still ran after {took:?}: it waited on a request whose body never came \
         (body_timeout {BODY_TIMEOUT:?}, flush_timeout {FLUSH_TIMEOUT:?})"
    );
    // The shutdown waited for every connection: the stalled one has its answer and is closed.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled connection is still open after the shutdown");
    read.expect("the stalled connection was answered, not reset");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 503"),
        "the stalled sender is told to retry: {answer:?}"
    );
    assert!(answer.contains("\r\nretry-after: 7\r\n"), "{answer:?}");
    assert!(answer.contains("shutting down"), "{answer:?}");
    assert_eq!(
        broker.read("slow").await.len(),
        1,
        "only the complete request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_request_replayed_under_a_new_delivery_id_is_a_duplicate() {
    let broker = Broker::mock();
    broker.create_topic("github").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&webhook_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.github]
type = "webhook"
topic = "github"
signature = {{ scheme = "github", secrets = ["{GITHUB_SECRET}"] }}
"#
        ),
    ))
    .await;
    let client = Client::new(&daemon);
    let push = r#"{"ref":"refs/heads/main","after":"abc"}"#;
    assert_eq!(
        client.github("delivery-1", push, GITHUB_SECRET).await.0,
        200
    );
    // A captured request: the same signed body, a delivery id of the attacker's choosing.
    let (status, text) = client.github("delivery-forged", push, GITHUB_SECRET).await;
    assert_eq!((status, text.trim()), (200, "duplicate"));
    // Another body is another event.
    let other = r#"{"ref":"refs/heads/main","after":"def"}"#;
    assert_eq!(
        client.github("delivery-2", other, GITHUB_SECRET).await.0,
        200
    );
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(outcome_count(&scrape, "github", "duplicate"), 1);
    assert_eq!(outcome_count(&scrape, "github", "accepted"), 2);
    assert_eq!(
        sorted_keys(&broker, "github").await,
        ["delivery-1", "delivery-2"]
    );
}
