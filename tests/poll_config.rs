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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_echoed_in_next_links_is_sent_on_every_page_but_never_stored() {
    std::env::set_var("TRIBUTARY_TEST_ECHOED_KEY", "echoed-s3cret");
    // Like Django REST framework: the next link repeats the request's query, key included.
    let server = ApiServer::start(|request| async move {
        if request.param("api_key").as_deref() != Some("echoed-s3cret") {
            return status(401, &[]);
        }
        let page: u32 = request.param("page").map_or(1, |p| p.parse().unwrap());
        let next = (page < 3).then(|| format!("/items?api_key=echoed-s3cret&page={}", page + 1));
        json(
            200,
            serde_json::json!({ "results": [{ "id": format!("r{page}") }], "next": next })
                .to_string(),
            &[],
        )
    })
    .await;
    let broker = Broker::mock();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_with_source(
        &broker,
        state.path(),
        "echo",
        &format!(
            r#"type = "rest"
url = "{}/items?api_key=${{env:TRIBUTARY_TEST_ECHOED_KEY}}"
topic = "echo"
records = "/results"
key = "/id"
interval = "1h"
max_pages_per_poll = 2
pagination = {{ type = "next_url", next_url = "/next" }}
"#,
            server.base
        ),
    )
    .await;
    // The page limit stops the walk after page 2 with page 3's URL in the position.
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"page_limit\"",
        "echo",
        1,
    )
    .await;
    wait_for_metric(&daemon, "tributary_checkpoint_commits_total", "echo", 1).await;
    daemon.shutdown().await;
    let stored = std::fs::read_to_string(state.path().join("checkpoints.json")).unwrap();
    assert!(stored.contains("page=3"), "{stored}");
    assert!(!stored.contains("echoed-s3cret"), "{stored}");
    assert_eq!(sorted_keys(&broker, "echo").await, ["r1", "r2"]);
    for record in broker.read("echo").await {
        assert!(record
            .header("tributary.url")
            .unwrap()
            .contains("api_key=REDACTED"));
    }
}
