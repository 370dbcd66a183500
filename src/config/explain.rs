//! Turning a parse error of the config into a [`ConfigError`] that names the field, where its
//! value came from (the file or a `TRIBUTARY__…` variable) and the fix, without quoting values
//! that may be secrets.
//!
//! serde loses the path inside a source table: `[sources.<name>]` is an enum chosen by `type`,
//! which serde reads into a buffer first, so an error in it only says `sources.<name>`. Such an
//! error is located again by deserializing that one table as its kind's struct, with the path
//! tracked ([`locate_in_source`]).

use serde::de::DeserializeOwned;

use crate::{
    error::ConfigError,
    sources::{
        graphql::GraphqlConfig, graphql_subscription::GraphqlSubscriptionConfig, rest::RestConfig,
        sse::SseConfig, webhook::WebhookConfig, websocket::WebSocketConfig,
    },
};

/// The prefix of the environment variables that override file keys.
const ENV_PREFIX: &str = "TRIBUTARY__";

/// The [`ConfigError`] for a deserialization error at `field` (a dotted path) with message
/// `problem` (already stripped of values), given the whole built config `built` (to locate
/// errors inside a source table) and the environment variables `env` (name, value).
pub(crate) fn explain(
    field: String,
    problem: String,
    built: &config::Config,
    env: &[(String, String)],
) -> ConfigError {
    let problem = without_key_suffix(&problem);
    let field = match source_name(&field) {
        Some(name) => built
            .get::<config::Value>(&format!("sources.{name}"))
            .ok()
            .and_then(locate_in_source)
            .filter(|(_, located)| same_error(located, &problem))
            .map_or(field.clone(), |(inner, _)| {
                format!("sources.{name}.{inner}")
            }),
        None => field,
    };
    let field = with_tag(built, field, &problem);
    let fix = fix_for(&problem);
    match env_variable_for(&field, env) {
        Some(variable) => ConfigError::new(
            "environment",
            field,
            format!("{problem} (the value comes from the environment variable `{variable}`, not from the file)"),
            format!("correct or unset `{variable}`; {fix}"),
        ),
        None => ConfigError::new(scope_of(&field), field, problem, fix),
    }
}

/// `name` when `field` is exactly `sources.<name>` (serde lost the path inside the table).
fn source_name(field: &str) -> Option<&str> {
    field
        .strip_prefix("sources.")
        .filter(|name| !name.contains('.'))
}

/// The path inside a source table and the message of the error that deserializing it as its
/// kind's struct gives; `None` when the kind is unknown or the table parses.
fn locate_in_source(table: config::Value) -> Option<(String, String)> {
    let mut table = table.into_table().ok()?;
    let kind = table.remove("type")?.into_string().ok()?;
    let rest = config::Value::new(None, config::ValueKind::Table(table));
    match kind.as_str() {
        "sse" => first_error::<SseConfig>(rest),
        "websocket" => first_error::<WebSocketConfig>(rest),
        "webhook" => first_error::<WebhookConfig>(rest),
        "rest" => first_error::<RestConfig>(rest),
        "graphql" => first_error::<GraphqlConfig>(rest),
        "graphql_subscription" => first_error::<GraphqlSubscriptionConfig>(rest),
        _ => None,
    }
}

fn first_error<T: DeserializeOwned>(value: config::Value) -> Option<(String, String)> {
    serde_path_to_error::deserialize::<_, T>(value)
        .err()
        .map(|error| (error.path().to_string(), describe(error.inner(), "")))
}

/// Whether `located` (from deserializing one source table again) is the error `original`
/// reported: the same text, or the same expectation (the second pass may see an integer turned
/// into a string).
fn same_error(located: &str, original: &str) -> bool {
    let located = without_key_suffix(located);
    let expected = |text: &str| text.rsplit_once(", expected ").map(|(_, e)| e.to_owned());
    // A plain enum's unknown value: serde (through the tagged source table) says "unknown
    // variant `yaml`, expected …", the `config` crate (one table alone) "enum BodyFormat does
    // not have variant constructor yaml".
    let unknown_variant = located
        .split_once(" does not have variant constructor ")
        .is_some_and(|(_, value)| original.starts_with(&format!("unknown variant `{value}`")));
    located == original
        || unknown_variant
        || (expected(&located).is_some() && expected(&located) == expected(original))
}

/// `field.type` when the error is an unknown variant of a table chosen by its `type` (e.g.
/// `pagination = { type = "curser" }`), else `field`.
fn with_tag(built: &config::Config, field: String, problem: &str) -> String {
    let tagged = problem.starts_with("unknown variant")
        && built
            .get::<config::Value>(&field)
            .ok()
            .and_then(|value| value.into_table().ok())
            .is_some_and(|table| table.contains_key("type"));
    if tagged {
        format!("{field}.type")
    } else {
        field
    }
}

/// The `TRIBUTARY__…` variable that set `field`, if any (`TRIBUTARY__KAFKA__BROKERS` sets
/// `kafka.brokers`).
fn env_variable_for(field: &str, env: &[(String, String)]) -> Option<String> {
    env.iter().find_map(|(name, _)| {
        let key = name
            .strip_prefix(ENV_PREFIX)?
            .to_lowercase()
            .replace("__", ".");
        (key == field).then(|| name.clone())
    })
}

/// The `TRIBUTARY__…` variables of this process.
pub(crate) fn tributary_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect()
}

/// The fix for a parse error `problem`.
fn fix_for(problem: &str) -> String {
    if problem.contains("expected a duration") {
        return match integer_in(problem) {
            Some(n) => format!(
                "a duration is a string with a unit: write `\"{n}s\"` (or `\"{n}ms\"`, `\"{n}m\"`)"
            ),
            None => "a duration is a string with a unit, e.g. `\"30s\"`, `\"500ms\"`, `\"5m\"`"
                .to_owned(),
        };
    }
    if problem.starts_with("unknown variant") {
        return "use one of the values listed (see the configuration reference, docs/src/reference/configuration.md)"
            .to_owned();
    }
    "see the configuration reference (docs/src/reference/configuration.md)".to_owned()
}

/// `N` from serde's ``invalid type: integer `N` ``.
fn integer_in(problem: &str) -> Option<i64> {
    let rest = problem.split_once("integer `")?.1;
    rest.split_once('`')?.0.parse().ok()
}

/// `problem` without the ``for key `…` `` the `config` crate appends (the field is named
/// anyway, and inside a source table it names the table, not the field).
fn without_key_suffix(problem: &str) -> String {
    match problem.rfind(" for key `") {
        Some(at) if problem.ends_with('`') => problem[..at].to_owned(),
        _ => problem.to_owned(),
    }
}

/// `error` without the config values it would quote, which may be secrets: a TOML syntax
/// error gives its line and column but not the line's text, and a value of the wrong type is
/// named by its kind (`a string`).
pub(crate) fn describe(error: &config::ConfigError, text: &str) -> String {
    if let config::ConfigError::FileParse { cause, .. } = error {
        if let Some(error) = cause.downcast_ref::<toml::de::Error>() {
            let before = &text[..error.span().map_or(0, |span| span.start).min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            let message = error.message();
            return format!("TOML parse error at line {line}, column {column}: {message}");
        }
    }
    without_string_values(&error.to_string())
}

/// `text` with each `string "…"` (a value quoted, Debug-escaped, by serde's and the `config`
/// crate's messages) replaced by `a string`.
pub(crate) fn without_string_values(text: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(QUOTED) {
        out.push_str(&rest[..start]);
        out.push_str("a string");
        let value = &rest[start + QUOTED.len()..];
        let mut escaped = false;
        let end = value.char_indices().find(|&(_, c)| {
            let closing = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closing
        });
        rest = &value[end.map_or(value.len(), |(i, _)| i + 1)..];
    }
    out.push_str(rest);
    out
}

/// `source \`name\`` for a source's field, else the section (`kafka`, `server`, …).
pub(crate) fn scope_of(field: &str) -> String {
    match field.strip_prefix("sources.") {
        Some(rest) => format!("source `{}`", rest.split('.').next().unwrap_or(rest)),
        None => field.split('.').next().unwrap_or("config").to_owned(),
    }
}

/// Deserializes a socket address (`server.listen`, `server.webhook_listen`), saying what to
/// do with a host name, which is not resolved.
///
/// # Errors
/// The value is not a string, or not an IP address and port.
pub(crate) fn socket_address<'de, D>(deserializer: D) -> Result<std::net::SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        let looks_like_host = text
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.chars().any(|c| c.is_ascii_alphabetic()) && !host.contains('['));
        let hint = if looks_like_host {
            "a host name is not resolved here"
        } else {
            "it is not an IP address and port"
        };
        serde::de::Error::custom(format!(
            "`{text}`: {hint}; use an IP address and port, e.g. `127.0.0.1:9464` (this host only), `0.0.0.0:9464` (every interface) or `[::1]:9464`, resolving a host name yourself"
        ))
    })
}

/// Deserializes an optional socket address as [`socket_address`] does.
///
/// # Errors
/// As [`socket_address`].
pub(crate) fn optional_socket_address<'de, D>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    socket_address(deserializer).map(Some)
}

/// Deserializes a directory path, refusing anything but a string (the `config` crate would
/// turn `dir = 5` into the path `5`).
///
/// # Errors
/// The value is not a string.
pub(crate) fn directory<'de, D>(deserializer: D) -> Result<std::path::PathBuf, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Directory;
    impl serde::de::Visitor<'_> for Directory {
        type Value = std::path::PathBuf;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a directory path as a string, e.g. `\"/var/lib/tributary\"`")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(value.into())
        }
    }
    deserializer.deserialize_any(Directory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_are_matched_to_the_field_they_set() {
        let env = vec![("TRIBUTARY__KAFKA__BROKRS".to_owned(), "x".to_owned())];
        assert_eq!(
            env_variable_for("kafka.brokrs", &env).as_deref(),
            Some("TRIBUTARY__KAFKA__BROKRS")
        );
        assert_eq!(env_variable_for("kafka.brokers", &env), None);
        assert_eq!(env_variable_for("kafka", &env), None);
    }

    #[test]
    fn the_key_suffix_goes_and_integers_get_a_duration_fix() {
        let problem = without_key_suffix(
            "invalid type: integer `10`, expected a duration for key `sources.items`",
        );
        assert_eq!(problem, "invalid type: integer `10`, expected a duration");
        assert!(fix_for(&problem).contains("`\"10s\"`"));
    }
}
