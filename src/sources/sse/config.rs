//! The `type = "sse"` source table.

use std::{collections::BTreeMap, time::Duration};

use secrecy::SecretString;

use super::source::SseSource;
use crate::{
    error::ConfigError,
    secret,
    sources::{
        common::{source_table, Checks},
        PayloadFormat, ReconnectConfig, SourceInfo,
    },
};

/// Where the source takes the record key from. A JSON-pointer or template `key` is read by the
/// record stage ([`crate::stage::Key`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFrom {
    /// The SSE event id (`id:` field).
    EventId,
    /// No key from the source: none at all, or a pointer or template the record stage reads.
    None,
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
fn default_max_event_bytes() -> usize {
    8 * 1024 * 1024
}

source_table! {
    /// `[sources.<name>]` with `type = "sse"`.
    pub struct SseConfig {
        /// The event stream URL (`http` or `https`). May contain `${env:…}`/`${file:…}`.
        pub url: String,
        /// Extra request headers; values may contain `${env:…}`/`${file:…}`.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// Only events whose `event:` type is listed become records. Default: all types.
        #[serde(default)]
        pub event_types: Vec<String>,
        /// `json` (default) or `text`.
        #[serde(default)]
        pub format: PayloadFormat,
        /// The record key: `"id"` (the SSE id, default), `"none"`, a JSON pointer such as
        /// `"/meta/id"`, or a template such as `"{/wiki}:{/id}"` (both need `format = "json"`).
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
        /// Largest line, and largest event (its lines up to the blank line, comments excepted),
        /// in bytes; a larger one ends the connection, which is reconnected from the last event
        /// id. Default 8388608 (8 MiB).
        #[serde(default = "default_max_event_bytes")]
        pub max_event_bytes: usize,
        /// Reconnect policy.
        #[serde(default)]
        pub reconnect: ReconnectConfig,
        /// The HTTP proxy: absent, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
        /// environment variables decide; `"none"` connects directly; or
        /// `"http://[user:password@]host:port"` (secret references allowed) for every request.
        #[serde(default)]
        pub proxy: Option<String>,
        /// Trust roots and client certificate as PEM files: `ca_file`, `cert_file`, `key_file`.
        #[serde(default)]
        pub tls: Option<crate::http::TlsConfig>,
        /// Authentication of each connect (API key, bearer, basic or OAuth2 client credentials),
        /// as for REST sources.
        #[serde(default)]
        pub auth: Option<crate::http::AuthConfig>,
    }
}

/// The validated, resolved settings the source runs with.
#[derive(Clone, Debug)]
pub struct SseSettings {
    pub(crate) url: SecretString,
    pub(crate) redacted_url: String,
    /// Strips secrets from URLs the server names (a redirect's target).
    pub(crate) redactor: secret::UrlRedactor,
    pub(crate) headers: Vec<(String, SecretString)>,
    /// The proxy and TLS settings.
    pub(crate) network: crate::http::Network,
    pub(crate) event_types: Vec<String>,
    pub(crate) key: KeyFrom,
    pub(crate) start_from: Option<String>,
    pub(crate) read_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// The largest line or event, in bytes (> 0).
    pub(crate) max_event_bytes: usize,
    pub(crate) reconnect: ReconnectConfig,
    pub(crate) auth: crate::http::Auth,
}

impl SseConfig {
    /// Validates and resolves this config.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, SseSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        let url = checks.url(
            "url",
            &self.url,
            &["http", "https"],
            "https://stream.example.com/events",
        );
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let headers = checks.headers(&self.headers);
        let network = checks.network(self.proxy.as_deref(), self.tls.as_ref());
        let key = match self.key.as_str() {
            "id" => KeyFrom::EventId,
            "none" => KeyFrom::None,
            // A template (`{/repo/id}-{/number}`): the record stage fills it.
            template if crate::stage::Template::is_template(template) => {
                if self.format != PayloadFormat::Json {
                    checks.error(
                        "key",
                        "a key template needs JSON data",
                        "set `format = \"json\"` or use `key = \"id\"`",
                    );
                }
                KeyFrom::None
            }
            pointer if pointer.starts_with('/') => {
                if self.format != PayloadFormat::Json {
                    checks.error(
                        "key",
                        "a JSON pointer key needs JSON data",
                        "set `format = \"json\"` or use `key = \"id\"`",
                    );
                }
                KeyFrom::None
            }
            other => {
                checks.error(
                    "key",
                    format!("`{other}` is not a key source"),
                    "use `\"id\"`, `\"none\"` or a JSON pointer starting with `/`",
                );
                KeyFrom::None
            }
        };
        checks.positive_durations(&[
            ("read_timeout", self.read_timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect.initial_delay", self.reconnect.initial_delay),
            ("reconnect.max_delay", self.reconnect.max_delay),
        ]);
        if self.max_event_bytes == 0 {
            checks.error(
                "max_event_bytes",
                "must be at least 1",
                "use e.g. `8388608` (8 MiB)",
            );
        }
        checks.channel(self.channel_max_records, self.channel_max_bytes);
        let auth = match &self.auth {
            // A stream's request is made by the SSE client, which SigV4 cannot sign as a whole.
            Some(crate::http::AuthConfig::AwsSigv4 { .. }) => {
                checks.error(
                    "auth",
                    "`aws_sigv4` signs the requests of polled sources (rest, graphql) only",
                    "use `bearer`, `api_key`, `basic` or `oauth2_client_credentials` for an SSE source",
                );
                None
            }
            Some(auth) => auth.resolve(&mut checks, &network),
            None => Some(crate::http::Auth::None),
        };
        let secret_query: Vec<String> = self
            .auth
            .as_ref()
            .and_then(|auth| auth.secret_query_parameter())
            .map(str::to_owned)
            .into_iter()
            .collect();
        checks.finish()?;
        let url = url.expect("no errors means the URL resolved");
        let redactor = secret::UrlRedactor::new(secret_query, [self.url.as_str()]);
        let redacted_url = {
            use secrecy::ExposeSecret;
            redactor.redact(url.expose_secret())
        };
        let info = self.source_info(name, redacted_url.clone());
        let settings = SseSettings {
            url,
            redacted_url,
            redactor,
            headers,
            network,
            event_types: self.event_types.clone(),
            key,
            start_from: self.start_from.clone(),
            read_timeout: self.read_timeout,
            connect_timeout: self.connect_timeout,
            max_event_bytes: self.max_event_bytes,
            reconnect: self.reconnect.clone(),
            auth: auth.expect("no errors means the auth resolved"),
        };
        Ok((info, SseSource::new(settings)))
    }
}
