use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

use super::*;
use crate::stage::transform::{Transform, Yielded};

/// What jaq alone yields for `program` on `event`: the values' texts, or the failure.
fn jaq(transform: &Transform, event: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    transform
        .run(event.as_bytes(), &mut out)
        .map(|()| out)
        .map_err(|failure| failure.to_string())
}

fn direct(program: &str, event: &str) -> Result<Option<String>, Bail> {
    Direct::compile(program)
        .expect("a direct shape")
        .run(event.as_bytes(), false)
        .map(|value| value.map(|text| String::from_utf8(text).unwrap()))
}

const WIKI: &str = r#"{"$schema":"/mediawiki/recentchange/1.0.0","meta":{"id":"a","offset":4820784717},"id":1659529639,"type":"edit","title":"EFL \"Championship\"","timestamp":1690617099,"user":"87.12.215.232","bot":false,"length":{"old":91108,"new":91166},"wiki":"enwiki","ratio":1.50}"#;

#[test]
fn the_commonest_shapes_take_the_direct_path() {
    let typical = "select(.wiki != null) | {id, title, user, wiki, timestamp}";
    assert_eq!(
        direct(typical, WIKI).unwrap().unwrap(),
        r#"{"id":1659529639,"title":"EFL \"Championship\"","user":"87.12.215.232","wiki":"enwiki","timestamp":1690617099}"#
    );
    // `.` and a `select` that keeps the event yield the event's own text.
    assert_eq!(direct(".", WIKI).unwrap().unwrap(), WIKI);
    assert_eq!(
        direct(r#"select(.type == "edit")"#, WIKI).unwrap().unwrap(),
        WIKI
    );
    assert_eq!(direct(r#"select(.type == "log")"#, WIKI).unwrap(), None);
    assert_eq!(
        direct(
            r#"{m: .meta.id, "n o": .length.new, x: 1.50, y: -2, z: "é\n", t: true}"#,
            WIKI
        )
        .unwrap()
        .unwrap(),
        r#"{"m":"a","n o":91166,"x":1.50,"y":-2,"z":"é\n","t":true}"#
    );
    assert_eq!(direct(".ratio", WIKI).unwrap().unwrap(), "1.50");
    assert_eq!(direct(".ratio > 1.4", WIKI).unwrap().unwrap(), "true");
    assert_eq!(direct(".nothing.deeper", WIKI).unwrap().unwrap(), "null");
    // What jaq writes otherwise, or an error, goes to jaq.
    assert_eq!(direct(".", r#"{"a": 1}"#), Err(Bail));
    assert_eq!(direct(".", r#"{"a":"\/"}"#), Err(Bail));
    assert_eq!(direct(".", r#"{"a":1,"a":2}"#), Err(Bail));
    assert_eq!(direct(".", r#"[-0]"#), Err(Bail));
    assert_eq!(
        direct(".a", r#"{"a":123456789012345678901234567890}"#)
            .unwrap()
            .unwrap(),
        "123456789012345678901234567890"
    );
    assert_eq!(
        direct(".a > 1", r#"{"a":123456789012345678901234567890}"#),
        Err(Bail)
    );
    assert_eq!(direct(".type.x", WIKI), Err(Bail));
    assert_eq!(direct(".", "{not json"), Err(Bail));
    for other in [
        ".x = 1",
        ".[0]",
        ".a?",
        ".a[]",
        "def f: .; f",
        "$ENV",
        "{(.a): 1}",
        r#""\(.a)""#,
        ".a, .b",
        ".a + 1",
        "select(.a) | not",
        "{a: .b, a: .c}",
        "123456789012345678901234567890",
        "@base64",
        "empty",
    ] {
        assert!(Direct::compile(other).is_none(), "{other}");
    }
}

/// Keys the generated events and programs share, so that paths find values.
const KEYS: [&str; 5] = ["a", "b", "c", "wiki", "x y"];

/// Numbers as written in JSON: integers (machine, `-0`, big), decimals in several spellings.
fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-3i64..4).prop_map(|n| n.to_string()),
        Just("-0".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("-123456789012345678901234567890".to_owned()),
        Just("1.50".to_owned()),
        Just("1e3".to_owned()),
        Just("1E+2".to_owned()),
        Just("-0.0".to_owned()),
        Just("2.0".to_owned()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::to_string(&f).unwrap()),
    ]
}

/// Strings as written in JSON, with escapes jaq writes the same way and others it does not.
fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS.to_vec()).prop_map(|k| format!("\"{k}\"")),
        Just(r#""edit""#.to_owned()),
        Just(r#""q\"b\\s\n\t\u0001\u007f""#.to_owned()),
        Just(r#""\u00e9\/""#.to_owned()),
        Just("\"é\u{7f}\"".to_owned()),
        Just(r#""\u001F""#.to_owned()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

/// JSON texts, mostly compact, sometimes with white space; objects may repeat a key.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        json_number(),
        json_string(),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        let separator = prop_oneof![8 => Just(""), 1 => Just(" ")];
        prop_oneof![
            (
                prop::collection::vec(inner.clone(), 0..4),
                separator.clone()
            )
                .prop_map(|(items, sep)| format!("[{}]", items.join(&format!(",{sep}")))),
            (
                prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..5),
                separator
            )
                .prop_map(|(members, sep)| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\":{sep}{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
        ]
    })
}

/// A path: `.`, or one to three keys in jq's spellings.
fn path() -> impl Strategy<Value = String> {
    let key = prop::sample::select(KEYS.to_vec());
    prop::collection::vec((key, 0..3u8), 0..4).prop_map(|keys| {
        if keys.is_empty() {
            return ".".to_owned();
        }
        keys.into_iter()
            .map(|(key, spelling)| match (spelling, key) {
                (_, "x y") | (1, _) => format!(".\"{key}\""),
                (2, _) => format!(".[\"{key}\"]"),
                _ => format!(".{key}"),
            })
            .collect()
    })
}

fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "null",
        "true",
        "false",
        "0",
        "1",
        "-1",
        "-0",
        "2.0",
        "1.5",
        "1e3",
        "-1.50",
        "9223372036854775807",
        r#""a""#,
        r#""edit""#,
        r#""""#,
        r#""é\n""#,
        r#""\u007f""#,
    ])
    .prop_map(str::to_owned)
}

/// Programs of the direct path's shapes.
fn program() -> impl Strategy<Value = String> {
    let operand = prop_oneof![3 => path(), 2 => literal()];
    let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let comparison =
        (operand.clone(), op, operand.clone()).prop_map(|(l, op, r)| format!("{l} {op} {r}"));
    let condition = prop_oneof![comparison.clone(), path()];
    let select = condition.prop_map(|c| format!("select({c})"));
    let value = prop_oneof![3 => path(), 1 => literal(), 1 => comparison.clone()];
    let object = prop::collection::vec(
        (0..KEYS.len(), prop::option::of(value), any::<bool>()),
        0..4,
    )
    .prop_map(|entries| {
        let mut seen = Vec::new();
        let mut parts = Vec::new();
        for (key, value, quoted) in entries {
            let key = KEYS[key];
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let name = if quoted || key == "x y" {
                format!("\"{key}\"")
            } else {
                key.to_owned()
            };
            parts.push(match value {
                Some(value) => format!("{name}: {value}"),
                None => name,
            });
        }
        format!("{{{}}}", parts.join(", "))
    });
    let stage = prop_oneof![3 => path(), 3 => select, 2 => object, 1 => comparison, 1 => literal()];
    prop::collection::vec(stage, 1..4).prop_map(|stages| stages.join(" | "))
}

/// Random programs of the direct path's shapes on random JSON texts: whenever the direct path
/// answers, its output is byte for byte jaq's (values, key order, number and string spelling,
/// or nothing), and the transform (direct path first, jaq on a bail) gives exactly jaq's
/// result, errors included. The direct path must answer for at least a third of the runs (the others are
/// errors, which jaq reports, and texts jaq writes otherwise).
#[test]
fn the_direct_path_gives_exactly_jaqs_result() {
    static ANSWERED: AtomicUsize = AtomicUsize::new(0);
    static BAILED: AtomicUsize = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let strategy = (program(), prop::collection::vec(json_text(), 1..12));
    runner
        .run(&strategy, |(program, events)| {
            let direct = Direct::compile(&program);
            prop_assert!(direct.is_some(), "not a direct shape: {}", program);
            let direct = direct.unwrap();
            let both = Transform::compile(&program).unwrap();
            prop_assert!(both.is_direct());
            let jaq_only = Transform::compile(&program).unwrap().without_direct();
            for event in events {
                let expected = jaq(&jaq_only, &event);
                let admitted = serde_json::from_str::<serde::de::IgnoredAny>(&event).is_ok();
                if admitted {
                    // Admitted or not, the direct path gives the same answer.
                    prop_assert_eq!(
                        direct.run(event.as_bytes(), true),
                        direct.run(event.as_bytes(), false)
                    );
                }
                match direct.run(event.as_bytes(), false) {
                    Ok(value) => {
                        ANSWERED.fetch_add(1, Relaxed);
                        let value: Vec<Vec<u8>> = value.into_iter().collect();
                        prop_assert_eq!(
                            Ok(value),
                            expected.clone(),
                            "program {} on {}",
                            program,
                            event
                        );
                    }
                    Err(Bail) => {
                        BAILED.fetch_add(1, Relaxed);
                    }
                }
                prop_assert_eq!(
                    jaq(&both, &event),
                    expected.clone(),
                    "program {} on {}",
                    program,
                    event
                );
                if admitted {
                    let mut values = Vec::new();
                    let ran = both.run_admitted(event.as_bytes(), &mut values);
                    if ran == Ok(Yielded::Json) {
                        for value in &values {
                            prop_assert!(serde_json::from_slice::<serde_json::Value>(value).is_ok());
                        }
                    }
                    prop_assert_eq!(
                        ran.map(|_| values).map_err(|failure| failure.to_string()),
                        expected
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    let (answered, bailed) = (ANSWERED.load(Relaxed), BAILED.load(Relaxed));
    assert!(
        answered * 3 > answered + bailed,
        "the direct path answered {answered} times and left {bailed} to jaq"
    );
}

/// The recorded Wikimedia events (the benchmark's) all take the direct path with the typical
/// programs, and the stage's records carry exactly what jaq yields for them.
#[test]
fn the_recorded_events_take_the_direct_path_with_jaqs_records() {
    use crate::{
        metrics::{Metrics, SourceKind},
        record::Record,
        stage::{Admission, SourceRules, Stage, StageConfig},
    };
    let metrics = Metrics::new().source("s", SourceKind::Sse);
    for program in [
        ".",
        "select(.wiki != null) | {id, title, user, wiki, timestamp}",
        r#"select(.type == "edit" and .bot == false)"#,
        r#"select(.meta.domain == "en.wikipedia.org") | {id: .meta.id, new: .length.new}"#,
    ] {
        let config = StageConfig {
            transform: Some(program.to_owned()),
            ..StageConfig::default()
        };
        let rules = SourceRules {
            json: true,
            key: None,
            admission: Admission::Pump,
        };
        let stage = Stage::build("s", &config, "t", rules).unwrap();
        let jaq_only = Transform::compile(program).unwrap().without_direct();
        let direct = Direct::compile(program);
        for event in crate::cli::demo::replay::recorded_wikimedia_events() {
            if let Some(direct) = &direct {
                assert!(direct.run(event.as_bytes(), true).is_ok(), "{program}");
            }
            let mut out = Vec::new();
            let record = Record::new(event.as_bytes().to_vec().into(), std::time::UNIX_EPOCH);
            stage.apply(record, &mut out, &metrics).unwrap();
            let produced: Vec<&[u8]> = out
                .iter()
                .filter(|record| !record.marker)
                .map(|record| {
                    assert!(record.dead_letter.is_none(), "{program}");
                    &record.payload[..]
                })
                .collect();
            let expected = jaq(&jaq_only, event).unwrap();
            assert_eq!(produced, expected, "{program} on {event}");
        }
    }
}
