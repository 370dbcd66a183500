//! The CouchDB preset against a real CouchDB-compatible server (express-pouchdb over PouchDB,
//! `tests/servers/couchdb`), with `kill -9` mid-stream and resume.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use tributary::state::checkpoint::FileStore;

use super::{common::process::*, common::*, create_topics, payload, read, stream_toml};

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
    /// Documents written only after the kill.
    const HELD: usize = 500;
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
    // More changes arrive while the daemon reads, and the last `HELD` only after the kill:
    // the kill lands in a live stream, before its end.
    let killed = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let (couch, killed) = (couch.client(), Arc::clone(&killed));
        tokio::spawn(async move {
            for start in (FIRST..TOTAL - HELD).step_by(50) {
                couch.write("orders", start..start + 50).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            killed.notified().await;
            couch.write("orders", TOTAL - HELD..TOTAL).await;
        })
    };
    first.wait_for_produced("couch", FIRST as u64 + 300).await;
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    killed.notify_one();
    let stored: u64 = FileStore::open(dir.path().join("state"))
        .unwrap()
        .load("couch")
        .unwrap()
        .expect("a position was committed before the kill")
        .as_str()
        .parse()
        .expect("PouchDB's seq is a number");
    assert!(
        stored < (TOTAL - HELD) as u64,
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
