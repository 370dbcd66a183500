//! The webhook receiver: `POST <path>` on the shared HTTP server.
//!
//! A request is answered 2xx only once Kafka has acknowledged its record: the handler checks
//! the content type and the body size, verifies the signature over the raw body, skips an
//! event id it already delivered (deduplication window), hands the record to the channel
//! without waiting (a full channel is 503 with `Retry-After`: backpressure), then waits up to
//! `ack_timeout` for the delivery report (longer is 503, so the sender retries). Nothing of the
//! body is logged. Every request is counted in `tributary_webhook_requests_total{outcome}`.
//!
//! A request still receiving its body when the source stops (shutdown, or a reload that stops
//! or restarts it) is answered 503 with `Retry-After` at once: a sender that stalls in its body
//! cannot hold the shutdown for its `body_timeout`.
//!
//! The event id stays "in flight" until Kafka answers, even after a timed-out request: a retry
//! that arrives meanwhile gets 503, one that arrives after the acknowledgement gets 200 and is
//! not produced again.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures::future::BoxFuture;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::config::{EventIdFrom, WebhookSettings};
use crate::{
    channel::{RecordSender, TrySendError},
    error::SourceError,
    metrics::SourceMetrics,
    record::{DeliveryOutcome, EventAck, Record},
    runtime::health::SourceState,
    sources::{PayloadFormat, Source, SourceContext},
};

/// A configured webhook source: its routes, and a task that connects them to the pipeline.
pub struct WebhookSource {
    state: Arc<Receiver>,
}

/// What the handler shares with the source task.
struct Receiver {
    name: Arc<str>,
    settings: WebhookSettings,
    /// Set while the source runs; `None` before start and after shutdown (answers 503).
    pipeline: RwLock<Option<Pipeline>>,
    /// Event ids Kafka acknowledged within the window.
    delivered: moka::sync::Cache<String, ()>,
    /// Event ids handed to the pipeline and not yet acknowledged.
    in_flight: Mutex<HashSet<String>>,
    /// Bounds the requests served at once (each may buffer `max_body_bytes`).
    requests: Arc<tokio::sync::Semaphore>,
}

#[derive(Clone)]
struct Pipeline {
    records: RecordSender,
    metrics: SourceMetrics,
    /// Cancelled when the source stops: a body still arriving is not waited for.
    stopping: CancellationToken,
}

impl WebhookSource {
    pub(crate) fn new(name: &str, settings: WebhookSettings) -> Self {
        let max_concurrent_requests = settings.max_concurrent_requests;
        let delivered = moka::sync::Cache::builder()
            .max_capacity(settings.dedupe_max_ids)
            .time_to_live(settings.dedupe_window)
            .build();
        WebhookSource {
            state: Arc::new(Receiver {
                name: name.into(),
                settings,
                pipeline: RwLock::new(None),
                delivered,
                in_flight: Mutex::default(),
                requests: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests)),
            }),
        }
    }
}

impl Source for WebhookSource {
    fn http_routes(&self) -> Option<Router> {
        Some(
            Router::new()
                .route(&self.state.settings.path, post(receive))
                .with_state(Arc::clone(&self.state)),
        )
    }

    /// The same routes and receiver state: a rewound instance serves the routes the HTTP
    /// server already has.
    fn sibling(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(WebhookSource {
            state: Arc::clone(&self.state),
        }))
    }

    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let state = self.state;
            *state.pipeline.write().unwrap_or_else(|e| e.into_inner()) = Some(Pipeline {
                records: context.records.clone(),
                metrics: context.metrics.clone(),
                stopping: context.shutdown.clone(),
            });
            context.set_state(SourceState::Listening);
            tracing::info!(source = %context.name, path = %state.settings.path, "receiving webhooks");
            context.shutdown.cancelled().await;
            // Dropping the last sender lets the pump drain and stop.
            state
                .pipeline
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            context.set_state(SourceState::Stopped);
            Ok(())
        })
    }
}

/// The request outcomes counted in `tributary_webhook_requests_total`.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Accepted,
    Duplicate,
    TooLarge,
    BadRequest,
    Overloaded,
    DeliveryTimeout,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::TooLarge => "too_large",
            Outcome::BadRequest => "bad_request",
            Outcome::Overloaded => "overloaded",
            Outcome::DeliveryTimeout => "delivery_timeout",
        }
    }
}

impl Receiver {
    fn pipeline(&self) -> Option<Pipeline> {
        self.pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts the request and builds the answer (503 answers carry `Retry-After`).
    fn answer(
        &self,
        metrics: &SourceMetrics,
        outcome: &str,
        status: StatusCode,
        text: &str,
    ) -> Response {
        metrics.webhook_request(outcome);
        if status.is_client_error() {
            tracing::warn!(source = %self.name, outcome, status = status.as_u16(), reason = text, "webhook request refused");
        }
        let mut response = (status, format!("{text}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                self.settings.retry_after.as_secs().max(1).into(),
            );
        }
        response
    }

    fn outcome(
        &self,
        metrics: &SourceMetrics,
        outcome: Outcome,
        status: StatusCode,
        text: &str,
    ) -> Response {
        self.answer(metrics, outcome.label(), status, text)
    }

    /// Marks `id` in flight unless it was delivered already or is in flight: `Some(true)`
    /// newly in flight, `Some(false)` in flight elsewhere, `None` delivered. One lock covers
    /// both sets, so a retry cannot slip between "delivered" and "no longer in flight".
    /// With several keys (an event id and a body hash), one already delivered makes the
    /// request a duplicate, and one in flight makes it wait.
    fn claim(&self, keys: &[String]) -> Option<bool> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if keys.iter().any(|key| self.delivered.contains_key(key)) {
            return None;
        }
        if keys.iter().any(|key| in_flight.contains(key)) {
            return Some(false);
        }
        in_flight.extend(keys.iter().cloned());
        Some(true)
    }

    /// Ends the flight of `keys`, recording them as delivered when Kafka has the record.
    fn settle(&self, keys: &[String], delivered: bool) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            if delivered {
                self.delivered.insert(key.clone(), ());
            }
            in_flight.remove(key);
        }
    }
}

/// Event ids longer than this are refused (they are record keys and are remembered).
const MAX_EVENT_ID_BYTES: usize = 512;

async fn receive(State(state): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    // Only the metrics are taken now: the channel sender is taken just before sending, so a
    // slow request cannot keep the channel open past shutdown.
    let Some((metrics, stopping)) = state.pipeline().map(|p| (p.metrics, p.stopping)) else {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, "not running\n").into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            state.settings.retry_after.as_secs().max(1).into(),
        );
        return response;
    };
    // Each request may hold up to `max_body_bytes`: their number is bounded.
    let Ok(_permit) = Arc::clone(&state.requests).try_acquire_owned() else {
        return state.outcome(
            &metrics,
            Outcome::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once; retry later",
        );
    };
    let settings = &state.settings;
    if !settings.content_types.is_empty() {
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !settings.content_types.contains(&media_type) {
            return state.outcome(
                &metrics,
                Outcome::BadRequest,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("content type `{media_type}` is not accepted"),
            );
        }
    }
    let too_large = |state: &Receiver| {
        state.outcome(
            &metrics,
            Outcome::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {} bytes", settings.max_body_bytes),
        )
    };
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > settings.max_body_bytes) {
        return too_large(&state);
    }
    let read = tokio::select! {
        read = tokio::time::timeout(
            settings.body_timeout,
            axum::body::to_bytes(body, settings.max_body_bytes),
        ) => read,
        // The server waits for every request before the shutdown ends: one whose body is
        // still coming is answered now, not after `body_timeout`.
        () = stopping.cancelled() => {
            return state.outcome(
                &metrics,
                Outcome::Overloaded,
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down; retry later",
            )
        }
    };
    let body: Bytes = match read {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            let limited = error.into_inner().is::<http_body_util::LengthLimitError>();
            if limited {
                return too_large(&state);
            }
            return state.outcome(
                &metrics,
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                "the body could not be read",
            );
        }
        Err(_) => {
            return state.outcome(
                &metrics,
                Outcome::BadRequest,
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {:?}", settings.body_timeout),
            )
        }
    };
    let verified = match &settings.signature {
        None => None,
        Some(scheme) => match scheme.verify(&headers, &body, SystemTime::now()) {
            Ok(verified) => Some(verified),
            Err(rejection) => {
                return state.answer(
                    &metrics,
                    rejection.outcome(),
                    StatusCode::UNAUTHORIZED,
                    &rejection.to_string(),
                )
            }
        },
    };
    // Schemes without a signed timestamp (GitHub, generic HMAC) sign the body alone: a
    // captured request replayed under a new delivery id verifies again. Such bodies are also
    // deduplicated by their SHA-256.
    let body_key = verified
        .as_ref()
        .filter(|verified| verified.signed_at.is_none())
        .map(|_| {
            use sha2::Digest as _;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
        });
    // A value is built only when the event id is read from the body; otherwise checking that
    // the body is JSON is enough.
    let needs_value = matches!(settings.event_id, EventIdFrom::Pointer(_));
    let checked = match settings.format {
        PayloadFormat::Json if needs_value => serde_json::from_slice::<&RawValue>(&body).map(Some),
        PayloadFormat::Json => serde_json::from_slice::<serde::de::IgnoredAny>(&body).map(|_| None),
        PayloadFormat::Text => Ok(None),
    };
    let json = match checked {
        Ok(json) => json,
        Err(error) => {
            return state.outcome(
                &metrics,
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                &format!("the body is not valid JSON ({error})"),
            )
        }
    };
    let event_id: Option<String> = match &settings.event_id {
        EventIdFrom::Scheme => verified.and_then(|v| v.delivery_id),
        EventIdFrom::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        // A missing or `null` value: no event id (the body hash may still deduplicate).
        EventIdFrom::Pointer(key) => key.id_of(json).ok().map(Cow::into_owned),
    };
    if event_id
        .as_ref()
        .is_some_and(|id| id.len() > MAX_EVENT_ID_BYTES)
    {
        return state.outcome(
            &metrics,
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
            &format!("the event id is longer than {MAX_EVENT_ID_BYTES} bytes"),
        );
    }
    let dedupe_keys: Vec<String> = event_id.iter().cloned().chain(body_key).collect();
    if !dedupe_keys.is_empty() {
        match state.claim(&dedupe_keys) {
            None => {
                return state.outcome(&metrics, Outcome::Duplicate, StatusCode::OK, "duplicate")
            }
            // The first delivery of this id is not acknowledged yet: its outcome decides.
            Some(false) => {
                return state.outcome(
                    &metrics,
                    Outcome::Duplicate,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this event is being delivered; retry later",
                )
            }
            Some(true) => {}
        }
    }
    let (ack, acknowledged) = tokio::sync::oneshot::channel();
    let record = Record {
        key: event_id.clone().map(Bytes::from),
        payload: body,
        event_id: event_id.as_deref().map(Arc::from),
        event_type: None,
        position: None,
        fetched_at: SystemTime::now(),
        dead_letter: None,
        ack: Some(EventAck::new(ack)),
        page: None,
        marker: false,
        topic: None,
        event_time: None,
    };
    metrics.records_received.inc();
    let sent = match state.pipeline() {
        Some(pipeline) => pipeline.records.try_send(record),
        None => Err(TrySendError::Closed(Box::new(record))),
    };
    if let Err(error) = sent {
        state.settle(&dedupe_keys, false);
        let text = match error {
            TrySendError::Full(_) => "overloaded; retry later",
            TrySendError::Closed(_) => "shutting down; retry later",
        };
        return state.outcome(
            &metrics,
            Outcome::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE,
            text,
        );
    }
    // The outcome is recorded by a task of its own, so that it still counts (deduplication)
    // when this request has already timed out.
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    let recorder = Arc::clone(&state);
    tokio::spawn(async move {
        let outcome = acknowledged.await.ok();
        let delivered = matches!(
            outcome,
            Some(
                DeliveryOutcome::Produced
                    | DeliveryOutcome::DeadLettered
                    | DeliveryOutcome::Filtered
            )
        );
        recorder.settle(&dedupe_keys, delivered);
        let _ = outcome_tx.send(delivered);
    });
    match tokio::time::timeout(settings.ack_timeout, outcome_rx).await {
        Ok(Ok(true)) => state.outcome(&metrics, Outcome::Accepted, StatusCode::OK, "accepted"),
        Ok(_) => state.outcome(
            &metrics,
            Outcome::DeliveryTimeout,
            StatusCode::SERVICE_UNAVAILABLE,
            "the event could not be stored; retry later",
        ),
        Err(_) => state.outcome(
            &metrics,
            Outcome::DeliveryTimeout,
            StatusCode::SERVICE_UNAVAILABLE,
            "Kafka did not acknowledge the event in time; retry later",
        ),
    }
}
