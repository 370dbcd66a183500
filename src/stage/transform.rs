//! jq transforms, run by the jaq crates (a jq clone in Rust): a program compiled once at
//! config time, run on each event. Following jq, a program yields zero values (`select(…)` left
//! nothing), one, or many (`.items[]`); each becomes a record.
//!
//! The event's data must never decide the daemon's fate, so the program runs in a sandbox:
//! - JSON nested deeper than [`MAX_NESTING`] levels (the event, a string given to `fromjson`,
//!   a value the program yields) is refused before jaq's reader or writer, which recurse once
//!   per level, could overflow the stack; a value yielded too deep is dropped without recursion;
//! - `halt` and `halt_error` end the program for this event only (a [`Failure`]), never the
//!   process (jaq's `unwrap_valr` calls `std::process::exit`: it is not used here), and
//!   `halt_error` does not print the event to the daemon's standard error;
//! - `env` and `$ENV` are `{}`: a program cannot copy the daemon's secrets into records;
//! - an event may yield at most [`MAX_OUTPUTS`] values and [`MAX_OUTPUT_BYTES`] bytes.
//!
//! The commonest programs (field paths, `select` with a comparison, objects of paths, pipes of
//! these) run on the direct path ([`super::direct`]) without jaq's values, with jaq's result;
//! jaq runs every other program, and these on any event the direct path is not sure of.
//!
//! What is not bounded: jaq has no step budget, fuel or cancellation hook (jaq-core 3.1), so a
//! program that loops without yielding (`last(repeat(1))`, `def f: f; f`) stalls its source, and
//! memory held by values the program builds before yielding them (`[range(1e9)]`) is not capped.
//! Such programs come from the operator's config, not the feed; `tributary schema infer` on a
//! recorded event shows them before they run in the daemon. Values the program itself nests
//! beyond the limit inside jaq (not yielded) are also the program's own doing.

use jaq_core::{
    box_iter::box_once,
    data::JustLut,
    load::{Arena, File, Loader},
    native::{run, v, Fun},
    Compiler, Ctx, Cv, Exn, ValXs, Vars,
};
use jaq_json::{Map, Val};

use super::direct::Direct;
use crate::json::{check_nesting, MAX_NESTING};

/// The most values a program may yield for one event; the event that yields more is a
/// [`Failure`] (a runaway such as `repeat(.)` ends here instead of stalling its source).
pub const MAX_OUTPUTS: usize = 10_000;

/// The most bytes (compact JSON, all values together) a program may yield for one event:
/// 16 MiB, the default bound of a source's channel.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;

/// The longest failure reason kept, in bytes: jaq's messages quote the value that failed,
/// which may be the whole event, and the reason travels as a Kafka header.
const MAX_REASON_BYTES: usize = 1024;

/// Definitions that replace jaq-std's: `env` is empty, and `halt_error` halts without
/// printing its input to the daemon's standard error.
const SANDBOX_DEFS: &str =
    "def env: {}; def halt_error($exit_code): halt($exit_code); def halt_error: halt(5);";

/// The compiled program.
type Filter = jaq_core::compile::Filter<jaq_core::Native<JustLut<Val>>>;

/// A compiled jq program.
pub struct Transform {
    filter: Filter,
    /// The program in the direct path's shapes, run without jaq when it can be
    /// ([`super::direct`]).
    direct: Option<Direct>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transform")
    }
}

/// What is known of the values a transform yielded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yielded {
    /// Every value is JSON.
    Json,
    /// A value may not be JSON (jaq can yield NaN, infinities, byte strings, non-string keys):
    /// parse them to know.
    Unchecked,
}

/// Why a transform yielded nothing for an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The event is not JSON (the parser's message).
    NotJson(String),
    /// The program raised an error (jaq's message).
    Failed(String),
}

impl Failure {
    /// A failure of the program, its reason cut to [`MAX_REASON_BYTES`].
    fn failed(reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        Failure::Failed(reason)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotJson(reason) => write!(f, "the event is not JSON: {reason}"),
            Failure::Failed(reason) => write!(f, "the transform failed: {reason}"),
        }
    }
}

/// Where a syntax error is in a program's text: line and column, both from 1.
fn position(code: &str, at: &str) -> (usize, usize) {
    // `at` is a slice of `code` (the rest of the program where the error is), so its address
    // gives the offset; anything else counts as the end of the program.
    let start = code.as_ptr() as usize;
    let offset = (at.as_ptr() as usize)
        .checked_sub(start)
        .filter(|offset| *offset <= code.len())
        .unwrap_or(code.len());
    let before = &code[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Transform {
    /// Compiles `code` with jq's standard library (jaq-std and jaq-json definitions).
    ///
    /// # Errors
    /// A sentence for each syntax error or undefined name, with its line and column.
    pub fn compile(code: &str) -> Result<Self, Vec<String>> {
        let program = File { code, path: () };
        let sandbox = jaq_core::load::parse(SANDBOX_DEFS, |parser| parser.defs())
            .expect("the sandbox definitions parse");
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .chain(sandbox);
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !matches!(*name, "env" | "fromjson"))
            .chain([fromjson()]);
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, program).map_err(|errors| {
            let mut messages = Vec::new();
            for (_, error) in errors {
                match error {
                    jaq_core::load::Error::Io(errors) => {
                        for (path, error) in errors {
                            messages.push(format!("cannot load module `{path}`: {error}"));
                        }
                    }
                    jaq_core::load::Error::Lex(errors) => {
                        for (expected, at) in errors {
                            let (line, column) = position(code, at);
                            messages.push(format!(
                                "syntax error at line {line}, column {column}: expected {}",
                                expected.as_str()
                            ));
                        }
                    }
                    jaq_core::load::Error::Parse(errors) => {
                        for (expected, at) in errors {
                            let (line, column) = position(code, at);
                            messages.push(format!(
                                "syntax error at line {line}, column {column}: expected {}",
                                expected.as_str()
                            ));
                        }
                    }
                }
            }
            messages
        })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(["$ENV"])
            .compile(modules)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .flat_map(|(_, errors)| errors)
                    .map(|(name, undefined)| {
                        let (line, column) = position(code, name);
                        format!(
                            "undefined {} `{name}` at line {line}, column {column}",
                            undefined.as_str()
                        )
                    })
                    .collect::<Vec<_>>()
            })?;
        Ok(Transform {
            filter,
            direct: Direct::compile(code),
        })
    }

    /// True when the program takes the direct path ([`super::direct`]) on the events it can.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The same program without its direct path: jaq runs it on every event (to compare the
    /// two).
    #[cfg(test)]
    pub(crate) fn without_direct(mut self) -> Self {
        self.direct = None;
        self
    }

    /// Runs the program on `event` (JSON text) and appends each value it yields, as compact
    /// JSON text, to `out`.
    ///
    /// # Errors
    /// [`Failure`]: the event is not JSON or is nested deeper than [`MAX_NESTING`] levels, or
    /// the program raised an error (jaq's message), halted, yielded a value nested too deep, or
    /// yielded more than [`MAX_OUTPUTS`] values or [`MAX_OUTPUT_BYTES`] bytes. `out` is then
    /// left as it was.
    pub fn run(&self, event: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), Failure> {
        self.run_event(event, false, out).map(|_| ())
    }

    /// [`Transform::run`] on an event already admitted ([`super::Stage::admit`]: JSON, nested
    /// at most [`MAX_NESTING`] levels), which is not checked again. Returns [`Yielded::Json`]
    /// when every value appended is known to be JSON (no NaN, infinity, byte string, non-string
    /// key or invalid UTF-8), so that nobody needs to parse it again to know.
    ///
    /// # Errors
    /// As [`Transform::run`].
    pub fn run_admitted(&self, event: &[u8], out: &mut Vec<Vec<u8>>) -> Result<Yielded, Failure> {
        self.run_event(event, true, out)
    }

    fn run_event(
        &self,
        event: &[u8],
        admitted: bool,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Yielded, Failure> {
        if !admitted {
            check_nesting(event, MAX_NESTING)
                .map_err(|error| Failure::NotJson(error.to_string()))?;
        }
        if let Some(direct) = &self.direct {
            // On any doubt about this event, jaq runs it below.
            if let Ok(value) = direct.run(event, admitted) {
                out.extend(value);
                return Ok(Yielded::Json);
            }
        }
        let input = jaq_json::read::parse_single(event)
            .map_err(|error| Failure::NotJson(error.to_string()))?;
        let env = Val::obj(Map::default());
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([env]));
        let before = out.len();
        let mut bytes = 0usize;
        let mut yielded = Yielded::Json;
        let result = (|| {
            for value in self.filter.id.run((ctx, input)) {
                let value = value.map_err(exception)?;
                if out.len() - before == MAX_OUTPUTS {
                    return Err(Failure::failed(format!(
                        "it yielded more than {MAX_OUTPUTS} values for one event (the bound on \
                         values per event)"
                    )));
                }
                if nested_deeper_than(&value, MAX_NESTING) {
                    drop_iteratively(value);
                    return Err(Failure::failed(format!(
                        "it yielded a value whose arrays and objects are nested deeper than \
                         the limit of {MAX_NESTING} levels"
                    )));
                }
                let mut text = Vec::with_capacity(256);
                if !super::json_out::write_val(&value, &mut text) {
                    yielded = Yielded::Unchecked;
                }
                bytes = bytes.saturating_add(text.len());
                if bytes > MAX_OUTPUT_BYTES {
                    return Err(Failure::failed(format!(
                        "it yielded more than {MAX_OUTPUT_BYTES} bytes for one event (the \
                         bound on output bytes per event)"
                    )));
                }
                out.push(text);
            }
            Ok(())
        })();
        if result.is_err() {
            out.truncate(before);
        }
        result.map(|()| yielded)
    }
}

/// The failure a jaq exception stands for: an error (jaq's message), or a `halt`, which ends
/// the program for this event only.
fn exception(exception: Exn<'_, Val>) -> Failure {
    match exception.get_err() {
        Ok(error) => Failure::failed(error.to_string()),
        Err(other) => match other.get_halt() {
            Ok(code) => Failure::failed(format!(
                "it called `halt` or `halt_error` (exit code {code}), which ends the program \
                 for this event only, never the daemon"
            )),
            // A `break` or tail call seen outside jaq is a jaq bug; still only this event's.
            Err(_) => Failure::failed("jaq's evaluation ended in an internal exception"),
        },
    }
}

/// True when `value` nests arrays and objects more than `limit` levels deep. It recurses at
/// most `limit + 1` levels, whatever the depth of `value`.
fn nested_deeper_than(value: &Val, limit: usize) -> bool {
    match value {
        Val::Arr(items) => {
            limit == 0 || items.iter().any(|item| nested_deeper_than(item, limit - 1))
        }
        Val::Obj(members) => {
            limit == 0
                || members.iter().any(|(key, item)| {
                    nested_deeper_than(key, limit - 1) || nested_deeper_than(item, limit - 1)
                })
        }
        _ => false,
    }
}

/// Drops `value` without recursing: a value nested a hundred thousand levels deep would
/// overflow the stack through `Drop`, one frame per level.
fn drop_iteratively(value: Val) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            // Shared containers are only released here; their last owner drops them.
            Val::Arr(items) => {
                if let Ok(items) = jaq_json::Rc::try_unwrap(items) {
                    pending.extend(items);
                }
            }
            Val::Obj(members) => {
                if let Ok(members) = jaq_json::Rc::try_unwrap(members) {
                    for (key, item) in members {
                        pending.push(key);
                        pending.push(item);
                    }
                }
            }
            _ => {}
        }
    }
}

/// jaq-json's `fromjson`, with the same depth bound as events: a string of deeply nested
/// brackets inside an event must not reach jaq's recursive reader.
fn fromjson() -> Fun<JustLut<Val>> {
    fn fromjson(cv: Cv<'_, JustLut<Val>>) -> ValXs<'_, Val> {
        let text = match cv.1.try_as_utf8_bytes_owned() {
            Ok(text) => text,
            Err(error) => return box_once(Err(Exn::from(error))),
        };
        let fail = |reason: String| {
            Exn::from(jaq_core::Error::str(format!(
                "cannot parse as JSON: {reason}"
            )))
        };
        if let Err(error) = check_nesting(&text, MAX_NESTING) {
            return box_once(Err(fail(error.to_string())));
        }
        // After an error the reader stays where it is and yields that error again, forever:
        // stop at the first one.
        let mut values = Vec::new();
        for value in jaq_json::read::parse_many(&text) {
            let failed = value.is_err();
            values.push(value.map_err(|error| fail(error.to_string())));
            if failed {
                break;
            }
        }
        Box::new(values.into_iter())
    }
    run::<JustLut<Val>>(("fromjson", v(0), fromjson))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str, event: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        Transform::compile(code)
            .map_err(|errors| errors.join("; "))?
            .run(event.as_bytes(), &mut out)
            .map_err(|failure| failure.to_string())?;
        Ok(out
            .into_iter()
            .map(|text| String::from_utf8(text).unwrap())
            .collect())
    }

    #[test]
    fn a_program_yields_zero_one_or_many_records() {
        let event = r#"{"kind":"edit","items":[1,2,3],"meta":{"id":"a","dt":"x"}}"#;
        assert_eq!(
            run(r#"select(.kind == "log")"#, event).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            run(r#"{kind, id: .meta.id}"#, event).unwrap(),
            [r#"{"kind":"edit","id":"a"}"#]
        );
        assert_eq!(run(".items[]", event).unwrap(), ["1", "2", "3"]);
        assert_eq!(
            run(r#". + .meta | del(.meta, .items)"#, event).unwrap(),
            [r#"{"kind":"edit","id":"a","dt":"x"}"#]
        );
        assert_eq!(
            run(r#""2024-05-01T00:00:00Z" | fromdate * 1000"#, "null").unwrap(),
            ["1714521600000"]
        );
    }

    #[test]
    fn a_runtime_error_is_jaqs_message() {
        let error = run(".kind + 1", r#"{"kind":"edit"}"#).unwrap_err();
        assert!(error.starts_with("the transform failed: "), "{error}");
        assert!(error.contains("edit"), "{error}");
        let error = run(".", "{not json").unwrap_err();
        assert!(error.starts_with("the event is not JSON"), "{error}");
    }

    /// Runs `work` on a thread with the 2 MiB stack of the threads the stage runs on
    /// (tokio's workers and blocking pool), whatever `RUST_MIN_STACK` says.
    fn on_a_stage_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(work)
            .unwrap()
            .join()
            .unwrap()
    }

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn deeply_nested_events_are_refused_before_jaq_reads_them() {
        for levels in [5_500, 200_000] {
            let error = on_a_stage_thread(move || run(".", &nested(levels)).unwrap_err());
            assert!(error.starts_with("the event is not JSON"), "{error}");
            assert!(error.contains("limit of 127 levels"), "{error}");
        }
        // Up to the limit, events pass as they are.
        let deepest = nested(MAX_NESTING);
        assert_eq!(run(".", &deepest).unwrap(), [deepest]);
        // A string of nested brackets inside an event is refused by `fromjson` too.
        let event = serde_json::json!({ "inner": nested(200_000) }).to_string();
        let error = on_a_stage_thread(move || run(".inner | fromjson", &event).unwrap_err());
        assert!(error.starts_with("the transform failed: "), "{error}");
        assert!(error.contains("limit of 127 levels"), "{error}");
        assert_eq!(
            run(".a | fromjson", r#"{"a":"[1,{\"b\":2}]"}"#).unwrap(),
            [r#"[1,{"b":2}]"#]
        );
        assert_eq!(run(".a | fromjson", r#"{"a":"1 2"}"#).unwrap(), ["1", "2"]);
        let error = run(".a | fromjson", r#"{"a":"1 nope"}"#).unwrap_err();
        assert!(error.contains("cannot parse as JSON"), "{error}");
        assert_eq!(run(".a | tonumber", r#"{"a":"12"}"#).unwrap(), ["12"]);
    }

    #[test]
    fn values_yielded_too_deep_are_refused_and_dropped_without_recursion() {
        let error =
            on_a_stage_thread(|| run("reduce range(200000) as $i (0; [.])", "null").unwrap_err());
        assert!(
            error.contains("nested deeper than the limit of 127"),
            "{error}"
        );
        assert_eq!(
            run("reduce range(127) as $i (0; [.]) | length", "null").unwrap(),
            ["1"]
        );
    }

    #[test]
    fn halt_and_halt_error_fail_the_event_not_the_process() {
        for program in [
            "if .kill then halt_error else . end",
            "if .kill then halt_error(1) else . end",
            "if .kill then halt else . end",
            // `try` does not catch a halt, in jq as in jaq.
            r#"if .kill then (try halt_error catch "caught") else . end"#,
        ] {
            let error = run(program, r#"{"kill":"now"}"#).unwrap_err();
            assert!(error.contains("`halt`"), "{program}: {error}");
            assert_eq!(
                run(program, r#"{"kill":false}"#).unwrap(),
                [r#"{"kill":false}"#]
            );
        }
    }

    #[test]
    fn programs_see_an_empty_environment() {
        // The variable is set in this process for real: `env` must not show it.
        std::env::set_var("TRIBUTARY_TRANSFORM_TEST_SECRET", "s3cret");
        assert_eq!(
            std::env::var("TRIBUTARY_TRANSFORM_TEST_SECRET").unwrap(),
            "s3cret"
        );
        assert_eq!(
            run("{tok: env.TRIBUTARY_TRANSFORM_TEST_SECRET}", "{}").unwrap(),
            [r#"{"tok":null}"#]
        );
        assert_eq!(run("env", "{}").unwrap(), ["{}"]);
        assert_eq!(run("$ENV", "{}").unwrap(), ["{}"]);
        assert_eq!(run("$ENV.PATH", "{}").unwrap(), ["null"]);
    }

    #[test]
    fn outputs_per_event_are_bounded_in_count_and_bytes() {
        let error = run("repeat(1)", "null").unwrap_err();
        assert!(error.contains("more than 10000 values"), "{error}");
        let error = run(r#"repeat("a" * 200)"#, "null").unwrap_err();
        assert!(error.contains("more than 10000 values"), "{error}");
        assert_eq!(
            run("limit(10000; repeat(1))", "null").unwrap().len(),
            10_000
        );
        let error = run(r#"range(20) | "a" * 1000000"#, "null").unwrap_err();
        assert!(error.contains("more than 16777216 bytes"), "{error}");
        // A long error message (jaq quotes the value) is cut to a header's size.
        let error = run(r#"error("x" * 100000)"#, "null").unwrap_err();
        assert!(error.len() < 1100, "{}", error.len());
    }

    #[test]
    fn syntax_errors_name_their_position() {
        let errors = Transform::compile("{a: .b,\n  c: (.d | }").unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("line 2, column")),
            "{errors:?}"
        );
        let errors = Transform::compile(".a | nosuchfunction").unwrap_err();
        assert!(
            errors[0].contains("undefined") && errors[0].contains("nosuchfunction"),
            "{errors:?}"
        );
        assert!(errors[0].contains("line 1, column 6"), "{errors:?}");
    }
}
