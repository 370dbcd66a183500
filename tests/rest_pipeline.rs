//! End to end: polled REST sources against HTTP APIs on 127.0.0.1 → Apache Kafka (the recorded
//! GitHub walk also librdkafka's mock cluster), read back. The recorded GitHub pages, every pagination style, the watermark, conditional
//! requests, malformed pages and the page limit.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{api::*, *};
use serde_json::{json, Value};

/// One recorded GitHub page: request target, response headers, body.
struct RecordedPage {
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// The recorded GET exchanges of the GitHub "paginate issues" scenario, in order.
fn github_pages() -> Vec<RecordedPage> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/github-rest/paginate-issues.json"
    ))
    .unwrap();
    let exchanges: Vec<Value> = serde_json::from_str(&text).unwrap();
    exchanges
        .iter()
        .filter(|x| x["method"] == "get")
        .map(|x| {
            let raw = x["rawHeaders"].as_array().unwrap();
            let headers = raw
                .chunks(2)
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap().to_owned(),
                        pair[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            RecordedPage {
                target: x["path"].as_str().unwrap().to_owned(),
                headers,
                body: x["response"].to_string(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_github_pages_are_walked_through_link_headers_mock() {
    recorded_github_pages_are_walked_through_link_headers(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_github_pages_are_walked_through_link_headers_kafka() {
    recorded_github_pages_are_walked_through_link_headers(Broker::kafka()).await;
}

async fn recorded_github_pages_are_walked_through_link_headers(broker: Broker) {
    let pages = github_pages();
    assert_eq!(pages.len(), 5, "the recording has 5 pages");
    let first_target = pages[0].target.clone();
    let expected: Vec<(String, usize)> = pages
        .iter()
        .enumerate()
        .flat_map(|(page, recorded)| {
            let issues: Vec<Value> = serde_json::from_str(&recorded.body).unwrap();
            issues
                .into_iter()
                .map(move |issue| (issue["id"].to_string(), page + 1))
        })
        .collect();
    assert_eq!(expected.len(), 13);

    let base = Arc::new(Mutex::new(String::new()));
    let served = Arc::new(pages);
    let server_base = Arc::clone(&base);
    let server = ApiServer::start(move |request| {
        let served = Arc::clone(&served);
        let base = server_base.lock().unwrap().clone();
        async move {
            let Some(page) = served.iter().find(|page| page.target == request.target) else {
                return status(404, &[]);
            };
            let headers: Vec<(&str, String)> = page
                .headers
                .iter()
                .filter(|(name, _)| {
                    [
                        "link",
                        "etag",
                        "x-ratelimit-limit",
                        "x-ratelimit-remaining",
                        "x-ratelimit-reset",
                    ]
                    .contains(&name.to_ascii_lowercase().as_str())
                })
                .map(|(name, value)| {
                    (
                        name.as_str(),
                        value.replace("https://api.github.com", &base),
                    )
                })
                .collect();
            json(200, page.body.clone(), &headers)
        }
    })
    .await;
    *base.lock().unwrap() = server.base.clone();

    broker.create_topic("issues").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.github]
type = "rest"
url = "{base}{first_target}"
topic = "issues"
key = "/id"
interval = "1h"
pagination = {{ type = "link_header" }}
headers = {{ Accept = "application/vnd.github+json" }}
"#,
            base = server.base
        ),
    ))
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "github",
        1,
    )
    .await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "github", 13).await;
    daemon.shutdown().await;

    let records = broker.read("issues").await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let id = String::from_utf8(record.key.clone().unwrap()).unwrap();
        assert_eq!(record.header("tributary.event_id"), Some(id.as_str()));
        let page: usize = record.header("tributary.page").unwrap().parse().unwrap();
        let url = record.header("tributary.url").unwrap();
        assert!(url.starts_with(&server.base), "{url}");
        if page > 1 {
            assert!(
                url.ends_with(&format!("page={page}")),
                "page {page} from {url}"
            );
        }
        let issue: Value = serde_json::from_slice(&record.payload).unwrap();
        assert_eq!(issue["id"].to_string(), id);
        *seen.entry(format!("{id}@{page}")).or_default() += 1;
    }
    let wanted: HashMap<String, usize> = expected
        .iter()
        .map(|(id, page)| (format!("{id}@{page}"), 1))
        .collect();
    assert_eq!(seen, wanted, "every issue once, from its page");
    // A multi-page walk is not asked conditionally: a 304 on page 1 says nothing of the rest.
    assert!(server
        .requests()
        .iter()
        .all(|r| r.header("if-none-match").is_none()));
    assert_eq!(server.request_count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_github_resource_is_polled_conditionally_and_304s_produce_nothing() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/github-rest/get-repository.json"
    ))
    .unwrap();
    let recorded: Vec<Value> = serde_json::from_str(&text).unwrap();
    let exchange = recorded[0].clone();
    let target = exchange["path"].as_str().unwrap().to_owned();
    let raw = exchange["rawHeaders"].as_array().unwrap().clone();
    let header = move |name: &str| {
        raw.chunks(2)
            .find(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let body = exchange["response"].to_string();
    let (server_etag, server_modified) = (etag.clone(), last_modified.clone());
    let server = ApiServer::start(move |request| {
        let (etag, modified, body) = (server_etag.clone(), server_modified.clone(), body.clone());
        async move {
            if request.header("if-none-match") == Some(etag.as_str()) {
                // GitHub answers an unchanged resource with 304 and no body.
                return status(304, &[("etag", etag)]);
            }
            json(200, body, &[("etag", etag), ("last-modified", modified)])
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("repo").await;
    let state = tempfile::tempdir().unwrap();
    // A budget of one request per 5 s: 304s do not spend it (as on GitHub), so they are not
    // held back by it.
    let host = server.base.trim_start_matches("http://").to_owned();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[rate_limits."{host}"]
requests_per_second = 0.2

[sources.repo]
type = "rest"
url = "{base}{target}"
topic = "repo"
key = "/id"
interval = "50ms"
"#,
            base = server.base
        ),
    ))
    .await;
    let started = std::time::Instant::now();
    wait_for_metric(&daemon, "tributary_http_not_modified_total", "repo", 3).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "three 304s took {took:?}: they waited for the 5 s budget"
    );
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    let records = broker.read("repo").await;
    assert_eq!(records.len(), 1, "one 200, then only 304s");
    let repository: Value = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(repository["full_name"], "octokit-fixture-org/hello-world");
    let requests = server.requests();
    assert!(requests[0].header("if-none-match").is_none());
    for later in &requests[1..] {
        assert_eq!(later.header("if-none-match"), Some(etag.as_str()));
        assert_eq!(
            later.header("if-modified-since"),
            Some(last_modified.as_str())
        );
    }
    let not_modified = process::metric(
        &scrape,
        "tributary_polls_total{outcome=\"not_modified\"",
        "repo",
    );
    assert!(not_modified >= 3, "{not_modified} polls ended not modified");
}

/// 23 items served in pages of 5 in every pagination style, by path.
async fn collection_server(collection: Arc<Mutex<Vec<Value>>>) -> ApiServer {
    const SIZE: usize = 5;
    let base = Arc::new(Mutex::new(String::new()));
    let handler_base = Arc::clone(&base);
    let server = ApiServer::start(move |request| {
        let collection = Arc::clone(&collection);
        let base = handler_base.lock().unwrap().clone();
        async move {
            let all = collection.lock().unwrap().clone();
            // `since` (the watermark) is inclusive, as on GitHub.
            let all: Vec<Value> = match request.param("since") {
                Some(since) => {
                    let since: u64 = since.parse().unwrap();
                    all.into_iter()
                        .filter(|item| item["updated_at"].as_u64().unwrap() >= since)
                        .collect()
                }
                None => all,
            };
            let number = |name: &str, default: usize| {
                request
                    .param(name)
                    .map_or(default, |v| v.parse::<usize>().unwrap())
            };
            let slice = |from: usize, size: usize| -> Vec<Value> {
                all.iter().skip(from).take(size).cloned().collect()
            };
            let body = match request.path() {
                "/page_number" => {
                    let page = number("page", 1);
                    let size = number("per_page", 1);
                    json!({ "items": slice((page - 1) * size, size), "total_pages": all.len().div_ceil(size) })
                }
                "/offset" => json!(slice(number("offset", 0), number("limit", 1))),
                "/cursor" => {
                    let from = number("cursor", 0);
                    let next = (from + SIZE < all.len()).then(|| (from + SIZE).to_string());
                    json!({ "data": slice(from, SIZE), "meta": { "next_cursor": next } })
                }
                "/next_url" => {
                    let page = number("page", 0);
                    let next = ((page + 1) * SIZE < all.len())
                        .then(|| format!("/next_url?page={}", page + 1));
                    json!({ "results": slice(page * SIZE, SIZE), "next": next })
                }
                "/link" => {
                    let page = number("page", 0);
                    let mut headers = Vec::new();
                    if (page + 1) * SIZE < all.len() {
                        headers.push(("link", format!("<{base}/link?page={}>; rel=\"next\"", page + 1)));
                    }
                    return json(200, json!(slice(page * SIZE, SIZE)).to_string(), &headers);
                }
                "/stripe" => {
                    let from = match request.param("starting_after") {
                        Some(id) => all.iter().position(|item| item["id"] == id.as_str()).unwrap() + 1,
                        None => 0,
                    };
                    let page = slice(from, SIZE);
                    json!({ "object": "list", "data": page, "has_more": from + SIZE < all.len() })
                }
                other => panic!("unexpected path {other}"),
            };
            json(200, body.to_string(), &[])
        }
    })
    .await;
    *base.lock().unwrap() = server.base.clone();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pagination_style_walks_every_page_once() {
    let collection = Arc::new(Mutex::new(items(1..24)));
    let server = collection_server(Arc::clone(&collection)).await;
    let styles: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        (
            "page_number",
            (
                "/items",
                r#"{ type = "page_number", size_param = "per_page", size = 5, total_pages = "/total_pages" }"#,
            ),
        ),
        ("offset", ("", r#"{ type = "offset", limit = 5 }"#)),
        (
            "cursor",
            (
                "/data",
                r#"{ type = "cursor", cursor = "/meta/next_cursor", param = "cursor" }"#,
            ),
        ),
        (
            "next_url",
            ("/results", r#"{ type = "next_url", next_url = "/next" }"#),
        ),
        ("link", ("", r#"{ type = "link_header" }"#)),
        ("stripe", ("/data", r#"{ type = "last_record_id" }"#)),
    ]);
    let broker = Broker::kafka();
    let mut sources = String::new();
    for (style, (records, pagination)) in &styles {
        broker.create_topic(style).await;
        sources.push_str(&format!(
            r#"
[sources.{style}]
type = "rest"
url = "{base}/{style}"
topic = "{style}"
records = "{records}"
key = "/id"
interval = "1h"
pagination = {pagination}
"#,
            base = server.base
        ));
    }
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(&broker.brokers(), state.path(), &sources)).await;
    for style in styles.keys() {
        wait_for_metric(
            &daemon,
            "tributary_polls_total{outcome=\"complete\"",
            style,
            1,
        )
        .await;
        wait_for_metric(&daemon, "tributary_records_produced_total", style, 23).await;
    }
    daemon.shutdown().await;
    for style in styles.keys() {
        let ids = sorted_keys(&broker, style).await;
        let expected: Vec<String> = (1..24).map(|n| format!("item-{n:04}")).collect();
        assert_eq!(ids, expected, "style {style}: every item once");
    }
    // One walk each: 5 pages (the page-number walk stops at total_pages, the offset walk at the
    // short page).
    let mut pages_by_path: BTreeMap<String, usize> = BTreeMap::new();
    for request in server.requests() {
        *pages_by_path.entry(request.path().to_owned()).or_default() += 1;
    }
    for style in styles.keys() {
        assert_eq!(
            pages_by_path[&format!("/{style}")],
            5,
            "{style}: {pages_by_path:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_asks_only_for_new_records_and_drops_the_boundary_duplicates() {
    let collection = Arc::new(Mutex::new(items(1..12)));
    let server = collection_server(Arc::clone(&collection)).await;
    let broker = Broker::kafka();
    broker.create_topic("items").await;
    let state = tempfile::tempdir().unwrap();
    let toml = daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.items]
type = "rest"
url = "{base}/cursor"
topic = "items"
records = "/data"
key = "/id"
interval = "50ms"
pagination = {{ type = "cursor", cursor = "/meta/next_cursor", param = "cursor" }}
watermark = {{ field = "/updated_at", param = "since" }}
"#,
            base = server.base
        ),
    );
    let daemon = start_daemon(&toml).await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "items", 11).await;
    // Items 12..14 arrive; 14 shares item 11's updated_at (the boundary).
    {
        let mut all = collection.lock().unwrap();
        all.extend(items(12..14));
        all.push(json!({ "id": "item-late", "n": 14, "updated_at": 11 }));
    }
    wait_for_metric(&daemon, "tributary_records_produced_total", "items", 14).await;
    let polls_before = server.request_count();
    wait_until("two more polls", Duration::from_secs(10), || {
        server.request_count() >= polls_before + 2
    })
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    let ids = sorted_keys(&broker, "items").await;
    let mut expected: Vec<String> = (1..14).map(|n| format!("item-{n:04}")).collect();
    expected.push("item-late".into());
    assert_eq!(ids, expected, "every item once, the boundary ones too");
    // Every poll after the first asked from the watermark; item 11 (at the watermark) came back
    // each time and was left out.
    let since: Vec<Option<String>> = server.requests().iter().map(|r| r.param("since")).collect();
    assert_eq!(since[0], None);
    assert!(
        since
            .iter()
            .skip(3)
            .all(|s| s.as_deref() == Some("13") || s.as_deref() == Some("11")),
        "{since:?}"
    );
    assert!(process::metric(&scrape, "tributary_records_duplicate_total", "items") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_goes_to_the_dead_letter_topic_and_the_walk_goes_on() {
    let base = Arc::new(Mutex::new(String::new()));
    let handler_base = Arc::clone(&base);
    let server = ApiServer::start(move |request| {
        let base = handler_base.lock().unwrap().clone();
        async move {
            let page: usize = request.param("page").map_or(1, |p| p.parse().unwrap());
            let mut headers = Vec::new();
            if page < 3 {
                headers.push((
                    "link",
                    format!("<{base}/x?page={}>; rel=\"next\"", page + 1),
                ));
            }
            let body = match page {
                2 => "[{\"id\": \"broken\",".to_owned(),
                _ => json!([{ "id": format!("p{page}") }]).to_string(),
            };
            json(200, body, &headers)
        }
    })
    .await;
    *base.lock().unwrap() = server.base.clone();
    let broker = Broker::kafka();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_with_source(
        &broker,
        state.path(),
        "pages",
        &format!(
            r#"type = "rest"
url = "{base}/x"
topic = "pages"
key = "/id"
interval = "1h"
pagination = {{ type = "link_header" }}
"#,
            base = server.base
        ),
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "pages",
        1,
    )
    .await;
    wait_for_acknowledged(&daemon, "pages", 3).await;
    daemon.shutdown().await;
    let keys = sorted_keys(&broker, "pages").await;
    assert_eq!(keys, ["p1", "p3"]);
    let dead = broker.read("pages.dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, b"[{\"id\": \"broken\",");
    assert_eq!(dead[0].header("tributary.error_kind"), Some("invalid_json"));
    assert_eq!(dead[0].header("tributary.page"), Some("2"));
    assert!(dead[0]
        .header("tributary.error")
        .unwrap()
        .contains("not valid JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_never_overlap_and_a_long_walk_stops_at_the_page_limit() {
    // An endless cursor walk, each page slower than the interval.
    let server = ApiServer::start(|request| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let cursor: usize = request.param("cursor").map_or(0, |c| c.parse().unwrap());
        json(
            200,
            json!({ "data": [{ "id": format!("r{cursor}") }], "next": (cursor + 1).to_string() })
                .to_string(),
            &[],
        )
    })
    .await;
    let broker = Broker::kafka();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_with_source(
        &broker,
        state.path(),
        "endless",
        &format!(
            r#"type = "rest"
url = "{base}/x"
topic = "endless"
records = "/data"
key = "/id"
interval = "10ms"
max_pages_per_poll = 4
pagination = {{ type = "cursor", cursor = "/next", param = "cursor" }}
"#,
            base = server.base
        ),
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"page_limit\"",
        "endless",
        3,
    )
    .await;
    daemon.shutdown().await;
    assert_eq!(server.max_in_flight(), 1, "one request at a time");
    // Each poll went on where the previous one stopped: cursors 0, 1, 2, … without repeats.
    let cursors: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| r.param("cursor").map_or(0, |c| c.parse().unwrap()))
        .collect();
    let expected: Vec<usize> = (0..cursors.len()).collect();
    assert_eq!(cursors, expected);
    assert!(cursors.len() >= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_with_no_next_link_gives_up_the_walk_and_keeps_the_watermark() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Cursor pagination: the next page is only in the body. Page 2 is broken the first time.
    let broken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&broken);
    let server = ApiServer::start(move |request| {
        let counter = Arc::clone(&counter);
        async move {
            let cursor: u64 = request.param("cursor").map_or(0, |c| c.parse().unwrap());
            if cursor == 1 && counter.fetch_add(1, Ordering::SeqCst) == 0 {
                return json(200, "<html>bad gateway</html>", &[]);
            }
            let next = (cursor < 2).then(|| (cursor + 1).to_string());
            let body = json!({ "data": [{ "id": format!("r{cursor}"), "updated_at": cursor }], "next": next });
            json(200, body.to_string(), &[])
        }
    })
    .await;
    let broker = Broker::kafka();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_with_source(
        &broker,
        state.path(),
        "fragile",
        &format!(
            r#"type = "rest"
url = "{base}/x"
topic = "fragile"
records = "/data"
key = "/id"
interval = "50ms"
pagination = {{ type = "cursor", cursor = "/next", param = "cursor" }}
watermark = {{ field = "/updated_at", param = "since" }}
"#,
            base = server.base
        ),
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "fragile",
        1,
    )
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(
        process::metric(
            &scrape,
            "tributary_polls_total{outcome=\"incomplete\"",
            "fragile"
        ),
        1
    );
    // The second walk started over from page 1 and without a watermark: the first walk's
    // records (page 1) did not raise it past the page that was never read.
    let requests = server.requests();
    assert_eq!(requests[2].param("cursor"), None);
    assert_eq!(requests[2].param("since"), None);
    let dead = broker.read("fragile.dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("tributary.error_kind"), Some("invalid_json"));
    let mut keys = sorted_keys(&broker, "fragile").await;
    keys.dedup();
    assert_eq!(keys, ["r0", "r1", "r2"], "nothing lost");
}
