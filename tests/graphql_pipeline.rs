//! End to end: polled GraphQL sources against a Relay-style endpoint on 127.0.0.1 →
//! librdkafka's mock cluster, read back: cursor pagination, the `errors` policies and the
//! watermark variable.

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use common::{api::*, process::metric, *};
use serde_json::{json, Value};

const QUERY: &str = "query($first: Int!, $after: String, $since: String) { repository { issues(first: $first, after: $after, since: $since) { nodes { id updatedAt } pageInfo { hasNextPage endCursor } } } }";

/// 7 issues in pages of `first`; cursors are opaque (`c<n>`). With `errors_on_page`, that page
/// carries a GraphQL error next to its data, the first `errors_times` times it is asked for.
async fn relay_server(errors_on_page: Option<usize>, errors_times: usize) -> ApiServer {
    let asked = Arc::new(AtomicUsize::new(0));
    ApiServer::start(move |request| {
        let asked = Arc::clone(&asked);
        async move {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(body["query"], QUERY);
            let variables = &body["variables"];
            let first = variables["first"].as_u64().unwrap() as usize;
            let from = variables["after"]
                .as_str()
                .map_or(0, |c| c.trim_start_matches('c').parse::<usize>().unwrap());
            let since = variables["since"].as_u64().unwrap_or(0) as usize;
            let all: Vec<Value> = (1..=7)
                .filter(|n| *n >= since)
                .map(|n| json!({ "id": format!("I_{n}"), "updatedAt": n }))
                .collect();
            let nodes: Vec<Value> = all.iter().skip(from).take(first).cloned().collect();
            let end = from + nodes.len();
            let mut answer = json!({ "data": { "repository": { "issues": {
                "nodes": nodes,
                "pageInfo": { "hasNextPage": end < all.len(), "endCursor": format!("c{end}") },
            } } } });
            if errors_on_page == Some(from / first) && asked.fetch_add(1, Ordering::SeqCst) < errors_times {
                answer["errors"] = json!([{ "message": "rate limited on a field", "path": ["repository", "issues"] }]);
            }
            json(200, answer.to_string(), &[])
        }
    })
    .await
}

fn graphql_source(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "graphql"
url = "{url}"
topic = "{name}"
query = "{QUERY}"
variables = {{ first = 3 }}
records = "/data/repository/issues/nodes"
page_info = "/data/repository/issues/pageInfo"
key = "/id"
{extra}
"#
    )
}

fn all_ids() -> Vec<String> {
    (1..=7).map(|n| format!("I_{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cursors_walk_every_page_and_the_watermark_is_a_variable() {
    let server = relay_server(None, 0).await;
    let broker = Broker::kafka();
    broker.create_topic("issues").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &graphql_source(
            "issues",
            &format!("{}/graphql", server.base),
            r#"interval = "50ms"
watermark = { field = "/updatedAt", param = "since" }"#,
        ),
    ))
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "issues",
        3,
    )
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(
        sorted_keys(&broker, "issues").await,
        all_ids(),
        "every issue once"
    );
    let requests = server.requests();
    let variables: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["variables"].clone())
        .collect();
    // First walk: 3 pages, the cursor of each page passed to the next.
    assert_eq!(variables[0], json!({ "first": 3 }));
    assert_eq!(variables[1], json!({ "first": 3, "after": "c3" }));
    assert_eq!(variables[2], json!({ "first": 3, "after": "c6" }));
    // Later polls ask from the watermark (7); the boundary issue is not produced again.
    assert_eq!(variables[3], json!({ "first": 3, "since": 7 }));
    assert!(requests
        .iter()
        .all(|r| r.method == "POST" && r.header("content-type") == Some("application/json")));
    assert!(metric(&scrape, "tributary_records_duplicate_total", "issues") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_errors_fail_the_poll_or_go_to_the_dead_letter_topic() {
    let failing = relay_server(Some(1), 1).await;
    let partial = relay_server(Some(1), 1).await;
    let broker = Broker::kafka();
    for name in ["strict", "lenient"] {
        broker.create_topic(name).await;
    }
    let mut sources = graphql_source(
        "strict",
        &format!("{}/graphql", failing.base),
        r#"interval = "100ms""#,
    );
    sources.push_str(&graphql_source(
        "lenient",
        &format!("{}/graphql", partial.base),
        r#"interval = "1h"
errors = "dead_letter""#,
    ));
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(&broker.brokers(), state.path(), &sources)).await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "strict",
        1,
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "lenient",
        1,
    )
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;

    // strict: the first poll failed at page 2; the next resumed at page 2, not page 1.
    assert_eq!(
        metric(
            &scrape,
            "tributary_polls_total{outcome=\"failed\"",
            "strict"
        ),
        1
    );
    assert_eq!(
        sorted_keys(&broker, "strict").await,
        all_ids(),
        "every issue once"
    );
    let afters: Vec<Value> = failing
        .requests()
        .iter()
        .take(4)
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["variables"]["after"].clone())
        .collect();
    assert_eq!(afters, [Value::Null, json!("c3"), json!("c3"), json!("c6")]);
    assert!(broker.read("strict.dlq").await.is_empty());

    // lenient: the partial data went on and the errors went to the dead-letter topic.
    assert_eq!(sorted_keys(&broker, "lenient").await, all_ids());
    let dead = broker.read("lenient.dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("tributary.error_kind"),
        Some("graphql_errors")
    );
    assert_eq!(dead[0].header("tributary.page"), Some("2"));
    let errors: Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(errors[0]["message"], "rate limited on a field");
}
