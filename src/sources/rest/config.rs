//! `[sources.<name>]` with `type = "rest"`: a polled REST endpoint.

use std::{collections::BTreeMap, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use super::pagination::{PaginationConfig, Paginator};
use crate::{
    error::ConfigError,
    http::{AuthConfig, HttpRequest, RetryConfig},
    sources::{
        common::{source_table, Checks},
        poll::{
            self,
            config::{
                default_connect_timeout, default_interval, default_max_body_bytes,
                default_max_pages, default_timeout, default_true, CommonFields,
            },
            format::BodyFormat,
            Endpoint, ErrorsPolicy, Next, PageState, PageView, PolledSource, WatermarkConfig,
        },
        SourceInfo,
    },
};

source_table! {
    /// A polled REST endpoint (`type = "rest"`). See the book's REST page
    /// (`docs/src/sources/rest.md`).
    pub struct RestConfig {
        /// The endpoint (`http`/`https`); may hold `${env:…}` references.
        pub url: String,
        /// Query parameters added to every request; values may hold `${env:…}` references (such
        /// values are redacted from `tributary.url`).
        #[serde(default)]
        pub query: BTreeMap<String, String>,
        /// Request headers; values may hold `${env:…}` references.
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// How the body is read: `json` (the default), `feed` (RSS, Atom, JSON Feed: each
        /// entry a record) or `xml` (mapped to JSON, then `records` points into it).
        #[serde(default)]
        pub format: BodyFormat,
        /// JSON pointer to the records array in each page; `""` (the default) when the body is the
        /// array. Not with `format = "feed"`.
        #[serde(default)]
        pub records: String,
        /// JSON pointer to each record's id: the Kafka key and the `tributary.event_id` header.
        /// With `format = "feed"` the default is `/id`, the entry's id.
        pub key: Option<String>,
        /// How pages follow each other. Default: one request per poll.
        #[serde(default)]
        pub pagination: PaginationConfig,
        /// The incremental watermark, if any.
        pub watermark: Option<WatermarkConfig>,
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
        /// Send `If-None-Match`/`If-Modified-Since` from the last poll's first page. Default true.
        #[serde(default = "default_true")]
        pub conditional: bool,
    }
}

impl RestConfig {
    /// Validates the config and builds the source.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, PolledSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        let url = checks.url(
            "url",
            &self.url,
            &["http", "https"],
            "https://api.example.com/v1/items",
        );
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let headers = checks.headers(&self.headers);
        let headers = poll::config::header_map(&mut checks, &headers);
        let mut query = Vec::new();
        let mut secret_query = Vec::new();
        let mut secret_texts = vec![self.url.as_str()];
        // Query parameters of the URL itself whose values are secret references.
        if let Ok(raw) = url::Url::parse(&self.url) {
            for (param, value) in raw.query_pairs() {
                if value.contains("${") {
                    secret_query.push(param.into_owned());
                }
            }
        }
        for (param, value) in &self.query {
            if value.contains("${") {
                secret_query.push(param.clone());
                secret_texts.push(value);
            }
            if let Some(value) = checks.secret(&format!("query.{param}"), value) {
                query.push((param.clone(), value));
            }
        }
        for (field, pointer) in self.pagination.pointers() {
            poll::config::pointer(&mut checks, field, pointer, false);
        }
        if let PaginationConfig::Offset { limit: 0, .. }
        | PaginationConfig::PageNumber { size: Some(0), .. } = self.pagination
        {
            checks.error(
                "pagination",
                "a page size of 0 asks for nothing",
                "use a positive `limit`/`size`",
            );
        }
        checks.channel(self.channel_max_records, self.channel_max_bytes);
        let feed = self.format == BodyFormat::Feed;
        if feed {
            if !self.records.is_empty() {
                checks.error(
                    "records",
                    "does not apply to `format = \"feed\"`: each entry of the feed is a record",
                    "remove `records`",
                );
            }
            if self.watermark.is_some() {
                checks.error(
                    "watermark",
                    "does not apply to `format = \"feed\"`: a feed's watermark is each entry's `updated` time",
                    "remove `[watermark]`",
                );
            }
        }
        let mut settings = poll::config::settings(
            &mut checks,
            CommonFields {
                records: &self.records,
                key: self.key.as_deref().or(feed.then_some("/id")),
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
                conditional: self.conditional,
                errors: ErrorsPolicy::Fail,
            },
            secret_query,
            &secret_texts,
        );
        if let Some(settings) = settings.as_mut() {
            settings.format = self.format;
            if feed {
                settings.watermark_field = crate::json::Pointer::parse("/updated").ok();
            }
        }
        checks.finish()?;
        let (Some(url), Some(settings)) = (url, settings) else {
            unreachable!("no errors means every part resolved");
        };
        let mut base: url::Url = url.expose_secret().parse().expect("checked by Checks::url");
        for (param, value) in &query {
            crate::http::set_query_param(&mut base, param, value.expose_secret());
        }
        let redacted_url = settings.redactor.redact(base.as_str());
        let mut info = self.source_info(name, redacted_url.clone());
        info.commit_each_position = true;
        let endpoint = RestEndpoint {
            base: SecretString::from(base.to_string()),
            headers,
            paginator: self.pagination.build(),
            watermark_param: self.watermark.as_ref().map(|w| w.param.clone()),
            secret_params: base
                .query_pairs()
                .filter(|(param, _)| settings.redactor.parameters().iter().any(|s| s == param))
                .map(|(param, value)| (param.into_owned(), SecretString::from(value.into_owned())))
                .collect(),
        };
        Ok((
            info,
            PolledSource::new(Box::new(endpoint), settings, redacted_url),
        ))
    }
}

/// Requests for a REST endpoint: the configured URL, query and headers, plus the pagination
/// strategy's parameters and the watermark.
struct RestEndpoint {
    base: SecretString,
    headers: http::HeaderMap,
    paginator: Box<dyn Paginator>,
    watermark_param: Option<String>,
    /// `query` parameters whose values are secrets.
    secret_params: Vec<(String, SecretString)>,
}

impl Endpoint for RestEndpoint {
    fn request(&self, state: &PageState, since: Option<&str>) -> HttpRequest {
        let mut url: url::Url = self
            .base
            .expose_secret()
            .parse()
            .expect("the base URL was parsed at config time");
        match state {
            // A next URL from the server carries its own parameters, the watermark included,
            // but not the secret ones: they were stripped before it was stored.
            PageState::Url(_) => {
                self.paginator.apply(state, &mut url);
                for (param, value) in &self.secret_params {
                    crate::http::set_query_param(&mut url, param, value.expose_secret());
                }
            }
            _ => {
                if let (Some(param), Some(since)) = (&self.watermark_param, since) {
                    let since =
                        serde_json::from_str::<String>(since).unwrap_or_else(|_| since.to_owned());
                    crate::http::set_query_param(&mut url, param, &since);
                }
                self.paginator.apply(state, &mut url);
            }
        }
        HttpRequest {
            method: http::Method::GET,
            url,
            headers: self.headers.clone(),
            body: None,
        }
    }

    fn next(&self, state: &PageState, page: &PageView<'_>) -> Next {
        self.paginator.next(state, page)
    }
}
