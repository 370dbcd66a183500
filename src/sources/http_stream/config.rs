//! The `type = "http_stream"` source table and its validation into [`StreamSettings`].

use std::{collections::BTreeMap, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{preset::Preset, source::HttpStreamSource};
use crate::{
    error::ConfigError,
    http::{AuthConfig, StreamTimeouts},
    secret,
    sources::{
        common::{source_table, Checks},
        poll::config::header_map,
        ReconnectConfig, SourceInfo,
    },
    stage::Key,
};

/// How the response body is cut into records (`framing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// JSON text sequences when the response says `Content-Type: application/json-seq`,
    /// else JSON lines.
    #[default]
    Auto,
    /// One JSON value per line, ended by LF (or CRLF): NDJSON, JSON Lines.
    Lines,
    /// JSON text sequences (RFC 7464): each record starts with RS (0x1E) and ends with LF.
    JsonSeq,
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_line_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}

source_table! {
    /// `[sources.<name>]` with `type = "http_stream"`.
    pub struct HttpStreamConfig {
        /// The streaming endpoint (`http` or `https`). May contain `${env:…}`/`${file:…}`.
        /// With `preset = "couchdb"`, a database's `_changes` URL; with `preset =
        /// "kubernetes"`, a collection's list URL (`/api/v1/namespaces/default/pods`).
        pub url: String,
        /// The protocol rules: `"none"` (default), `"couchdb"` or `"kubernetes"`.
        #[serde(default)]
        pub preset: Preset,
        /// `"auto"` (default), `"lines"` or `"json_seq"`.
        #[serde(default)]
        pub framing: Framing,
        /// Extra request headers; values may contain `${env:…}`/`${file:…}`.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// Where each record's position is read: a JSON pointer such as `"/seq"` or a
        /// template such as `"{/partition}-{/offset}"`. Default: the preset's; none without
        /// a preset (the stream then starts afresh on every connect).
        #[serde(default)]
        pub position: Option<String>,
        /// The query parameter the position is sent back in on every connect. Default: the
        /// preset's (`since`, `resourceVersion`).
        #[serde(default)]
        pub resume_param: Option<String>,
        /// The request header the position is sent back in, instead of a query parameter.
        #[serde(default)]
        pub resume_header: Option<String>,
        /// The position to send on the first connect while none is stored.
        #[serde(default)]
        pub start_from: Option<String>,
        /// The record key: a JSON pointer or a template, read by the record stage. Default:
        /// the preset's (`/id` for CouchDB, `/object/metadata/uid` for Kubernetes); none
        /// without a preset.
        #[serde(default)]
        pub key: Option<String>,
        /// A connection that delivers nothing, not even a heartbeat, for this long is
        /// reconnected. Default `60s`.
        #[serde(default = "default_read_timeout", with = "humantime_serde")]
        pub read_timeout: Duration,
        /// Time allowed to open the TCP/TLS connection. Default `10s`.
        #[serde(default = "default_connect_timeout", with = "humantime_serde")]
        pub connect_timeout: Duration,
        /// The largest line (or JSON text sequence record), in bytes; a longer one is skipped
        /// and a stub of it dead-lettered. Default 8388608 (8 MiB).
        #[serde(default = "default_max_line_bytes")]
        pub max_line_bytes: usize,
        /// The largest page of a Kubernetes list (a relist), in bytes. Default 67108864 (64 MiB).
        #[serde(default = "default_max_body_bytes")]
        pub max_body_bytes: usize,
        /// Reconnect policy.
        #[serde(default)]
        pub reconnect: ReconnectConfig,
        /// Retries of each connect (and of a Kubernetes list) before it counts as a failed
        /// connection, as for REST sources.
        #[serde(default)]
        pub retry: crate::http::RetryConfig,
        /// Authentication of each request (API key, bearer, basic or OAuth2 client
        /// credentials), as for REST sources.
        #[serde(default)]
        pub auth: Option<AuthConfig>,
        /// The HTTP proxy: absent, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
        /// environment variables decide; `"none"` connects directly; or
        /// `"http://[user:password@]host:port"` (secret references allowed) for every request.
        #[serde(default)]
        pub proxy: Option<String>,
        /// Trust roots and client certificate as PEM files: `ca_file`, `cert_file`, `key_file`.
        #[serde(default)]
        pub tls: Option<crate::http::TlsConfig>,
    }
}

/// Where the position travels back to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeIn {
    /// A query parameter of this name.
    Query(String),
    /// A request header.
    Header(http::HeaderName),
    /// Nowhere: the source has no position.
    Nowhere,
}

/// The validated, resolved settings the source runs with.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub(crate) url: url::Url,
    pub(crate) redacted_url: String,
    pub(crate) redactor: secret::UrlRedactor,
    pub(crate) preset: Preset,
    pub(crate) framing: Framing,
    pub(crate) headers: http::HeaderMap,
    pub(crate) position: Option<Key>,
    pub(crate) resume_in: ResumeIn,
    pub(crate) start_from: Option<String>,
    pub(crate) read_timeout: Duration,
    pub(crate) timeouts: StreamTimeouts,
    /// The largest line or record, in bytes (> 0).
    pub(crate) max_line_bytes: usize,
    pub(crate) reconnect: ReconnectConfig,
    pub(crate) retry: crate::http::RetryConfig,
    pub(crate) auth: crate::http::Auth,
    /// The proxy and TLS settings.
    pub(crate) network: crate::http::Network,
}

impl HttpStreamConfig {
    /// The record key the record stage reads: `key`, else the preset's.
    pub(crate) fn effective_key(&self) -> Option<&str> {
        self.key.as_deref().or(self.preset.default_key())
    }

    /// Validates and resolves this config.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, HttpStreamSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        let url = checks.url(
            "url",
            &self.url,
            &["http", "https"],
            "https://couch.example.com/db/_changes",
        );
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let headers = checks.headers(&self.headers);
        let headers = header_map(&mut checks, &headers);
        let position = self
            .position
            .as_deref()
            .or(self.preset.default_position())
            .and_then(|text| match Key::parse(text) {
                Ok(key) => Some(key),
                Err(error) => {
                    checks.error(
                        "position",
                        error,
                        "write a JSON pointer such as `\"/seq\"` or a template such as `\"{/partition}-{/offset}\"`",
                    );
                    None
                }
            });
        let resume_in = self.resume_in(&mut checks);
        if self.preset != Preset::None && self.position.is_some() {
            checks.error(
                "position",
                format!(
                    "the `{}` preset reads the position itself",
                    self.preset.name()
                ),
                "remove `position` (or use `preset = \"none\"`)",
            );
        }
        checks.positive_durations(&[
            ("read_timeout", self.read_timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect.initial_delay", self.reconnect.initial_delay),
            ("reconnect.max_delay", self.reconnect.max_delay),
            ("retry.initial_delay", self.retry.initial_delay),
            ("retry.max_delay", self.retry.max_delay),
        ]);
        if self.retry.max_attempts == 0 {
            checks.error(
                "retry.max_attempts",
                "must be at least 1",
                "use e.g. `5` (the first attempt counts)",
            );
        }
        for (field, value, example) in [
            ("max_line_bytes", self.max_line_bytes, "`8388608` (8 MiB)"),
            ("max_body_bytes", self.max_body_bytes, "`67108864` (64 MiB)"),
        ] {
            if value == 0 {
                checks.error(field, "must be at least 1", format!("use e.g. {example}"));
            }
        }
        checks.channel(self.channel_max_records, self.channel_max_bytes);
        let mut secret_query: Vec<String> = Vec::new();
        let network = checks.network(self.proxy.as_deref(), self.tls.as_ref());
        let auth = match &self.auth {
            Some(auth) => {
                secret_query.extend(auth.secret_query_parameter().map(str::to_owned));
                auth.resolve(&mut checks, &network)
            }
            None => Some(crate::http::Auth::None),
        };
        let parsed = url.as_ref().and_then(|url| {
            let mut parsed: url::Url = url.expose_secret().parse().ok()?;
            // User info travels as HTTP basic credentials, never in the URL (see
            // `crate::http::take_user_info`); `auth` or `headers` may replace it.
            if let Some((user, password)) = crate::http::take_user_info(&mut parsed) {
                if !headers.contains_key(http::header::AUTHORIZATION) && self.auth.is_none() {
                    return Some((parsed, Some((user, password))));
                }
            }
            Some((parsed, None))
        });
        checks.finish()?;
        let (url, user_info) = parsed.expect("no errors means the URL parsed");
        let mut auth = auth.expect("no errors means the auth resolved");
        if let Some((user, password)) = user_info {
            auth = crate::http::Auth::Basic(user, SecretString::from(password));
        }
        let redactor = secret::UrlRedactor::new(secret_query, [self.url.as_str()]);
        let redacted_url = redactor.redact(url.as_str());
        let info = self.source_info(name, redacted_url.clone());
        let settings = StreamSettings {
            url,
            redacted_url,
            redactor,
            preset: self.preset,
            framing: self.framing,
            headers,
            position,
            resume_in,
            start_from: self.start_from.clone(),
            read_timeout: self.read_timeout,
            timeouts: StreamTimeouts {
                connect: self.connect_timeout,
                read: self.read_timeout,
                max_body_bytes: self.max_body_bytes,
            },
            max_line_bytes: self.max_line_bytes,
            reconnect: self.reconnect.clone(),
            retry: self.retry.clone(),
            auth,
            network,
        };
        Ok((info, HttpStreamSource::new(settings)))
    }

    /// Where the position is sent back: `resume_param` or `resume_header` (not both), else the
    /// preset's parameter; a position without either is an error (it would never be used).
    fn resume_in(&self, checks: &mut Checks) -> ResumeIn {
        let has_position = self.position.is_some() || self.preset.default_position().is_some();
        match (&self.resume_param, &self.resume_header) {
            (Some(_), Some(_)) => {
                checks.error(
                    "resume_header",
                    "both `resume_param` and `resume_header` are set",
                    "keep one of them",
                );
                ResumeIn::Nowhere
            }
            (Some(param), None) if param.is_empty() => {
                checks.error(
                    "resume_param",
                    "is empty",
                    "name the query parameter, e.g. `since`",
                );
                ResumeIn::Nowhere
            }
            (Some(param), None) => ResumeIn::Query(param.clone()),
            (None, Some(header)) => match http::HeaderName::from_bytes(header.as_bytes()) {
                Ok(name) => ResumeIn::Header(name),
                Err(_) => {
                    checks.error(
                        "resume_header",
                        "not a valid HTTP header name",
                        "use letters, digits and `-`, e.g. `X-Since`",
                    );
                    ResumeIn::Nowhere
                }
            },
            (None, None) => match self.preset.default_resume_param() {
                Some(param) => ResumeIn::Query(param.to_owned()),
                None if has_position => {
                    checks.error(
                        "resume_param",
                        "a `position` needs somewhere to be sent back on reconnect",
                        "set `resume_param` (a query parameter such as `since`) or `resume_header`",
                    );
                    ResumeIn::Nowhere
                }
                None => ResumeIn::Nowhere,
            },
        }
    }
}
