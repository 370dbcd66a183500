//! The commands on hostile input, through the binary: `tributary check` on numbers past what
//! the libraries underneath accept (a clear error naming the source, the field and the fix,
//! never a panic), and `tributary schema infer` on recorded events whose data makes a
//! transform halt or nests too deep (those events are skipped, the rest inferred).

mod common;

use std::process::Command;

use common::process::{binary, write_config};

/// A config with one webhook source `hooks` whose table ends with `extra`.
fn webhook_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"
[kafka]
brokers = "127.0.0.1:9092"

[checkpoint]
dir = "{state}"

[server]
listen = "127.0.0.1:0"

[sources.hooks]
type = "webhook"
topic = "hooks"
signature = {{ scheme = "none" }}
{extra}
"#,
            state = dir.join("state").display()
        ),
    )
}

/// Runs `tributary check` on `extra`; returns its exit code and stderr.
fn check(extra: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = webhook_config(dir.path(), extra);
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn a_dedupe_window_over_a_year_is_a_config_error_not_a_panic() {
    // moka refuses a time to live over 1000 years: `check` panicked building the cache.
    let (code, stderr) = check(r#"dedupe_window = "1001y""#);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("source `hooks`"), "{stderr}");
    assert!(stderr.contains("sources.hooks.dedupe_window"), "{stderr}");
    assert!(stderr.contains("`365d`"), "the longest window: {stderr}");
    assert!(
        stderr.contains(r#"dedupe_window = "24h""#),
        "the fix: {stderr}"
    );
    let (code, stderr) = check(r#"dedupe_window = "365d""#);
    assert_eq!(code, Some(0), "the longest window is valid: {stderr}");
}

#[test]
fn max_concurrent_requests_past_a_million_is_a_config_error_not_a_panic() {
    // tokio's semaphore holds at most `usize::MAX >> 3` permits: `check` panicked at it.
    let (code, stderr) = check("max_concurrent_requests = 2305843009213693952");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("source `hooks`"), "{stderr}");
    assert!(
        stderr.contains("sources.hooks.max_concurrent_requests"),
        "{stderr}"
    );
    assert!(stderr.contains("1000000"), "the bound: {stderr}");
    assert!(
        stderr.contains("max_concurrent_requests = 256"),
        "the fix: {stderr}"
    );
    let (code, stderr) = check("max_concurrent_requests = 1000000");
    assert_eq!(code, Some(0), "the bound itself is valid: {stderr}");
}

#[test]
fn schema_infer_skips_events_that_halt_the_transform_or_nest_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &common::sse_config(
            "127.0.0.1:1",
            &dir.path().join("state"),
            "wiki",
            "http://127.0.0.1:1/feed",
            "wiki",
            "transform = 'if .kill then halt_error else {n} end'",
        ),
    );
    let events = dir.path().join("events.ndjson");
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    std::fs::write(
        &events,
        format!("{{\"n\":1}}\n{{\"n\":2,\"kill\":true}}\n{deep}\n{{\"n\":3}}\n"),
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["schema", "infer", "--source", "wiki", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&events)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Before, jaq's `halt_error` ended the command with exit code 5 at the second event.
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("from 4 event(s) (2 value(s) after the transform, 2 skipped)"),
        "{stderr}"
    );
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["properties"]["n"]["type"], "integer", "{schema}");
}
