//! jq transforms, run by the jaq crates (a jq clone in Rust): a program compiled once at
//! config time, run on each event. Following jq, a program yields zero values (`select(…)` left
//! nothing), one, or many (`.items[]`); each becomes a record.

use jaq_core::{
    data::JustLut,
    load::{Arena, File, Loader},
    Compiler, Ctx, Vars,
};
use jaq_json::Val;

/// The compiled program.
type Filter = jaq_core::compile::Filter<jaq_core::Native<JustLut<Val>>>;

/// A compiled jq program.
pub struct Transform {
    filter: Filter,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transform")
    }
}

/// Why a transform yielded nothing for an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The event is not JSON (the parser's message).
    NotJson(String),
    /// The program raised an error (jaq's message).
    Failed(String),
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
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
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
        Ok(Transform { filter })
    }

    /// Runs the program on `event` (JSON text) and appends each value it yields, as compact
    /// JSON text, to `out`.
    ///
    /// # Errors
    /// [`Failure`]: the event is not JSON, or the program raised an error (jaq's message).
    /// `out` is then left as it was.
    pub fn run(&self, event: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), Failure> {
        let input = jaq_json::read::parse_single(event)
            .map_err(|error| Failure::NotJson(error.to_string()))?;
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let before = out.len();
        for value in self.filter.id.run((ctx, input)) {
            let value = match jaq_core::unwrap_valr(value) {
                Ok(value) => value,
                Err(error) => {
                    out.truncate(before);
                    return Err(Failure::Failed(error.to_string()));
                }
            };
            let mut text = Vec::with_capacity(256);
            if let Err(error) = jaq_json::write::write(&mut text, &Default::default(), 0, &value) {
                out.truncate(before);
                return Err(Failure::Failed(format!(
                    "its output cannot be written: {error}"
                )));
            }
            out.push(text);
        }
        Ok(())
    }
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
