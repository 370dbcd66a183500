//! `[sources.<name>]` with `type = "graphql"`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;

use crate::{
    error::ConfigError,
    http::{AuthConfig, HttpRequest, RetryConfig},
    json::{child, is_null, text_of, Pointer},
    sources::{
        common::{source_table, Checks},
        poll::{
            self,
            config::{
                default_connect_timeout, default_interval, default_max_body_bytes,
                default_max_pages, default_timeout, CommonFields,
            },
            Endpoint, ErrorsPolicy, Next, PageState, PageView, PolledSource, WatermarkConfig,
        },
        SourceInfo,
    },
};

source_table! {
    /// A polled GraphQL endpoint (`type = "graphql"`). See the book's GraphQL page
    /// (`docs/src/sources/graphql.md`).
    pub struct GraphqlConfig {
        /// The endpoint (`http`/`https`).
        pub url: String,
        /// The query text; or give `query_file`.
        pub query: Option<String>,
        /// A file holding the query text.
        pub query_file: Option<PathBuf>,
        /// Variables sent with every page.
        #[serde(default)]
        pub variables: serde_json::Map<String, serde_json::Value>,
        /// Request headers; values may hold `${env:…}` references.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// JSON pointer to the records array, e.g. `/data/repository/issues/nodes`.
        pub records: String,
        /// JSON pointer to the connection's `pageInfo`, e.g. `/data/repository/issues/pageInfo`.
        /// Without it, one request per poll.
        pub page_info: Option<String>,
        /// The variable that carries the cursor (`endCursor` of the previous page). Default
        /// `after`.
        #[serde(default = "default_cursor_variable")]
        pub cursor_variable: String,
        /// JSON pointer to each record's id: the Kafka key and `tributary.event_id`.
        pub key: Option<String>,
        /// The incremental watermark; its `param` is a variable name.
        pub watermark: Option<WatermarkConfig>,
        /// `errors` in an HTTP 200 answer: `fail` the poll (the default) or `dead_letter` them
        /// and produce the partial data.
        #[serde(default)]
        pub errors: ErrorsPolicy,
        /// Authentication, if any.
        pub auth: Option<AuthConfig>,
        /// The HTTP proxy: absent, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
        /// environment variables decide; `"none"` connects directly; or
        /// `"http://[user:password@]host:port"` (secret references allowed) for every request.
        #[serde(default)]
        pub proxy: Option<String>,
        /// Trust roots and client certificate as PEM files: `ca_file`, `cert_file`, `key_file`.
        #[serde(default)]
        pub tls: Option<crate::http::TlsConfig>,
        /// Retries of transient failures.
        #[serde(default)]
        pub retry: RetryConfig,
        /// Time between poll starts. Default `60s`.
        #[serde(default = "default_interval", with = "humantime_serde")]
        pub interval: Duration,
        /// Up to this much, at random, is added to each interval. Default `0s`.
        #[serde(default, with = "humantime_serde")]
        pub jitter: Duration,
        /// Pages per poll at most; a longer walk goes on at the next poll. Default 1000.
        #[serde(default = "default_max_pages")]
        pub max_pages_per_poll: u64,
        /// Whole-request timeout. Default `30s`.
        #[serde(default = "default_timeout", with = "humantime_serde")]
        pub timeout: Duration,
        /// Connect timeout. Default `10s`.
        #[serde(default = "default_connect_timeout", with = "humantime_serde")]
        pub connect_timeout: Duration,
        /// Largest response body, bytes, after decompression; a larger page fails the poll.
        /// Default 67108864 (64 MiB).
        #[serde(default = "default_max_body_bytes")]
        pub max_body_bytes: usize,
    }
}

fn default_cursor_variable() -> String {
    "after".into()
}

impl GraphqlConfig {
    /// Validates the config, reads the query file and builds the source.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, PolledSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        let url = checks.url(
            "url",
            &self.url,
            &["http", "https"],
            "https://api.example.com/graphql",
        );
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let headers = checks.headers(&self.headers);
        let mut headers = poll::config::header_map(&mut checks, &headers);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let query = match (&self.query, &self.query_file) {
            (Some(query), None) => Some(query.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(query) => Some(query),
                Err(e) => {
                    checks.error(
                        "query_file",
                        format!("`{}` cannot be read: {e}", path.display()),
                        "give the path of a readable file holding the query",
                    );
                    None
                }
            },
            _ => {
                checks.error(
                    "query",
                    "give exactly one of `query` and `query_file`",
                    "set `query = \"\"\"query { … }\"\"\"` or `query_file = \"issues.graphql\"`",
                );
                None
            }
        };
        let page_info = self.page_info.as_deref().and_then(|page_info| {
            poll::config::pointer(&mut checks, "page_info", page_info, false)
        });
        checks.channel(self.channel_max_records, self.channel_max_bytes);
        let settings = poll::config::settings(
            &mut checks,
            CommonFields {
                records: &self.records,
                key: self.key.as_deref(),
                watermark: self.watermark.as_ref(),
                auth: self.auth.as_ref(),
                proxy: self.proxy.as_deref(),
                tls: self.tls.as_ref(),
                retry: &self.retry,
                interval: self.interval,
                jitter: self.jitter,
                max_pages_per_poll: self.max_pages_per_poll,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                max_body_bytes: self.max_body_bytes,
                conditional: false,
                errors: self.errors,
            },
            Vec::new(),
            &[self.url.as_str()],
        );
        checks.finish()?;
        let (Some(url), Some(settings), Some(query)) = (url, settings, query) else {
            unreachable!("no errors means every part resolved");
        };
        let redacted_url = settings.redactor.redact(url.expose_secret());
        let mut info = self.source_info(name, redacted_url.clone());
        info.commit_each_position = true;
        let endpoint = GraphqlEndpoint {
            url,
            headers,
            query,
            variables: self.variables.clone(),
            page_info,
            cursor_variable: self.cursor_variable.clone(),
            watermark_variable: self.watermark.as_ref().map(|w| w.param.clone()),
        };
        Ok((
            info,
            PolledSource::new(Box::new(endpoint), settings, redacted_url),
        ))
    }
}

struct GraphqlEndpoint {
    url: SecretString,
    headers: http::HeaderMap,
    query: String,
    variables: serde_json::Map<String, serde_json::Value>,
    page_info: Option<Pointer>,
    cursor_variable: String,
    watermark_variable: Option<String>,
}

impl Endpoint for GraphqlEndpoint {
    fn request(&self, state: &PageState, since: Option<&str>) -> HttpRequest {
        let mut variables = self.variables.clone();
        if let PageState::Cursor(cursor) = state {
            variables.insert(self.cursor_variable.clone(), cursor.clone().into());
        }
        if let (Some(name), Some(since)) = (&self.watermark_variable, since) {
            let value = serde_json::from_str(since).unwrap_or_else(|_| since.to_owned().into());
            variables.insert(name.clone(), value);
        }
        let body = serde_json::json!({ "query": self.query, "variables": variables });
        HttpRequest {
            method: http::Method::POST,
            url: self
                .url
                .expose_secret()
                .parse()
                .expect("the URL was parsed at config time"),
            headers: self.headers.clone(),
            body: Some(Bytes::from(body.to_string())),
        }
    }

    /// Relay cursor connections: `hasNextPage` true and a non-empty `endCursor`.
    fn next(&self, _state: &PageState, page: &PageView<'_>) -> Next {
        let Some(pointer) = &self.page_info else {
            return Next::Last;
        };
        let Some(info) = page
            .body
            .and_then(|body| pointer.lookup(body))
            .filter(|i| !is_null(i))
        else {
            return Next::Unknown(format!(
                "the answer has no pageInfo at `{}`",
                pointer.as_str()
            ));
        };
        if child(info, "hasNextPage").is_none_or(|flag| flag.get() != "true") {
            return Next::Last;
        }
        match child(info, "endCursor")
            .filter(|c| !is_null(c))
            .map(text_of)
        {
            Some(cursor) if !cursor.is_empty() => {
                Next::Page(PageState::Cursor(cursor.into_owned()))
            }
            _ => Next::Unknown("`hasNextPage` is true but `endCursor` is empty".into()),
        }
    }

    /// A non-empty `errors` array (GraphQL over HTTP: errors may come with HTTP 200).
    fn errors<'a>(&self, body: &'a RawValue) -> Option<&'a RawValue> {
        child(body, "errors")
            .filter(|errors| crate::json::elements(errors).is_some_and(|list| !list.is_empty()))
    }
}
