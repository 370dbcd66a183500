//! The checks and defaults the REST and GraphQL configs share.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ErrorsPolicy, PollSettings, WatermarkConfig};
use crate::{
    http::{AuthConfig, RetryConfig, Timeouts},
    json::Pointer,
    secret::UrlRedactor,
    sources::common::Checks,
    stage::Key,
};

/// Default `interval`: 60 s.
pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(60)
}
/// Default `max_pages_per_poll`: 1000 pages.
pub(crate) fn default_max_pages() -> u64 {
    1000
}
/// Default `timeout` (a whole request): 30 s.
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
/// Default `max_body_bytes`: 64 MiB.
pub(crate) fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}

/// Default `connect_timeout`: 10 s.
pub(crate) fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
/// Default `conditional`: on.
pub(crate) fn default_true() -> bool {
    true
}

/// The fields both polled kinds have, borrowed from their configs.
pub(crate) struct CommonFields<'a> {
    pub records: &'a str,
    pub key: Option<&'a str>,
    pub watermark: Option<&'a WatermarkConfig>,
    pub auth: Option<&'a AuthConfig>,
    pub proxy: Option<&'a str>,
    pub tls: Option<&'a crate::http::TlsConfig>,
    pub retry: &'a RetryConfig,
    pub interval: Duration,
    pub jitter: Duration,
    pub max_pages_per_poll: u64,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body_bytes: usize,
    pub conditional: bool,
    pub errors: ErrorsPolicy,
}

/// Checks the shared fields and builds the engine's settings (`None` after an error).
/// `secret_query` names the query parameters that carry secrets; `secret_texts` are the config
/// texts (URL, query values) whose secret references are redacted from URLs.
pub(crate) fn settings(
    checks: &mut Checks,
    fields: CommonFields<'_>,
    mut secret_query: Vec<String>,
    secret_texts: &[&str],
) -> Option<PollSettings> {
    let records = pointer(checks, "records", fields.records, true);
    let key = fields.key.and_then(|key| match Key::parse(key) {
        Ok(key) => Some(key),
        Err(error) => {
            checks.error(
                "key",
                error,
                "write a JSON pointer to each record's id such as `\"/id\"`, or a template such as `\"{/repo}-{/number}\"`",
            );
            None
        }
    });
    let mut watermark_field = None;
    if let Some(watermark) = fields.watermark {
        watermark_field = pointer(checks, "watermark.field", &watermark.field, false);
        if watermark.param.is_empty() {
            checks.error(
                "watermark.param",
                "is empty",
                "name the request parameter that carries the watermark, e.g. `since`",
            );
        }
        if fields.key.is_none() {
            checks.error(
                "key",
                "a watermark needs record ids to de-duplicate the records at its boundary",
                "set `key` to a JSON pointer to each record's id, e.g. `\"/id\"`",
            );
        }
    }
    checks.positive_durations(&[
        ("interval", fields.interval),
        ("timeout", fields.timeout),
        ("connect_timeout", fields.connect_timeout),
        ("retry.initial_delay", fields.retry.initial_delay),
        ("retry.max_delay", fields.retry.max_delay),
    ]);
    if fields.retry.max_attempts == 0 {
        checks.error(
            "retry.max_attempts",
            "must be at least 1",
            "use e.g. `5` (the first attempt counts)",
        );
    }
    if fields.max_body_bytes == 0 {
        checks.error(
            "max_body_bytes",
            "must be at least 1",
            "use e.g. `67108864` (64 MiB)",
        );
    }
    if fields.max_pages_per_poll == 0 {
        checks.error(
            "max_pages_per_poll",
            "must be at least 1",
            "use e.g. `1000`",
        );
    }
    let network = checks.network(fields.proxy, fields.tls);
    let auth = match fields.auth {
        Some(config) => {
            secret_query.extend(config.secret_query_parameter().map(str::to_owned));
            config.resolve(checks, &network)
        }
        None => Some(crate::http::Auth::None),
    };
    Some(PollSettings {
        interval: fields.interval,
        jitter: fields.jitter,
        max_pages_per_poll: fields.max_pages_per_poll,
        records: records?,
        key,
        watermark: fields.watermark.cloned(),
        watermark_field,
        conditional: fields.conditional,
        errors: fields.errors,
        format: super::format::BodyFormat::Json,
        auth: auth?,
        network,
        retry: fields.retry.clone(),
        timeouts: Timeouts {
            connect: fields.connect_timeout,
            total: fields.timeout,
            max_body_bytes: fields.max_body_bytes,
        },
        redactor: UrlRedactor::new(secret_query, secret_texts.iter().copied()),
    })
}

/// Checks and compiles a JSON pointer (RFC 6901): empty (the whole value) only where
/// `empty_ok`, else it starts with `/`. `None` after an error.
pub(crate) fn pointer(
    checks: &mut Checks,
    field: &str,
    pointer: &str,
    empty_ok: bool,
) -> Option<Pointer> {
    const FIX: &str = "write a pointer such as `\"/data/items\"` (RFC 6901)";
    if pointer.is_empty() && !empty_ok {
        checks.error(field, "is empty", FIX);
        return None;
    }
    match Pointer::parse(pointer) {
        Ok(pointer) => Some(pointer),
        Err(error) => {
            checks.error(field, error, FIX);
            None
        }
    }
}

/// Resolved headers as a map for every request, values marked sensitive; a value that is not
/// valid header text is reported.
pub(crate) fn header_map(
    checks: &mut Checks,
    headers: &[(String, SecretString)],
) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue; // reported by Checks::headers
        };
        match http::HeaderValue::from_str(value.expose_secret()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                map.append(name, value);
            }
            Err(_) => checks.error(
                &format!("headers.{name}"),
                "the value is not valid header text (control characters or line breaks)",
                "remove line breaks and control characters from the value",
            ),
        }
    }
    map
}
