//! The `type = "websocket"` source table.

use std::{collections::BTreeMap, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    frames::{FrameFilter, FrameRules},
    source::WebSocketSource,
};
use crate::{
    error::ConfigError,
    json::Pointer,
    secret,
    sources::{
        common::{source_table, Checks},
        PayloadFormat, ReconnectConfig, SourceInfo,
    },
};

/// The placeholder replaced by the stored position in `url` and `subscribe` messages.
pub const POSITION_PLACEHOLDER: &str = "{position}";

/// `filter = { pointer = "/type", values = ["ticker"] }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A JSON pointer (RFC 6901) into each message (or array element).
    pub pointer: String,
    /// Accepted values (a string value is compared as is, anything else as its JSON text).
    pub values: Vec<String>,
}

/// `heartbeat = { message = "…", interval = "30s" }`: an application-level keep-alive.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// The text message to send.
    pub message: String,
    /// How often to send it.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

source_table! {
    /// `[sources.<name>]` with `type = "websocket"`.
    pub struct WebSocketConfig {
        /// `ws://` or `wss://` URL. May contain `${env:…}`/`${file:…}`, and `{position}` (the
        /// stored position, empty when there is none).
        pub url: String,
        /// Extra handshake request headers; values may contain `${env:…}`/`${file:…}`.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// The HTTP proxy: absent, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
        /// environment variables decide; `"none"` connects directly; or
        /// `"http://[user:password@]host:port"` (secret references allowed) for every request.
        #[serde(default)]
        pub proxy: Option<String>,
        /// Trust roots and client certificate as PEM files: `ca_file`, `cert_file`, `key_file`.
        #[serde(default)]
        pub tls: Option<crate::http::TlsConfig>,
        /// Text messages sent, in order, after every (re)connect. Each may contain `{position}`
        /// and `${env:…}`/`${file:…}`.
        #[serde(default)]
        pub subscribe: Vec<String>,
        /// `json` (default; anything else goes to the dead-letter topic) or `text`.
        #[serde(default)]
        pub format: PayloadFormat,
        /// A JSON array message becomes one record per element. Default `false`.
        #[serde(default)]
        pub split_arrays: bool,
        /// Only messages whose value at `pointer` is in `values` become records; others are
        /// counted in `tributary_records_filtered_total`. Default: every message.
        #[serde(default)]
        pub filter: Option<FilterConfig>,
        /// JSON pointer of the record key, or a template such as `"{/product_id}:{/side}"`.
        /// Default: no key.
        #[serde(default)]
        pub key: Option<String>,
        /// JSON pointer of a sequence number: the source's position (stored once Kafka has the
        /// record), and a jump in it is a gap (`tributary_sequence_gaps_total`). Default: none.
        #[serde(default)]
        pub sequence: Option<String>,
        /// JSON pointer of the stream a sequence number belongs to, when the feed numbers each
        /// stream separately (e.g. `/product_id`). Default: one sequence for the whole feed.
        #[serde(default)]
        pub sequence_scope: Option<String>,
        /// Reconnect (and so resubscribe) when a gap is found. Default `false`.
        #[serde(default)]
        pub resubscribe_on_gap: bool,
        /// Interval of WebSocket pings. Default `20s`.
        #[serde(default = "default_ping_interval", with = "humantime_serde")]
        pub ping_interval: Duration,
        /// A ping not answered within this time means the connection is dead. Default `10s`.
        #[serde(default = "default_pong_timeout", with = "humantime_serde")]
        pub pong_timeout: Duration,
        /// A connection with no data message (text or binary; pongs do not count) for this long
        /// is reconnected. Default `60s`.
        #[serde(default = "default_read_timeout", with = "humantime_serde")]
        pub read_timeout: Duration,
        /// Time allowed for the TCP/TLS connection and the WebSocket handshake. Default `10s`.
        #[serde(default = "default_connect_timeout", with = "humantime_serde")]
        pub connect_timeout: Duration,
        /// Time allowed for one send (subscribe, ping, heartbeat): a peer that stops reading is a
        /// dead connection, reconnected. Default `10s`.
        #[serde(default = "default_send_timeout", with = "humantime_serde")]
        pub send_timeout: Duration,
        /// Largest message, bytes (all its frames together); a larger one ends the connection,
        /// which is reconnected. Default 16777216 (16 MiB).
        #[serde(default = "default_max_message_bytes")]
        pub max_message_bytes: usize,
        /// Largest single frame, bytes; at most `max_message_bytes`. Default 16777216 (16 MiB).
        #[serde(default = "default_max_message_bytes")]
        pub max_frame_bytes: usize,
        /// An application-level heartbeat message. Default: none.
        #[serde(default)]
        pub heartbeat: Option<HeartbeatConfig>,
        /// Reconnect policy (forever, exponential backoff with full jitter).
        #[serde(default)]
        pub reconnect: ReconnectConfig,
    }
}

fn default_ping_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_pong_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_send_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}

/// The validated settings the source runs with.
#[derive(Clone, Debug)]
pub struct WebSocketSettings {
    pub(crate) url: SecretString,
    pub(crate) redacted_url: String,
    pub(crate) headers: Vec<(String, SecretString)>,
    /// The proxy and TLS settings.
    pub(crate) network: crate::http::Network,
    pub(crate) subscribe: Vec<SecretString>,
    pub(crate) rules: FrameRules,
    pub(crate) resubscribe_on_gap: bool,
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) heartbeat: Option<HeartbeatConfig>,
    pub(crate) reconnect: ReconnectConfig,
}

impl WebSocketSettings {
    /// The URL with `{position}` replaced.
    pub(crate) fn url_at(&self, position: Option<&str>) -> String {
        self.url
            .expose_secret()
            .replace(POSITION_PLACEHOLDER, position.unwrap_or(""))
    }

    /// The subscribe messages with `{position}` replaced.
    pub(crate) fn subscribe_at(&self, position: Option<&str>) -> Vec<String> {
        self.subscribe
            .iter()
            .map(|m| {
                m.expose_secret()
                    .replace(POSITION_PLACEHOLDER, position.unwrap_or(""))
            })
            .collect()
    }
}

/// Checks and compiles the pointer of `field` (none when unset, or for a key template, which
/// the record stage compiles).
fn check_pointer(
    checks: &mut Checks,
    field: &str,
    pointer: Option<&str>,
    format: PayloadFormat,
) -> Option<Pointer> {
    let pointer = pointer?;
    if field == "key" && crate::stage::Template::is_template(pointer) {
        // A key template: the record stage fills it (and checks it).
        if format != PayloadFormat::Json {
            checks.error(
                field,
                "a key template needs JSON messages",
                "set `format = \"json\"`",
            );
        }
        return None;
    }
    if format != PayloadFormat::Json {
        checks.error(
            field,
            "a JSON pointer needs JSON messages",
            "set `format = \"json\"`",
        );
    }
    if pointer.is_empty() {
        checks.error(
            field,
            "is empty (it would point at the whole message)",
            "write a JSON pointer (RFC 6901) starting with `/`, e.g. `\"/type\"`, or leave it out",
        );
        return None;
    }
    match Pointer::parse(pointer) {
        Ok(pointer) => Some(pointer),
        Err(error) => {
            checks.error(
                field,
                error,
                "write a JSON pointer (RFC 6901) starting with `/`, e.g. `\"/type\"`",
            );
            None
        }
    }
}

impl WebSocketConfig {
    /// Validates and resolves this config.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, WebSocketSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        // `{position}` is checked as an empty value: the URL must be valid either way.
        let url = checks.url(
            "url",
            &self.url.replace(POSITION_PLACEHOLDER, ""),
            &["ws", "wss"],
            "wss://feed.example.com/ws",
        );
        let url = url.and(checks.secret("url", &self.url));
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let headers = checks.headers(&self.headers);
        let network = checks.network(self.proxy.as_deref(), self.tls.as_ref());
        let subscribe: Vec<SecretString> = self
            .subscribe
            .iter()
            .enumerate()
            .filter_map(|(i, message)| checks.secret(&format!("subscribe[{i}]"), message))
            .collect();
        let key = check_pointer(&mut checks, "key", self.key.as_deref(), self.format);
        let sequence = check_pointer(
            &mut checks,
            "sequence",
            self.sequence.as_deref(),
            self.format,
        );
        let sequence_scope = check_pointer(
            &mut checks,
            "sequence_scope",
            self.sequence_scope.as_deref(),
            self.format,
        );
        let mut filter = None;
        if let Some(config) = &self.filter {
            filter = check_pointer(
                &mut checks,
                "filter.pointer",
                Some(&config.pointer),
                self.format,
            )
            .map(|pointer| FrameFilter {
                pointer,
                values: config.values.clone(),
            });
            if config.values.is_empty() {
                checks.error(
                    "filter.values",
                    "is empty, so every message would be left out",
                    "list the accepted values, e.g. `[\"ticker\"]`",
                );
            }
        }
        if self.sequence_scope.is_some() && self.sequence.is_none() {
            checks.error(
                "sequence_scope",
                "is set without `sequence`",
                "set `sequence` too, or remove `sequence_scope`",
            );
        }
        let templated = self.url.contains(POSITION_PLACEHOLDER)
            || self
                .subscribe
                .iter()
                .any(|m| m.contains(POSITION_PLACEHOLDER));
        if templated && self.sequence_scope.is_some() {
            checks.error(
                "sequence_scope",
                "cannot go with `{position}`: the position is one number, and each scope has its own",
                "remove `{position}` from `url` and `subscribe`, or remove `sequence_scope`",
            );
        }
        if self.resubscribe_on_gap && self.sequence.is_none() {
            checks.error(
                "resubscribe_on_gap",
                "needs `sequence` to find gaps",
                "set `sequence` to the JSON pointer of the feed's sequence number",
            );
        }
        let mut durations = vec![
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("read_timeout", self.read_timeout),
            ("connect_timeout", self.connect_timeout),
            ("send_timeout", self.send_timeout),
            ("reconnect.initial_delay", self.reconnect.initial_delay),
            ("reconnect.max_delay", self.reconnect.max_delay),
        ];
        if let Some(heartbeat) = &self.heartbeat {
            durations.push(("heartbeat.interval", heartbeat.interval));
        }
        checks.positive_durations(&durations);
        if self.max_message_bytes == 0 {
            checks.error(
                "max_message_bytes",
                "must be at least 1",
                "use e.g. `16777216`",
            );
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > self.max_message_bytes {
            checks.error(
                "max_frame_bytes",
                "must be between 1 and `max_message_bytes`",
                "use e.g. `16777216`",
            );
        }
        checks.channel(self.channel_max_records, self.channel_max_bytes);
        checks.finish()?;

        let url = url.expect("no errors means the URL resolved");
        let redacted_url =
            secret::UrlRedactor::new(Vec::new(), [self.url.as_str()]).redact(url.expose_secret());
        let info = self.source_info(name, redacted_url.clone());
        let settings = WebSocketSettings {
            url,
            redacted_url,
            headers,
            network,
            subscribe,
            rules: FrameRules {
                format: self.format,
                split_arrays: self.split_arrays,
                filter,
                // A key template is filled by the record stage.
                key,
                sequence,
                sequence_scope,
            },
            resubscribe_on_gap: self.resubscribe_on_gap,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            read_timeout: self.read_timeout,
            connect_timeout: self.connect_timeout,
            send_timeout: self.send_timeout,
            max_message_bytes: self.max_message_bytes,
            max_frame_bytes: self.max_frame_bytes,
            heartbeat: self.heartbeat.clone(),
            reconnect: self.reconnect.clone(),
        };
        Ok((info, WebSocketSource::new(settings)))
    }
}
