//! The Grafana dashboard (`deploy/grafana/tributary.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) name only metrics a running daemon exports.
//!
//! A `tributary` child process runs one source of every kind against Apache Kafka: two SSE
//! sources on a replayed feed (one dead-letters every record: its key pointer finds nothing),
//! REST and GraphQL sources on a local API, a webhook source on its own listener, and a
//! WebSocket source whose server is gone. Its `/metrics` scrape, with the families registered
//! whose series appear with their first count, is the list of what exists.

mod common;

use std::collections::BTreeSet;

use common::{api::*, metric_names::*, process::*, *};
use tributary::cli::demo::replay::{self, ReplayOptions, ReplayServer};

/// The scrape of a daemon that runs every source kind, once its SSE records are acknowledged
/// and its polled sources have polled.
pub async fn scrape_of_every_kind() -> String {
    let broker = Broker::kafka();
    let topics = ["wiki", "badkey", "issues", "gql", "hooks", "ticks"];
    let dead_letter_topics: Vec<String> = topics.iter().map(|t| format!("{t}.dlq")).collect();
    let mut all: Vec<&str> = topics.to_vec();
    all.extend(dead_letter_topics.iter().map(String::as_str));
    broker.create_topics(&all, 1).await;
    let feed = ReplayServer::start(replay::wikimedia_feed(50), ReplayOptions::default())
        .await
        .unwrap();
    let api = ApiServer::start(|request| async move {
        if request.method == "POST" {
            json(200, r#"{"data":{"issues":[{"id":"1"}]}}"#, &[])
        } else {
            json(200, r#"[{"id":"a"},{"id":"b"}]"#, &[])
        }
    })
    .await;
    let gone = free_port();
    let state = tempfile::tempdir().unwrap();
    let (port, webhook_port) = (free_port(), free_port());
    let sources = format!(
        r#"webhook_listen = "127.0.0.1:{webhook_port}"

[sources.wiki]
type = "sse"
url = "{feed}"
topic = "wiki"

[sources.badkey]
type = "sse"
url = "{feed}"
topic = "badkey"
key = "/no/such/field"

[sources.issues]
type = "rest"
url = "{api}/issues"
topic = "issues"
key = "/id"
interval = "1h"

[sources.gql]
type = "graphql"
url = "{api}/graphql"
topic = "gql"
query = "{{ issues {{ id }} }}"
records = "/data/issues"
interval = "1h"

[sources.hooks]
type = "webhook"
topic = "hooks"
signature = {{ scheme = "none" }}

[sources.ticks]
type = "websocket"
url = "ws://127.0.0.1:{gone}/"
topic = "ticks"
"#,
        feed = feed.url(),
        api = api.base,
    );
    let config = write_config(
        state.path(),
        &daemon_config(&broker.brokers(), &state.path().join("state"), &sources)
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let mut daemon = Daemon::spawn(&config, port);
    daemon.wait_for_produced("wiki", 50).await;
    daemon
        .wait_for_metric("tributary_records_dead_lettered_total", "badkey", 50)
        .await;
    daemon.wait_for_produced("issues", 2).await;
    daemon.wait_for_produced("gql", 1).await;
    let scrape = daemon.scrape().await.expect("a scrape");
    assert!(daemon.terminate().await.success());
    scrape
}

/// The PromQL of every panel target and template variable of a Grafana dashboard.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", serde_json::Value::String(query)) => {
                            queries.push(query.clone());
                        }
                        _ => stack.push(value),
                    }
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    queries
}

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/tributary.json")).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "too few queries found: {queries:?}");
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for query in &queries {
        for name in metric_names(query, &["tributary_", "process_"]) {
            wanted.insert(("deploy/grafana/tributary.json".into(), name));
        }
    }
    for path in [
        "deploy/prometheus/alerts.yml",
        "deploy/kubernetes/prometheus-operator/prometheusrule.yaml",
    ] {
        if !std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(path)
            .exists()
        {
            continue;
        }
        for name in metric_names(&read(path), &["tributary_", "process_"]) {
            wanted.insert((path.into(), name));
        }
    }
    // Rows of the dashboard that the test must see: one query per concern at least.
    for concern in [
        "tributary_records_produced_total",
        "tributary_checkpoint_age_seconds",
        "tributary_records_dead_lettered_total",
        "tributary_reconnects_total",
        "tributary_sequence_gaps_total",
        "tributary_http_requests_total",
        "tributary_rate_limit_wait_seconds_total",
        "tributary_kafka_delivery_seconds_bucket",
        "tributary_kafka_errors_total",
        "tributary_channel_records",
        "process_resident_memory_bytes",
    ] {
        assert!(
            wanted.contains(&("deploy/grafana/tributary.json".into(), concern.into())),
            "the dashboard does not query {concern}"
        );
    }

    // What the scrape holds, and the families whose series appear with their first count
    // (sequence gaps, oversized events: nothing here makes them).
    let exported = sample_names(&scrape_of_every_kind().await);
    let metrics = tributary::metrics::Metrics::new();
    let families = metrics.family_names();
    let registered = |name: &str| {
        families.iter().any(|family| {
            name == family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
        })
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(_, name)| !exported.contains(name) && !registered(name))
        .map(|(file, name)| format!("{file}: {name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics queried but not exported: {missing:#?}\nexported: {exported:#?}"
    );
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(tributary_kafka_delivery_seconds_bucket{job=~"$job", source="tributary_x"}[5m]))) / process_open_fds"#,
        &["tributary_", "process_"],
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "process_open_fds",
            "tributary_kafka_delivery_seconds_bucket"
        ]
    );
}
