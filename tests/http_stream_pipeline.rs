//! `type = "http_stream"` end to end, against Apache Kafka and real servers on 127.0.0.1: a
//! CouchDB-compatible server (express-pouchdb, installed by `tests/servers/couchdb/install.sh`)
//! with `kill -9` mid-stream and resume, recorded Kubernetes watch streams served by a test
//! server (no cluster is available: see `tests/data/kubernetes-watch/SOURCE.txt`), JSON text
//! sequences, heartbeats and `read_timeout`.
//!
//! One Apache Kafka node serves the whole suite (each test has its own topics): starting one per
//! test would take most of the suite's time on two cores.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use common::{api::ApiServer, kafka::KafkaCluster, process::*, *};
use futures::StreamExt as _;
use tributary::{
    cli::demo::kafka_admin::{self, ConsumedRecord},
    state::checkpoint::FileStore,
};

/// The suite's Apache Kafka node.
fn kafka() -> &'static str {
    static KAFKA: OnceLock<KafkaCluster> = OnceLock::new();
    KAFKA
        .get_or_init(|| {
            blocking(|| KafkaCluster::start(1))
                .unwrap_or_else(|e| panic!("Apache Kafka did not start: {e}"))
        })
        .bootstrap_servers()
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
// CouchDB

/// The CouchDB-compatible server of `tests/servers/couchdb` as a child process.
struct CouchDb {
    child: Child,
    base: String,
}

impl CouchDb {
    fn start() -> Self {
        let tools = std::env::var("TRIBUTARY_TOOLS_DIR").map_or_else(
            |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tributary"),
            PathBuf::from,
        );
        let server = tools.join("couchdb/server.js");
        assert!(
            server.exists() && tools.join("couchdb/node_modules").exists(),
            "the CouchDB test server is not installed at {}: run `bash tests/servers/couchdb/install.sh`",
            server.display()
        );
        let port = free_port();
        let mut child = Command::new("node")
            .arg(&server)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node (install Node.js 18+)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            format!("listening {port}"),
            "the server started"
        );
        CouchDb {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
    }

    /// A client of this server (for a writer task).
    fn client(&self) -> CouchDbClient {
        CouchDbClient {
            base: self.base.clone(),
        }
    }
}

impl Drop for CouchDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn couchdb_changes_survive_kill_9_mid_stream_and_resume_from_the_stored_seq() {
    const FIRST: usize = 1_000;
    const TOTAL: usize = 3_000;
    let couch = CouchDb::start();
    couch
        .request(reqwest::Method::PUT, "/orders", serde_json::json!({}))
        .await;
    couch.client().write("orders", 0..FIRST).await;
    create_topics("couch").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = stream_toml(
        &dir.path().join("state"),
        "couch",
        &format!("{}/orders/_changes?include_docs=true", couch.base),
        "preset = \"couchdb\"\nread_timeout = \"3s\"",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = write_config(dir.path(), &toml);

    let mut first = Daemon::spawn(&config, port);
    first.wait_for_produced("couch", FIRST as u64).await;
    first
        .wait_for_metric("tributary_checkpoint_commits_total", "couch", 1)
        .await;
    // More changes arrive while the daemon reads: the kill lands in a live stream.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (couch, writing) = (couch.client(), Arc::clone(&writing));
        tokio::spawn(async move {
            for start in (FIRST..TOTAL).step_by(50) {
                couch.write("orders", start..start + 50).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            writing.store(false, Ordering::SeqCst);
        })
    };
    first.wait_for_produced("couch", FIRST as u64 + 300).await;
    assert!(
        writing.load(Ordering::SeqCst),
        "the kill came while changes were still being written"
    );
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    let stored: u64 = FileStore::open(dir.path().join("state"))
        .unwrap()
        .load("couch")
        .unwrap()
        .expect("a position was committed before the kill")
        .as_str()
        .parse()
        .expect("PouchDB's seq is a number");
    assert!(
        stored < TOTAL as u64,
        "the stored seq {stored} is mid-stream"
    );
    writer.await.unwrap();

    let mut second = Daemon::spawn(&config, port);
    second
        .wait_for_produced("couch", TOTAL as u64 - stored)
        .await;
    assert!(second.terminate().await.success());

    let records = read("couch").await;
    let mut copies: HashMap<String, Vec<u64>> = HashMap::new();
    for record in &records {
        let key = String::from_utf8(record.key.clone().expect("keyed by doc id")).unwrap();
        let seq: u64 = record
            .header("tributary.event_id")
            .expect("the seq is the event id")
            .parse()
            .unwrap();
        let value = payload(record);
        assert_eq!(value["id"], key.as_str(), "the key is the document id");
        assert_eq!(value["doc"]["_id"], key.as_str(), "include_docs was kept");
        copies.entry(key).or_default().push(seq);
    }
    let lost: Vec<usize> = (0..TOTAL)
        .filter(|n| !copies.contains_key(&format!("doc-{n:05}")))
        .collect();
    assert!(lost.is_empty(), "{} documents lost: {lost:?}", lost.len());
    for (doc, seqs) in &copies {
        assert!(seqs.len() <= 2, "{doc} produced {} times", seqs.len());
        if seqs.len() == 2 {
            assert!(
                seqs[0] > stored,
                "{doc} (seq {}) was at or before the stored position {stored}, yet produced again",
                seqs[0]
            );
        }
    }
    let duplicated = copies.values().filter(|s| s.len() == 2).count();
    eprintln!(
        "kill -9 with seq {stored} stored of {TOTAL}: {duplicated} duplicates after it, 0 lost"
    );
}

/// Writes to a running CouchDB-compatible server.
struct CouchDbClient {
    base: String,
}

impl CouchDbClient {
    /// Writes documents `doc-<n>` for each n of `range` in one `_bulk_docs`.
    async fn write(&self, db: &str, range: std::ops::Range<usize>) {
        let docs: Vec<serde_json::Value> = range
            .map(|n| serde_json::json!({ "_id": format!("doc-{n:05}"), "n": n }))
            .collect();
        let response = reqwest::Client::new()
            .post(format!("{}/{db}/_bulk_docs", self.base))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "docs": docs }).to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn recorded(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/kubernetes-watch")
            .join(file),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_lists_then_watches_moves_on_bookmarks_and_relists_after_410() {
    create_topics("pods").await;
    // The recorded API server: the list, then watches by resourceVersion.
    let lists = Arc::new(std::sync::Mutex::new(vec![
        recorded("list-2000.json"),
        recorded("list-1000.json"),
    ]));
    let server = ApiServer::start(move |request| {
        let lists = Arc::clone(&lists);
        async move {
            let ndjson = "application/json";
            match (request.param("watch"), request.param("resourceVersion")) {
                (None, _) => streamed(
                    ndjson,
                    vec![now(&lists.lock().unwrap().pop().unwrap())],
                    false,
                ),
                // The API server ends a watch after a while; the client watches again.
                (Some(_), Some(v)) if v == "1000" => streamed(
                    ndjson,
                    vec![now(&recorded("watch-from-1000.ndjson"))],
                    false,
                ),
                (Some(_), Some(v)) if v == "1012" => streamed(
                    ndjson,
                    vec![now(&recorded("watch-from-1012-expired.ndjson"))],
                    true,
                ),
                (Some(_), Some(v)) if v == "2000" => {
                    streamed(ndjson, vec![now(&recorded("watch-from-2000.ndjson"))], true)
                }
                other => panic!("unexpected watch {other:?}"),
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = stream_toml(
        &dir.path().join("state"),
        "pods",
        &format!("{}/api/v1/namespaces/shop/pods", server.base),
        "preset = \"kubernetes\"\nauth = { type = \"bearer\", token = \"sa-token-1234\" }",
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = write_config(dir.path(), &toml);
    let log = dir.path().join("daemon.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let mut daemon = Daemon::spawn_with(&config, port, |command| {
        command.env("RUST_LOG", "warn").stderr(stderr);
    });
    // 3 listed + 6 watched + 3 relisted + 2 watched.
    daemon.wait_for_produced("pods", 14).await;
    // The file store is read anew each time: an open store keeps what it read.
    let stored = || {
        FileStore::open(dir.path().join("state"))
            .unwrap()
            .load("pods")
            .unwrap()
            .map(|p| p.0.to_string())
    };
    wait_until(
        "the bookmark's resourceVersion stored",
        Duration::from_secs(30),
        || stored() == Some("2050".into()),
    )
    .await;
    let scrape = daemon.scrape().await.unwrap();
    assert_eq!(metric(&scrape, "tributary_relists_total", "pods"), 2);
    assert!(daemon.terminate().await.success());

    let asked: Vec<(Option<String>, Option<String>, Option<String>)> = server
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.path(), "/api/v1/namespaces/shop/pods");
            assert_eq!(r.header("authorization"), Some("Bearer sa-token-1234"));
            (
                r.param("watch"),
                r.param("resourceVersion"),
                r.param("allowWatchBookmarks"),
            )
        })
        .collect();
    let watch = |version: &str| {
        (
            Some("1".to_owned()),
            Some(version.to_owned()),
            Some("true".to_owned()),
        )
    };
    assert_eq!(
        asked,
        vec![
            (None, None, None),
            watch("1000"),
            watch("1012"),
            (None, None, None),
            watch("2000"),
        ],
        "list, watch from the list, watch on from the last event, relist after 410, watch again"
    );

    let records = read("pods").await;
    let seen: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            let value = payload(r);
            (
                value["type"].as_str().unwrap().to_owned(),
                value["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
            )
        })
        .collect();
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "ADDED", "ADDED", "ADDED", // the first list
            "ADDED", "MODIFIED", "MODIFIED", "DELETED", "ADDED", "MODIFIED", // the watch
            "ADDED", "ADDED", "ADDED", // the relist after 410
            "MODIFIED", "ADDED", // the second watch
        ],
        "no BOOKMARK and no ERROR became a record"
    );
    assert!(
        seen.iter().all(|(_, _, key)| key.starts_with("0f6f2a3e-")),
        "keyed by the object's uid"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("410") && log.contains("listing the collection"),
        "the log says the watch expired and the source listed again:\n{log}"
    );
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
        match request.param("since") {
            // One record, then silence: no heartbeat, no end.
            None => streamed("application/x-ndjson", vec![now("{\"seq\":41}\n")], true),
            Some(_) => streamed("application/x-ndjson", vec![now("{\"seq\":42}\n")], true),
        }
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
async fn kubernetes_watch_answered_http_410_relists_from_a_start_position() {
    create_topics("gone").await;
    let server = ApiServer::start(|request| async move {
        match (request.param("watch"), request.param("resourceVersion")) {
            (None, _) => streamed("application/json", vec![now(&recorded("list-1000.json"))], false),
            // The API server refuses a watch from a compacted version outright.
            (Some(_), Some(v)) if v == "500" => common::api::json(
                410,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 500 (990)","reason":"Expired","code":410}"#,
                &[],
            ),
            (Some(_), Some(v)) if v == "1000" => {
                streamed("application/json", vec![now(&recorded("watch-from-1000.ndjson"))], true)
            }
            other => panic!("unexpected request {other:?}"),
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&stream_toml(
        state.path(),
        "gone",
        &format!("{}/api/v1/namespaces/shop/pods", server.base),
        "preset = \"kubernetes\"\nstart_from = \"500\"",
    ))
    .await;
    // 3 listed + 6 watched.
    wait_for_acknowledged(&daemon, "gone", 9).await;
    let relists = daemon.metrics().registered("gone").unwrap().relists.get();
    daemon.shutdown().await;
    assert_eq!(relists, 1);
    let asked: Vec<(Option<String>, Option<String>)> = server
        .requests()
        .iter()
        .map(|r| (r.param("watch"), r.param("resourceVersion")))
        .collect();
    let watch = |v: &str| (Some("1".to_owned()), Some(v.to_owned()));
    assert_eq!(asked, vec![watch("500"), (None, None), watch("1000")]);
    let types: Vec<String> = read("gone")
        .await
        .iter()
        .map(|r| payload(r)["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "ADDED", "ADDED", "ADDED", "ADDED", "MODIFIED", "MODIFIED", "DELETED", "ADDED",
            "MODIFIED"
        ]
    );
}
