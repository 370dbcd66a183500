//! End to end: `rest` sources with `format = "feed"` (RSS 2.0, Atom, JSON Feed) and
//! `format = "xml"` against HTTP servers on 127.0.0.1 serving the documents in
//! tests/data/feeds/ → Apache Kafka, read back: every entry once across polls, a changed feed,
//! conditional requests and a restart; an XML API mapped to JSON, with a malformed page that
//! fails the poll.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{body::Body, response::Response};
use common::{api::*, *};
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/feeds/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn document(content_type: &str, body: String, etag: Option<String>) -> Response {
    let mut response = Response::builder()
        .status(200)
        .header("content-type", content_type);
    if let Some(etag) = etag {
        response = response.header("etag", etag);
    }
    response.body(Body::from(body)).unwrap()
}

/// The three feeds, by path: (path, fixture stem, content type).
const FEEDS: [(&str, &str, &str); 3] = [
    ("/rss", "rss2", "application/rss+xml"),
    ("/atom", "atom", "application/atom+xml"),
    ("/json", "jsonfeed", "application/feed+json"),
];

fn feed_sources(base: &str) -> String {
    FEEDS
        .iter()
        .map(|(path, _, _)| {
            let name = &path[1..];
            format!(
                r#"
[sources.{name}]
type = "rest"
format = "feed"
url = "{base}{path}"
topic = "{name}"
interval = "100ms"
"#
            )
        })
        .collect()
}

/// The (id, updated) of every record of `topic`, in the order Kafka holds them per key.
async fn entries(broker: &Broker, topic: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = broker
        .read(topic)
        .await
        .iter()
        .map(|record| {
            let entry: Value = serde_json::from_slice(&record.payload).unwrap();
            let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
            assert_eq!(entry["id"], key.as_str(), "the key is the entry's id");
            assert_eq!(record.header("tributary.event_id"), Some(key.as_str()));
            (key, entry["updated"].clone())
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1.to_string()).cmp(&(&b.0, b.1.to_string())));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_atom_and_json_feed_entries_are_produced_once_across_polls_a_new_version_and_a_restart()
{
    // Version 1 until the test moves to 2; while `conditional` holds, a request that carries
    // the current ETag is answered 304.
    let version = Arc::new(AtomicUsize::new(1));
    let conditional = Arc::new(AtomicBool::new(true));
    let (server_version, server_conditional) = (Arc::clone(&version), Arc::clone(&conditional));
    let server = ApiServer::start(move |request| {
        let version = server_version.load(Ordering::SeqCst);
        let conditional = server_conditional.load(Ordering::SeqCst);
        async move {
            let Some((_, stem, content_type)) = FEEDS.iter().find(|f| f.0 == request.path()) else {
                return status(404, &[]);
            };
            let etag = format!("\"{stem}-v{version}\"");
            if conditional && request.header("if-none-match") == Some(etag.as_str()) {
                return status(304, &[("etag", etag)]);
            }
            let extension = if *stem == "jsonfeed" { "json" } else { "xml" };
            document(
                content_type,
                fixture(&format!("{stem}-{version}.{extension}")),
                Some(etag),
            )
        }
    })
    .await;
    let broker = Broker::kafka();
    for (path, _, _) in FEEDS {
        broker.create_topic(&path[1..]).await;
    }
    let state = tempfile::tempdir().unwrap();
    let config = daemon_config(&broker.brokers(), state.path(), &feed_sources(&server.base));

    let daemon = start_daemon(&config).await;
    // Version 1: every entry (the RSS page with no date too); then the unchanged feed is
    // answered 304.
    for (source, count) in [("rss", 4), ("atom", 3), ("json", 3)] {
        wait_for_metric(&daemon, "tributary_records_produced_total", source, count).await;
        wait_for_metric(&daemon, "tributary_http_not_modified_total", source, 1).await;
    }
    // Version 2, served in full at every poll from now on (the ETag is not honoured).
    conditional.store(false, Ordering::SeqCst);
    version.store(2, Ordering::SeqCst);
    let polls = |daemon: &tributary::runtime::daemon::RunningDaemon, source: &str| {
        process::metric(
            &daemon.metrics().render(),
            "tributary_polls_total{outcome=\"complete\"",
            source,
        )
    };
    let before: BTreeMap<&str, u64> = ["rss", "atom", "json"]
        .into_iter()
        .map(|source| (source, polls(&daemon, source)))
        .collect();
    // RSS: two new items, one at the boundary's very second; Atom: a new release and an
    // edited one (a later `updated`); JSON Feed: one new item.
    for (source, count) in [("rss", 6), ("atom", 5), ("json", 4)] {
        wait_for_metric(&daemon, "tributary_records_produced_total", source, count).await;
        // Three more complete polls of the whole version 2: each entry was seen already.
        wait_for_metric(
            &daemon,
            "tributary_polls_total{outcome=\"complete\"",
            source,
            before[source] + 3,
        )
        .await;
        wait_for_acknowledged(&daemon, source, count).await;
    }
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    for (source, count) in [("rss", 6), ("atom", 5), ("json", 4)] {
        assert_eq!(
            process::metric(&scrape, "tributary_records_produced_total", source),
            count,
            "{source}"
        );
        assert!(process::metric(&scrape, "tributary_records_duplicate_total", source) > 0);
    }
    // Conditional requests: after the first answer, each poll sent the ETag it was given.
    for (path, stem, _) in FEEDS {
        let requests: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect();
        assert!(requests[0].header("if-none-match").is_none());
        assert_eq!(
            requests[1].header("if-none-match"),
            Some(format!("\"{stem}-v1\"").as_str())
        );
    }

    // A restart from the stored positions (the feed unchanged, served in full) adds nothing.
    let daemon = start_daemon(&config).await;
    for source in ["rss", "atom", "json"] {
        wait_for_metric(
            &daemon,
            "tributary_polls_total{outcome=\"complete\"",
            source,
            3,
        )
        .await;
    }
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    for source in ["rss", "atom", "json"] {
        assert_eq!(
            process::metric(&scrape, "tributary_records_produced_total", source),
            0,
            "{source} after the restart"
        );
    }

    let rss = entries(&broker, "rss").await;
    let at = |t: &str| json!(t);
    assert_eq!(
        rss,
        vec![
            (
                "https://blog.example.org/?p=101".into(),
                at("2024-12-02T09:00:00Z")
            ),
            (
                "https://blog.example.org/?p=102".into(),
                at("2024-12-02T10:30:00Z")
            ),
            (
                "https://blog.example.org/?p=103".into(),
                at("2024-12-02T12:00:00Z")
            ),
            (
                "https://blog.example.org/?p=104".into(),
                at("2024-12-02T12:00:00Z")
            ),
            (
                "https://blog.example.org/?p=105".into(),
                at("2024-12-02T13:15:00Z")
            ),
            ("https://blog.example.org/about/".into(), Value::Null),
        ],
        "every RSS item once; the undated page once"
    );
    let release = |v: &str| format!("tag:github.com,2008:Repository/81234567/{v}");
    assert_eq!(
        entries(&broker, "atom").await,
        vec![
            (release("v1.2.0"), at("2024-11-20T10:00:00Z")),
            (release("v1.3.0"), at("2024-12-01T08:00:00Z")),
            (release("v1.3.1"), at("2024-12-03T16:45:12Z")),
            (release("v1.3.1"), at("2024-12-04T00:00:00Z")),
            (release("v1.4.0"), at("2024-12-05T09:00:00Z")),
        ],
        "every release once, the edited one again with its new time"
    );
    let post = |p: &str| format!("https://micro.example.net/{p}.html");
    assert_eq!(
        entries(&broker, "json").await,
        vec![
            (post("2024/11/29/210000"), at("2024-11-30T02:00:00Z")),
            (post("2024/11/30/080000"), at("2024-11-30T14:30:00Z")),
            (post("2024/12/01/120000"), at("2024-12-01T17:00:00Z")),
            (post("2024/12/02/073000"), at("2024-12-02T12:30:00Z")),
        ],
        "JSON Feed: `date_modified` is the update time, else `date_published`"
    );
    // The mapping, as documented, on one record of each kind.
    let records = broker.read("rss").await;
    let episode: Value = records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap())
        .find(|e| e["id"] == "https://blog.example.org/?p=102")
        .unwrap();
    assert_eq!(episode["title"], "Episode 12: Backpressure");
    assert_eq!(
        episode["link"],
        "https://blog.example.org/2024/12/02/episode-12/"
    );
    assert_eq!(episode["authors"][0]["name"], "Grace Hopper");
    assert_eq!(
        episode["enclosures"][0],
        json!({"url": "https://cdn.example.org/podcast/ep12.mp3", "type": "audio/mpeg", "length": 24986239})
    );
    assert_eq!(episode["feed"]["title"], "Example Engineering Blog");
    assert_eq!(episode["feed"]["type"], "rss2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xml_api_is_mapped_to_json_records_and_malformed_or_oversized_pages_fail_the_poll() {
    // Request 1: page orders-1; then a body cut off mid-element until `repaired`; then
    // orders-2 (which repeats the boundary order, `since` being inclusive).
    let repaired = Arc::new(AtomicBool::new(false));
    let server_repaired = Arc::clone(&repaired);
    let served = Arc::new(AtomicUsize::new(0));
    let server = ApiServer::start(move |request| {
        let n = if request.path() == "/orders" {
            served.fetch_add(1, Ordering::SeqCst)
        } else {
            0
        };
        let repaired = server_repaired.load(Ordering::SeqCst);
        async move {
            if request.path() == "/big-feed" {
                return document("application/rss+xml", fixture("rss2-1.xml"), None);
            }
            if request.path() != "/orders" {
                return status(404, &[]);
            }
            let body = if n == 0 {
                fixture("orders-1.xml")
            } else if !repaired {
                let full = fixture("orders-2.xml");
                full[..full.find("<Lines>").unwrap()].to_owned()
            } else {
                fixture("orders-2.xml")
            };
            document("application/xml", body, None)
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("orders").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.orders]
type = "rest"
format = "xml"
url = "{base}/orders"
topic = "orders"
records = "/OrderListResponse/Orders/Order"
key = "/@id"
interval = "100ms"
watermark = {{ field = "/UpdatedAt", param = "since" }}

# The body cap applies to feeds as received, before the mapping.
[sources.big]
type = "rest"
format = "feed"
url = "{base}/big-feed"
topic = "orders"
interval = "100ms"
max_body_bytes = 1024
"#,
            base = server.base
        ),
    ))
    .await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "orders", 2).await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"failed\"",
        "orders",
        1,
    )
    .await;
    let (code, readyz) = http_get(&format!("http://{}/readyz", daemon.metrics_address())).await;
    repaired.store(true, Ordering::SeqCst);
    wait_for_metric(&daemon, "tributary_records_produced_total", "orders", 3).await;
    wait_for_acknowledged(&daemon, "orders", 3).await;
    daemon.shutdown().await;

    assert_eq!(code, 503, "{readyz}");
    assert!(
        readyz.contains("a body larger than 1024 bytes"),
        "the feed over `max_body_bytes` fails its poll: {readyz}"
    );
    assert!(readyz.contains("not well-formed XML"), "{readyz}");
    assert!(
        readyz.contains("ends inside the element `<Order>`"),
        "the parser's message: {readyz}"
    );
    let requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/orders")
        .collect();
    assert_eq!(requests[0].param("since"), None);
    assert_eq!(
        requests[1].param("since").as_deref(),
        Some("2024-12-01T11:30:00Z"),
        "the watermark, read from the mapped XML"
    );
    let records = broker.read("orders").await;
    let by_key: BTreeMap<String, Value> = records
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                serde_json::from_slice(&r.payload).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        records.len(),
        3,
        "each order once, nothing of the capped feed: {by_key:?}"
    );
    assert_eq!(
        by_key["SO-1001"],
        json!({
            "@id": "SO-1001", "@status": "shipped",
            "Customer": {"@ref": "C-17", "#text": "Ada & Co."},
            "UpdatedAt": "2024-12-01T10:00:00Z",
            "Lines": {"Line": [{"@sku": "A-1", "@qty": "2"}, {"@sku": "B-9", "@qty": "1"}]},
            "ns2:Note": "Leave at <reception>"
        })
    );
    assert_eq!(
        by_key["SO-1002"]["Lines"],
        json!({"Line": {"@sku": "C-3", "@qty": "5"}}),
        "a single child is not an array"
    );
    assert_eq!(by_key["SO-1003"]["Customer"]["#text"], "Lovelace GmbH");
}

#[test]
fn a_feed_source_refuses_records_and_a_watermark_with_the_fix_and_an_unknown_format_is_named_with_the_formats(
) {
    let check = |source: &str| {
        let toml = daemon_config(
            "localhost:9092",
            std::path::Path::new("/tmp/unused"),
            source,
        );
        match tributary::config::parse_toml(&toml).and_then(|raw| raw.validate()) {
            Ok(_) => String::new(),
            Err(errors) => errors
                .0
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    };
    let errors = check(
        r#"
[sources.blog]
type = "rest"
format = "feed"
url = "https://blog.example.org/feed/"
topic = "blog"
records = "/items"
watermark = { field = "/updated", param = "since" }
"#,
    );
    assert!(
        errors.contains("blog") && errors.contains("records"),
        "{errors}"
    );
    assert!(errors.contains("remove `records`"), "{errors}");
    assert!(errors.contains("remove `[watermark]`"), "{errors}");
    let errors = check(
        r#"
[sources.blog]
type = "rest"
format = "yaml"
url = "https://blog.example.org/feed/"
topic = "blog"
"#,
    );
    assert!(
        errors.contains("field `sources.blog.format`")
            && errors.contains("`yaml`")
            && errors.contains("`json`, `feed`, `xml`"),
        "{errors}"
    );
    // A feed needs no `key`: it is the entry's id.
    let ok = check(
        r#"
[sources.blog]
type = "rest"
format = "feed"
url = "https://blog.example.org/feed/"
topic = "blog"
"#,
    );
    assert_eq!(ok, "");
}
