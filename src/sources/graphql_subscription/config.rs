//! The `type = "graphql_subscription"` source table and its validation.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use super::{protocol::Protocol, records::RecordRules, source::SubscriptionSource};
use crate::{
    error::ConfigError,
    json::Pointer,
    secret,
    sources::{
        common::{source_table, Checks},
        ReconnectConfig, SourceInfo,
    },
};

source_table! {
    /// `[sources.<name>]` with `type = "graphql_subscription"`: a GraphQL subscription over
    /// WebSocket. See the book's page (`docs/src/sources/graphql-subscription.md`).
    pub struct GraphqlSubscriptionConfig {
        /// `ws://` or `wss://` URL of the GraphQL WebSocket endpoint; may hold `${env:…}`.
        pub url: String,
        /// `graphql-transport-ws` (default) or `subscriptions-transport-ws`.
        #[serde(default)]
        pub protocol: Protocol,
        /// The subscription's text; or give `query_file`.
        pub query: Option<String>,
        /// A file holding the subscription's text.
        pub query_file: Option<PathBuf>,
        /// The operation to run, when the text holds several. Default: none.
        pub operation_name: Option<String>,
        /// Variables sent with the subscription.
        #[serde(default)]
        pub variables: serde_json::Map<String, serde_json::Value>,
        /// The `connection_init` payload (the auth parameters); values may hold `${env:…}`.
        #[serde(default)]
        pub init_payload: BTreeMap<String, String>,
        /// Extra handshake request headers; values may hold `${env:…}`.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// The HTTP proxy: absent, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
        /// environment variables decide; `"none"` connects directly; or
        /// `"http://[user:password@]host:port"` (secret references allowed).
        #[serde(default)]
        pub proxy: Option<String>,
        /// Trust roots and client certificate as PEM files: `ca_file`, `cert_file`, `key_file`.
        #[serde(default)]
        pub tls: Option<crate::http::TlsConfig>,
        /// JSON pointer into each execution result to the event: an object (one record) or
        /// an array (one record per element), e.g. `/data/orderEvents`. Default `/data`.
        #[serde(default = "default_records")]
        pub records: String,
        /// JSON pointer into each record to its Kafka key and `tributary.event_id`.
        pub key: Option<String>,
        /// JSON pointer into each record to its position (a sequence or cursor the server can
        /// resume after), e.g. `/seq`. Default: none (no resume).
        pub position: Option<String>,
        /// The variable that carries the stored position at each (re)subscribe, e.g. `after`
        /// for `events(after: $after)`. Needs `position`.
        pub position_variable: Option<String>,
        /// Time allowed for TCP, TLS and the WebSocket handshake. Default `10s`.
        #[serde(default = "default_ten_seconds", with = "humantime_serde")]
        pub connect_timeout: Duration,
        /// Time allowed between `connection_init` and the server's `connection_ack`.
        /// Default `10s`.
        #[serde(default = "default_ten_seconds", with = "humantime_serde")]
        pub ack_timeout: Duration,
        /// Time allowed for one send; a peer that takes no data is a dead connection.
        /// Default `10s`.
        #[serde(default = "default_ten_seconds", with = "humantime_serde")]
        pub send_timeout: Duration,
        /// Interval of WebSocket pings. Default `20s`.
        #[serde(default = "default_ping_interval", with = "humantime_serde")]
        pub ping_interval: Duration,
        /// A ping not answered within this time means the connection is dead. Default `10s`.
        #[serde(default = "default_ten_seconds", with = "humantime_serde")]
        pub pong_timeout: Duration,
        /// A connection with no message from the server (events, pings, keep-alives) for this
        /// long is reconnected. Default `5m`.
        #[serde(default = "default_read_timeout", with = "humantime_serde")]
        pub read_timeout: Duration,
        /// Largest message, bytes; a larger one ends the connection. Default 16777216 (16 MiB).
        #[serde(default = "default_max_message_bytes")]
        pub max_message_bytes: usize,
        /// Largest single frame, bytes; at most `max_message_bytes`. Default 16777216.
        #[serde(default = "default_max_message_bytes")]
        pub max_frame_bytes: usize,
        /// Reconnect policy (forever, exponential backoff with full jitter).
        #[serde(default)]
        pub reconnect: ReconnectConfig,
    }
}

fn default_records() -> String {
    "/data".to_owned()
}
fn default_ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}

/// The validated settings the source runs with.
#[derive(Clone, Debug)]
pub struct SubscriptionSettings {
    pub(crate) url: SecretString,
    pub(crate) redacted_url: String,
    pub(crate) protocol: Protocol,
    pub(crate) query: String,
    pub(crate) operation_name: Option<String>,
    pub(crate) variables: serde_json::Map<String, serde_json::Value>,
    pub(crate) position_variable: Option<String>,
    /// The `connection_init` payload, as JSON text (it holds the credentials).
    pub(crate) init_payload: SecretString,
    /// The handshake headers, `Sec-WebSocket-Protocol` included.
    pub(crate) headers: Vec<(String, SecretString)>,
    /// The proxy and TLS settings.
    pub(crate) network: crate::http::Network,
    pub(crate) rules: RecordRules,
    pub(crate) connect_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) reconnect: ReconnectConfig,
}

impl GraphqlSubscriptionConfig {
    /// Validates this config and builds the source.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, SubscriptionSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        let url = checks.url(
            "url",
            &self.url,
            &["ws", "wss"],
            "wss://api.example.com/graphql",
        );
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let mut headers = checks.headers(&self.headers);
        let network = checks.network(self.proxy.as_deref(), self.tls.as_ref());
        if headers
            .iter()
            .any(|(header, _)| header.eq_ignore_ascii_case("sec-websocket-protocol"))
        {
            checks.error(
                "headers.Sec-WebSocket-Protocol",
                "is set by `protocol`",
                "remove the header and set `protocol` instead",
            );
        }
        headers.push((
            "Sec-WebSocket-Protocol".to_owned(),
            SecretString::from(self.protocol.subprotocol()),
        ));
        let query = match (&self.query, &self.query_file) {
            (Some(query), None) => Some(query.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(query) => Some(query),
                Err(e) => {
                    checks.error(
                        "query_file",
                        format!("`{}` cannot be read: {e}", path.display()),
                        "give the path of a readable file holding the subscription",
                    );
                    None
                }
            },
            _ => {
                checks.error(
                    "query",
                    "give exactly one of `query` and `query_file`",
                    "set `query = \"\"\"subscription { … }\"\"\"` or `query_file = \"events.graphql\"`",
                );
                None
            }
        };
        let mut init_payload = serde_json::Map::new();
        for (field, value) in &self.init_payload {
            if let Some(value) = checks.secret(&format!("init_payload.{field}"), value) {
                init_payload.insert(
                    field.clone(),
                    serde_json::Value::String(value.expose_secret().to_owned()),
                );
            }
        }
        let mut pointer = |field: &str, text: &str| match Pointer::parse(text) {
            Ok(pointer) => Some(pointer),
            Err(error) => {
                checks.error(
                    field,
                    error,
                    "write a JSON pointer (RFC 6901) such as `\"/data/events\"`",
                );
                None
            }
        };
        let records = pointer("records", &self.records);
        let key = self.key.as_deref().and_then(|key| pointer("key", key));
        let position = self
            .position
            .as_deref()
            .and_then(|position| pointer("position", position));
        if let Some(variable) = &self.position_variable {
            if self.position.is_none() {
                checks.error(
                    "position_variable",
                    "needs `position`, the field each record's position is read from",
                    "set `position` to a JSON pointer such as `\"/seq\"`, or remove `position_variable`",
                );
            }
            if variable.is_empty() || variable.starts_with('$') {
                checks.error(
                    "position_variable",
                    format!("`{variable}` is not a variable name"),
                    "name the variable without `$`, e.g. `\"after\"`",
                );
            }
        }
        checks.positive_durations(&[
            ("connect_timeout", self.connect_timeout),
            ("ack_timeout", self.ack_timeout),
            ("send_timeout", self.send_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("read_timeout", self.read_timeout),
            ("reconnect.initial_delay", self.reconnect.initial_delay),
            ("reconnect.max_delay", self.reconnect.max_delay),
        ]);
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

        let (Some(url), Some(query), Some(records)) = (url, query, records) else {
            unreachable!("no errors means every part resolved");
        };
        let redacted_url =
            secret::UrlRedactor::new(Vec::new(), [self.url.as_str()]).redact(url.expose_secret());
        let info = self.source_info(name, redacted_url.clone());
        let settings = SubscriptionSettings {
            url,
            redacted_url,
            protocol: self.protocol,
            query,
            operation_name: self.operation_name.clone(),
            variables: self.variables.clone(),
            position_variable: self.position_variable.clone(),
            init_payload: SecretString::from(serde_json::Value::Object(init_payload).to_string()),
            headers,
            network,
            rules: RecordRules {
                records,
                key,
                position,
            },
            connect_timeout: self.connect_timeout,
            ack_timeout: self.ack_timeout,
            send_timeout: self.send_timeout,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            read_timeout: self.read_timeout,
            max_message_bytes: self.max_message_bytes,
            max_frame_bytes: self.max_frame_bytes,
            reconnect: self.reconnect.clone(),
        };
        Ok((info, SubscriptionSource::new(settings)))
    }
}
