//! `tributary check --connect` through the binary, against Apache Kafka and real HTTP, SSE and
//! WebSocket servers on 127.0.0.1: the table it prints and its exit codes.

mod common;

use std::{path::Path, process::Output};

use common::{
    api::{self, ApiServer},
    free_port,
    process::{binary, write_config},
    ws::WsServer,
    Broker, Scripted, ScriptedServer,
};

const REST_KEY: &str = "rest-secret-key-7c1d";
const SSE_TOKEN: &str = "sse-secret-token-93ab";
const WS_TOKEN: &str = "ws-secret-token-51ee";

async fn check_connect(config: &Path) -> Output {
    tokio::process::Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(config)
        .output()
        .await
        .expect("run tributary check --connect")
}

/// The printed table's line for check `what` (its first column), e.g. `url (api)`.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.split("  ").next() == Some(what))
        .unwrap_or_else(|| panic!("no `{what}` line in:\n{stdout}"))
}

/// The result column (`ok`, `FAILED`, `-`, `skipped`) of a table line.
fn result(line: &str) -> &str {
    line.split_whitespace()
        .find(|word| ["ok", "FAILED", "-", "skipped"].contains(word))
        .unwrap_or_else(|| panic!("no result in `{line}`"))
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_no_secret(stdout: &str, stderr: &str) {
    for secret in [REST_KEY, SSE_TOKEN, WS_TOKEN] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "secret `{secret}` printed:\n{stdout}\n{stderr}"
        );
    }
}

fn kafka_section(brokers: &str, state: &Path, store: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
dir = "{state}"
store = "{store}"
"#,
        state = state.display()
    )
}

fn rest_source(name: &str, url: &str, topic: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "rest"
url = "{url}"
topic = "{topic}"
auth = {{ type = "api_key", query = "api_key", value = "{REST_KEY}" }}
retry = {{ max_attempts = 5, initial_delay = "10s" }}
"#
    )
}

fn sse_source(name: &str, url: &str, topic: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "sse"
url = "{url}"
topic = "{topic}"
auth = {{ type = "bearer", token = "{SSE_TOKEN}" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_against_kafka_and_answering_feeds() {
    let broker = Broker::kafka();
    for topic in ["items", "wiki", "ticks", "hooks"] {
        broker.create_topic(topic).await;
    }
    let rest = ApiServer::start(|request| async move {
        if request.param("api_key").as_deref() == Some(REST_KEY) {
            api::json(200, "[]", &[])
        } else {
            api::status(401, &[])
        }
    })
    .await;
    let sse = ScriptedServer::start(vec![Scripted::events("data: {}\n\n", true)]).await;
    let ws = WsServer::start(|_, _, _socket| async {}).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"{kafka}{rest}{sse}
[sources.ticks]
type = "websocket"
url = "{ws}/feed"
topic = "ticks"
headers = {{ Authorization = "Bearer {WS_TOKEN}" }}

[sources.hooks]
type = "webhook"
topic = "hooks"
signature = {{ scheme = "none" }}
"#,
        kafka = kafka_section(&broker.brokers(), &dir.path().join("state"), "kafka"),
        rest = rest_source("api", &format!("{}/items", rest.base), "items"),
        // A secret in the URL itself: the table prints it redacted.
        sse = sse_source(
            "wiki",
            &format!("{}/stream?api_key={SSE_TOKEN}", sse.base_url),
            "wiki"
        ),
        ws = ws.url,
    );
    let output = check_connect(&write_config(dir.path(), &toml)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    eprintln!("tributary check --connect:\n{stdout}");
    let brokers = line(&stdout, "kafka brokers");
    assert_eq!(result(brokers), "ok", "{brokers}");
    for name in ["api", "wiki", "ticks", "hooks"] {
        for what in [
            format!("topic ({name})"),
            format!("dead-letter topic ({name})"),
        ] {
            assert_eq!(result(line(&stdout, &what)), "ok", "{stdout}");
        }
    }
    let api = line(&stdout, "url (api)");
    assert_eq!(result(api), "ok", "{api}");
    assert!(api.contains("HTTP 200"), "{api}");
    let wiki = line(&stdout, "url (wiki)");
    assert_eq!(result(wiki), "ok", "{wiki}");
    assert!(wiki.contains("text/event-stream"), "{wiki}");
    assert!(wiki.contains("api_key=REDACTED"), "{wiki}");
    assert_eq!(result(line(&stdout, "url (ticks)")), "ok", "{stdout}");
    let hooks = line(&stdout, "url (hooks)");
    assert_eq!(result(hooks), "-", "{hooks}");
    assert!(hooks.contains("not applicable"), "{hooks}");
    let positions = line(&stdout, "positions topic");
    assert_eq!(result(positions), "ok", "{positions}");
    assert!(positions.contains("missing"), "{positions}");
    // Each shared source's control topic; `run` creates the missing ones. Webhooks run on
    // every replica and have none.
    for source in ["api", "wiki", "ticks"] {
        let control = line(&stdout, &format!("control topic ({source})"));
        assert_eq!(result(control), "ok", "{control}");
        assert!(
            control.contains(&format!("tributary.default.assignments.{source}"))
                && control.contains("missing; `run` creates it with 1 partition"),
            "{control}"
        );
    }
    assert!(!stdout.contains("control topic (hooks)"), "{stdout}");
    assert_no_secret(&stdout, &stderr);

    // One request each, with the source's credentials; nothing else.
    let requests = rest.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let seen = sse.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {SSE_TOKEN}").as_str())
    );
    assert_eq!(ws.accepted().len(), 1);
    // Nothing produced: the topics are still empty, and no positions topic was created.
    assert!(broker.read("items").await.is_empty());
    assert!(broker.read("wiki").await.is_empty());
    assert!(broker
        .partition_leaders("tributary.positions")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_exits_3() {
    let broker = Broker::kafka();
    // `wiki` exists, its dead-letter topic does not.
    broker.create_topics(&["wiki"], 1).await;
    let sse = ScriptedServer::start(vec![Scripted::events("", true)]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}",
        kafka_section(&broker.brokers(), &dir.path().join("state"), "file"),
        sse_source("wiki", &format!("{}/stream", sse.base_url), "wiki"),
    );
    let output = check_connect(&write_config(dir.path(), &toml)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(result(line(&stdout, "topic (wiki)")), "ok", "{stdout}");
    let dlq = line(&stdout, "dead-letter topic (wiki)");
    assert_eq!(result(dlq), "FAILED", "{dlq}");
    assert!(dlq.contains("wiki.dlq") && dlq.contains("missing"), "{dlq}");
    assert_eq!(result(line(&stdout, "url (wiki)")), "ok", "{stdout}");
    assert!(
        !stdout.contains("positions topic"),
        "no positions topic with the file store:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_positions_topic_without_compaction_exits_3() {
    let broker = Broker::kafka();
    broker.create_topic("wiki").await;
    // Created with the broker's default `cleanup.policy=delete`.
    broker.create_topics(&["tributary.positions"], 1).await;
    // A control topic of two partitions could be assigned to two replicas at once.
    broker
        .create_topics(&["tributary.default.assignments.wiki"], 2)
        .await;
    // Both partitions led before the check asks (a topic created a moment ago may not be in
    // the broker's metadata yet).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while broker
        .partition_leaders("tributary.default.assignments.wiki")
        .await
        .values()
        .filter(|leader| **leader >= 0)
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the control topic's partitions never had leaders"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let sse = ScriptedServer::start(vec![Scripted::events("", true)]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}",
        kafka_section(&broker.brokers(), &dir.path().join("state"), "kafka"),
        sse_source("wiki", &format!("{}/stream", sse.base_url), "wiki"),
    );
    let output = check_connect(&write_config(dir.path(), &toml)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    let positions = line(&stdout, "positions topic");
    assert_eq!(result(positions), "FAILED", "{positions}");
    assert!(positions.contains("cleanup.policy=`delete`"), "{positions}");
    let control = line(&stdout, "control topic (wiki)");
    assert_eq!(result(control), "FAILED", "{control}");
    assert!(control.contains("exists with 2 partitions"), "{control}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_urls_and_a_401_exit_4_with_nothing_but_the_report() {
    let broker = Broker::kafka();
    broker.create_topic("items").await;
    broker.create_topic("wiki").await;
    // Nothing listens on this port.
    let closed = format!("http://127.0.0.1:{}/items", free_port());
    let sse = ScriptedServer::start(vec![Scripted {
        status: 401,
        headers: vec![("www-authenticate", "Bearer".into())],
        body: bytes::Bytes::new(),
        stay_open: false,
    }])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}{}{}",
        kafka_section(&broker.brokers(), &dir.path().join("state"), "file"),
        rest_source("api", &closed, "items"),
        sse_source("wiki", &format!("{}/stream", sse.base_url), "wiki"),
        sse_source("feed", &closed, "wiki"),
    );
    let started = std::time::Instant::now();
    let output = check_connect(&write_config(dir.path(), &toml)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(4), "{stdout}\n{stderr}");
    assert_eq!(result(line(&stdout, "kafka brokers")), "ok", "{stdout}");
    let api = line(&stdout, "url (api)");
    assert_eq!(result(api), "FAILED", "{api}");
    assert!(api.contains("could not connect"), "{api}");
    // No retries: the source's `retry` would wait 10 s before a second attempt.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let wiki = line(&stdout, "url (wiki)");
    assert_eq!(result(wiki), "FAILED", "{wiki}");
    assert!(wiki.contains("HTTP 401"), "{wiki}");
    assert_eq!(sse.requests().len(), 1);
    let feed = line(&stdout, "url (feed)");
    assert_eq!(result(feed), "FAILED", "{feed}");
    // The cause behind the transport's "client error (Connect)".
    assert!(feed.contains("Connection refused"), "{feed}");
    assert!(stderr.contains("3 check(s) FAILED"), "{stderr}");
    // The report says it all: no log line of a library interleaves with it.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_no_secret(&stdout, &stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_exits_3_even_when_a_url_fails_too() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}",
        kafka_section(
            &format!("127.0.0.1:{}", free_port()),
            &dir.path().join("state"),
            "kafka"
        ),
        rest_source(
            "api",
            &format!("http://127.0.0.1:{}/items", free_port()),
            "items"
        ),
    );
    let output = check_connect(&write_config(dir.path(), &toml)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(result(line(&stdout, "kafka brokers")), "FAILED", "{stdout}");
    assert_eq!(result(line(&stdout, "topic (api)")), "skipped", "{stdout}");
    assert_eq!(
        result(line(&stdout, "positions topic")),
        "skipped",
        "{stdout}"
    );
    assert_eq!(result(line(&stdout, "url (api)")), "FAILED", "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_probe_answered_401_fetches_a_new_oauth2_token_and_tries_once_more() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    let broker = Broker::kafka();
    broker.create_topic("wiki").await;
    let issued = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::clone(&issued);
    // The provider issues token-1, token-2, …; the feed refuses token-1 (revoked) and takes
    // any later one.
    let server = ApiServer::start(move |request| {
        let tokens = Arc::clone(&tokens);
        async move {
            if request.path() == "/token" {
                let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                return api::json(
                    200,
                    format!(
                        r#"{{"access_token":"token-{n}","token_type":"bearer","expires_in":3600}}"#
                    ),
                    &[],
                );
            }
            if request.header("authorization") != Some("Bearer token-1") {
                return axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from(": ok\n\n"))
                    .unwrap();
            }
            api::status(401, &[])
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"{}
[sources.wiki]
type = "sse"
url = "{base}/stream"
topic = "wiki"
auth = {{ type = "oauth2_client_credentials", token_url = "{base}/token", client_id = "tributary", client_secret = "{SSE_TOKEN}" }}
"#,
        kafka_section(&broker.brokers(), &dir.path().join("state"), "file"),
        base = server.base
    );
    let output = check_connect(&write_config(dir.path(), &toml)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let wiki = line(&stdout, "url (wiki)");
    assert_eq!(result(wiki), "ok", "{wiki}");
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "one new token after the 401"
    );
    let streams = server
        .requests()
        .iter()
        .filter(|r| r.path() == "/stream")
        .count();
    assert_eq!(streams, 2);
    assert_no_secret(&stdout, &stderr);
}
