//! `type = "http_stream"` end to end, against Apache Kafka and real servers on 127.0.0.1: a
//! CouchDB-compatible server (express-pouchdb, installed by `tests/servers/couchdb/install.sh`)
//! with `kill -9` mid-stream and resume, recorded Kubernetes watch streams served by a test
//! server (no cluster is available: see `tests/data/kubernetes-watch/SOURCE.txt`), JSON text
//! sequences, heartbeats, `read_timeout` and redirects. The CouchDB and Kubernetes tests are in
//! `http_stream_pipeline/`.
//!
//! One Apache Kafka node serves the whole suite (each test has its own topics): starting one per
//! test would take most of the suite's time on two cores.

mod common;
#[path = "http_stream_pipeline/couchdb.rs"]
mod couchdb;
#[path = "http_stream_pipeline/kubernetes.rs"]
mod kubernetes;

use std::{path::Path, sync::OnceLock, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use common::{api::ApiServer, kafka::KafkaCluster, *};
use futures::StreamExt as _;
use tributary::cli::demo::kafka_admin::{self, ConsumedRecord};

static KAFKA: OnceLock<KafkaCluster> = OnceLock::new();

/// The suite's Apache Kafka node, started by the first test that asks. A static is never
/// dropped: the node is killed, and its folder removed, when the test binary exits.
fn kafka() -> &'static str {
    KAFKA
        .get_or_init(|| {
            let cluster = blocking(|| KafkaCluster::start(1))
                .unwrap_or_else(|e| panic!("Apache Kafka did not start: {e}"));
            // SAFETY: registers a function with no arguments that never unwinds (see below).
            unsafe { libc::atexit(stop_kafka) };
            cluster
        })
        .bootstrap_servers()
}

/// Kills the suite's Kafka node and removes its folder (the harness exits through
/// `std::process::exit`, which runs `atexit` functions).
extern "C" fn stop_kafka() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(cluster) = KAFKA.get() {
            let _ = cluster.kill(None);
            let _ = std::fs::remove_dir_all(cluster.dir());
        }
    });
}

/// Creates `topic` and `topic.dlq`, one partition each (so that order can be checked).
async fn create_topics(topic: &str) {
    let dlq = format!("{topic}.dlq");
    kafka_admin::create_topics(kafka(), &[(topic, 1), (&dlq, 1)], 1)
        .await
        .unwrap_or_else(|e| panic!("create `{topic}`: {e}"));
}

async fn read(topic: &str) -> Vec<ConsumedRecord> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        kafka_admin::read_topic(kafka(), &topic, Duration::from_secs(60))
    })
    .await
    .unwrap()
    .expect("read the topic back")
}

fn payload(record: &ConsumedRecord) -> serde_json::Value {
    serde_json::from_slice(&record.payload).expect("a JSON record")
}

/// A daemon config with one `http_stream` source `name` (topic `name`) reading `url`.
fn stream_toml(state: &Path, name: &str, url: &str, extra: &str) -> String {
    daemon_config(
        kafka(),
        state,
        &format!(
            r#"
[sources.{name}]
type = "http_stream"
url = "{url}"
topic = "{name}"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
{extra}
"#
        ),
    )
}

/// A streamed answer: `chunks`, one by one, then (with `stay_open`) nothing more, ever.
fn streamed(content_type: &str, chunks: Vec<(Duration, String)>, stay_open: bool) -> Response {
    let body = futures::stream::iter(chunks)
        .then(|(delay, chunk)| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::io::Error>(Bytes::from(chunk))
        })
        .chain(futures::stream::pending().take(usize::from(stay_open)));
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from_stream(body))
        .unwrap()
}

fn now(chunk: &str) -> (Duration, String) {
    (Duration::ZERO, chunk.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Framing, dead letters, heartbeats and read_timeout (a test server on 127.0.0.1)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_seq_records_dead_letters_and_truncation_then_resume_in_a_header() {
    create_topics("seq").await;
    let long = format!("\x1e{{\"seq\":5,\"pad\":\"{}\"}}\n", "x".repeat(2_000));
    let first = vec![
        now("\x1e{\"seq\":1,\"v\":\"a\"}\n\x1e{\"seq\":2,"),
        // The second record's text continues over two chunks and two lines.
        now("\n\"v\":\"b\"}\n"),
        // Cut short: the next RS comes before its LF (RFC 7464 §2.1).
        now("\x1e{\"seq\":3,\"v\":\x1e{not json}\n"),
        now(&long),
        now("\x1e{\"seq\":6,\"v\":\"f\"}\n"),
    ];
    let server = ApiServer::start(move |request| {
        let first = first.clone();
        async move {
            match request.header("x-resume-from") {
                None => streamed("application/json-seq", first, false),
                Some(_) => streamed(
                    "application/json-seq",
                    vec![now("\x1e{\"seq\":7,\"v\":\"g\"}\n")],
                    true,
                ),
            }
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&stream_toml(
        state.path(),
        "seq",
        &format!("{}/feed", server.base),
        "position = \"/seq\"\nresume_header = \"X-Resume-From\"\nkey = \"{/seq}-{/v}\"\nmax_line_bytes = 1024",
    ))
    .await;
    // 4 records + 2 dead letters (the invalid text, the stub of the long one).
    wait_for_acknowledged(&daemon, "seq", 6).await;
    let metrics = daemon.metrics().registered("seq").unwrap();
    assert_eq!(metrics.truncated_records.get(), 1);
    assert_eq!(metrics.oversized_lines.get(), 1);
    daemon.shutdown().await;

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one reconnect after the response ended");
    assert_eq!(requests[1].header("x-resume-from"), Some("6"));
    let records = read("seq").await;
    let keys: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        keys,
        ["1-a", "2-b", "6-f", "7-g"],
        "the key template filled"
    );
    let dead: Vec<String> = read("seq.dlq")
        .await
        .iter()
        .map(|r| r.header("tributary.error_kind").unwrap().to_owned())
        .collect();
    assert_eq!(dead, ["invalid_json", "line_too_large"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_quiet_stream_open_past_read_timeout() {
    create_topics("beat").await;
    // 1.2 s without a record, but an empty line every 150 ms; read_timeout is 500 ms.
    let mut chunks = vec![now("{\"seq\":1}\n")];
    chunks.extend((0..8).map(|_| (Duration::from_millis(150), "\n".to_owned())));
    chunks.push(now("{\"seq\":2}\n"));
    // And heartbeats on, for longer than the test runs.
    chunks.extend((0..400).map(|_| (Duration::from_millis(150), "\n".to_owned())));
    let server = ApiServer::start(move |_| {
        let chunks = chunks.clone();
        async move { streamed("application/x-ndjson", chunks, true) }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&stream_toml(
        state.path(),
        "beat",
        &format!("{}/feed", server.base),
        "position = \"/seq\"\nresume_param = \"since\"\nread_timeout = \"500ms\"",
    ))
    .await;
    wait_for_acknowledged(&daemon, "beat", 2).await;
    let reconnects = daemon
        .metrics()
        .registered("beat")
        .unwrap()
        .reconnects
        .get();
    daemon.shutdown().await;
    assert_eq!(server.request_count(), 1, "the stream was never reopened");
    assert_eq!(reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_reopened_after_read_timeout_from_its_position() {
    create_topics("silent").await;
    let server = ApiServer::start(move |request| async move {
        // Each answer: the records after `since`, then silence (no heartbeat, no end).
        let after = match request.param("since").as_deref() {
            None => "{\"seq\":41}\n",
            Some("41") => "{\"seq\":42}\n",
            Some(_) => "",
        };
        streamed("application/x-ndjson", vec![now(after)], true)
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&stream_toml(
        state.path(),
        "silent",
        &format!("{}/feed?format=ndjson", server.base),
        "position = \"/seq\"\nresume_param = \"since\"\nread_timeout = \"300ms\"",
    ))
    .await;
    wait_for_acknowledged(&daemon, "silent", 2).await;
    let reconnects = daemon
        .metrics()
        .registered("silent")
        .unwrap()
        .reconnects
        .get();
    daemon.shutdown().await;
    let requests = server.requests();
    assert_eq!(requests[1].param("since").as_deref(), Some("41"));
    assert_eq!(requests[1].param("format").as_deref(), Some("ndjson"));
    assert!(reconnects >= 1);
    let seqs: Vec<i64> = read("silent")
        .await
        .iter()
        .map(|r| payload(r)["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [41, 42]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_keep_credentials_on_their_origin() {
    use tributary::runtime::health::SourceState;
    create_topics("moved").await;
    create_topics("away").await;
    // Another origin (another port): it must never see the source's credentials.
    let elsewhere = ApiServer::start(|_| async {
        streamed("application/x-ndjson", vec![now("{\"seq\":1}\n")], true)
    })
    .await;
    let target = format!("{}/feed", elsewhere.base);
    let origin = ApiServer::start(move |request| {
        let target = target.clone();
        async move {
            match request.path() {
                // Same origin: followed, with the credentials.
                "/old" => common::api::status(307, &[("location", "/new".to_owned())]),
                "/new" => streamed("application/x-ndjson", vec![now("{\"seq\":1}\n")], true),
                _ => common::api::status(302, &[("location", target)]),
            }
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let auth = "auth = { type = \"bearer\", token = \"stream-secret-token\" }";
    let mut toml = stream_toml(state.path(), "moved", &format!("{}/old", origin.base), auth);
    toml.push_str(&format!(
        "\n[sources.away]\ntype = \"http_stream\"\nurl = \"{}/leave\"\ntopic = \"away\"\n{auth}\n",
        origin.base
    ));
    let daemon = start_daemon(&toml).await;
    wait_for_acknowledged(&daemon, "moved", 1).await;
    wait_until(
        "the redirected source to fail",
        Duration::from_secs(30),
        || matches!(daemon.health().get("away"), Some(SourceState::Failed(_))),
    )
    .await;
    let Some(SourceState::Failed(reason)) = daemon.health().get("away") else {
        unreachable!()
    };
    daemon.shutdown().await;
    assert!(
        reason.contains("302") && reason.contains(&elsewhere.base),
        "the failure names the redirect and its target: {reason}"
    );
    assert_eq!(
        elsewhere.request_count(),
        0,
        "another origin was never asked"
    );
    let followed: Vec<(String, Option<String>)> = origin
        .requests()
        .iter()
        .map(|r| {
            (
                r.path().to_owned(),
                r.header("authorization").map(str::to_owned),
            )
        })
        .collect();
    let bearer = Some("Bearer stream-secret-token".to_owned());
    assert!(followed.contains(&("/new".to_owned(), bearer.clone())));
    assert!(followed.contains(&("/leave".to_owned(), bearer)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_opens_the_stream_once_and_reads_nothing() {
    create_topics("probed").await;
    let server = ApiServer::start(|request| async move {
        match request.path() {
            "/feed" => streamed("application/x-ndjson", vec![now("{\"seq\":1}\n")], true),
            _ => common::api::status(404, &[]),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = stream_toml(
        &dir.path().join("state"),
        "probed",
        &format!("{}/feed", server.base),
        "position = \"/seq\"\nresume_param = \"since\"\nstart_from = \"7\"",
    );
    toml.push_str(&format!(
        "\n[sources.missing]\ntype = \"http_stream\"\nurl = \"{}/nothing\"\ntopic = \"probed\"\n",
        server.base
    ));
    let output = tokio::process::Command::new(process::binary())
        .args(["check", "--connect", "--config"])
        .arg(process::write_config(dir.path(), &toml))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "one URL fails:\n{stdout}");
    let line = |what: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(what))
            .unwrap_or_else(|| panic!("no `{what}` line in:\n{stdout}"))
            .to_owned()
    };
    assert!(line("url (probed)").contains("HTTP 200"), "{stdout}");
    assert!(line("url (missing)").contains("HTTP 404"), "{stdout}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one request per source, no retry");
    let probed = requests.iter().find(|r| r.path() == "/feed").unwrap();
    assert_eq!(
        probed.param("since").as_deref(),
        Some("7"),
        "asked as a new source would"
    );
    assert!(read("probed").await.is_empty(), "nothing was produced");
}
