use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::{
    metrics::{Metrics, SourceKind},
    record::{DeliveryOutcome, Position},
    state::checkpoint::AckWindow,
};

fn stage(config: StageConfig, topic: &str, key: Option<&str>) -> Stage {
    Stage::build(
        "s",
        &config,
        topic,
        SourceRules {
            json: false,
            key,
            admission: Admission::Pump,
        },
    )
    .unwrap()
}

fn transform(code: &str) -> StageConfig {
    StageConfig {
        transform: Some(code.to_owned()),
        ..StageConfig::default()
    }
}

fn event(payload: &str, position: &str) -> Record {
    let mut record = Record::new(
        Bytes::copy_from_slice(payload.as_bytes()),
        UNIX_EPOCH + Duration::from_secs(1_700_000_010),
    );
    record.position = Some(Position(position.into()));
    record.key = Some(Bytes::from_static(b"k"));
    record
}

fn apply(stage: &Stage, record: Record, out: &mut Vec<Record>, metrics: &SourceMetrics) {
    stage.apply(record, out, metrics).unwrap();
}

fn metrics() -> SourceMetrics {
    Metrics::new().source("s", SourceKind::Sse)
}

fn text(record: &Record) -> &str {
    std::str::from_utf8(&record.payload).unwrap()
}

#[test]
fn without_settings_records_pass_through_untouched() {
    let stage = stage(StageConfig::default(), "t", None);
    assert!(stage.is_passthrough());
    let mut out = Vec::new();
    apply(&stage, event("not even json", "1"), &mut out, &metrics());
    assert_eq!(out.len(), 1);
    assert_eq!(text(&out[0]), "not even json");
    assert!(out[0].dead_letter.is_none() && out[0].topic.is_none());
}

#[test]
fn a_split_event_moves_its_position_only_with_its_last_record() {
    let stage = stage(transform(".items[] | {n: .}"), "t", None);
    let mut out = Vec::new();
    let metrics = metrics();
    apply(
        &stage,
        event(r#"{"items":[1,2,3]}"#, "p1"),
        &mut out,
        &metrics,
    );
    apply(&stage, event(r#"{"items":[4]}"#, "p2"), &mut out, &metrics);
    let payloads: Vec<&str> = out.iter().map(text).collect();
    assert_eq!(
        payloads,
        [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#]
    );
    let positions: Vec<Option<&str>> = out
        .iter()
        .map(|r| r.position.as_ref().map(Position::as_str))
        .collect();
    assert_eq!(positions, [None, None, Some("p1"), Some("p2")]);
    assert!(out.iter().all(|r| r.key.as_deref() == Some(&b"k"[..])));
    // Acknowledged out of order, the position moves only once the whole event is held.
    let mut window = AckWindow::new(None);
    let seqs: Vec<u64> = out
        .iter()
        .map(|r| window.register(r.position.clone()))
        .collect();
    assert!(!window.ack(seqs[2]));
    assert!(!window.ack(seqs[1]));
    assert_eq!(window.committed().0, None);
    assert!(window.ack(seqs[0]));
    assert_eq!(window.committed().0.map(Position::as_str), Some("p1"));
}

#[test]
fn every_record_of_a_split_event_holds_a_share_of_its_completion() {
    let stage = stage(transform(".items[] | {n: .}"), "t", None);
    let metrics = metrics();
    let (sender, mut told) = tokio::sync::oneshot::channel();
    let mut split = event(r#"{"items":[1,2,3]}"#, "p1");
    split.ack = Some(crate::record::EventAck::new(sender));
    let mut out = Vec::new();
    apply(&stage, split, &mut out, &metrics);
    assert_eq!(out.len(), 3);
    let mut shares: Vec<_> = out.iter_mut().map(|r| r.ack.take()).collect();
    assert!(
        shares.iter().all(Option::is_some),
        "each record holds a share"
    );
    // Kafka acknowledges the last record (the one with the position) first.
    shares[2].take().unwrap().settle(DeliveryOutcome::Produced);
    shares[0].take().unwrap().settle(DeliveryOutcome::Produced);
    assert!(
        told.try_recv().is_err(),
        "the sender must not be answered while a record of its event is unsettled"
    );
    shares[1].take().unwrap().settle(DeliveryOutcome::Produced);
    assert_eq!(told.try_recv(), Ok(DeliveryOutcome::Produced));
}

#[test]
fn an_event_the_transform_drops_becomes_a_marker_with_its_position() {
    let stage = stage(transform(r#"select(.kind == "edit")"#), "t", None);
    let mut out = Vec::new();
    let metrics = metrics();
    apply(&stage, event(r#"{"kind":"log"}"#, "p9"), &mut out, &metrics);
    assert_eq!(out.len(), 1);
    assert!(out[0].marker);
    assert_eq!(out[0].position.as_ref().map(Position::as_str), Some("p9"));
    assert_eq!(metrics.records_filtered.get(), 1);
}

#[test]
fn a_runtime_error_dead_letters_the_original_event() {
    let stage = stage(transform(".size | tonumber"), "t", None);
    let mut out = Vec::new();
    let original = r#"{"size":"abc"}"#;
    apply(&stage, event(original, "p1"), &mut out, &metrics());
    assert_eq!(out.len(), 1);
    assert_eq!(text(&out[0]), original);
    assert_eq!(out[0].position.as_ref().map(Position::as_str), Some("p1"));
    let dead_letter = out[0].dead_letter.as_ref().unwrap();
    assert_eq!(dead_letter.kind, "transform_error");
    assert!(
        dead_letter.reason.starts_with("the transform failed"),
        "{}",
        dead_letter.reason
    );
}

#[test]
fn templates_route_key_and_dead_letter_with_a_reason() {
    let config = StageConfig {
        timestamp: Some("/at".into()),
        timestamp_unit: TimestampUnit::Seconds,
        ..StageConfig::default()
    };
    let stage = stage(config, "github.{/type}", Some("{/repo}-{/n}"));
    let metrics = metrics();
    let mut out = Vec::new();
    for payload in [
        r#"{"type":"IssuesEvent","repo":"r","n":1,"at":1700000000}"#,
        r#"{"repo":"r","n":1,"at":1700000000}"#,
        r#"{"type":"has space","repo":"r","n":1,"at":1700000000}"#,
        r#"{"type":"PushEvent","repo":"r","at":1700000000}"#,
        r#"{"type":"PushEvent","repo":"r","n":2,"at":"soon"}"#,
    ] {
        apply(&stage, event(payload, "p"), &mut out, &metrics);
    }
    assert_eq!(out[0].topic.as_deref(), Some("github.IssuesEvent"));
    assert_eq!(out[0].key.as_deref(), Some(&b"r-1"[..]));
    assert_eq!(out[0].event_time, Some(1_700_000_000_000));
    assert!(out[0].dead_letter.is_none());
    let kinds: Vec<(&str, &str)> = out[1..]
        .iter()
        .map(|r| {
            let d = r.dead_letter.as_ref().unwrap();
            (d.kind, d.reason.as_str())
        })
        .collect();
    assert_eq!(kinds[0].0, "invalid_topic");
    assert!(kinds[0].1.contains("no value at `/type`"), "{}", kinds[0].1);
    assert_eq!(kinds[1].0, "invalid_topic");
    assert!(kinds[1].1.contains("`github.has space`"), "{}", kinds[1].1);
    assert_eq!(kinds[2].0, "key_not_found");
    assert!(kinds[2].1.contains("`/n`"), "{}", kinds[2].1);
    assert_eq!(kinds[3].0, "invalid_timestamp");
    // The lag (fetched 10 s after the event time) was observed once.
    assert_eq!(metrics.event_lag_seconds.get_sample_count(), 1);
    assert_eq!(metrics.event_lag_seconds.get_sample_sum(), 10.0);
}

#[test]
fn config_errors_name_the_field_and_the_position() {
    let config = StageConfig {
        transform: Some("{a: .b,\n c: (.d | }".into()),
        timestamp: Some("meta/dt".into()),
        record_headers: [("tributary.x".to_owned(), "y".to_owned())].into(),
        ..StageConfig::default()
    };
    let rules = SourceRules {
        json: true,
        key: Some("{/x}"),
        admission: Admission::Pump,
    };
    let errors = Stage::build("wiki", &config, "t.{/a", rules).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let joined = text.join("\n");
    for needle in [
        "sources.wiki.transform",
        "line 2, column",
        "sources.wiki.timestamp",
        "sources.wiki.topic",
        "sources.wiki.record_headers.tributary.x",
    ] {
        assert!(joined.contains(needle), "{needle} missing from:\n{joined}");
    }
}

#[test]
fn records_already_dead_lettered_or_markers_are_left_alone() {
    let stage = stage(transform(".x"), "t", None);
    let mut out = Vec::new();
    let mut bad = event("{", "p1");
    bad.dead_letter = Some(DeadLetter::new("invalid_json", "no".into()));
    apply(&stage, bad, &mut out, &metrics());
    apply(
        &stage,
        Record::marker(Position("p2".into())),
        &mut out,
        &metrics(),
    );
    assert_eq!(out[0].dead_letter.as_ref().unwrap().kind, "invalid_json");
    assert_eq!(text(&out[0]), "{");
    assert!(out[1].marker);
    let _ = SystemTime::now();
}

#[test]
fn a_json_source_dead_letters_events_that_are_not_json_and_reads_its_key_pointer() {
    let rules = SourceRules {
        json: true,
        key: Some("/meta/id"),
        admission: Admission::Pump,
    };
    let stage = Stage::build("s", &StageConfig::default(), "t", rules).unwrap();
    assert!(!stage.is_passthrough());
    let mut out = Vec::new();
    for payload in [
        r#"{"meta":{"id":"abc"}}"#,
        r#"{"meta":{"id":7}}"#,
        r#"{"meta":{"id":null}}"#,
        r#"{"meta":{}}"#,
        "{not json",
    ] {
        apply(&stage, event(payload, "p"), &mut out, &metrics());
    }
    let keys: Vec<Option<&[u8]>> = out[..2].iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [Some(&b"abc"[..]), Some(&b"7"[..])]);
    // A `null` key is no key: the record is not produced under the key `null`.
    for missing in &out[2..4] {
        let missing = missing.dead_letter.as_ref().unwrap();
        assert_eq!(missing.kind, "key_not_found");
        assert!(
            missing.reason.contains("`/meta/id` matches nothing"),
            "{}",
            missing.reason
        );
    }
    assert_eq!(out[4].dead_letter.as_ref().unwrap().kind, "invalid_json");
    assert_eq!(text(&out[4]), "{not json");
    // With a transform, an event that is not JSON is `invalid_json` too.
    let rules = SourceRules {
        json: true,
        key: None,
        admission: Admission::Pump,
    };
    let stage = Stage::build("s", &transform("."), "t", rules).unwrap();
    let mut out = Vec::new();
    apply(&stage, event("{not json", "p"), &mut out, &metrics());
    assert_eq!(out[0].dead_letter.as_ref().unwrap().kind, "invalid_json");
}

#[test]
fn a_source_that_admits_its_own_events_leaves_the_pump_a_passthrough() {
    let rules = SourceRules {
        json: true,
        key: Some("/id"),
        admission: Admission::Source,
    };
    let stage = Stage::build("s", &StageConfig::default(), "t", rules).unwrap();
    assert!(stage.is_passthrough());
    // The pump does not admit: the record passes as it is.
    let mut out = Vec::new();
    apply(&stage, event("{not json", "p"), &mut out, &metrics());
    assert!(out[0].dead_letter.is_none());
    // The source admits it in its own task.
    let mut record = event("{not json", "p");
    stage.admit(&mut record);
    assert_eq!(record.dead_letter.unwrap().kind, "invalid_json");
    let mut record = event(r#"{"id":"k1"}"#, "p");
    stage.admit(&mut record);
    assert_eq!(record.key.as_deref(), Some(&b"k1"[..]));
    assert!(record.dead_letter.is_none());
}
