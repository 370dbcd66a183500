//! The polling engine shared by the REST and GraphQL sources.
//!
//! Each poll walks the endpoint's pages in order under the shared HTTP policy. Every record of a
//! page is sent on, then a position marker whose position says where the walk stands, so the
//! stored position moves only once Kafka has acknowledged the whole page: a restart — clean or
//! `kill -9` — resumes at the first page not fully acknowledged, never at page 1, and never
//! re-fetches an acknowledged page. Polls never overlap: the next starts `interval` (plus
//! jitter) after the previous one started, or at once when that one ran longer.

pub(crate) mod config;
pub mod format;
mod page;
mod position;
mod probe;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use rand::Rng;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use page::{add_validators, read_page, same_origin, validators_of, PageContent};
pub use position::{compare, PageState, PollPosition, Validators, Walk};

use crate::{
    error::SourceError,
    http::{Auth, HttpError, HttpPolicy, HttpRequest, RetryConfig, Timeouts},
    json::{is_null, Pointer},
    record::{PageLineage, Position, Record},
    runtime::health::SourceState,
    sources::{Probe, Source, SourceContext},
    stage::Key,
};

/// What a page says about the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Fetch this page next.
    Page(PageState),
    /// This page was the last of the walk.
    Last,
    /// The next page cannot be known (the page was not JSON, a `Link` header that does not
    /// parse, …): the walk is given up without moving the watermark, and the next poll
    /// starts it over from the first page.
    Unknown(String),
}

/// What a pagination step may read from a fetched page.
pub struct PageView<'a> {
    /// The URL that was requested (to resolve relative next links).
    pub url: &'a url::Url,
    /// The response headers.
    pub headers: &'a HeaderMap,
    /// The parsed body; `None` when it was not valid JSON.
    pub body: Option<&'a RawValue>,
    /// The page's records (empty when the body was not valid JSON).
    pub records: &'a [&'a RawValue],
}

/// What a polled source asks of its endpoint: how to request a page and what comes next.
pub trait Endpoint: Send + Sync + 'static {
    /// The request for the page at `state`, asking for records from watermark `since` (the
    /// value's JSON text: `"2024-05-01T00:00:00Z"` with its quotes, or `1234`).
    fn request(&self, state: &PageState, since: Option<&str>) -> HttpRequest;

    /// What the page fetched at `state` says about the next one.
    fn next(&self, state: &PageState, page: &PageView<'_>) -> Next;

    /// Errors reported inside a successful answer (GraphQL's `errors` array), if any.
    fn errors<'a>(&self, _body: &'a RawValue) -> Option<&'a RawValue> {
        None
    }
}

/// `[sources.<name>.watermark]`: the incremental high-water mark.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// JSON pointer to the record field, e.g. `/updated_at` or `/id`.
    pub field: String,
    /// The request parameter (REST) or variable (GraphQL) that carries it, e.g. `since`.
    pub param: String,
    /// The value to ask from before anything was produced (a string or a number, as the
    /// field holds it); absent means "everything".
    pub initial: Option<serde_json::Value>,
}

/// What to do with GraphQL `errors` in an HTTP 200 answer.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorsPolicy {
    /// The poll fails (logged, counted, `/readyz` shows it); the page is asked again next poll.
    #[default]
    Fail,
    /// The partial data is produced and the `errors` array goes to the dead-letter topic.
    DeadLetter,
}

/// Everything the engine needs besides the endpoint.
#[derive(Clone, Debug)]
pub struct PollSettings {
    /// Time between poll starts.
    pub interval: Duration,
    /// Up to this much is added to each interval, at random.
    pub jitter: Duration,
    /// A walk stops after this many pages and goes on at the next poll.
    pub max_pages_per_poll: u64,
    /// JSON pointer to the records array (`""`: the body is the array).
    pub records: Pointer,
    /// Each record's key (and event id, the watermark's boundary id): a JSON pointer or a
    /// template, read from the record as the API sent it.
    pub key: Option<Key>,
    /// The incremental watermark, if any.
    pub watermark: Option<WatermarkConfig>,
    /// The watermark's `field`, compiled.
    pub watermark_field: Option<Pointer>,
    /// Send `If-None-Match`/`If-Modified-Since` on the first page.
    pub conditional: bool,
    /// GraphQL `errors` policy.
    pub errors: ErrorsPolicy,
    /// How the body is read (REST's `format`; GraphQL is always JSON).
    pub format: format::BodyFormat,
    /// Authentication.
    pub auth: Auth,
    /// The proxy and TLS settings.
    pub network: crate::http::Network,
    /// Retries.
    pub retry: RetryConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// What to strip from URLs (secret query parameters, referenced secret values).
    pub redactor: crate::secret::UrlRedactor,
}

/// Polls in a row that may fail at a page past the first before the walk starts over from
/// the first page (a cursor or next URL that expired).
const FAILED_POLLS_BEFORE_RESTART: u32 = 3;

/// How a poll ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Complete,
    NotModified,
    PageLimit,
    /// The walk was given up, for this reason.
    Incomplete(String),
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::NotModified => "not_modified",
            Outcome::PageLimit => "page_limit",
            Outcome::Incomplete(_) => "incomplete",
        }
    }
}

enum PollError {
    Shutdown,
    Failed(String),
}

impl From<HttpError> for PollError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Shutdown => PollError::Shutdown,
            other => PollError::Failed(other.to_string()),
        }
    }
}

/// A polled source (REST or GraphQL), ready to run: its endpoint and the engine's settings.
pub struct PolledSource {
    endpoint: Box<dyn Endpoint>,
    settings: PollSettings,
    redacted_url: String,
}

impl PolledSource {
    /// A source polling `endpoint`; `redacted_url` (secrets stripped) names it in errors.
    pub(crate) fn new(
        endpoint: Box<dyn Endpoint>,
        settings: PollSettings,
        redacted_url: String,
    ) -> Self {
        PolledSource {
            endpoint,
            settings,
            redacted_url,
        }
    }
}

impl Source for PolledSource {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(probe::first_page(&*self.endpoint, &self.settings))
    }

    fn refresh_token_grant(&self) -> Option<Arc<crate::http::OAuth2Tokens>> {
        self.settings.auth.refresh_token_grant()
    }

    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        let PolledSource {
            endpoint,
            settings,
            redacted_url,
        } = *self;
        Box::pin(run(endpoint, settings, redacted_url, context))
    }
}

/// Polls `endpoint` until shutdown.
///
/// # Errors
/// A permanent [`SourceError`] when the stored position is not a polled source's position or
/// the HTTP client cannot be built; failed polls are not errors (they are logged, counted and
/// shown in `/readyz`, and the next poll comes at the interval).
pub async fn run(
    endpoint: Box<dyn Endpoint>,
    settings: PollSettings,
    url: String,
    context: SourceContext,
) -> Result<(), SourceError> {
    let permanent = |message: String, fix: &str| SourceError::Permanent {
        source_name: context.name.to_string(),
        url: url.clone(),
        message,
        fix: fix.to_owned(),
    };
    let policy = HttpPolicy::new(
        settings.auth.clone(),
        settings.retry.clone(),
        settings.timeouts,
        Arc::clone(&context.hosts),
        context.metrics.clone(),
        settings.redactor.clone(),
        &settings.network,
    )
    .map_err(|message| permanent(message, "check the TLS setup"))?;
    let mut position = match &context.resume {
        Some(stored) => PollPosition::parse(stored.as_str()).map_err(|e| {
            permanent(
                format!("the stored position is not a polled source's position ({e})"),
                "remove this source's entry from checkpoints.json to start it over",
            )
        })?,
        None => PollPosition {
            watermark: settings
                .watermark
                .as_ref()
                .and_then(|w| w.initial.as_ref())
                .map(|initial| initial.to_string()),
            ..PollPosition::default()
        },
    };
    if let Some(walk) = &position.walk {
        tracing::info!(source = %context.name, page = walk.page, "resuming the walk at the first page not yet acknowledged");
    }
    let mut failed_polls = 0;
    let mut next_start = Instant::now();
    loop {
        tokio::select! {
            _ = context.shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_start) => {}
        }
        let jitter = rand::rng().random_range(0..=settings.jitter.as_nanos() as u64);
        next_start = Instant::now() + settings.interval + Duration::from_nanos(jitter);
        match poll(&*endpoint, &policy, &settings, &context, &mut position).await {
            // A walk given up lost nothing, but it will be walked again from the old
            // watermark: `/readyz` shows it like a failed poll until a walk completes.
            Ok(Outcome::Incomplete(reason)) => {
                failed_polls += 1;
                context.metrics.poll("incomplete");
                context.set_state(SourceState::Failing {
                    polls: failed_polls,
                    error: format!("the walk was given up: {reason}"),
                });
            }
            Ok(outcome) => {
                failed_polls = 0;
                context.metrics.poll(outcome.label());
                context.set_state(SourceState::Connected);
            }
            Err(PollError::Shutdown) => break,
            Err(PollError::Failed(error)) => {
                failed_polls += 1;
                tracing::error!(source = %context.name, %error, failed_polls, "poll failed; the next poll resumes at the same page");
                if failed_polls % FAILED_POLLS_BEFORE_RESTART == 0 {
                    if let Some(walk) = position.walk.take() {
                        tracing::warn!(source = %context.name, page = walk.page, failed_polls, "the walk keeps failing at the same page; it starts over from the first page");
                    }
                }
                context.metrics.poll("failed");
                context.set_state(SourceState::Failing {
                    polls: failed_polls,
                    error,
                });
            }
        }
    }
    context.set_state(SourceState::Stopped);
    Ok(())
}

/// One walk (or its remainder): every page until the last, the page limit, or a failure.
async fn poll(
    endpoint: &dyn Endpoint,
    policy: &HttpPolicy,
    settings: &PollSettings,
    context: &SourceContext,
    position: &mut PollPosition,
) -> Result<Outcome, PollError> {
    let mut walk = position
        .walk
        .clone()
        .unwrap_or_else(|| position.start_walk());
    let mut first_validators = None;
    let mut pages = 0;
    let mut visited = std::collections::HashSet::from([walk.next.clone()]);
    loop {
        let first = walk.next == PageState::First;
        let mut request = endpoint.request(&walk.next, walk.since.as_deref());
        let redacted = policy.redact(&request.url);
        if first && settings.conditional {
            if let Some(validators) = position.validators.as_ref().filter(|v| v.url == redacted) {
                add_validators(&mut request.headers, validators);
            }
        }
        let response = policy.send(&request, &context.shutdown).await?;
        context.metrics.pages.inc();
        if response.status == StatusCode::NOT_MODIFIED {
            context.metrics.not_modified.inc();
            return Ok(Outcome::NotModified);
        }
        if first {
            first_validators = validators_of(&response.headers, &redacted);
        }
        let fetched_at = SystemTime::now();
        let lineage = Arc::new(PageLineage {
            url: redacted,
            page: walk.page.to_string(),
        });
        let body = as_json(settings.format, response.body, &lineage.url)
            .await
            .map_err(|error| {
                PollError::Failed(format!("page {} of {}: {error}", lineage.page, lineage.url))
            })?;
        let mut undated = Vec::new();
        let PageContent {
            raw,
            records: found,
            mut out,
        } = read_page(
            &body,
            serde_json::from_slice::<&RawValue>(&body).map_err(|e| e.to_string()),
            endpoint,
            settings,
            &lineage,
            fetched_at,
        )
        .map_err(PollError::Failed)?;
        for element in &found {
            // A missing or `null` key leaves the record without a key and an event id.
            let key = settings
                .key
                .as_ref()
                .and_then(|key| key.of(Some(element)).ok());
            if let Some(field) = &settings.watermark_field {
                let value = field
                    .lookup(element)
                    .filter(|found| !is_null(found))
                    .map(RawValue::get);
                if let Some(value) = value {
                    if settings.format.filters_by_watermark() && position.is_below_watermark(value)
                    {
                        context.metrics.records_duplicate.inc();
                        continue;
                    }
                    if key
                        .as_deref()
                        .is_some_and(|key| position.is_boundary_duplicate(value, key))
                    {
                        context.metrics.records_duplicate.inc();
                        continue;
                    }
                    walk.observe(value, key.as_deref());
                } else if let Some(id) = key
                    .as_deref()
                    .filter(|_| settings.format.filters_by_watermark())
                {
                    // A feed entry with no time: produced when first seen, then known by id.
                    if position.is_undated_duplicate(id) || undated.iter().any(|seen| seen == id) {
                        context.metrics.records_duplicate.inc();
                        continue;
                    }
                    undated.push(id.to_owned());
                }
            }
            let mut record = Record::new(body.slice_ref(element.get().as_bytes()), fetched_at);
            if let Some(key) = key {
                let id: Arc<str> = Arc::from(key.as_ref());
                record.key = Some(Bytes::copy_from_slice(id.as_bytes()));
                record.event_id = Some(id);
            }
            record.page = Some(Arc::clone(&lineage));
            out.push(record);
        }
        let next = endpoint.next(
            &walk.next,
            &PageView {
                url: &response.url,
                headers: &response.headers,
                body: raw,
                records: &found,
            },
        );
        let next = match next {
            Next::Page(PageState::Url(url)) => same_origin(&response.url, &url, &settings.redactor),
            other => other,
        };
        // A page asked for twice in one walk (A → B → A) would loop to the page limit.
        let next = match next {
            Next::Page(next) if !visited.insert(next.clone()) => {
                Next::Unknown("the server pointed back at a page of this walk".into())
            }
            other => other,
        };
        context.metrics.records_received.inc_by(out.len() as u64);
        walk.page += 1;
        pages += 1;
        let mut emitted = position.clone();
        emitted.remember_undated(undated);
        let outcome = match next {
            Next::Page(next) => {
                walk.next = next;
                emitted.walk = Some(walk.clone());
                None
            }
            Next::Last => {
                emitted.finish_walk(walk.clone());
                // Validators stand for the whole walk only when it was one page: a 304 on
                // page 1 says nothing about later pages.
                emitted.validators = first_validators.take().filter(|_| pages == 1);
                Some(Outcome::Complete)
            }
            Next::Unknown(reason) => {
                tracing::warn!(source = %context.name, page = walk.page - 1, %reason, "the walk is given up; the watermark stays and the next poll starts over from the first page");
                emitted.walk = None;
                Some(Outcome::Incomplete(reason))
            }
        };
        for record in out {
            send(context, record).await?;
        }
        send(context, Record::marker(Position(emitted.to_text().into()))).await?;
        *position = emitted;
        if let Some(outcome) = outcome {
            return Ok(outcome);
        }
        if pages >= settings.max_pages_per_poll {
            tracing::warn!(source = %context.name, pages, "the walk reached max_pages_per_poll; it goes on at the next poll");
            return Ok(Outcome::PageLimit);
        }
    }
}

/// The page body as JSON: a JSON body as it is; a feed or an XML body mapped on the blocking
/// pool, since parsing a body of up to `max_body_bytes` would hold up the runtime's other tasks.
async fn as_json(format: format::BodyFormat, body: Bytes, url: &str) -> Result<Bytes, String> {
    if format == format::BodyFormat::Json {
        return Ok(body);
    }
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || format.to_json(body, &url))
        .await
        .map_err(|error| format!("the body could not be mapped to JSON: {error}"))?
}

async fn send(context: &SourceContext, record: Record) -> Result<(), PollError> {
    tokio::select! {
        _ = context.shutdown.cancelled() => Err(PollError::Shutdown),
        sent = context.records.send(record) => sent.map_err(|_| PollError::Shutdown),
    }
}
