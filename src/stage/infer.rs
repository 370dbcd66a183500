//! JSON Schema inference: a starting schema (JSON Schema draft 2020-12) from sample records, for
//! `tributary schema infer`.
//!
//! The rules are GenSON's: the types seen at each location are merged (`integer` and `number`
//! become `number`), an object's `properties` name every member seen and its `required` lists
//! the members every sample of that object had, and an array's `items` merges all its elements.
//! The schema leaves `additionalProperties` open, so that a field the samples never showed is
//! reported as drift (`tributary_schema_drift_total`) instead of being rejected.
//!
//! The schema is a start, not a contract: a location the samples showed one way (a field that
//! was always a string, or always present) is written that way. Review it before use.
//!
//! (Inference is our own code: the Rust ports of GenSON, `genson-rs` and `genson-core`, install
//! mimalloc as the global allocator of any program that links them, which would change the
//! daemon's allocator; `infers-jsonschema` has one release, targets draft-07 and merges only one
//! level of objects.)

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The JSON Schema dialect the inferred schema declares.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Schema inference over a stream of samples: feed values with [`Inference::add`], read the
/// schema with [`Inference::schema`].
#[derive(Debug, Default)]
pub struct Inference {
    root: Node,
    samples: usize,
}

/// Everything seen at one location of the samples.
#[derive(Debug, Default)]
struct Node {
    null: bool,
    boolean: bool,
    integer: bool,
    number: bool,
    string: bool,
    object: Option<Object>,
    /// The merged elements of every array seen here (empty when the arrays were empty).
    array: Option<Box<Node>>,
}

/// The objects seen at one location.
#[derive(Debug, Default)]
struct Object {
    /// How many objects were seen here.
    seen: usize,
    /// Each member name: in how many of those objects it was, and its merged values.
    members: BTreeMap<String, (usize, Node)>,
}

impl Inference {
    /// An inference that has seen nothing.
    pub fn new() -> Self {
        Inference::default()
    }

    /// Merges one sample record.
    pub fn add(&mut self, sample: &Value) {
        self.root.add(sample);
        self.samples += 1;
    }

    /// How many samples were merged.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The schema every merged sample matches, with `$schema` and `title`, and a `$comment`
    /// saying where it came from (`origin`, e.g. "100 records of source `wiki`").
    pub fn schema(&self, title: &str, origin: &str) -> Value {
        let mut schema = Map::new();
        schema.insert("$schema".into(), DIALECT.into());
        schema.insert("title".into(), title.into());
        schema.insert(
            "$comment".into(),
            format!(
                "Inferred by `tributary schema infer` from {origin}. Fields the samples always \
                 had are required; review before use."
            )
            .into(),
        );
        if let Value::Object(body) = self.root.schema() {
            schema.extend(body);
        }
        Value::Object(schema)
    }
}

impl Node {
    fn add(&mut self, value: &Value) {
        match value {
            Value::Null => self.null = true,
            Value::Bool(_) => self.boolean = true,
            Value::Number(number) if number.is_f64() => self.number = true,
            Value::Number(_) => self.integer = true,
            Value::String(_) => self.string = true,
            Value::Array(elements) => {
                let items = self.array.get_or_insert_with(Box::default);
                for element in elements {
                    items.add(element);
                }
            }
            Value::Object(members) => {
                let object = self.object.get_or_insert_with(Object::default);
                object.seen += 1;
                for (name, value) in members {
                    let (count, node) = object.members.entry(name.clone()).or_default();
                    *count += 1;
                    node.add(value);
                }
            }
        }
    }

    /// The types seen here, in a fixed order.
    fn types(&self) -> Vec<&'static str> {
        let mut types = Vec::new();
        if self.object.is_some() {
            types.push("object");
        }
        if self.array.is_some() {
            types.push("array");
        }
        if self.string {
            types.push("string");
        }
        if self.number {
            types.push("number");
        } else if self.integer {
            types.push("integer");
        }
        if self.boolean {
            types.push("boolean");
        }
        if self.null {
            types.push("null");
        }
        types
    }

    fn schema(&self) -> Value {
        let mut schema = Map::new();
        match self.types().as_slice() {
            [] => {}
            [one] => {
                schema.insert("type".into(), (*one).into());
            }
            several => {
                schema.insert("type".into(), json!(several));
            }
        }
        if let Some(object) = &self.object {
            let properties: Map<String, Value> = object
                .members
                .iter()
                .map(|(name, (_, node))| (name.clone(), node.schema()))
                .collect();
            let required: Vec<&str> = object
                .members
                .iter()
                .filter(|(_, (count, _))| *count == object.seen)
                .map(|(name, _)| name.as_str())
                .collect();
            schema.insert("properties".into(), Value::Object(properties));
            if !required.is_empty() {
                schema.insert("required".into(), json!(required));
            }
        }
        if let Some(items) = &self.array {
            if !items.types().is_empty() {
                schema.insert("items".into(), items.schema());
            }
        }
        Value::Object(schema)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn infer(samples: &[Value]) -> Value {
        let mut inference = Inference::new();
        for sample in samples {
            inference.add(sample);
        }
        let mut schema = inference.schema("t", "tests");
        for meta in ["$schema", "title", "$comment"] {
            schema.as_object_mut().unwrap().remove(meta);
        }
        schema
    }

    #[test]
    fn members_every_sample_has_are_required() {
        let schema = infer(&[
            json!({"id": 1, "name": "a", "tags": ["x"]}),
            json!({"id": 2, "tags": [], "extra": null}),
        ]);
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "extra": {"type": "null"},
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id", "tags"],
            })
        );
    }

    #[test]
    fn types_merge_and_integers_widen_to_numbers() {
        assert_eq!(
            infer(&[json!(1), json!(2.5), json!("s"), json!(null)]),
            json!({"type": ["string", "number", "null"]})
        );
        assert_eq!(infer(&[json!(1), json!(2)]), json!({"type": "integer"}));
    }

    #[test]
    fn nested_objects_merge_at_every_depth() {
        let schema = infer(&[
            json!({"meta": {"id": "a", "dt": "x"}}),
            json!({"meta": {"id": "b"}}),
        ]);
        assert_eq!(schema["properties"]["meta"]["required"], json!(["id"]));
        assert_eq!(schema["required"], json!(["meta"]));
    }

    #[test]
    fn empty_arrays_leave_items_open() {
        assert_eq!(infer(&[json!([])]), json!({"type": "array"}));
    }

    #[test]
    fn the_schema_declares_its_dialect_and_origin() {
        let mut inference = Inference::new();
        inference.add(&json!({}));
        let schema = inference.schema("wiki", "1 record of source `wiki`");
        assert_eq!(schema["$schema"], DIALECT);
        assert_eq!(schema["title"], "wiki");
        assert!(schema["$comment"]
            .as_str()
            .unwrap()
            .contains("1 record of source `wiki`"));
        assert_eq!(inference.samples(), 1);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map("[a-d]", inner, 0..5)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the samples, each of them matches the schema inferred from all of them.
        #[test]
        fn every_sample_matches_the_inferred_schema(
            samples in prop::collection::vec(json_value(), 1..8)
        ) {
            let mut inference = Inference::new();
            for sample in &samples {
                inference.add(sample);
            }
            let schema = inference.schema("t", "tests");
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&schema)
                .expect("the inferred schema compiles");
            for sample in &samples {
                prop_assert!(validator.is_valid(sample), "{sample} does not match {schema}");
            }
        }
    }
}
