//! `tributary schema infer` on the Wikimedia events: from the recorded file, through the example
//! config's transform, and from a live SSE feed; and its errors.

mod common;

use std::{path::Path, process::Output};

use common::{
    process::{binary, write_config},
    *,
};
use serde_json::Value;
use tributary::cli::demo::replay::{self, ReplayOptions, ReplayServer};

const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/wikimedia/recentchange-99-events.polars-book.ndjson"
);

/// Runs `tributary schema infer --config CONFIG --source SOURCE ARGS…` in the project
/// directory; returns the output.
async fn infer(config: &str, source: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["schema", "infer", "--config", config, "--source", source])
        .args(args)
        .output()
        .await
        .unwrap()
}

/// A config with one SSE source `wiki` reading `url`.
fn wiki_config(dir: &Path, url: &str, extra: &str) -> String {
    let toml = sse_config(
        "127.0.0.1:1",
        &dir.join("state"),
        "wiki",
        url,
        "wiki",
        extra,
    );
    write_config(dir, &toml).display().to_string()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .expect("the inferred schema compiles")
}

fn read_schema(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn recorded() -> Vec<Value> {
    replay::recorded_wikimedia_events()
        .into_iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn infers_a_schema_every_recorded_wikimedia_event_matches() {
    let dir = tempfile::tempdir().unwrap();
    let config = wiki_config(dir.path(), "http://127.0.0.1:1/feed", "");
    let out = dir.path().join("recentchange.json");
    let output = infer(
        &config,
        "wiki",
        &[
            "--input",
            RECORDED,
            "--sample",
            "1000",
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let events = recorded();
    assert!(
        stderr.contains(&format!("from {} event(s)", events.len())),
        "{stderr}"
    );
    assert!(stderr.contains("the file holds fewer events"), "{stderr}");

    let schema = read_schema(&out);
    let validator = validator(&schema);
    for event in &events {
        assert!(validator.is_valid(event), "{event} does not match");
    }
    // Every recorded event has the same 20 fields: all are required.
    let required = |schema: &Value| -> Vec<String> {
        schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(required(&schema).len(), 20, "{schema}");
    assert!(required(&schema).contains(&"minor".to_owned()));
    assert_eq!(
        schema["properties"]["meta"]["properties"]["dt"]["type"],
        "string"
    );
    // Open to fields the samples never showed (they are reported as drift).
    assert!(schema.get("additionalProperties").is_none());

    // One more event without `minor` and with a field no other event has (as a log event
    // would): `minor` is no longer required, the new field is named but not required.
    let mut odd = events[0].clone();
    odd.as_object_mut().unwrap().remove("minor");
    odd["log_type"] = "delete".into();
    let input = dir.path().join("events.ndjson");
    let mut text = std::fs::read_to_string(RECORDED).unwrap();
    text.push_str(&format!("\n{odd}\n"));
    std::fs::write(&input, text).unwrap();
    let output = infer(
        &config,
        "wiki",
        &["--input", input.to_str().unwrap(), "--sample", "101"],
    )
    .await;
    assert!(output.status.success());
    let schema: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!required(&schema).contains(&"minor".to_owned()));
    assert!(!required(&schema).contains(&"log_type".to_owned()));
    assert_eq!(schema["properties"]["log_type"]["type"], "string");
    assert_eq!(required(&schema).len(), 19);
}

#[tokio::test]
async fn infers_what_the_transform_yields() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/transform-wikimedia.toml"
    ))
    .unwrap()
    .replace("./state", &dir.path().join("state").display().to_string());
    let config = write_config(dir.path(), &example);
    let output = infer(
        config.to_str().unwrap(),
        "enwiki_edits",
        &["--input", RECORDED],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let edits = recorded()
        .into_iter()
        .filter(|event| event["wiki"] == "enwiki" && event["type"] == "edit")
        .count();
    assert!(edits > 0);
    assert!(
        stderr.contains(&format!("({edits} value(s) after the transform")),
        "{stderr}"
    );
    let schema: Value = serde_json::from_slice(&output.stdout).unwrap();
    validator(&schema);
    // `meta` was flattened into `meta_*` fields by the example's program.
    assert!(schema["properties"].get("meta").is_none());
    assert_eq!(schema["properties"]["meta_dt"]["type"], "string");
    assert_eq!(schema["properties"]["wiki"]["type"], "string");
}

#[tokio::test]
async fn infers_from_the_live_feed_then_stops() {
    let feed = ReplayServer::start(replay::wikimedia_feed(500), ReplayOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = wiki_config(dir.path(), &feed.url(), "");
    let out = dir.path().join("live.json");
    let output = infer(
        &config,
        "wiki",
        &["--sample", "40", "-o", out.to_str().unwrap()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("from 40 event(s)"), "{stderr}");
    assert_eq!(
        feed.stats()
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let schema = read_schema(&out);
    let validator = validator(&schema);
    for event in recorded().iter().take(40) {
        assert!(validator.is_valid(event), "{event} does not match");
    }
    // Nothing was stored: the live read does not move the source's position.
    let stored: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .map(|entries| entries.collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test]
async fn names_the_problem_when_it_cannot_infer() {
    let dir = tempfile::tempdir().unwrap();
    let config = wiki_config(dir.path(), "http://127.0.0.1:1/feed", "");

    let output = infer(&config, "nope", &["--input", RECORDED]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("no source named `nope` (its sources: wiki)"),
        "{stderr}"
    );

    let not_json = dir.path().join("events.ndjson");
    std::fs::write(&not_json, "not json\n{\"half\": \n").unwrap();
    let output = infer(&config, "wiki", &["--input", not_json.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("no record to infer from"), "{stderr}");
    assert!(stderr.contains("2 event(s) read, 2 skipped"), "{stderr}");
    assert!(stderr.contains("event data is not valid JSON"), "{stderr}");
}

#[tokio::test]
async fn a_failing_feed_is_named_when_no_record_came() {
    let feed = ScriptedServer::start(vec![Scripted {
        status: 500,
        headers: Vec::new(),
        body: "down".into(),
        stay_open: false,
    }])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = wiki_config(dir.path(), &format!("{}/feed", feed.base_url), "");
    let output = infer(&config, "wiki", &["--timeout", "2"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped before a record arrived"),
        "{stderr}"
    );
    assert!(stderr.contains("500"), "{stderr}");
    assert!(stderr.contains("still failing after 2 s"), "{stderr}");
}
