//! The SSE connection loop.
//!
//! Each connection is one `GET` through the shared transport (`client.rs`), its body read by
//! the event-stream parser (`parser.rs`, WHATWG HTML §9.2.6). This loop owns reconnection so
//! that the delay is exponential with full jitter, never shorter than the server's `retry:`
//! field, and so that every attempt is logged, counted and visible in `/readyz`; no redirect
//! is followed (a 3xx stops the source, naming its redacted `Location`). The `Last-Event-ID` sent on each connection is the id of the last event read —
//! on the first connection, the stored position. Per WHATWG HTML §9.2, HTTP 204 means the
//! server wants no more reconnects: the source finishes. Reading stops while the channel is
//! full, so a slow broker leaves bytes in the socket rather than in memory, and a line or an
//! event past `max_event_bytes` ends the connection (the parser's cap) rather than growing.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::{future::BoxFuture, StreamExt};
use secrecy::ExposeSecret;

use super::{
    config::{KeyFrom, SseSettings},
    parser::EventParser,
};
use crate::{
    backoff::Backoff,
    error::SourceError,
    http::{classify_status, parse_retry_after, StatusClass},
    record::{Position, Record},
    runtime::health::SourceState,
    sources::{Probe, Source, SourceContext},
    stage::Stage,
};

/// A configured SSE source, ready to run.
pub struct SseSource {
    settings: Arc<SseSettings>,
}

/// How one connection ended.
enum ConnectionEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The server answered 204 No Content: stop for good.
    NoContent,
    /// The connection failed or closed; reconnect unless the error is permanent.
    Failed(SourceError),
    /// HTTP 401 (a permanent error, unless a new OAuth2 token cures it).
    Unauthorized(SourceError),
}

impl SseSource {
    pub(crate) fn new(settings: SseSettings) -> Self {
        SseSource {
            settings: Arc::new(settings),
        }
    }

    /// The resolved settings.
    #[cfg(test)]
    pub(super) fn settings(&self) -> Arc<SseSettings> {
        Arc::clone(&self.settings)
    }
}

impl Source for SseSource {
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

/// A connection open this long was healthy, even without an event: the next failure starts
/// the backoff over.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

async fn run(settings: Arc<SseSettings>, context: SourceContext) -> Result<(), SourceError> {
    let mut last_event_id: Option<Arc<str>> = context
        .resume
        .as_ref()
        .map(|p| Arc::clone(&p.0))
        .or_else(|| settings.start_from.as_deref().map(Arc::from));
    let mut server_retry: Option<Duration> = None;
    let mut backoff = Backoff::new(
        settings.reconnect.initial_delay,
        settings.reconnect.max_delay,
    );
    let mut rng = rand::rngs::StdRng::from_os_rng();
    // Every connect waits for the host's budget, shared with the other HTTP sources.
    let url: url::Url = settings
        .url
        .expose_secret()
        .parse()
        .expect("the URL was checked at config time");
    let limiter = context.hosts.for_url(&url);
    context.set_state(SourceState::Starting);
    let mut refreshed = false;
    loop {
        // Progress is an event read, or a connection that stayed open (a quiet feed timed out
        // by `read_timeout`), not a response accepted: a feed that answers 200 and then fails
        // the same way at once on every connection (an event over `max_event_bytes`, resent
        // after each reconnect) must back off and show as reconnecting, not loop at full
        // speed with `/readyz` green.
        let mut delivered = false;
        let opened = tokio::time::Instant::now();
        let end = tokio::select! {
            biased;
            _ = context.shutdown.cancelled() => ConnectionEnd::Shutdown,
            end = connection(&settings, &context, &limiter, &mut last_event_id, &mut server_retry, &mut delivered) => end,
        };
        let error = match end {
            ConnectionEnd::Shutdown => {
                context.set_state(SourceState::Stopped);
                return Ok(());
            }
            ConnectionEnd::NoContent => {
                tracing::warn!(source = %context.name, url = %settings.redacted_url, "the server answered 204 No Content: the source stops reconnecting (WHATWG HTML §9.2)");
                context.set_state(SourceState::Finished(
                    "the server answered 204 No Content".into(),
                ));
                return Ok(());
            }
            // A 401 under OAuth2: one new token and one more connect before it is permanent.
            ConnectionEnd::Unauthorized(error)
                if !refreshed && settings.auth.forget_token().await =>
            {
                refreshed = true;
                tracing::info!(source = %context.name, "HTTP 401: fetching a new OAuth2 token and reconnecting");
                error
            }
            ConnectionEnd::Unauthorized(error) => {
                tracing::error!(source = %context.name, %error, "source stopped");
                context.set_state(SourceState::Failed(error.to_string()));
                return Err(error);
            }
            ConnectionEnd::Failed(error) if !error.is_transient() => {
                tracing::error!(source = %context.name, %error, "source stopped");
                context.set_state(SourceState::Failed(error.to_string()));
                return Err(error);
            }
            ConnectionEnd::Failed(error) => error,
        };
        if delivered || opened.elapsed() >= STABLE_CONNECTION {
            backoff.reset();
            refreshed = false;
        }
        // The server's wish (`retry:` field, or `Retry-After` on this response) is a floor.
        let floor = server_retry.max(error.retry_after());
        let delay = backoff.next_delay(floor, &mut rng);
        if !context
            .wait_to_reconnect(backoff.attempt(), delay, error.to_string())
            .await
        {
            return Ok(());
        }
    }
}

use rand::SeedableRng;

/// Opens one connection and reads it until it ends; `delivered` is set once it has read an
/// event.
async fn connection(
    settings: &SseSettings,
    context: &SourceContext,
    limiter: &crate::http::HostLimiter,
    last_event_id: &mut Option<Arc<str>>,
    server_retry: &mut Option<Duration>,
    delivered: &mut bool,
) -> ConnectionEnd {
    let transient = |message: String| {
        ConnectionEnd::Failed(SourceError::Transient {
            source_name: context.name.to_string(),
            url: settings.redacted_url.clone(),
            message,
            retry_after: None,
        })
    };
    let permanent = |message: String, fix: &str| permanent(settings, context, message, fix);
    context.metrics.wait_for_budget(limiter.acquire()).await;
    let auth = match settings.auth.header().await {
        Ok(auth) => auth,
        Err(error @ crate::http::TokenError::Refused(_)) => {
            return permanent(
                error.to_string(),
                "check `auth.client_id` and `auth.client_secret`",
            )
        }
        Err(error) => return transient(error.to_string()),
    };
    let (url, request) = match super::client::request(settings, last_event_id.as_deref(), auth) {
        Ok(request) => request,
        Err(message) => return permanent(message, "fix the source's `url` or `headers`"),
    };
    let transport = match super::client::transport(settings, &url) {
        Ok(transport) => transport,
        Err(message) => return permanent(message, "fix the source's `proxy` or `tls`"),
    };
    let response = match transport.send(request).await {
        Ok(response) => response,
        Err(error) => {
            context.metrics.http_request(None);
            return transient(format!(
                "transport error: {}",
                crate::http::error_chain(error.inner())
            ));
        }
    };
    let status = response.status().as_u16();
    context.metrics.http_request(Some(status));
    if !response.status().is_success() {
        return refused(settings, context, limiter, status, response.headers());
    }
    if status == 204 {
        return ConnectionEnd::NoContent;
    }
    let content_type = content_type(response.headers());
    if !is_event_stream(content_type) {
        return permanent(
            format!("the response has content type `{content_type}`, not `text/event-stream`"),
            "point `url` at a Server-Sent Events endpoint",
        );
    }
    tracing::info!(source = %context.name, url = %settings.redacted_url, last_event_id = last_event_id.as_deref().unwrap_or(""), "connected");
    context.set_state(SourceState::Connected);
    let mut body = response.into_body();
    let mut parser = EventParser::new(settings.max_event_bytes);
    let encoder = RecordEncoder::new(settings, &context.stage);
    let no_data = || {
        transient(format!(
            "no data for {:?} (read_timeout)",
            settings.read_timeout
        ))
    };
    loop {
        // The stream's own deadline, besides the transport's read timeout on the socket (the
        // same thing while each stream has a connection of its own).
        let Ok(next) = tokio::time::timeout(settings.read_timeout, body.next()).await else {
            return no_data();
        };
        match next {
            Some(Ok(chunk)) => parser.feed(chunk),
            Some(Err(error)) => {
                let timed_out = error
                    .inner()
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                if timed_out {
                    return no_data();
                }
                return transient(format!(
                    "transport error: {}",
                    crate::http::error_chain(error.inner())
                ));
            }
            None => return transient("the server closed the stream".to_owned()),
        }
        loop {
            let next = parser.next_event();
            if let Some(retry) = parser.take_reconnection_time() {
                // The server's floor, but never above `reconnect.max_delay`: a `retry:` of
                // 10^12 ms must not park the source for decades.
                let asked = Duration::from_millis(retry);
                if asked > settings.reconnect.max_delay {
                    tracing::warn!(source = %context.name, retry_ms = retry, max_delay_ms = settings.reconnect.max_delay.as_millis() as u64, "the server's `retry:` exceeds `reconnect.max_delay`; waiting `reconnect.max_delay` instead");
                }
                *server_retry = Some(asked.min(settings.reconnect.max_delay));
            }
            let event = match next {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(oversized) => {
                    context.metrics.oversized_events.inc();
                    return transient(oversized.to_string());
                }
            };
            // One shared copy of the id serves the key, the header and the position. An id
            // that cannot travel back in a `Last-Event-ID` header is this record's id, but
            // never the position: adopting it would fail every reconnect, across restarts.
            let mut unsendable_id = None;
            if let Some(id) = event.id {
                if last_event_id.as_deref() != Some(&*id) {
                    if http::HeaderValue::from_str(&id).is_ok() {
                        *last_event_id = Some(id);
                    } else {
                        context.metrics.invalid_event_ids.inc();
                        tracing::warn!(source = %context.name, id = ?id, "an event id cannot be sent back as Last-Event-ID (control characters or non-ASCII); the position stays at the previous id");
                        unsendable_id = Some(id);
                    }
                }
            }
            context.metrics.records_received.inc();
            *delivered = true;
            if !settings.event_types.is_empty()
                && !settings
                    .event_types
                    .iter()
                    .any(|wanted| **wanted == *event.event_type)
            {
                context.metrics.records_filtered.inc();
                continue;
            }
            let record = encoder.encode(
                event.data,
                event.event_type,
                unsendable_id.as_ref().or(last_event_id.as_ref()),
                last_event_id.as_ref(),
            );
            if context.records.send(record).await.is_err() {
                return ConnectionEnd::Shutdown;
            }
        }
    }
}

/// A connection end the source does not retry: `message` says what went wrong, `fix` what the
/// operator can do.
fn permanent(
    settings: &SseSettings,
    context: &SourceContext,
    message: String,
    fix: &str,
) -> ConnectionEnd {
    ConnectionEnd::Failed(SourceError::Permanent {
        source_name: context.name.to_string(),
        url: settings.redacted_url.clone(),
        message,
        fix: fix.to_owned(),
    })
}

/// A response other than 2xx: a redirect (not followed), 401, or an error status.
fn refused(
    settings: &SseSettings,
    context: &SourceContext,
    limiter: &crate::http::HostLimiter,
    status: u16,
    headers: &http::HeaderMap,
) -> ConnectionEnd {
    let permanent = |message: String, fix: &str| permanent(settings, context, message, fix);
    if (300..400).contains(&status) {
        let location = redacted_location(settings, headers);
        return permanent(
            format!("HTTP {status} to `{location}`, which is not followed, so that credentials stay on the configured origin"),
            "point the source's `url` at the final address",
        );
    }
    if status == 401 {
        return ConnectionEnd::Unauthorized(SourceError::Permanent {
            source_name: context.name.to_string(),
            url: settings.redacted_url.clone(),
            message: "HTTP 401".into(),
            fix: "check the credentials in `auth` or `headers`".into(),
        });
    }
    match classify_status(status) {
        StatusClass::Transient => {
            let retry_after = headers
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            if let Some(delay) = retry_after {
                // Every source calling this host waits too.
                limiter.pause_for(delay);
            }
            ConnectionEnd::Failed(SourceError::Transient {
                source_name: context.name.to_string(),
                url: settings.redacted_url.clone(),
                message: format!("HTTP {status}"),
                retry_after,
            })
        }
        _ => permanent(
            format!("HTTP {status}"),
            "check the URL and the credentials in `headers`",
        ),
    }
}

/// A redirect's target with its secrets redacted (empty when there is none).
pub(super) fn redacted_location(settings: &SseSettings, headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(|target| settings.redactor.redact(target))
        .unwrap_or_default()
}

/// The response's content type, empty when there is none (or it is not text).
pub(super) fn content_type(headers: &http::HeaderMap) -> &str {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

pub(super) fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Turns event data into records: key, JSON validation, dead-lettering.
struct RecordEncoder<'a> {
    settings: &'a SseSettings,
    stage: &'a Stage,
}

impl<'a> RecordEncoder<'a> {
    fn new(settings: &'a SseSettings, stage: &'a Stage) -> Self {
        RecordEncoder { settings, stage }
    }

    fn encode(
        &self,
        data: Bytes,
        event_type: Arc<str>,
        record_id: Option<&Arc<str>>,
        position: Option<&Arc<str>>,
    ) -> Record {
        let event_id: Option<Arc<str>> = record_id.filter(|id| !id.is_empty()).cloned();
        let key = match (&self.settings.key, &event_id) {
            (KeyFrom::EventId, Some(id)) => Some(Bytes::from_owner(SharedText(Arc::clone(id)))),
            _ => None,
        };
        let mut record = Record {
            key,
            payload: data,
            event_id,
            event_type: Some(event_type),
            position: position.map(|id| Position(Arc::clone(id))),
            fetched_at: SystemTime::now(),
            dead_letter: None,
            ack: None,
            page: None,
            marker: false,
            topic: None,
            event_time: None,
        };
        // The JSON check and a pointer key, here in the connection's task rather than in the
        // pump (the SSE source admits its own events).
        self.stage.admit(&mut record);
        record
    }
}

/// Shared text as the owner of a [`Bytes`] (a record key without a copy).
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream(""));
    }
}
