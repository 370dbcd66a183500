//! Secret references in config values, and URLs with their secrets stripped.
//!
//! A config string may contain `${env:NAME}` (the environment variable `NAME`) or
//! `${file:/path}` (the file's contents, trailing newline removed), alone or inside a longer
//! value (`"Bearer ${env:TOKEN}"`). Resolved values are [`SecretString`]s: their `Debug` output
//! is redacted, so they cannot reach a log by accident.

use secrecy::SecretString;

/// Why a secret reference could not be resolved. Never contains the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `${env:NAME}` names a variable that is not set.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// `${file:/path}` names a file that cannot be read.
    #[error("cannot read secret file `{0}`: {1}")]
    UnreadableFile(String, String),
    /// A `${` without a matching `}` or with an unknown scheme.
    #[error("malformed secret reference `{0}`")]
    Malformed(String),
}

impl SecretError {
    /// What the operator should do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            SecretError::MissingEnv(_) => "export the variable or change the reference",
            SecretError::UnreadableFile(..) => "check the path and its permissions",
            SecretError::Malformed(_) => "write `${env:NAME}` or `${file:/path}`",
        }
    }
}

/// Replaces every `${env:…}` and `${file:…}` reference in `raw`.
///
/// # Errors
/// A referenced variable is unset, a file unreadable, or a reference malformed.
pub fn resolve(raw: &str) -> Result<SecretString, SecretError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(SecretError::Malformed(truncate(&rest[start..])));
        };
        let reference = &after[..end];
        if let Some(name) = reference.strip_prefix("env:") {
            let value =
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.to_owned()))?;
            out.push_str(&value);
        } else if let Some(path) = reference.strip_prefix("file:") {
            let value = std::fs::read_to_string(path)
                .map_err(|e| SecretError::UnreadableFile(path.to_owned(), e.to_string()))?;
            out.push_str(value.trim_end_matches(['\n', '\r']));
        } else {
            return Err(SecretError::Malformed(format!("${{{reference}}}")));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(SecretString::from(out))
}

/// What to strip from one source's URLs before they reach a log, a header, a metric or the
/// checkpoint file: the query parameters that carry secrets (beyond the secret-looking names
/// [`redact_url`] knows) and the values of the secret references in its configuration.
#[derive(Clone, Debug, Default)]
pub struct UrlRedactor {
    parameters: Vec<String>,
    values: Vec<SecretString>,
}

impl UrlRedactor {
    /// A redactor of the query `parameters` and of the values of the references in `raw`
    /// (config texts such as the source's `url`).
    pub fn new<'a>(parameters: Vec<String>, raw: impl IntoIterator<Item = &'a str>) -> Self {
        UrlRedactor {
            parameters,
            values: raw.into_iter().flat_map(reference_values).collect(),
        }
    }

    /// `url` with user info, secret query values and referenced secret values replaced by
    /// `REDACTED`.
    pub fn redact(&self, url: &str) -> String {
        scrub(&redact_url_with(url, &self.parameters), &self.values)
    }

    /// The query parameters that carry secrets.
    pub fn parameters(&self) -> &[String] {
        &self.parameters
    }

    /// True when `text` holds the value of a secret reference.
    pub fn holds_secret(&self, text: &str) -> bool {
        scrub(text, &self.values) != text
    }
}

/// The URL standard's path percent-encode set (WHATWG URL §1.3), as the `url` crate applies it.
const PATH_ENCODE_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'#')
    .add(b'?')
    .add(b'{')
    .add(b'}');

/// The value of each `${env:…}`/`${file:…}` reference in `raw`, resolved alone (those that
/// do not resolve are left out: `resolve` reports them).
pub fn reference_values(raw: &str) -> Vec<SecretString> {
    let mut values = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        if let Ok(value) = resolve(&rest[start..start + 2 + end + 1]) {
            values.push(value);
        }
        rest = &after[end + 1..];
    }
    values
}

/// `text` with every occurrence of each of `values` (and of its percent-encoded form)
/// replaced by `REDACTED`. Values shorter than 4 bytes are left alone: they would redact
/// ordinary text.
pub fn scrub(text: &str, values: &[SecretString]) -> String {
    use secrecy::ExposeSecret;
    let mut out = text.to_owned();
    for value in values {
        let value = value.expose_secret();
        if value.len() < 4 {
            continue;
        }
        // As it stands in a query (form encoding) and in a path (the URL standard's path
        // percent-encode set).
        let in_query: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let in_path = percent_encoding::utf8_percent_encode(value, PATH_ENCODE_SET).to_string();
        for form in [value, in_query.as_str(), in_path.as_str()] {
            if out.contains(form) {
                out = out.replace(form, "REDACTED");
            }
        }
    }
    out
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Query parameters whose values are treated as secrets (matched case-insensitively as a
/// substring of the parameter name).
const SECRET_PARAMETER_WORDS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "sig",
    "auth",
    "credential",
];

/// `url` with user info removed and the values of secret-looking query parameters replaced by
/// `REDACTED`. A URL that does not parse is returned as `<unparseable url>`.
///
/// ```
/// use tributary::secret::redact_url;
///
/// let redacted = redact_url("https://user:pw@feed.example/stream?api_key=abc&lang=en");
/// assert!(!redacted.contains("pw") && !redacted.contains("abc"));
/// assert!(redacted.contains("lang=en"));
/// ```
pub fn redact_url(url: &str) -> String {
    redact_url_with(url, &[])
}

/// Like [`redact_url`], and also redacts the query parameters named in `secret_parameters`
/// (an API key sent under a name of the provider's choosing, e.g. `appid`).
pub fn redact_url_with(url: &str, secret_parameters: &[String]) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable url>".to_owned();
    };
    // Both calls only fail for URLs that cannot have credentials (e.g. `data:`), which then
    // have none to remove.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                let secret = SECRET_PARAMETER_WORDS.iter().any(|w| lower.contains(w))
                    || secret_parameters
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(&name));
                let value = if secret {
                    "REDACTED".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn resolves_env_and_file_references_inside_text() {
        std::env::set_var("TRIBUTARY_TEST_SECRET_A", "s3cr3t");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "from-file\n").unwrap();
        let raw = format!(
            "Bearer ${{env:TRIBUTARY_TEST_SECRET_A}}/${{file:{}}}",
            file.path().display()
        );
        assert_eq!(
            resolve(&raw).unwrap().expose_secret(),
            "Bearer s3cr3t/from-file"
        );
        assert_eq!(resolve("plain").unwrap().expose_secret(), "plain");
    }

    #[test]
    fn unresolvable_references_are_errors_without_the_value() {
        assert_eq!(
            resolve("${env:TRIBUTARY_TEST_SURELY_UNSET}").unwrap_err(),
            SecretError::MissingEnv("TRIBUTARY_TEST_SURELY_UNSET".into())
        );
        assert!(matches!(
            resolve("${vault:x}"),
            Err(SecretError::Malformed(_))
        ));
        assert!(matches!(
            resolve("abc ${env:X"),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn referenced_values_are_scrubbed_wherever_they_stand() {
        std::env::set_var("TRIBUTARY_TEST_PATH_TOKEN", "123456:ABC-def");
        let raw = "https://api.telegram.org/bot${env:TRIBUTARY_TEST_PATH_TOKEN}/getUpdates";
        let values = reference_values(raw);
        assert_eq!(values.len(), 1);
        let resolved = resolve(raw).unwrap();
        assert_eq!(
            scrub(&redact_url(resolved.expose_secret()), &values),
            "https://api.telegram.org/botREDACTED/getUpdates"
        );
        assert_eq!(scrub("a?t=123456%3AABC-def", &values), "a?t=REDACTED");
        std::env::set_var("TRIBUTARY_TEST_PATH_SPACE", "a b{c}");
        let raw = "https://h/x/${env:TRIBUTARY_TEST_PATH_SPACE}/y";
        let parsed = url::Url::parse(resolve(raw).unwrap().expose_secret()).unwrap();
        assert_eq!(
            scrub(parsed.as_str(), &reference_values(raw)),
            "https://h/x/REDACTED/y"
        );
        assert!(reference_values("${env:TRIBUTARY_TEST_SURELY_UNSET}").is_empty());
    }

    #[test]
    fn redacts_user_info_and_secret_query_values() {
        assert_eq!(
            redact_url("https://user:pw@example.com/s?api_key=abc&limit=5&Token=t"),
            "https://example.com/s?api_key=REDACTED&limit=5&Token=REDACTED"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8080/v2/stream"),
            "http://127.0.0.1:8080/v2/stream"
        );
    }
}
