//! JSON Schema validation of records (JSON Schema 2020-12, by the `jsonschema` crate): a record
//! that fails goes to the dead-letter topic (`schema_violation`) with the first failing instance
//! path and keyword in its headers.

use std::path::Path;

use crate::{
    record::DeadLetter,
    router::{HEADER_SCHEMA_INSTANCE_PATH, HEADER_SCHEMA_KEYWORD},
};

/// A compiled schema and the file it came from.
pub struct Schema {
    file: String,
    validator: jsonschema::Validator,
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
        Ok(Schema { file, validator })
    }

    /// Checks `record` (JSON text).
    ///
    /// # Errors
    /// The dead-letter reason (`schema_violation`) of the first failure: the text is not JSON,
    /// or a value fails a keyword (its instance path and keyword as headers).
    pub fn check(&self, record: &[u8]) -> Result<(), DeadLetter> {
        let value: serde_json::Value = serde_json::from_slice(record).map_err(|error| {
            DeadLetter::new(
                "schema_violation",
                format!("the record is not JSON: {error}"),
            )
        })?;
        let Some(error) = self.validator.iter_errors(&value).next() else {
            return Ok(());
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
