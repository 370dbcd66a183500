//! The Kubernetes preset on recorded watch streams (`tests/data/kubernetes-watch/`) served by a
//! test server: list then watch, bookmarks, and the relist after 410 Gone.

use std::{path::Path, sync::Arc, time::Duration};

use tributary::state::checkpoint::FileStore;

use super::{
    common::{api::ApiServer, process::*, *},
    create_topics, now, payload, read, stream_toml, streamed,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_watch_answered_http_410_relists_in_pages_from_a_start_position() {
    create_topics("gone").await;
    // The recorded list in two pages, as the API server answers `limit` and `continue`.
    let list: serde_json::Value = serde_json::from_str(&recorded("list-1000.json")).unwrap();
    let page = |items: &[serde_json::Value], token: Option<&str>| {
        let mut page = list.clone();
        page["items"] = serde_json::Value::Array(items.to_vec());
        if let Some(token) = token {
            page["metadata"]["continue"] = token.into();
        }
        page.to_string()
    };
    let items = list["items"].as_array().unwrap();
    let pages = Arc::new([
        page(&items[..2], Some("c2hvcC9wb2RzLzI")),
        page(&items[2..], None),
    ]);
    let server = ApiServer::start(move |request| {
        let pages = Arc::clone(&pages);
        async move {
        match (request.param("watch"), request.param("resourceVersion")) {
            (None, _) => {
                let index = usize::from(request.param("continue").is_some());
                streamed("application/json", vec![now(&pages[index])], false)
            }
            // The API server refuses a watch from a compacted version outright.
            (Some(_), Some(v)) if v == "500" => super::common::api::json(
                410,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 500 (990)","reason":"Expired","code":410}"#,
                &[],
            ),
            (Some(_), Some(v)) if v == "1000" => {
                streamed("application/json", vec![now(&recorded("watch-from-1000.ndjson"))], true)
            }
            other => panic!("unexpected request {other:?}"),
        }
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
    let asked: Vec<[Option<String>; 4]> = server
        .requests()
        .iter()
        .map(|r| {
            [
                r.param("watch"),
                r.param("resourceVersion"),
                r.param("limit"),
                r.param("continue"),
            ]
        })
        .collect();
    let watch = |v: &str| [Some("1".to_owned()), Some(v.to_owned()), None, None];
    let list = |token: Option<&str>| [None, None, Some("500".to_owned()), token.map(str::to_owned)];
    assert_eq!(
        asked,
        vec![
            watch("500"),
            list(None),
            list(Some("c2hvcC9wb2RzLzI")),
            watch("1000")
        ]
    );
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
