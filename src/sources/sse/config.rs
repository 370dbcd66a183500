//! The `type = "sse"` source table.

use std::{collections::BTreeMap, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;

use super::source::SseSource;
use crate::{error::ConfigError, secret, sources::SourceInfo};

/// How event data is interpreted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Each event's data must be one JSON value; anything else goes to the dead-letter topic.
    #[default]
    Json,
    /// Data is produced as is.
    Text,
}

/// Where the record key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFrom {
    /// The SSE event id (`id:` field).
    EventId,
    /// No key (records spread over partitions by the producer's partitioner).
    None,
    /// A JSON pointer (RFC 6901) into the event data; a string value is used as is, any other
    /// value as its JSON text.
    Pointer(String),
}

/// Reconnect policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Ceiling of the first reconnect delay. Default `1s`.
    #[serde(default = "default_initial_delay", with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Largest delay between attempts. Default `60s`.
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: default_initial_delay(),
            max_delay: default_max_delay(),
        }
    }
}

fn default_initial_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(60)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_key() -> String {
    "id".to_owned()
}
fn default_channel_max_records() -> usize {
    10_000
}
fn default_channel_max_bytes() -> u32 {
    16 * 1024 * 1024
}

/// `[sources.<name>]` with `type = "sse"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseConfig {
    /// The event stream URL (`http` or `https`). May contain `${env:…}`/`${file:…}`.
    pub url: String,
    /// The Kafka topic records go to.
    pub topic: String,
    /// The topic for records that cannot go to `topic`. Default: `<topic>.dlq`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Extra request headers; values may contain `${env:…}`/`${file:…}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only events whose `event:` type is listed become records. Default: all types.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `json` (default) or `text`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// The record key: `"id"` (the SSE id, default), `"none"`, or a JSON pointer such as
    /// `"/meta/id"` (needs `format = "json"`).
    #[serde(default = "default_key")]
    pub key: String,
    /// `Last-Event-ID` to send on the first connection when no position is stored yet.
    #[serde(default)]
    pub start_from: Option<String>,
    /// A connection that delivers nothing (not even a comment) for this long is considered
    /// dead and is reconnected. Default `60s`.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Time allowed to open the TCP/TLS connection. Default `10s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnect policy.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Channel bound in records between this source and the sink. Default 10000.
    #[serde(default = "default_channel_max_records")]
    pub channel_max_records: usize,
    /// Channel bound in bytes. Default 16 MiB.
    #[serde(default = "default_channel_max_bytes")]
    pub channel_max_bytes: u32,
}

/// The validated, resolved settings the source runs with.
#[derive(Clone, Debug)]
pub struct SseSettings {
    pub(crate) url: SecretString,
    pub(crate) redacted_url: String,
    pub(crate) headers: Vec<(String, SecretString)>,
    pub(crate) event_types: Vec<String>,
    pub(crate) format: PayloadFormat,
    pub(crate) key: KeyFrom,
    pub(crate) start_from: Option<String>,
    pub(crate) read_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect: ReconnectConfig,
}

impl SseConfig {
    /// Validates and resolves this config.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, SseSource), Vec<ConfigError>> {
        let scope = format!("source `{name}`");
        let field = |f: &str| format!("sources.{name}.{f}");
        let mut errors = Vec::new();

        let url = match secret::resolve(&self.url) {
            Ok(url) => Some(url),
            Err(e) => {
                errors.push(ConfigError::new(
                    &scope,
                    field("url"),
                    e.to_string(),
                    e.fix(),
                ));
                None
            }
        };
        if let Some(url) = &url {
            use secrecy::ExposeSecret;
            match url::Url::parse(url.expose_secret()) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                Ok(parsed) => errors.push(ConfigError::new(
                    &scope,
                    field("url"),
                    format!("scheme `{}` is not supported", parsed.scheme()),
                    "use an `http://` or `https://` URL",
                )),
                Err(e) => errors.push(ConfigError::new(
                    &scope,
                    field("url"),
                    format!("not a valid URL ({e})"),
                    "write an absolute URL such as `https://stream.example.com/events`",
                )),
            }
        }
        crate::config::check_topic(&mut errors, &scope, &field("topic"), &self.topic);
        if let Some(topic) = &self.dead_letter_topic {
            crate::config::check_topic(&mut errors, &scope, &field("dead_letter_topic"), topic);
        }
        let mut headers = Vec::new();
        for (header, value) in &self.headers {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                errors.push(ConfigError::new(
                    &scope,
                    field(&format!("headers.{header}")),
                    "not a valid HTTP header name",
                    "use letters, digits and `-`",
                ));
            }
            match secret::resolve(value) {
                Ok(value) => headers.push((header.clone(), value)),
                Err(e) => errors.push(ConfigError::new(
                    &scope,
                    field(&format!("headers.{header}")),
                    e.to_string(),
                    e.fix(),
                )),
            }
        }
        let key = match self.key.as_str() {
            "id" => KeyFrom::EventId,
            "none" => KeyFrom::None,
            pointer if pointer.starts_with('/') => {
                if self.format != PayloadFormat::Json {
                    errors.push(ConfigError::new(
                        &scope,
                        field("key"),
                        "a JSON pointer key needs JSON data",
                        "set `format = \"json\"` or use `key = \"id\"`",
                    ));
                }
                KeyFrom::Pointer(pointer.to_owned())
            }
            other => {
                errors.push(ConfigError::new(
                    &scope,
                    field("key"),
                    format!("`{other}` is not a key source"),
                    "use `\"id\"`, `\"none\"` or a JSON pointer starting with `/`",
                ));
                KeyFrom::None
            }
        };
        for (value, name) in [
            (self.read_timeout, "read_timeout"),
            (self.connect_timeout, "connect_timeout"),
            (self.reconnect.initial_delay, "reconnect.initial_delay"),
            (self.reconnect.max_delay, "reconnect.max_delay"),
        ] {
            if value.is_zero() {
                errors.push(ConfigError::new(
                    &scope,
                    field(name),
                    "must be greater than zero",
                    "use a duration such as `\"5s\"`",
                ));
            }
        }
        if self.channel_max_records == 0 || self.channel_max_bytes == 0 {
            errors.push(ConfigError::new(
                &scope,
                field("channel_max_records"),
                "channel bounds must be greater than zero",
                "set `channel_max_records` and `channel_max_bytes` to positive numbers",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let url = url.expect("no errors means the URL resolved");
        let redacted_url = {
            use secrecy::ExposeSecret;
            secret::redact_url(url.expose_secret())
        };
        let info = SourceInfo {
            name: name.into(),
            topic: self.topic.clone(),
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .unwrap_or_else(|| format!("{}.dlq", self.topic)),
            redacted_url: redacted_url.clone(),
            channel_max_records: self.channel_max_records,
            channel_max_bytes: self.channel_max_bytes,
        };
        let settings = SseSettings {
            url,
            redacted_url,
            headers,
            event_types: self.event_types.clone(),
            format: self.format,
            key,
            start_from: self.start_from.clone(),
            read_timeout: self.read_timeout,
            connect_timeout: self.connect_timeout,
            reconnect: self.reconnect.clone(),
        };
        Ok((info, SseSource::new(settings)))
    }
}
