//! What a feed or a server sends must never panic, crash or stall the daemon: each of the
//! reproductions users reported, end to end through Apache Kafka with the daemon in this
//! process (a stack overflow or `std::process::exit` in it ends this test binary, so a test
//! that passes also shows the daemon lived through it).
//!
//! - an SSE event of 200,000 nested arrays (400 KB) between good events: dead-lettered as
//!   `invalid_json` naming the depth limit, by the plain JSON check and before a transform;
//! - transforms that `halt_error`, read `env` or yield without end: only their event fails
//!   (`transform_error`), no secret reaches a record;
//! - a REST API answering `X-RateLimit-Remaining: 0` with a reset past what the clock holds:
//!   its records arrive and the source keeps running.

mod common;

use common::{api::*, *};
use tributary::{
    runtime::daemon::RunningDaemon, runtime::health::SourceState, stage::transform::MAX_OUTPUTS,
};

/// An SSE stream of `events` (id, data), kept open as a live feed would.
fn feed(events: &[(&str, &str)]) -> Scripted {
    let body: String = events
        .iter()
        .map(|(id, data)| format!("id: {id}\ndata: {data}\n\n"))
        .collect();
    Scripted::events(&body, true)
}

/// An SSE source table reading `url` into topic `name` (and `name.dlq`).
fn sse_source(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[sources.{name}]\ntype = \"sse\"\nurl = \"{url}\"\ntopic = \"{name}\"\n\
         reconnect = {{ initial_delay = \"20ms\", max_delay = \"200ms\" }}\n{extra}\n"
    )
}

/// The keys (SSE ids) of `records`, sorted.
fn ids(records: &[tributary::cli::demo::kafka_admin::ConsumedRecord]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.key.clone().expect("keyed by the SSE id")).unwrap())
        .collect();
    ids.sort();
    ids
}

/// Fails the test when `source` stopped.
fn assert_running(daemon: &RunningDaemon, source: &str) {
    let state = daemon.health().get(source);
    assert!(
        !matches!(state, Some(SourceState::Failed(_)) | None),
        "`{source}` is still running: {state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_event_is_dead_lettered_between_good_events() {
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let server = ScriptedServer::start(vec![feed(&[
        ("1", r#"{"n":1}"#),
        ("2", &deep),
        ("3", r#"{"n":3}"#),
    ])])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("deep").await;
    broker.create_topic("plain").await;
    let state = tempfile::tempdir().unwrap();
    let url = format!("{}/feed", server.base_url);
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            "{}{}",
            sse_source("deep", &url, "transform = \".\""),
            sse_source("plain", &url, "")
        ),
    ))
    .await;
    wait_for_acknowledged(&daemon, "deep", 3).await;
    wait_for_acknowledged(&daemon, "plain", 3).await;
    assert_running(&daemon, "deep");
    assert_running(&daemon, "plain");
    daemon.shutdown().await;

    for source in ["deep", "plain"] {
        let records = broker.read(source).await;
        assert_eq!(ids(&records), ["1", "3"], "{source}: the good events");
        let dead = broker.read(&format!("{source}.dlq")).await;
        assert_eq!(ids(&dead), ["2"], "{source}: the deep event");
        assert_eq!(
            dead[0].payload,
            deep.as_bytes(),
            "{source}: kept as it came"
        );
        assert_eq!(dead[0].header("tributary.error_kind"), Some("invalid_json"));
        let reason = dead[0].header("tributary.error").unwrap();
        assert!(
            reason.contains("nested deeper than the limit of 127 levels"),
            "{source}: {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_that_halt_read_env_or_run_away_fail_only_their_event() {
    // A real variable of this process, which the daemon runs in.
    std::env::set_var("TRIBUTARY_HOSTILE_SECRET_TOKEN", "s3cret-token");
    let server = ScriptedServer::start(vec![feed(&[
        ("1", r#"{"n":1}"#),
        ("2", r#"{"n":2,"kill":true,"loop":true}"#),
        ("3", r#"{"n":3}"#),
    ])])
    .await;
    let broker = Broker::kafka();
    for topic in ["halts", "leaks", "loops"] {
        broker.create_topic(topic).await;
    }
    let state = tempfile::tempdir().unwrap();
    let url = format!("{}/feed", server.base_url);
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            "{}{}{}",
            sse_source(
                "halts",
                &url,
                "transform = 'if .kill then halt_error else . end'"
            ),
            sse_source(
                "leaks",
                &url,
                "transform = '{n, tok: env.TRIBUTARY_HOSTILE_SECRET_TOKEN, all: $ENV}'"
            ),
            sse_source(
                "loops",
                &url,
                "transform = 'if .loop then repeat(1) else . end'"
            ),
        ),
    ))
    .await;
    for source in ["halts", "leaks", "loops"] {
        wait_for_acknowledged(&daemon, source, 3).await;
        assert_running(&daemon, source);
    }
    daemon.shutdown().await;

    for (source, bound) in [
        ("halts", "`halt`"),
        ("loops", &*format!("more than {MAX_OUTPUTS} values")),
    ] {
        assert_eq!(ids(&broker.read(source).await), ["1", "3"], "{source}");
        let dead = broker.read(&format!("{source}.dlq")).await;
        assert_eq!(ids(&dead), ["2"], "{source}");
        assert_eq!(
            dead[0].header("tributary.error_kind"),
            Some("transform_error")
        );
        let reason = dead[0].header("tributary.error").unwrap();
        assert!(reason.contains(bound), "{source}: {reason}");
    }
    let leaks = broker.read("leaks").await;
    assert_eq!(ids(&leaks), ["1", "2", "3"]);
    for record in &leaks {
        let text = String::from_utf8(record.payload.clone()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["tok"], serde_json::Value::Null, "{text}");
        assert_eq!(value["all"], serde_json::json!({}), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_reset_past_the_clock_does_not_panic_the_source() {
    let server = ApiServer::start(|_request| async {
        json(
            200,
            serde_json::json!({ "data": [{ "id": "a" }, { "id": "b" }] }).to_string(),
            &[
                ("x-ratelimit-limit", "60".into()),
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-reset", "17399999999990399099".into()),
            ],
        )
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("limited").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &format!(
            r#"
[sources.limited]
type = "rest"
url = "{}/items"
topic = "limited"
records = "/data"
key = "/id"
interval = "1h"
"#,
            server.base
        ),
    ))
    .await;
    // The answer is read before its records are sent: they arrive only if reading its
    // headers did not panic the source task.
    wait_for_acknowledged(&daemon, "limited", 2).await;
    assert_running(&daemon, "limited");
    daemon.shutdown().await;
    assert_eq!(sorted_keys(&broker, "limited").await, ["a", "b"]);
}
