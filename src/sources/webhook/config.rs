//! The `type = "webhook"` source table.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{
    receiver::WebhookSource,
    signature::{
        GenericHmacScheme, GitHubScheme, SignatureEncoding, SignatureScheme,
        StandardWebhooksScheme, StripeScheme, DEFAULT_TIMESTAMP_TOLERANCE,
    },
};
use crate::{
    error::ConfigError,
    sources::{
        common::{source_table, Checks},
        PayloadFormat, SourceInfo,
    },
    stage::Key,
};

/// `signature = { scheme = "…", secrets = […] }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// `github` (X-Hub-Signature-256), `stripe` (Stripe-Signature), `standard_webhooks`
    /// (webhook-signature), `hmac_sha256` (a configured header), or `none` (no verification:
    /// only for senders inside a trusted network).
    pub scheme: String,
    /// The active secrets, oldest first; during a rotation list both. Each may be
    /// `${env:…}`/`${file:…}`. Standard Webhooks secrets start with `whsec_`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How far a signed timestamp may be from now (Stripe, Standard Webhooks). Default `5m`.
    #[serde(default, with = "humantime_serde")]
    pub tolerance: Option<Duration>,
    /// `hmac_sha256`: the header that carries the signature.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac_sha256`: `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `hmac_sha256`: text before the signature in the header, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// `event_id = { header = "…" }` or `{ pointer = "…" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIdConfig {
    /// A request header holding the provider's event or delivery id.
    #[serde(default)]
    pub header: Option<String>,
    /// A JSON pointer into the body (`/id`), or a template joining several (`{/type}:{/id}`).
    #[serde(default)]
    pub pointer: Option<String>,
}

source_table! {
    /// `[sources.<name>]` with `type = "webhook"`.
    pub struct WebhookConfig {
        /// The route on the HTTP server (`server.listen`). Default `/webhooks/<name>`.
        #[serde(default)]
        pub path: Option<String>,
        /// How requests are authenticated. Required.
        pub signature: SignatureConfig,
        /// Where the event id (record key, deduplication key, `tributary.event_id`) comes from.
        /// Default: the scheme's delivery id (`webhook-id`, `X-GitHub-Delivery`), if any.
        #[serde(default)]
        pub event_id: Option<EventIdConfig>,
        /// `json` (default: a body that is not JSON is refused with 400) or `text`.
        #[serde(default)]
        pub format: PayloadFormat,
        /// Largest accepted body, bytes; larger requests get 413. At most the producer's
        /// `message.max.bytes`. Default 1000000 (librdkafka's `message.max.bytes`).
        #[serde(default = "default_max_body_bytes")]
        pub max_body_bytes: usize,
        /// Accepted `Content-Type` media types; others get 415. Default `["application/json"]`
        /// (empty: any).
        #[serde(default = "default_content_types")]
        pub content_types: Vec<String>,
        /// An event id seen (and acknowledged by Kafka) within this window is answered 2xx and
        /// not produced again. Default `24h`, at most `365d`.
        #[serde(default = "default_dedupe_window", with = "humantime_serde")]
        pub dedupe_window: Duration,
        /// At most this many event ids are remembered (the oldest go first). Default 100000.
        #[serde(default = "default_dedupe_max_ids")]
        pub dedupe_max_ids: u64,
        /// Longest time to receive a request's body; slower requests get 408. Default `10s`.
        #[serde(default = "default_body_timeout", with = "humantime_serde")]
        pub body_timeout: Duration,
        /// Requests served at once; more get 503 with `Retry-After`. Default 256, at most
        /// 1000000.
        #[serde(default = "default_max_concurrent_requests")]
        pub max_concurrent_requests: usize,
        /// Longest wait for Kafka's acknowledgement before answering 503 (the sender retries).
        /// Default `10s`.
        #[serde(default = "default_ack_timeout", with = "humantime_serde")]
        pub ack_timeout: Duration,
        /// `Retry-After` sent with 503 answers. Default `5s`.
        #[serde(default = "default_retry_after", with = "humantime_serde")]
        pub retry_after: Duration,
    }
}

/// The most requests a source may serve at once. tokio's semaphore holds at most
/// `usize::MAX >> 3` permits (and panics past it); long before that, each request may hold
/// `max_body_bytes` of memory.
const MAX_CONCURRENT_REQUESTS: usize = 1_000_000;

/// The longest `dedupe_window`: 365 days. The cache of seen ids (moka) refuses a time to live
/// over 1000 years, and senders retry for hours or days.
const MAX_DEDUPE_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// librdkafka's default `message.max.bytes`: a larger body could not be produced.
fn default_max_body_bytes() -> usize {
    1_000_000
}
fn default_content_types() -> Vec<String> {
    vec!["application/json".to_owned()]
}
fn default_dedupe_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_dedupe_max_ids() -> u64 {
    100_000
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent_requests() -> usize {
    256
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(5)
}

/// Where the event id comes from, validated.
#[derive(Clone, Debug)]
pub enum EventIdFrom {
    /// The scheme's delivery id, if it has one.
    Scheme,
    /// A request header.
    Header(http::HeaderName),
    /// A JSON pointer or a template over the body.
    Pointer(Key),
}

/// The validated settings the receiver runs with.
#[derive(Debug)]
pub struct WebhookSettings {
    pub(crate) path: String,
    pub(crate) signature: Option<SignatureScheme>,
    pub(crate) event_id: EventIdFrom,
    pub(crate) format: PayloadFormat,
    pub(crate) max_body_bytes: usize,
    pub(crate) content_types: Vec<String>,
    pub(crate) dedupe_window: Duration,
    pub(crate) dedupe_max_ids: u64,
    pub(crate) ack_timeout: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) max_concurrent_requests: usize,
}

impl WebhookConfig {
    /// Validates and resolves this config.
    ///
    /// # Errors
    /// Every problem found, each naming the source, the field and the fix.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, WebhookSource), Vec<ConfigError>> {
        let mut checks = Checks::new(name);
        checks.topics(&self.topic, self.dead_letter_topic.as_deref());
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| format!("/webhooks/{name}"));
        if !path.starts_with('/') || path.contains(['{', '}', '*', ':']) {
            checks.error(
                "path",
                format!("`{path}` is not a plain route"),
                "write a path such as `/webhooks/github` (no `{…}`, `:` or `*`)",
            );
        }
        let secrets: Vec<SecretString> = self
            .signature
            .secrets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| checks.secret(&format!("signature.secrets[{i}]"), s))
            .collect();
        // A secret that did not resolve was reported with its field; the scheme built from the
        // rest would only add a second error about the same mistake ("no secrets configured").
        let signature = if secrets.len() == self.signature.secrets.len() {
            build_scheme(&mut checks, &self.signature, &secrets)
        } else {
            None
        };
        let event_id = match &self.event_id {
            None => EventIdFrom::Scheme,
            Some(EventIdConfig {
                header: Some(header),
                pointer: None,
            }) => match http::HeaderName::from_bytes(header.as_bytes()) {
                Ok(header) => EventIdFrom::Header(header),
                Err(_) => {
                    checks.error(
                        "event_id.header",
                        "not a valid HTTP header name",
                        "use letters, digits and `-`",
                    );
                    EventIdFrom::Scheme
                }
            },
            Some(EventIdConfig {
                header: None,
                pointer: Some(pointer),
            }) if self.format == PayloadFormat::Json => match Key::parse(pointer) {
                Ok(key) => EventIdFrom::Pointer(key),
                Err(error) => {
                    checks.error(
                        "event_id.pointer",
                        error,
                        "write a JSON pointer such as `\"/id\"` or a template such as `\"{/type}:{/id}\"`",
                    );
                    EventIdFrom::Scheme
                }
            },
            Some(_) => {
                checks.error(
                    "event_id",
                    "needs exactly one of `header` or `pointer` (a JSON pointer needs `format = \"json\"`)",
                    "write `event_id = { header = \"X-GitHub-Delivery\" }` or `{ pointer = \"/id\" }`",
                );
                EventIdFrom::Scheme
            }
        };
        if self.max_body_bytes == 0 || self.dedupe_max_ids == 0 || self.max_concurrent_requests == 0
        {
            checks.error(
                "max_body_bytes",
                "`max_body_bytes`, `dedupe_max_ids` and `max_concurrent_requests` must be greater than zero",
                "use e.g. `max_body_bytes = 1000000`",
            );
        }
        if self.max_concurrent_requests > MAX_CONCURRENT_REQUESTS {
            checks.error(
                "max_concurrent_requests",
                format!(
                    "{} is more than the {MAX_CONCURRENT_REQUESTS} requests a source may serve at once",
                    self.max_concurrent_requests
                ),
                "use e.g. `max_concurrent_requests = 256` (the default); each request may hold \
                 `max_body_bytes` of memory",
            );
        }
        if self.dedupe_window > MAX_DEDUPE_WINDOW {
            checks.error(
                "dedupe_window",
                format!(
                    "`{}` is longer than the longest window, `365d`",
                    humantime::format_duration(self.dedupe_window)
                ),
                "use e.g. `dedupe_window = \"24h\"` (the default); senders retry for hours or \
                 days, not years",
            );
        }
        checks.positive_durations(&[
            ("dedupe_window", self.dedupe_window),
            ("ack_timeout", self.ack_timeout),
            ("retry_after", self.retry_after),
            ("body_timeout", self.body_timeout),
        ]);
        checks.channel(self.channel_max_records, self.channel_max_bytes);
        checks.finish()?;

        let info = self.source_info(name, format!("webhook:{path}"));
        let settings = WebhookSettings {
            path,
            signature,
            event_id,
            format: self.format,
            max_body_bytes: self.max_body_bytes,
            content_types: self
                .content_types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            dedupe_window: self.dedupe_window,
            dedupe_max_ids: self.dedupe_max_ids,
            ack_timeout: self.ack_timeout,
            retry_after: self.retry_after,
            body_timeout: self.body_timeout,
            max_concurrent_requests: self.max_concurrent_requests,
        };
        Ok((info, WebhookSource::new(name, settings)))
    }
}

fn build_scheme(
    checks: &mut Checks,
    config: &SignatureConfig,
    secrets: &[SecretString],
) -> Option<SignatureScheme> {
    let tolerance = config.tolerance.unwrap_or(DEFAULT_TIMESTAMP_TOLERANCE);
    let generic_only = [
        ("signature.header", config.header.is_some()),
        ("signature.encoding", config.encoding.is_some()),
        ("signature.prefix", config.prefix.is_some()),
    ];
    if config.scheme != "hmac_sha256" {
        for (field, set) in generic_only {
            if set {
                checks.error(
                    field,
                    format!(
                        "only applies to `scheme = \"hmac_sha256\"`, not `{}`",
                        config.scheme
                    ),
                    "remove it",
                );
            }
        }
    }
    let built = match config.scheme.as_str() {
        "none" => {
            if !config.secrets.is_empty() {
                checks.error(
                    "signature.secrets",
                    "secrets are set but `scheme = \"none\"` verifies nothing",
                    "choose the provider's scheme, or remove the secrets",
                );
            }
            return None;
        }
        "github" => GitHubScheme::try_new(secrets).map(SignatureScheme::GitHub),
        "stripe" => StripeScheme::try_new(secrets, tolerance).map(SignatureScheme::Stripe),
        "standard_webhooks" => StandardWebhooksScheme::try_new(secrets, tolerance)
            .map(SignatureScheme::StandardWebhooks),
        "hmac_sha256" => {
            let encoding = match config.encoding.as_deref().unwrap_or("hex") {
                "hex" => SignatureEncoding::Hex,
                "base64" => SignatureEncoding::Base64,
                other => {
                    checks.error(
                        "signature.encoding",
                        format!("`{other}` is not an encoding"),
                        "use `\"hex\"` or `\"base64\"`",
                    );
                    SignatureEncoding::Hex
                }
            };
            match &config.header {
                Some(header) => GenericHmacScheme::try_new(
                    secrets,
                    header,
                    encoding,
                    config.prefix.as_deref(),
                )
                .map(SignatureScheme::GenericHmac),
                None => Err("`hmac_sha256` needs `header`, the signature header's name".into()),
            }
        }
        other => Err(format!(
            "`{other}` is not a signature scheme; use `github`, `stripe`, `standard_webhooks`, `hmac_sha256` or `none`"
        )),
    };
    match built {
        Ok(scheme) => Some(scheme),
        Err(problem) => {
            checks.error(
                "signature",
                problem,
                "see the webhook source page of the book (docs/src/sources/webhook.md)",
            );
            None
        }
    }
}
