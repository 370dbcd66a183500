//! The record key rule every source kind shares (a JSON pointer or a template), end to end
//! through Apache Kafka: a REST key template (also the event id), a webhook event id template
//! (also the deduplication key), and SSE pointer keys admitted in the source's own task, with a
//! missing or `null` value dead-lettered as `key_not_found`.

mod common;

use std::collections::BTreeMap;

use common::{api::*, *};
use tributary::cli::demo::kafka_admin::ConsumedRecord;

fn header<'a>(record: &'a ConsumedRecord, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| std::str::from_utf8(value).unwrap())
}

fn key(record: &ConsumedRecord) -> Option<&str> {
    record
        .key
        .as_deref()
        .map(|key| std::str::from_utf8(key).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_kind_takes_a_key_template() {
    let broker = Broker::kafka();
    broker
        .create_topics(&["issues", "hooks", "events", "events.dlq"], 1)
        .await;
    let issues = r#"[{"repo":"a","number":1},{"repo":"b","number":2},{"repo":"a","number":3,"x":null},{"repo":"c"}]"#;
    let api = ApiServer::start(move |_| async move { json(200, issues, &[]) }).await;
    let feed = ScriptedServer::start(vec![Scripted::events(
        "id: 1\ndata: {\"meta\":{\"id\":\"m1\"}}\n\n\
         id: 2\ndata: {\"meta\":{\"id\":null}}\n\n\
         id: 3\ndata: {\"meta\":{}}\n\n\
         id: 4\ndata: {\"meta\":{\"id\":7}}\n\n",
        true,
    )])
    .await;
    let state = tempfile::tempdir().unwrap();
    // The SSE source and its settings, then the other sources.
    let others = format!(
        r#"key = "/meta/id"

[sources.issues]
type = "rest"
url = "{api}/issues"
topic = "issues"
key = "{{/repo}}#{{/number}}"
interval = "1h"

[sources.hooks]
type = "webhook"
topic = "hooks"
signature = {{ scheme = "none" }}
event_id = {{ pointer = "{{/type}}:{{/id}}" }}
"#,
        api = api.base,
    );
    let feed_url = format!("{}/events", feed.base_url);
    let toml = sse_config(
        &broker.brokers(),
        state.path(),
        "events",
        &feed_url,
        "events",
        &others,
    );
    let daemon = start_daemon(&toml).await;
    let webhook = format!("http://{}/webhooks/hooks", daemon.webhook_address());
    let http = reqwest::Client::new();
    for body in [
        r#"{"type":"push","id":7}"#,
        r#"{"type":"push","id":8}"#,
        // The same event id again: a duplicate, answered 2xx and not produced again.
        r#"{"type":"push","id":7,"retried":true}"#,
    ] {
        let response = http
            .post(&webhook)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{body}: {response:?}");
    }
    wait_for_acknowledged(&daemon, "issues", 4).await;
    wait_for_acknowledged(&daemon, "hooks", 2).await;
    wait_for_acknowledged(&daemon, "events", 4).await;
    daemon.shutdown().await;

    // REST: the template is the key and the event id; a record without a value has neither.
    let issues = broker.read("issues").await;
    let keys: Vec<Option<&str>> = issues.iter().map(key).collect();
    assert_eq!(keys, [Some("a#1"), Some("b#2"), Some("a#3"), None]);
    for record in &issues {
        assert_eq!(header(record, "tributary.event_id"), key(record));
    }

    // Webhook: the template is the key, the event id and the deduplication key.
    let hooks = broker.read("hooks").await;
    let keys: Vec<Option<&str>> = hooks.iter().map(key).collect();
    assert_eq!(keys, [Some("push:7"), Some("push:8")]);

    // SSE: a pointer key, admitted in the source's task; `null` and missing are dead-lettered.
    let events = broker.read("events").await;
    let keys: Vec<Option<&str>> = events.iter().map(key).collect();
    assert_eq!(keys, [Some("m1"), Some("7")]);
    let dead: BTreeMap<String, String> = broker
        .read("events.dlq")
        .await
        .iter()
        .map(|record| {
            (
                String::from_utf8(record.payload.clone()).unwrap(),
                header(record, "tributary.error_kind").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        dead,
        BTreeMap::from([
            (
                r#"{"meta":{"id":null}}"#.to_owned(),
                "key_not_found".to_owned()
            ),
            (r#"{"meta":{}}"#.to_owned(), "key_not_found".to_owned()),
        ])
    );
}
