//! Config checks of the polled sources: every mistake is reported with its field and fix, and
//! secrets in query parameters never reach `tributary.url`.

mod common;

use common::{api::*, *};

fn errors_of(sources: &str) -> Vec<String> {
    let toml = daemon_config(
        "localhost:9092",
        std::path::Path::new("/tmp/unused"),
        sources,
    );
    match tributary::config::parse_toml(&toml).and_then(|raw| raw.validate()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn mistakes_are_reported_with_the_field_and_the_fix() {
    let errors = errors_of(
        r#"
[rate_limits."api.example.com"]
requests_per_second = 0

[sources.rest]
type = "rest"
url = "ftp://api.example.com/x"
topic = "t"
records = "data"
watermark = { field = "/updated_at", param = "since" }
pagination = { type = "cursor", cursor = "next", param = "cursor" }
auth = { type = "api_key", value = "k" }
retry = { max_attempts = 0 }
max_pages_per_poll = 0

[sources.gql]
type = "graphql"
url = "https://api.example.com/graphql"
topic = "t"
records = "/data/items"
auth = { type = "oauth2_client_credentials", token_url = "not a url", client_id = "c", client_secret = "${env:TRIBUTARY_TEST_SURELY_UNSET}" }
"#,
    );
    let expected = [
        "rate_limits.api.example.com",
        "sources.rest.url",
        "sources.rest.records",
        "sources.rest.key",
        "sources.rest.pagination.cursor",
        "sources.rest.auth",
        "sources.rest.retry.max_attempts",
        "sources.rest.max_pages_per_poll",
        "sources.gql.query",
        "sources.gql.auth.token_url",
        "sources.gql.auth.client_secret",
    ];
    for field in expected {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("field `{field}`"))),
            "no error for {field} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_in_the_query_and_a_token_in_the_path_are_sent_but_redacted_from_lineage() {
    std::env::set_var("TRIBUTARY_TEST_APPID", "k3y-value");
    std::env::set_var("TRIBUTARY_TEST_PATH_SECRET", "path-t0ken");
    let server = ApiServer::start(|request| async move {
        if request.param("appid").as_deref() != Some("k3y-value")
            || request.path() != "/v1/path-t0ken/weather"
        {
            return status(401, &[]);
        }
        json(200, r#"[{"id":"a"},{"id":"b"}]"#, &[])
    })
    .await;
    let broker = Broker::mock();
    broker.create_topic("keyed").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.keyed]
type = "rest"
url = "{}/v1/${{env:TRIBUTARY_TEST_PATH_SECRET}}/weather?units=metric"
topic = "keyed"
key = "/id"
interval = "1h"
auth = {{ type = "api_key", query = "appid", value = "${{env:TRIBUTARY_TEST_APPID}}" }}
"#,
            server.base
        ),
    ))
    .await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "keyed", 2).await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    let records = broker.read("keyed").await;
    assert_eq!(records.len(), 2);
    for record in &records {
        let url = record.header("tributary.url").unwrap();
        assert_eq!(
            url,
            format!("{}/v1/REDACTED/weather?units=metric", server.base)
        );
        assert!(!String::from_utf8_lossy(&record.payload).contains("k3y"));
    }
    assert!(!scrape.contains("k3y-value") && !scrape.contains("path-t0ken"));
}
