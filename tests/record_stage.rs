//! The record stage (transforms, topic templates, event time, static headers): the example
//! configs' programs on the recorded feeds, and end to end through Apache Kafka.

mod common;

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use common::*;
use tributary::{
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
    config,
    metrics::{Metrics, SourceKind},
    record::{Position, Record},
    runtime::health::SourceState,
    sources::SourceConfig,
    stage::{Admission, SourceRules, Stage},
    state::checkpoint::FileStore,
};

/// The stage of the only source of example config `file`, built as the daemon builds it.
fn example_stage(file: &str) -> Stage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let raw = config::parse_toml(&text).unwrap();
    let (name, source) = raw.sources.iter().next().expect("one source");
    let (topic, key): (&str, Option<&str>) = match source {
        SourceConfig::Sse(c) => (&c.topic, None),
        SourceConfig::Websocket(c) => (&c.topic, c.key.as_deref()),
        SourceConfig::Rest(c) => (&c.topic, None),
        other => panic!("unexpected source kind {:?}", other.kind()),
    };
    let stage = source.stage_config();
    Stage::build(
        name,
        &stage,
        topic,
        SourceRules {
            json: true,
            key,
            admission: Admission::Pump,
        },
    )
    .unwrap()
}

/// Runs `events` through `stage`; returns what it yields.
fn shape(stage: &Stage, events: impl IntoIterator<Item = String>) -> Vec<Record> {
    let metrics = Metrics::new().source("example", SourceKind::Sse);
    let mut out = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let mut record = Record::new(Bytes::from(event), std::time::SystemTime::now());
        record.position = Some(Position(i.to_string().into()));
        stage.apply(record, &mut out, &metrics).unwrap();
    }
    out
}

fn json(record: &Record) -> serde_json::Value {
    serde_json::from_slice(&record.payload).unwrap()
}

fn rfc3339_millis(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn the_wikimedia_example_keeps_enwiki_edits_and_flattens_meta() {
    let stage = example_stage("config/transform-wikimedia.toml");
    let mut events: Vec<String> = replay::recorded_wikimedia_events()
        .into_iter()
        .map(str::to_owned)
        .collect();
    // The recording holds English Wikipedia edits only: add one of another wiki and one log
    // event, which the program must leave out.
    let mut other: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    other["wiki"] = "dewiki".into();
    events.push(other.to_string());
    let mut log: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
    log["type"] = "log".into();
    events.push(log.to_string());
    let out = shape(&stage, events.clone());
    let kept: Vec<&Record> = out.iter().filter(|r| !r.marker).collect();
    assert_eq!(kept.len(), events.len() - 2);
    assert!(out[out.len() - 2].marker && out[out.len() - 1].marker);
    for (record, event) in kept.iter().zip(&events) {
        let original: serde_json::Value = serde_json::from_str(event).unwrap();
        let shaped = json(record);
        assert!(record.dead_letter.is_none());
        assert!(shaped.get("meta").is_none(), "meta is flattened");
        assert_eq!(shaped["meta_id"], original["meta"]["id"]);
        assert_eq!(shaped["title"], original["title"]);
        assert_eq!(
            record.event_time,
            Some(rfc3339_millis(original["meta"]["dt"].as_str().unwrap()))
        );
    }
    assert_eq!(
        stage.headers(),
        [("pipeline".to_owned(), "enwiki-edits".to_owned())]
    );
}

#[test]
fn the_coinbase_example_keeps_matches_with_numeric_price_and_size() {
    let stage = example_stage("config/transform-coinbase.toml");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/coinbase-ws/COINBASE.ws.28.0"
    );
    let frames: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("wss://"))
        .filter_map(|line| line.split_once(": ").map(|(_, json)| json.to_owned()))
        .collect();
    let matches: Vec<serde_json::Value> = frames
        .iter()
        .map(|f| serde_json::from_str::<serde_json::Value>(f).unwrap())
        .filter(|f| f["type"] == "match")
        .collect();
    assert_eq!(matches.len(), 97, "the recording's match messages");
    let out = shape(&stage, frames.clone());
    let kept: Vec<&Record> = out.iter().filter(|r| !r.marker).collect();
    assert_eq!(kept.len(), matches.len());
    assert_eq!(out.len(), frames.len(), "one record or marker per frame");
    for (record, original) in kept.iter().zip(&matches) {
        let shaped = json(record);
        let price: f64 = original["price"].as_str().unwrap().parse().unwrap();
        assert_eq!(shaped["price"].as_f64(), Some(price));
        assert!(shaped["size"].is_number());
        let product = original["product_id"].as_str().unwrap();
        assert_eq!(
            record.topic.as_deref(),
            Some(format!("coinbase.match.{product}").as_str())
        );
        assert_eq!(record.key.as_deref(), Some(product.as_bytes()));
        assert_eq!(
            record.event_time,
            Some(rfc3339_millis(original["time"].as_str().unwrap()))
        );
    }
}

#[test]
fn the_github_example_keeps_a_few_fields_and_updated_at_in_epoch_millis() {
    let stage = example_stage("config/transform-github.toml");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/github-rest/paginate-issues.json"
    );
    let fixture: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let issues: Vec<serde_json::Value> = fixture
        .iter()
        .filter(|exchange| exchange["method"] == "get")
        .filter_map(|exchange| exchange["response"].as_array())
        .flatten()
        .filter(|issue| issue.get("updated_at").is_some())
        .cloned()
        .collect();
    assert!(issues.len() >= 3, "the fixture's issues");
    let out = shape(&stage, issues.iter().map(ToString::to_string));
    assert_eq!(out.len(), issues.len());
    for (record, issue) in out.iter().zip(&issues) {
        assert!(record.dead_letter.is_none(), "{:?}", record.dead_letter);
        let shaped = json(record);
        let fields: Vec<&str> = shaped
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // (serde_json sorts the names.)
        assert_eq!(
            fields,
            ["id", "number", "state", "title", "updated_at", "user"]
        );
        let millis = rfc3339_millis(issue["updated_at"].as_str().unwrap());
        assert_eq!(shaped["updated_at"].as_i64(), Some(millis));
        assert_eq!(shaped["user"], issue["user"]["login"]);
        assert_eq!(record.event_time, Some(millis));
    }
}

/// The recorded Wikimedia events, replayed once each over SSE, through four sources: the
/// example's program with its event time, a split, routing to topics by namespace (one of them
/// missing), and a program that fails on some events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_route_and_stamp_recorded_events_through_kafka() {
    let recorded = replay::recorded_wikimedia_events();
    let events = recorded.len();
    let originals: Vec<serde_json::Value> = recorded
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let count_ns = |ns: i64| originals.iter().filter(|e| e["namespace"] == ns).count();
    let broker = Broker::kafka();
    // `wiki.ns118` is left out on purpose: the records routed there are dead-lettered.
    broker
        .create_topics(
            &[
                "edits",
                "edits.dlq",
                "split",
                "split.dlq",
                "wiki.ns0",
                "wiki.ns2",
                "wiki.dlq",
                "errors",
                "errors.dlq",
                "checked",
                "checked.dlq",
                "drifting",
                "drifting.dlq",
                "strict",
                "strict.dlq",
            ],
            1,
        )
        .await;
    let feed = ReplayServer::start(replay::wikimedia_feed(events), ReplayOptions::default())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/transform-wikimedia.toml"
    ))
    .unwrap();
    let program = example.split("'''").nth(1).expect("the example's program");
    // Namespaces 0, 2 and 4 only: the other events' records fail the schema.
    let schema = state.path().join("namespaces.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "required": ["namespace"],
            "properties": {"namespace": {"enum": [0, 2, 4]}}}"#,
    )
    .unwrap();
    // A schema that names `title` only and lets other fields through: `namespace` drifts.
    let titles = state.path().join("titles.json");
    std::fs::write(
        &titles,
        r#"{"type": "object", "properties": {"title": {"type": "string"}}}"#,
    )
    .unwrap();
    let url = feed.url();
    let source = |name: &str, topic: &str, extra: &str| {
        format!(
            "\n[sources.{name}]\ntype = \"sse\"\nurl = \"{url}\"\ntopic = \"{topic}\"\n\
             reconnect = {{ initial_delay = \"20ms\", max_delay = \"200ms\" }}\n{extra}\n"
        )
    };
    let toml = format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "20s"
# A record routed to a missing topic fails after this long instead of 30 s.
producer = {{ "topic.metadata.propagation.max.ms" = "1000" }}

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:0"
{edits}{split}{routed}{errors}{checked}{drifting}{strict}"#,
        brokers = broker.brokers(),
        state = state.path().display(),
        edits = source(
            "edits",
            "edits",
            &format!(
                "transform = '''{program}'''\ntimestamp = \"/meta_dt\"\n\
                 record_headers = {{ pipeline = \"enwiki-edits\" }}"
            )
        ),
        split = source("split", "split", "transform = '{title}, {user}'"),
        routed = source(
            "routed",
            "wiki.ns{/namespace}",
            "dead_letter_topic = \"wiki.dlq\"\n\
             transform = 'select(.namespace != 4) | {title, namespace}'"
        ),
        drifting = source(
            "drifting",
            "drifting",
            &format!(
                "transform = '{{title, namespace}}'\nschema = \"{}\"\non_drift = \"dead_letter\"",
                titles.display()
            )
        ),
        strict = source(
            "strict",
            "strict",
            &format!(
                "transform = '{{title, namespace}}'\nschema = \"{}\"\non_drift = \"fail\"",
                titles.display()
            )
        ),
        checked = source(
            "checked",
            "checked",
            &format!(
                "transform = '{{title, namespace}}'\nschema = \"{}\"",
                schema.display()
            )
        ),
        errors = source(
            "errors",
            "errors",
            "transform = '{title, next: ((if .namespace == 0 then .length.new else .comment end) + 1)}'"
        ),
    );
    let daemon = start_daemon(&toml).await;
    let not_articles = events - count_ns(0);
    wait_for_acknowledged(&daemon, "edits", events as u64).await;
    wait_for_acknowledged(&daemon, "split", 2 * events as u64).await;
    wait_for_acknowledged(&daemon, "routed", (events - count_ns(4)) as u64).await;
    wait_for_acknowledged(&daemon, "errors", events as u64).await;
    wait_for_acknowledged(&daemon, "checked", events as u64).await;
    wait_for_acknowledged(&daemon, "drifting", events as u64).await;
    wait_until(
        "the strict source to stop on drift",
        Duration::from_secs(30),
        || matches!(daemon.health().get("strict"), Some(SourceState::Failed(_))),
    )
    .await;
    let Some(SourceState::Failed(why)) = daemon.health().get("strict") else {
        unreachable!()
    };
    assert!(
        why.contains("schema drift") && why.contains("`/namespace`"),
        "{why}"
    );
    let scrape = daemon.metrics().render();
    // Every position is stored, filtered events included (the marker of the last ones).
    let last_id = replay::wikimedia_event_id(events - 1);
    wait_until_async("every position stored", || {
        let (state, last_id) = (state.path().to_owned(), last_id.clone());
        async move {
            let store = FileStore::open(&state).unwrap();
            ["edits", "split", "routed", "errors", "checked"]
                .iter()
                .all(|name| {
                    store.load(name).unwrap().map(|p| p.0.to_string()) == Some(last_id.clone())
                })
        }
    })
    .await;
    daemon.shutdown().await;

    // The example: reshaped, stamped with the event time, static header added.
    let edits = broker.read("edits").await;
    assert_eq!(edits.len(), events);
    for record in &edits {
        let shaped: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        let id = record.header("tributary.event_id").unwrap();
        let original = &originals[replay::wikimedia_event_index(id).unwrap()];
        assert!(shaped.get("meta").is_none());
        assert_eq!(shaped["meta_id"], original["meta"]["id"]);
        let dt = original["meta"]["dt"].as_str().unwrap();
        assert_eq!(
            record.timestamp,
            Some(rfc3339_millis(dt)),
            "Kafka timestamp"
        );
        let header = record.header("tributary.event_time").unwrap();
        assert_eq!(rfc3339_millis(header), rfc3339_millis(dt));
        assert_eq!(record.header("pipeline"), Some("enwiki-edits"));
    }
    assert!(
        scrape.contains(&format!(
            "tributary_event_lag_seconds_count{{kind=\"sse\"}} {events}"
        )),
        "the lag histogram counts every stamped record"
    );

    // A split: two records per event, in order, each with the event's key.
    let split = broker.read("split").await;
    assert_eq!(split.len(), 2 * events);
    for (i, pair) in split.chunks(2).enumerate() {
        let id = replay::wikimedia_event_id(i);
        assert_eq!(pair[0].key.as_deref(), Some(id.as_bytes()));
        assert_eq!(pair[1].key.as_deref(), Some(id.as_bytes()));
        let title: serde_json::Value = serde_json::from_slice(&pair[0].payload).unwrap();
        let user: serde_json::Value = serde_json::from_slice(&pair[1].payload).unwrap();
        assert_eq!(title["title"], originals[i]["title"]);
        assert_eq!(user["user"], originals[i]["user"]);
    }

    // Routing: one topic per namespace; the missing topic's records dead-lettered with why.
    assert_eq!(broker.read("wiki.ns0").await.len(), count_ns(0));
    assert_eq!(broker.read("wiki.ns2").await.len(), count_ns(2));
    let unrouted = broker.read("wiki.dlq").await;
    assert_eq!(unrouted.len(), count_ns(118));
    for record in &unrouted {
        assert_eq!(record.header("tributary.error_kind"), Some("unknown_topic"));
        let reason = record.header("tributary.error").unwrap();
        assert!(reason.contains("`wiki.ns118`"), "{reason}");
    }
    assert!(scrape.contains(&format!(
        "tributary_records_filtered_total{{source=\"routed\"}} {}",
        count_ns(4)
    )));

    // A schema violation: the record dead-lettered with the failing path and keyword.
    let valid = count_ns(0) + count_ns(2) + count_ns(4);
    assert_eq!(broker.read("checked").await.len(), valid);
    let violations = broker.read("checked.dlq").await;
    assert_eq!(violations.len(), events - valid);
    for record in &violations {
        assert_eq!(
            record.header("tributary.error_kind"),
            Some("schema_violation")
        );
        assert_eq!(
            record.header("tributary.schema_instance_path"),
            Some("/namespace")
        );
        assert_eq!(record.header("tributary.schema_keyword"), Some("enum"));
        let shaped: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        assert!(![0, 2, 4].contains(&shaped["namespace"].as_i64().unwrap()));
    }

    // Drift: counted, and dead-lettered with its path under `on_drift = "dead_letter"`; under
    // `fail` the source stopped at its first record, so nothing went out and no position moved.
    assert!(scrape.contains(&format!(
        "tributary_schema_drift_total{{kind=\"unknown_field\",source=\"drifting\"}} {events}"
    )));
    let drifted = broker.read("drifting.dlq").await;
    assert_eq!(drifted.len(), events);
    assert!(broker.read("drifting").await.is_empty());
    for record in &drifted {
        assert_eq!(record.header("tributary.error_kind"), Some("schema_drift"));
        assert_eq!(
            record.header("tributary.schema_instance_path"),
            Some("/namespace")
        );
    }
    assert!(broker.read("strict").await.is_empty());
    assert!(broker.read("strict.dlq").await.is_empty());
    assert_eq!(
        FileStore::open(state.path())
            .unwrap()
            .load("strict")
            .unwrap(),
        None
    );

    // A runtime error: the original event dead-lettered with jaq's message.
    assert_eq!(broker.read("errors").await.len(), count_ns(0));
    let failed = broker.read("errors.dlq").await;
    assert_eq!(failed.len(), not_articles);
    let by_id: BTreeMap<usize, &tributary::cli::demo::kafka_admin::ConsumedRecord> = failed
        .iter()
        .map(|r| {
            let id = r.header("tributary.event_id").unwrap();
            (replay::wikimedia_event_index(id).unwrap(), r)
        })
        .collect();
    for (i, record) in by_id {
        assert_eq!(record.payload, recorded[i].as_bytes(), "the original event");
        assert_eq!(
            record.header("tributary.error_kind"),
            Some("transform_error")
        );
        let reason = record.header("tributary.error").unwrap();
        assert!(reason.starts_with("the transform failed: "), "{reason}");
    }
}
