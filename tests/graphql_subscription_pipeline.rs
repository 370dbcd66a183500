//! End to end: `graphql_subscription` sources against a real GraphQL over WebSocket server
//! (`graphql-ws` with `graphql` and `ws` from npm, tests/servers/graphql-ws/) → Apache Kafka,
//! read back: every event once, keyed, with the auth payload; a refused token stops the
//! source; `kill -9` mid-stream, then a restart that subscribes from the stored position.

mod common;

use std::{collections::HashMap, time::Duration};

use common::{graphql_ws::GraphqlWsServer, *};
use serde_json::Value;
use tributary::runtime::health::SourceState;

const QUERY: &str =
    "subscription Events($after: Int) { events(after: $after) { seq id kind payload } }";

/// A `[sources.<name>]` table for the server at `url`, whose `connection_init` carries
/// `Bearer <token>`.
fn subscription_source(name: &str, url: &str, token: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "graphql_subscription"
protocol = "graphql-transport-ws"
url = "{url}"
topic = "{name}"
query = "{QUERY}"
records = "/data/events"
key = "/id"
position = "/seq"
position_variable = "after"
init_payload = {{ authorization = "Bearer {token}" }}
reconnect = {{ initial_delay = "50ms", max_delay = "500ms" }}
"#
    )
}

fn sequence_of(payload: &[u8]) -> u64 {
    let event: Value = serde_json::from_slice(payload).unwrap();
    event["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_once_errors_dead_lettered_pings_answered_refusals_stopped_and_told_apart_by_check_connect(
) {
    const EVENTS: u64 = 300;
    // The server also pings every client every 50 ms (graphql-transport-ws `ping`).
    // Event 150 fails to resolve: a `next` with GraphQL errors and no data.
    let server = GraphqlWsServer::start(&[
        "--events",
        "300",
        "--interval-ms",
        "0",
        "--ping-ms",
        "50",
        "--error-at",
        "150",
    ])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("orders").await;
    broker.create_topic("refused").await;
    broker.create_topic("invalid").await;
    let state = tempfile::tempdir().unwrap();
    let invalid = subscription_source("invalid", &server.url, "s3cret")
        .replace(QUERY, "subscription { events { nope } }");
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &(subscription_source("orders", &server.url, "s3cret")
            + &subscription_source("refused", &server.url, "wrong-t0ken")
            + &invalid),
    ))
    .await;
    // 299 events and one dead letter.
    wait_for_metric(
        &daemon,
        "tributary_records_produced_total",
        "orders",
        EVENTS - 1,
    )
    .await;
    wait_for_acknowledged(&daemon, "orders", EVENTS).await;
    wait_until("the invalid subscription to fail", Duration::from_secs(30), || {
        matches!(daemon.health().get("invalid"), Some(SourceState::Failed(error)) if error.contains("refused the subscription") && error.contains("nope"))
    })
    .await;
    wait_until(
        "a pong for the server's ping",
        Duration::from_secs(30),
        || server.pongs.load(std::sync::atomic::Ordering::SeqCst) > 0,
    )
    .await;
    wait_until("the refused source to fail", Duration::from_secs(30), || {
        matches!(daemon.health().get("refused"), Some(SourceState::Failed(error)) if error.contains("4403"))
    })
    .await;
    let (_, readyz_after) = http_get(&format!("http://{}/readyz", daemon.metrics_address())).await;
    daemon.shutdown().await;

    // `check --connect` completes connection_init → connection_ack and subscribes to nothing.
    let config = common::process::write_config(
        state.path(),
        &daemon_config(
            &broker.brokers(),
            state.path(),
            &(subscription_source("orders", &server.url, "s3cret")
                + &subscription_source("refused", &server.url, "wrong-t0ken")),
        ),
    );
    let check = tokio::process::Command::new(common::process::binary())
        .args(["check", "--connect", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout).into_owned();
    let line = |what: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(what))
            .unwrap_or_else(|| panic!("no `{what}` line in:\n{stdout}"))
            .to_owned()
    };
    assert_ne!(check.status.code(), Some(0), "a check failed:\n{stdout}");
    let orders = line("url (orders)");
    assert!(
        orders.contains("ok") && orders.contains("connection acknowledged (graphql-transport-ws)"),
        "{orders}"
    );
    let refused = line("url (refused)");
    assert!(
        refused.contains("FAILED") && refused.contains("4403"),
        "{refused}"
    );
    assert!(
        !stdout.contains("wrong-t0ken") && !stdout.contains("s3cret"),
        "{stdout}"
    );

    assert!(readyz_after.contains("4403"), "{readyz_after}");
    assert!(
        !readyz_after.contains("wrong-t0ken"),
        "the init payload stays out of /readyz: {readyz_after}"
    );
    assert_eq!(
        server.subscribes(),
        ["null"],
        "one subscription (the refused source never got as far), from the start"
    );
    let dead = broker.read("orders.dlq").await;
    assert_eq!(dead.len(), 1, "the failed event's errors");
    assert_eq!(
        dead[0].header("tributary.error_kind"),
        Some("graphql_errors")
    );
    let errors: Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("non-nullable"),
        "{errors}"
    );
    let records = broker.read("orders").await;
    assert_eq!(records.len() as u64, EVENTS - 1);
    let mut seen: Vec<u64> = Vec::new();
    for record in &records {
        let event: Value = serde_json::from_slice(&record.payload).unwrap();
        let seq = event["seq"].as_u64().unwrap();
        let id = format!("evt-{seq:06}");
        assert_eq!(event["id"], id.as_str());
        assert_eq!(record.key.as_deref(), Some(id.as_bytes()));
        assert_eq!(record.header("tributary.event_id"), Some(id.as_str()));
        assert_eq!(record.header("tributary.source"), Some("orders"));
        let payload: Value = serde_json::from_str(event["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["order"], 1000 + seq);
        seen.push(seq);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=EVENTS).filter(|&seq| seq != 150).collect::<Vec<_>>()
    );
    assert!(broker.read("refused").await.is_empty());
    assert!(broker.read("invalid").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_subscriptions_transport_ws_protocol_works_too_through_an_http_proxy() {
    const EVENTS: u64 = 200;
    let server = GraphqlWsServer::start(&[
        "--events",
        "200",
        "--interval-ms",
        "0",
        "--protocol",
        "legacy",
    ])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("legacy").await;
    broker.create_topic("legacy_refused").await;
    // tinyproxy, with Basic credentials: the handshake goes through a CONNECT tunnel.
    let proxy = common::tls::Proxy::start().await;
    let legacy = |name: &str, token: &str| {
        subscription_source(name, &server.url, token).replace(
            "protocol = \"graphql-transport-ws\"",
            &format!(
                "protocol = \"subscriptions-transport-ws\"\nproxy = \"{}\"",
                proxy.url()
            ),
        )
    };
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &(legacy("legacy", "s3cret") + &legacy("legacy_refused", "wrong")),
    ))
    .await;
    wait_for_metric(
        &daemon,
        "tributary_records_produced_total",
        "legacy",
        EVENTS,
    )
    .await;
    wait_for_acknowledged(&daemon, "legacy", EVENTS).await;
    wait_until("the refused source to fail", Duration::from_secs(30), || {
        matches!(daemon.health().get("legacy_refused"), Some(SourceState::Failed(error)) if error.contains("refused the connection"))
    })
    .await;
    daemon.shutdown().await;
    assert!(
        proxy.saw(server.port),
        "the server was reached without the proxy; it logged {:?}",
        proxy.requests()
    );
    assert_eq!(server.subscribes(), ["null"]);
    let mut seen: Vec<u64> = broker
        .read("legacy")
        .await
        .iter()
        .map(|record| sequence_of(&record.payload))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=EVENTS).collect::<Vec<_>>(), "every event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_ends_the_connection_and_the_source_resubscribes_before_it(
) {
    // Event 50 is 100 kB; the source takes messages up to 64 KiB.
    let server = GraphqlWsServer::start(&[
        "--events",
        "100",
        "--interval-ms",
        "0",
        "--big-at",
        "50",
        "--big-bytes",
        "100000",
    ])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("capped").await;
    let state = tempfile::tempdir().unwrap();
    let source = subscription_source("capped", &server.url, "s3cret")
        + "max_message_bytes = 65536\nmax_frame_bytes = 65536\n";
    let daemon = start_daemon(&daemon_config(&broker.brokers(), state.path(), &source)).await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "capped", 49).await;
    wait_for_metric(&daemon, "tributary_reconnects_total", "capped", 2).await;
    wait_until(
        "the source to reconnect because of the size cap",
        Duration::from_secs(30),
        || {
            matches!(
                daemon.health().get("capped"),
                Some(SourceState::Reconnecting { error, .. }) if error.contains("max_message_bytes (65536)")
            )
        },
    )
    .await;
    wait_for_acknowledged(&daemon, "capped", 49).await;
    daemon.shutdown().await;
    let subscribes = server.subscribes();
    assert_eq!(subscribes[0], "null");
    assert!(
        subscribes[1..].iter().all(|after| after == "49"),
        "every new subscription asks after the last event read: {subscribes:?}"
    );
    let mut seen: Vec<u64> = broker
        .read("capped")
        .await
        .iter()
        .map(|record| sequence_of(&record.payload))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=49).collect::<Vec<_>>(),
        "nothing past the oversized event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_stream_is_subscribed_again_after_the_last_event_read() {
    const EVENTS: u64 = 2000;
    let first = GraphqlWsServer::start(&[
        "--events",
        "2000",
        "--interval-ms",
        "1",
        "--first-until",
        "1000",
    ])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("orders").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &subscription_source("orders", &first.url, "s3cret"),
    ))
    .await;
    wait_for_metric(&daemon, "tributary_records_produced_total", "orders", 1000).await;
    let port = first.kill();
    let second = GraphqlWsServer::start_on(port, &["--events", "2000", "--interval-ms", "0"]).await;
    wait_for_metric(
        &daemon,
        "tributary_records_produced_total",
        "orders",
        EVENTS,
    )
    .await;
    wait_for_acknowledged(&daemon, "orders", EVENTS).await;
    let reconnects = process::metric(
        &daemon.metrics().render(),
        "tributary_reconnects_total",
        "orders",
    );
    daemon.shutdown().await;
    assert!(reconnects >= 1, "{reconnects} reconnects");
    assert_eq!(
        second.subscribes(),
        ["1000"],
        "the new connection subscribed after the last event read"
    );
    let mut seen: Vec<u64> = broker
        .read("orders")
        .await
        .iter()
        .map(|record| sequence_of(&record.payload))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=EVENTS).collect::<Vec<_>>(), "every event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_subscribes_after_the_stored_position() {
    use common::process::{write_config, Daemon};
    use tributary::state::checkpoint::FileStore;
    const EVENTS: u64 = 6000;
    // An event every millisecond or so: the kill lands while events are in flight. The first
    // subscription stops at 3000 and holds, so the kill always lands mid-stream.
    let server = GraphqlWsServer::start(&[
        "--events",
        "6000",
        "--interval-ms",
        "1",
        "--first-until",
        "3000",
    ])
    .await;
    let broker = Broker::kafka();
    broker.create_topic("crash").await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = daemon_config(
        &broker.brokers(),
        &state.path().join("state"),
        &subscription_source("crash", &server.url, "s3cret"),
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = write_config(state.path(), &toml);

    let mut first = Daemon::spawn(&config, port);
    first.wait_for_produced("crash", 1000).await;
    first
        .wait_for_metric("tributary_checkpoint_commits_total", "crash", 1)
        .await;
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    let stored: u64 = FileStore::open(state.path().join("state"))
        .unwrap()
        .load("crash")
        .unwrap()
        .expect("a position was committed before the kill")
        .as_str()
        .parse()
        .unwrap();
    assert!(
        (1..=3000).contains(&stored),
        "the kill came mid-stream: the stored position {stored} is before the events not yet sent"
    );

    let mut second = Daemon::spawn(&config, port);
    second.wait_for_produced("crash", EVENTS - stored).await;
    assert!(second.terminate().await.success());
    assert_eq!(
        server.subscribes(),
        ["null".to_owned(), stored.to_string()],
        "the restarted daemon subscribed with `after` = the stored position"
    );
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for record in broker.read("crash").await {
        let seq = sequence_of(&record.payload);
        assert_eq!(
            record.key.as_deref(),
            Some(format!("evt-{seq:06}").as_bytes())
        );
        *copies.entry(seq).or_default() += 1;
    }
    let lost: Vec<u64> = (1..=EVENTS).filter(|s| !copies.contains_key(s)).collect();
    assert!(
        lost.is_empty(),
        "{} events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let duplicated: Vec<u64> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        duplicated.iter().all(|&s| s > stored),
        "only events after the stored position {stored} may be duplicated: {:?}",
        duplicated
            .iter()
            .filter(|&&s| s <= stored)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "graphql subscription kill -9 after position {stored} of {EVENTS} was stored: {} events duplicated, 0 lost",
        duplicated.len()
    );
}

#[test]
fn mistakes_in_a_subscription_config_name_the_field_and_the_fix() {
    let check = |table: &str| {
        let toml = daemon_config("localhost:9092", std::path::Path::new("/tmp/unused"), table);
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
[sources.sub]
type = "graphql_subscription"
url = "https://api.example.com/graphql"
topic = "t"
position_variable = "$after"
headers = { Sec-WebSocket-Protocol = "graphql-ws" }
max_frame_bytes = 0
"#,
    );
    for wanted in [
        "sources.sub.url",
        "sources.sub.query",
        "sources.sub.position_variable",
        "needs `position`",
        "without `$`",
        "Sec-WebSocket-Protocol",
        "set `protocol` instead",
        "sources.sub.max_frame_bytes",
    ] {
        assert!(
            errors.contains(wanted),
            "`{wanted}` missing from:\n{errors}"
        );
    }
    let errors = check(
        r#"
[sources.sub]
type = "graphql_subscription"
url = "wss://api.example.com/graphql"
query = "subscription { a }"
protocol = "graphql-ws"
topic = "t"
"#,
    );
    assert!(
        errors.contains("field `sources.sub.protocol`")
            && errors.contains("`graphql-transport-ws` or `subscriptions-transport-ws`"),
        "{errors}"
    );
    std::env::set_var("TRIBUTARY_TEST_SUBSCRIPTION_TOKEN", "t0ken");
    let ok = check(
        r#"
[sources.sub]
type = "graphql_subscription"
url = "wss://api.example.com/graphql"
query = "subscription { a }"
init_payload = { authorization = "Bearer ${env:TRIBUTARY_TEST_SUBSCRIPTION_TOKEN}" }
topic = "t"
"#,
    );
    assert_eq!(ok, "");
}
