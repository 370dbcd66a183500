//! The connection loop of an `http_stream` source.
//!
//! Each connection is one GET under the shared HTTP policy ([`HttpPolicy::open`]: auth, the
//! host's budget, retries of transient answers, same-origin redirects only), asking from the
//! last position read (on the first connection, the stored one, else `start_from`). The body
//! is read chunk by chunk, each read bounded by `read_timeout`, and cut into records by
//! [`Framer`]; each record is admitted here (the JSON check and a pointer key, see
//! [`crate::stage::Admission::Source`]) and sent on with its position. Lines that are not
//! records (a CouchDB `last_seq`, a Kubernetes `BOOKMARK`) become position markers, so the
//! stored position moves only once Kafka holds every record before them. Reading stops while
//! the channel is full, so a slow broker leaves bytes in the socket.
//!
//! A Kubernetes source lists before it watches, as an informer's reflector does: when no
//! resourceVersion is known (none stored, or the watch answered 410 Gone), it GETs the list,
//! emits each item as an `ADDED` event, then a marker at the list's resourceVersion, and
//! watches from there.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use rand::SeedableRng;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::{
    config::{ResumeIn, StreamSettings},
    framing::{Frame, Framer, Mode},
    preset::{KubernetesList, Line, Preset},
};
use crate::{
    backoff::Backoff,
    error::SourceError,
    http::{HttpError, HttpPolicy, HttpRequest},
    record::{DeadLetter, Position, Record},
    runtime::health::SourceState,
    sources::{Probe, Source, SourceContext},
};

/// A configured `http_stream` source, ready to run.
pub struct HttpStreamSource {
    settings: Arc<StreamSettings>,
}

impl HttpStreamSource {
    pub(crate) fn new(settings: StreamSettings) -> Self {
        HttpStreamSource {
            settings: Arc::new(settings),
        }
    }
}

impl Source for HttpStreamSource {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(super::probe::connect_once(&self.settings))
    }

    fn refresh_token_grant(&self) -> Option<Arc<crate::http::OAuth2Tokens>> {
        self.settings.auth.refresh_token_grant()
    }

    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(run(self.settings, context))
    }
}

/// A connection open this long was healthy, even without a record: the next failure starts
/// the backoff over.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// How a connection ended.
enum End {
    /// Shutdown was requested (or the pipeline is gone).
    Shutdown,
    /// The connection failed or closed; reconnect unless the error is permanent.
    Failed(SourceError),
    /// The watch's resourceVersion expired (Kubernetes 410 Gone): list again, then watch.
    Expired(String),
}

async fn run(settings: Arc<StreamSettings>, context: SourceContext) -> Result<(), SourceError> {
    let policy = HttpPolicy::streaming(
        settings.auth.clone(),
        settings.retry.clone(),
        settings.timeouts,
        Arc::clone(&context.hosts),
        context.metrics.clone(),
        settings.redactor.clone(),
        &settings.network,
    );
    let policy = match policy {
        Ok(policy) => policy,
        Err(message) => {
            let error = SourceError::Permanent {
                source_name: context.name.to_string(),
                url: settings.redacted_url.clone(),
                message,
                fix: "check the TLS setup of this machine".into(),
            };
            context.set_state(SourceState::Failed(error.to_string()));
            return Err(error);
        }
    };
    let mut position: Option<Arc<str>> = context
        .resume
        .as_ref()
        .map(|p| Arc::clone(&p.0))
        .or_else(|| settings.start_from.as_deref().map(Arc::from));
    let mut backoff = Backoff::new(
        settings.reconnect.initial_delay,
        settings.reconnect.max_delay,
    );
    let mut rng = rand::rngs::StdRng::from_os_rng();
    // Why the next session lists first (Kubernetes), when it must.
    let mut relist_reason: Option<String> = None;
    context.set_state(SourceState::Starting);
    loop {
        let mut delivered = false;
        let opened = Instant::now();
        let end = tokio::select! {
            biased;
            _ = context.shutdown.cancelled() => End::Shutdown,
            end = session(&settings, &context, &policy, &mut position, &mut relist_reason, &mut delivered) => end,
        };
        let error = match end {
            End::Shutdown => {
                context.set_state(SourceState::Stopped);
                return Ok(());
            }
            End::Failed(error) if !error.is_transient() => {
                tracing::error!(source = %context.name, %error, "source stopped");
                context.set_state(SourceState::Failed(error.to_string()));
                return Err(error);
            }
            End::Failed(error) => error,
            End::Expired(reason) => {
                // The records read so far keep their positions; the next session lists.
                position = None;
                relist_reason = Some(reason.clone());
                transient(&settings, &context, reason)
            }
        };
        if delivered || opened.elapsed() >= STABLE_CONNECTION {
            backoff.reset();
        }
        let delay = backoff.next_delay(error.retry_after(), &mut rng);
        if !context
            .wait_to_reconnect(backoff.attempt(), delay, error.to_string())
            .await
        {
            return Ok(());
        }
    }
}

fn transient(settings: &StreamSettings, context: &SourceContext, message: String) -> SourceError {
    SourceError::Transient {
        source_name: context.name.to_string(),
        url: settings.redacted_url.clone(),
        message,
        retry_after: None,
    }
}

fn permanent(
    settings: &StreamSettings,
    context: &SourceContext,
    message: String,
    fix: &str,
) -> SourceError {
    SourceError::Permanent {
        source_name: context.name.to_string(),
        url: settings.redacted_url.clone(),
        message,
        fix: fix.to_owned(),
    }
}

/// One session: a Kubernetes list when no resourceVersion is known, then one connection.
async fn session(
    settings: &StreamSettings,
    context: &SourceContext,
    policy: &HttpPolicy,
    position: &mut Option<Arc<str>>,
    relist_reason: &mut Option<String>,
    delivered: &mut bool,
) -> End {
    if settings.preset == Preset::Kubernetes && position.is_none() {
        let reason = relist_reason
            .clone()
            .unwrap_or_else(|| "no resourceVersion is stored yet".to_owned());
        if let Err(end) = list(settings, context, policy, position, &reason).await {
            return end;
        }
        *relist_reason = None;
    }
    connection(settings, context, policy, position, delivered).await
}

/// The request that opens the stream from `position`.
pub(super) fn stream_request(settings: &StreamSettings, position: Option<&str>) -> HttpRequest {
    let mut url = settings.url.clone();
    for (name, value) in settings.preset.stream_params(settings.read_timeout) {
        crate::http::set_query_param(&mut url, name, &value);
    }
    let mut headers = settings.headers.clone();
    if let Some(position) = position.filter(|p| !p.is_empty()) {
        match &settings.resume_in {
            ResumeIn::Query(name) => crate::http::set_query_param(&mut url, name, position),
            ResumeIn::Header(name) => {
                if let Ok(value) = http::HeaderValue::from_str(position) {
                    headers.insert(name.clone(), value);
                }
            }
            ResumeIn::Nowhere => {}
        }
    }
    HttpRequest {
        method: http::Method::GET,
        url,
        headers,
        body: None,
    }
}

/// What an [`HttpError`] means for the connection.
fn ended_by(settings: &StreamSettings, context: &SourceContext, error: HttpError) -> End {
    match error {
        HttpError::Shutdown => End::Shutdown,
        HttpError::Permanent { status: 410, .. } if settings.preset == Preset::Kubernetes => {
            End::Expired("the watch answered HTTP 410 Gone (resourceVersion expired)".into())
        }
        HttpError::Permanent { status: 401, .. } => End::Failed(permanent(
            settings,
            context,
            "HTTP 401".into(),
            "check the credentials in `auth` or `headers`",
        )),
        error @ (HttpError::Permanent { .. } | HttpError::Redirected { .. }) => {
            End::Failed(permanent(
                settings,
                context,
                error.to_string(),
                "check the source's `url`, `headers` and `auth`",
            ))
        }
        HttpError::Token(reason) => End::Failed(permanent(
            settings,
            context,
            reason,
            "check `auth.client_id` and `auth.client_secret`",
        )),
        other => End::Failed(transient(settings, context, other.to_string())),
    }
}

/// Objects asked for per page of a list (`limit`), as client-go's pager does.
const LIST_PAGE_SIZE: &str = "500";

/// Lists the collection (the source's URL without the watch parameters) in pages of
/// [`LIST_PAGE_SIZE`] (`limit`, then `continue` with each page's token), emits each item as an
/// `ADDED` event, then a marker at the list's `metadata.resourceVersion`, which becomes the
/// position the watch starts from. A page that fails (an expired `continue` token answers 410)
/// fails the list, which starts over after the reconnect delay.
async fn list(
    settings: &StreamSettings,
    context: &SourceContext,
    policy: &HttpPolicy,
    position: &mut Option<Arc<str>>,
    reason: &str,
) -> Result<(), End> {
    context.metrics.relists.inc();
    tracing::warn!(source = %context.name, url = %settings.redacted_url, %reason, "listing the collection, then watching from the list's resourceVersion");
    let added: Arc<str> = Arc::from("ADDED");
    let mut continue_token: Option<String> = None;
    let mut items = 0;
    let version: Arc<str> = loop {
        let mut url = settings.url.clone();
        crate::http::set_query_param(&mut url, "limit", LIST_PAGE_SIZE);
        if let Some(token) = &continue_token {
            crate::http::set_query_param(&mut url, "continue", token);
        }
        let request = HttpRequest {
            method: http::Method::GET,
            url,
            headers: settings.headers.clone(),
            body: None,
        };
        let response = policy
            .send(&request, &context.shutdown)
            .await
            .map_err(|error| match ended_by(settings, context, error) {
                // A list is never "expired": an expired `continue` token lists again.
                End::Expired(reason) => End::Failed(transient(settings, context, reason)),
                end => end,
            })?;
        let page: KubernetesList<'_> = serde_json::from_slice(&response.body).map_err(|error| {
            End::Failed(permanent(
                settings,
                context,
                format!("the list answer is not a Kubernetes list with `metadata.resourceVersion`: {error}"),
                "point `url` at a collection of the Kubernetes API, e.g. `/api/v1/namespaces/default/pods`",
            ))
        })?;
        let fetched_at = SystemTime::now();
        for item in &page.items {
            let mut payload = Vec::with_capacity(item.get().len() + 30);
            payload.extend_from_slice(b"{\"type\":\"ADDED\",\"object\":");
            payload.extend_from_slice(item.get().as_bytes());
            payload.push(b'}');
            let mut record = Record::new(Bytes::from(payload), fetched_at);
            record.event_type = Some(Arc::clone(&added));
            context.metrics.records_received.inc();
            context.stage.admit(&mut record);
            if context.records.send(record).await.is_err() {
                return Err(End::Shutdown);
            }
        }
        items += page.items.len();
        match page.metadata.continue_token {
            Some(token) if !token.is_empty() => continue_token = Some(token.into_owned()),
            _ => break Arc::from(page.metadata.resource_version.as_ref()),
        }
    };
    if context
        .records
        .send(Record::marker(Position(Arc::clone(&version))))
        .await
        .is_err()
    {
        return Err(End::Shutdown);
    }
    tracing::info!(source = %context.name, items, resource_version = %version, "listed; watching from the list's resourceVersion");
    *position = Some(version);
    Ok(())
}

/// What to do after a frame.
enum Next {
    Continue,
    End(End),
}

/// Opens one connection and reads it until it ends; `delivered` is set once it has read a
/// record.
async fn connection(
    settings: &StreamSettings,
    context: &SourceContext,
    policy: &HttpPolicy,
    position: &mut Option<Arc<str>>,
    delivered: &mut bool,
) -> End {
    let request = stream_request(settings, position.as_deref());
    let stream = match policy.open(&request, &context.shutdown).await {
        Ok(stream) => stream,
        Err(error) => return ended_by(settings, context, error),
    };
    let content_type = stream
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let mode = Mode::of(settings.framing, content_type);
    tracing::info!(source = %context.name, url = %settings.redacted_url, position = position.as_deref().unwrap_or(""), framing = ?mode, "connected");
    context.set_state(SourceState::Connected);
    let mut framer = Framer::new(mode, settings.max_line_bytes);
    let mut body = stream.body;
    loop {
        let chunk = match tokio::time::timeout(settings.read_timeout, body.chunk()).await {
            Err(_) => {
                return End::Failed(transient(
                    settings,
                    context,
                    format!(
                        "no data, not even a heartbeat, for {:?} (read_timeout)",
                        settings.read_timeout
                    ),
                ))
            }
            Ok(Err(error)) => {
                return End::Failed(transient(
                    settings,
                    context,
                    format!(
                        "reading the stream: {}",
                        crate::http::describe_reqwest_error(&error)
                    ),
                ))
            }
            Ok(Ok(None)) => {
                if let Some(frame) = framer.finish() {
                    if let Next::End(end) =
                        on_frame(settings, context, frame, position, delivered).await
                    {
                        return end;
                    }
                }
                return End::Failed(transient(
                    settings,
                    context,
                    "the server ended the response".into(),
                ));
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        framer.push(&chunk);
        while let Some(frame) = framer.next_frame() {
            if let Next::End(end) = on_frame(settings, context, frame, position, delivered).await {
                return end;
            }
        }
    }
}

/// What one line is, its borrows of the payload turned into owned text.
enum Kind {
    Record(Option<Arc<str>>),
    Position(Arc<str>),
    Expired(String),
    Error(String),
}

async fn on_frame(
    settings: &StreamSettings,
    context: &SourceContext,
    frame: Frame,
    position: &mut Option<Arc<str>>,
    delivered: &mut bool,
) -> Next {
    let fetched_at = SystemTime::now();
    let text = match frame {
        // A heartbeat: it kept the connection alive (`read_timeout`), nothing else.
        Frame::Text(text) if text.iter().all(u8::is_ascii_whitespace) => return Next::Continue,
        Frame::Text(text) => text,
        Frame::Truncated(start) => {
            context.metrics.truncated_records.inc();
            tracing::warn!(source = %context.name, bytes = start.len(), "a record was cut short (no LF before the next record or the end of the response) and is dropped (RFC 7464 §2.1); the position stays before it");
            return Next::Continue;
        }
        Frame::TooLarge(seen) => {
            context.metrics.oversized_lines.inc();
            context.metrics.records_received.inc();
            tracing::warn!(source = %context.name, max_line_bytes = settings.max_line_bytes, bytes_seen = seen, "a line longer than `max_line_bytes` was skipped; a stub goes to the dead-letter topic");
            let mut stub = Record::new(Bytes::new(), fetched_at);
            stub.dead_letter = Some(DeadLetter::new(
                "line_too_large",
                format!(
                    "a line of more than {} bytes (`max_line_bytes`; {seen} bytes seen) was skipped; raise `max_line_bytes` to produce such lines",
                    settings.max_line_bytes
                ),
            ));
            return send(context, stub).await;
        }
    };
    *delivered = true;
    let mut record = Record::new(text, fetched_at);
    let payload = record.payload.clone();
    let Ok(raw) = serde_json::from_slice::<&RawValue>(&payload) else {
        // Not JSON: the stage's check says why, and the line goes to the dead-letter topic.
        context.metrics.records_received.inc();
        context.stage.admit(&mut record);
        return send(context, record).await;
    };
    let kind = match settings.preset.classify(raw, settings.position.as_ref()) {
        Line::Record(at) => Kind::Record(at.map(|text| Arc::from(text.as_ref()))),
        Line::Position(at) => Kind::Position(Arc::from(at.as_ref())),
        Line::Expired(reason) => Kind::Expired(reason),
        Line::Error(reason) => Kind::Error(reason),
    };
    match kind {
        Kind::Record(at) => {
            context.metrics.records_received.inc();
            // Only now: a line that is not a record (a bookmark, an error) has no key to read.
            context.stage.admit(&mut record);
            record.event_type = settings.preset.event_type(raw).map(Arc::from);
            if let Some(at) = at {
                record.event_id = Some(Arc::clone(&at));
                if sendable(settings, &at) {
                    record.position = Some(Position(Arc::clone(&at)));
                    *position = Some(at);
                } else {
                    tracing::warn!(source = %context.name, position = ?at, "a position cannot be sent back in the `resume_header` header (control characters or non-ASCII); the position stays at the previous one");
                }
            }
            send(context, record).await
        }
        Kind::Position(at) => {
            if !sendable(settings, &at) {
                return Next::Continue;
            }
            *position = Some(Arc::clone(&at));
            send(context, Record::marker(Position(at))).await
        }
        Kind::Expired(reason) => Next::End(End::Expired(reason)),
        Kind::Error(reason) => Next::End(End::Failed(transient(settings, context, reason))),
    }
}

/// Whether `position` can travel back where the config sends it (a header value cannot hold
/// control characters).
fn sendable(settings: &StreamSettings, position: &str) -> bool {
    !matches!(settings.resume_in, ResumeIn::Header(_))
        || http::HeaderValue::from_str(position).is_ok()
}

async fn send(context: &SourceContext, record: Record) -> Next {
    if context.records.send(record).await.is_err() {
        Next::End(End::Shutdown)
    } else {
        Next::Continue
    }
}
