//! JSON Schema validation of records (JSON Schema 2020-12, by the `jsonschema` crate): a record
//! that fails goes to the dead-letter topic (`schema_violation`) with the first failing instance
//! path and keyword in its headers.
//!
//! **Drift**: a valid record may still carry a field the schema does not name, where the schema
//! lets extra properties through; that is how a provider's change shows first. Drift is found
//! by walking the record with the schema's `properties` (objects) and `items` (arrays),
//! following local `$ref`s (`#/$defs/…`), the members of `allOf`, `anyOf` and `oneOf`,
//! `if`/`then`/`else` and `dependentSchemas`: a field is named when any schema that applies at
//! its level names it. A level whose schema has
//! `patternProperties` or a schema for `additionalProperties` speaks about its extra fields
//! itself and is not reported, nor is a level behind a reference to another document (not
//! fetched) or a reference cycle.

use std::{collections::HashSet, path::Path, sync::Mutex};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    record::DeadLetter,
    router::{HEADER_SCHEMA_INSTANCE_PATH, HEADER_SCHEMA_KEYWORD},
};

/// What a record that drifts from its schema does (`on_drift`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDrift {
    /// Count it (`tributary_schema_drift_total`), log each new path once, produce it (default).
    #[default]
    Count,
    /// Count it and send it to the dead-letter topic (`schema_drift`).
    DeadLetter,
    /// Count it and stop the source, with the path in `/readyz`; the position stays before it.
    Fail,
}

/// Distinct drift paths logged per source at most; later new paths are counted, not logged.
const MAX_LOGGED_PATHS: usize = 1024;

/// A compiled schema and the file it came from.
pub struct Schema {
    file: String,
    root: Value,
    validator: jsonschema::Validator,
    /// The drift paths already logged (array indices as `*`), bounded by [`MAX_LOGGED_PATHS`].
    logged: Mutex<HashSet<String>>,
}

/// A record's drift: the paths of the fields its schema does not name (array indices as `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// The paths, in the record's order.
    pub paths: Vec<String>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schema({})", self.file)
    }
}

impl Schema {
    /// Reads and compiles the schema in `path` (JSON, draft 2020-12 unless its `$schema` says
    /// otherwise). References to other documents are not fetched.
    ///
    /// # Errors
    /// A sentence: the file cannot be read, is not JSON, or is not a valid schema.
    pub fn load(path: &Path) -> Result<Self, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read `{file}`: {error}"))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| format!("`{file}` is not JSON: {error}"))?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&value)
            .map_err(|error| format!("`{file}` is not a valid JSON Schema: {error}"))?;
        Ok(Schema {
            file,
            root: value,
            validator,
            logged: Mutex::default(),
        })
    }

    /// The schema file, as configured.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The fields of `record` (already valid) that the schema does not name; `None` when there
    /// are none. Each path not seen before is logged once (for `source`).
    pub fn drift(&self, source: &str, record: &Value) -> Option<Drift> {
        let mut paths = Vec::new();
        walk(
            &self.root,
            &[&self.root],
            record,
            &mut String::new(),
            &mut paths,
        );
        // Array elements repeat their paths: each once, in the record's order.
        let mut distinct = HashSet::new();
        paths.retain(|path| distinct.insert(path.clone()));
        if paths.is_empty() {
            return None;
        }
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        for path in &paths {
            if logged.len() < MAX_LOGGED_PATHS && logged.insert(path.clone()) {
                tracing::warn!(source, schema = %self.file, path = %path, "a record carries a field the schema does not name (schema drift)");
            }
        }
        Some(Drift { paths })
    }

    /// Checks `record` (JSON text) and returns its value.
    ///
    /// # Errors
    /// The dead-letter reason (`schema_violation`) of the first failure: the text is not JSON,
    /// or a value fails a keyword (its instance path and keyword as headers).
    pub fn check(&self, record: &[u8]) -> Result<Value, DeadLetter> {
        let value: serde_json::Value = serde_json::from_slice(record).map_err(|error| {
            DeadLetter::new(
                "schema_violation",
                format!("the record is not JSON: {error}"),
            )
        })?;
        // `is_valid` stops at the first failure without describing it: the common case.
        if self.validator.is_valid(&value) {
            return Ok(value);
        }
        let Some(error) = self.validator.iter_errors(&value).next() else {
            return Ok(value);
        };
        let instance_path = error.instance_path().as_str().to_owned();
        let keyword = error
            .schema_path()
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut dead_letter = DeadLetter::new(
            "schema_violation",
            format!(
                "the record does not match the schema `{}` at `{instance_path}` (`{keyword}`): \
                 {error}",
                self.file
            ),
        );
        dead_letter.details = vec![
            (HEADER_SCHEMA_INSTANCE_PATH, instance_path),
            (HEADER_SCHEMA_KEYWORD, keyword),
        ];
        Err(dead_letter)
    }
}

/// How deep `$ref`s and combinators are followed from one level (a cycle of references stops
/// there).
const MAX_SCHEMA_DEPTH: usize = 16;

/// The schemas that apply at one level: `schema` itself, plus what its local `$ref`s, its
/// `allOf`, `anyOf` and `oneOf` members, its `if`/`then`/`else` and its `dependentSchemas`
/// point to, recursively. A field is named at this level
/// when any of them names it. Returns `false` when a reference cannot be followed (another
/// document): nothing can be said about the extra fields of this level.
fn gather<'a>(root: &'a Value, schema: &'a Value, depth: usize, out: &mut Vec<&'a Value>) -> bool {
    let Some(object) = schema.as_object() else {
        return true;
    };
    // A schema reached twice (a diamond of references) is gathered once: that keeps a level's
    // fan-out linear in the schema's size.
    if out.iter().any(|seen| std::ptr::eq(*seen, schema)) {
        return true;
    }
    if depth > MAX_SCHEMA_DEPTH {
        return false;
    }
    out.push(schema);
    let mut known = true;
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        match reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
        {
            Some(target) => known &= gather(root, target, depth + 1, out),
            None => known = false,
        }
    }
    if object.contains_key("$dynamicRef") {
        known = false;
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for member in object
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            known &= gather(root, member, depth + 1, out);
        }
    }
    // Conditional subschemas may name fields too (the union: a field named in any branch
    // is not drift).
    for conditional in ["if", "then", "else"] {
        if let Some(member) = object.get(conditional) {
            known &= gather(root, member, depth + 1, out);
        }
    }
    for member in object
        .get("dependentSchemas")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|schemas| schemas.values())
    {
        known &= gather(root, member, depth + 1, out);
    }
    known
}

/// Collects into `found` the paths under `path` of the fields of `instance` that the schemas
/// at this level (`schemas`, within the document `root`) do not name (see the module's
/// documentation for what counts).
fn walk(
    root: &Value,
    schemas: &[&Value],
    instance: &Value,
    path: &mut String,
    found: &mut Vec<String>,
) {
    let mut level = Vec::new();
    let mut known = true;
    for schema in schemas {
        known &= gather(root, schema, 0, &mut level);
    }
    let level = &level;
    let keyword = |name: &'static str| level.iter().filter_map(move |schema| schema.get(name));
    match instance {
        Value::Object(members) => {
            let has_properties = keyword("properties").any(Value::is_object);
            let speaks_of_extras = !known
                || keyword("patternProperties").next().is_some()
                || keyword("additionalProperties").any(Value::is_object)
                || keyword("unevaluatedProperties").any(Value::is_object);
            for (name, value) in members {
                let mut subs = keyword("properties")
                    .filter_map(|properties| properties.get(name))
                    .peekable();
                let named = subs.peek().is_some();
                // A named scalar has no fields of its own: nothing to walk.
                let nested = matches!(value, Value::Object(_) | Value::Array(_));
                let drifts = !named && has_properties && !speaks_of_extras;
                if !(named && nested || drifts) {
                    continue;
                }
                let len = path.len();
                path.push('/');
                // JSON Pointer's escapes (RFC 6901): `~` as `~0`, `/` as `~1`.
                for c in name.chars() {
                    match c {
                        '~' => path.push_str("~0"),
                        '/' => path.push_str("~1"),
                        c => path.push(c),
                    }
                }
                if named {
                    walk(root, &subs.collect::<Vec<_>>(), value, path, found);
                } else {
                    found.push(path.clone());
                }
                path.truncate(len);
            }
        }
        Value::Array(elements) => {
            let items: Vec<&Value> = keyword("items").collect();
            if !items.is_empty() {
                let len = path.len();
                path.push_str("/*");
                for element in elements {
                    walk(root, &items, element, path, found);
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_names_its_path_and_keyword() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(
            &path,
            r#"{"type":"object","required":["id"],
                "properties":{"id":{"type":"integer"},"meta":{"type":"object",
                "properties":{"dt":{"type":"string"}}}}}"#,
        )
        .unwrap();
        let schema = Schema::load(&path).unwrap();
        assert!(schema.check(br#"{"id":1,"meta":{"dt":"x"}}"#).is_ok());
        // Valid, but with fields the schema does not name.
        let drifted = schema
            .check(br#"{"id":1,"extra":2,"meta":{"dt":"x","new":{"a":1}}}"#)
            .unwrap();
        assert_eq!(
            schema.drift("s", &drifted).unwrap().paths,
            ["/extra", "/meta/new"]
        );
        let plain = schema.check(br#"{"id":1}"#).unwrap();
        assert_eq!(schema.drift("s", &plain), None);
        let wrong = schema.check(br#"{"id":1,"meta":{"dt":5}}"#).unwrap_err();
        assert_eq!(wrong.kind, "schema_violation");
        assert_eq!(
            wrong.details,
            [
                (HEADER_SCHEMA_INSTANCE_PATH, "/meta/dt".to_owned()),
                (HEADER_SCHEMA_KEYWORD, "type".to_owned())
            ]
        );
        let missing = schema.check(br#"{"meta":{}}"#).unwrap_err();
        assert_eq!(missing.details[1].1, "required");
        assert!(missing.reason.contains("\"id\""), "{}", missing.reason);
        std::fs::write(&path, r#"{"type": 12}"#).unwrap();
        assert!(Schema::load(&path)
            .unwrap_err()
            .contains("not a valid JSON Schema"));
        assert!(Schema::load(&dir.path().join("none.json"))
            .unwrap_err()
            .contains("cannot read"));
    }
}

#[test]
fn drift_follows_items_and_leaves_levels_that_speak_of_extras() {
    let schema: Value = serde_json::json!({
        "properties": {
            "list": {"items": {"properties": {"a": {}}}},
            "free": {"properties": {"x": {}}, "additionalProperties": {"type": "string"}},
            "any": {}
        }
    });
    let record = serde_json::json!({
        "list": [{"a": 1, "b": 2}, {"b": 3}],
        "free": {"y": "z"},
        "any": {"q": 1}
    });
    let mut found = Vec::new();
    walk(&schema, &[&schema], &record, &mut String::new(), &mut found);
    // Once per element (`Schema::drift` keeps one of each).
    assert_eq!(found, ["/list/*/b", "/list/*/b"]);
}

#[test]
fn drift_follows_local_refs_and_combinators() {
    let schema: Value = serde_json::json!({
        "$defs": {
            "meta": {"properties": {"dt": {}, "id": {}}},
            "edit": {"properties": {"length": {"properties": {"new": {}}}}},
            "loop": {"$ref": "#/$defs/loop"}
        },
        "allOf": [{"properties": {"type": {}}}],
        "if": {"properties": {"type": {"const": "edit"}}},
        "then": {"properties": {"revision": {}}},
        "dependentSchemas": {"type": {"properties": {"bot": {}}}},
        "properties": {
            "meta": {"$ref": "#/$defs/meta"},
            "body": {"anyOf": [{"$ref": "#/$defs/edit"}, {"properties": {"log": {}}}]},
            "cycle": {"$ref": "#/$defs/loop"},
            "remote": {"$ref": "https://example.org/other.json"}
        }
    });
    let record = serde_json::json!({
        "type": "edit",
        "revision": 1,
        "bot": false,
        "meta": {"dt": "x", "id": 1, "stream": "s"},
        "body": {"length": {"new": 1, "old": 0}, "log": 1, "extra": 2},
        "cycle": {"anything": 1},
        "remote": {"unknown": 1},
        "top": 1
    });
    let mut found = Vec::new();
    walk(&schema, &[&schema], &record, &mut String::new(), &mut found);
    // `type` is named by an `allOf` member, `meta/dt` through a `$ref`, `body/log` by one
    // `anyOf` branch; a level behind a reference cycle or another document is left alone.
    assert_eq!(
        found,
        ["/body/extra", "/body/length/old", "/meta/stream", "/top"]
    );
}
