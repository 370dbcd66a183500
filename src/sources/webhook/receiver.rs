//! The webhook receiver: `POST <path>` on the shared HTTP server.
//!
//! A request is answered 2xx only once Kafka has acknowledged its record: the handler checks
//! the content type and the body size, verifies the signature over the raw body, skips an
//! event id it already delivered (deduplication window), hands the record to the channel
//! without waiting (a full channel is 503 with `Retry-After`: backpressure), then waits up to
//! `ack_timeout` for the delivery report (longer is 503, so the sender retries). Nothing of the
//! body is logged. Every request is counted in `tributary_webhook_requests_total{outcome}`.
//!
//! The event id stays "in flight" until Kafka answers, even after a timed-out request: a retry
//! that arrives meanwhile gets 503, one that arrives after the acknowledgement gets 200 and is
//! not produced again.

use std::{
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

use super::config::{EventIdFrom, WebhookSettings};
use crate::{
    channel::{RecordSender, TrySendError},
    error::SourceError,
    health::SourceState,
    metrics::SourceMetrics,
    record::{DeliveryOutcome, Record},
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
}

#[derive(Clone)]
struct Pipeline {
    records: RecordSender,
    metrics: SourceMetrics,
}

impl WebhookSource {
    pub(crate) fn new(name: &str, settings: WebhookSettings) -> Self {
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

    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let state = self.state;
            *state.pipeline.write().unwrap_or_else(|e| e.into_inner()) = Some(Pipeline {
                records: context.records.clone(),
                metrics: context.metrics.clone(),
            });
            context.set_state(SourceState::Connected);
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

    /// Counts the request and builds the answer.
    fn answer(
        &self,
        pipeline: &Pipeline,
        outcome: &str,
        status: StatusCode,
        text: &str,
    ) -> Response {
        pipeline.metrics.webhook_request(outcome);
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
        pipeline: &Pipeline,
        outcome: Outcome,
        status: StatusCode,
        text: &str,
    ) -> Response {
        self.answer(pipeline, outcome.label(), status, text)
    }
}

async fn receive(State(state): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let Some(pipeline) = state.pipeline() else {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, "not running\n").into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            state.settings.retry_after.as_secs().max(1).into(),
        );
        return response;
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
                &pipeline,
                Outcome::BadRequest,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("content type `{media_type}` is not accepted"),
            );
        }
    }
    let body: Bytes = match axum::body::to_bytes(body, settings.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return state.outcome(
                &pipeline,
                Outcome::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {} bytes", settings.max_body_bytes),
            )
        }
    };
    let verified = match &settings.signature {
        None => None,
        Some(scheme) => match scheme.verify(&headers, &body, SystemTime::now()) {
            Ok(verified) => Some(verified),
            Err(rejection) => {
                return state.answer(
                    &pipeline,
                    rejection.outcome(),
                    StatusCode::UNAUTHORIZED,
                    &rejection.to_string(),
                )
            }
        },
    };
    // A value is built only when the event id is read from the body; otherwise checking that
    // the body is JSON is enough.
    let needs_value = matches!(settings.event_id, EventIdFrom::Pointer(_));
    let checked = match settings.format {
        PayloadFormat::Json if needs_value => {
            serde_json::from_slice::<serde_json::Value>(&body).map(Some)
        }
        PayloadFormat::Json => serde_json::from_slice::<serde::de::IgnoredAny>(&body).map(|_| None),
        PayloadFormat::Text => Ok(None),
    };
    let json = match checked {
        Ok(json) => json,
        Err(error) => {
            return state.outcome(
                &pipeline,
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
        EventIdFrom::Pointer(pointer) => json
            .as_ref()
            .and_then(|value| value.pointer(pointer))
            .map(|found| match found {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
    };
    if let Some(id) = &event_id {
        if state.delivered.contains_key(id) {
            return state.outcome(&pipeline, Outcome::Duplicate, StatusCode::OK, "duplicate");
        }
        let newly_in_flight = state
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        if !newly_in_flight {
            // The first delivery of this id is not acknowledged yet: its outcome decides.
            return state.outcome(
                &pipeline,
                Outcome::Duplicate,
                StatusCode::SERVICE_UNAVAILABLE,
                "this event is being delivered; retry later",
            );
        }
    }
    let (ack, acknowledged) = tokio::sync::oneshot::channel();
    let shared_id: Option<Arc<str>> = event_id.as_deref().map(Arc::from);
    let record = Record {
        key: event_id.clone().map(Bytes::from),
        payload: body,
        event_id: shared_id,
        event_type: None,
        position: None,
        fetched_at: SystemTime::now(),
        dead_letter: None,
        ack: Some(ack),
    };
    pipeline.metrics.records_received.inc();
    if let Err(error) = pipeline.records.try_send(record) {
        forget_in_flight(&state, event_id.as_deref());
        let text = match error {
            TrySendError::Full(_) => "overloaded; retry later",
            TrySendError::Closed(_) => "shutting down; retry later",
        };
        return state.outcome(
            &pipeline,
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
        if let (Some(DeliveryOutcome::Produced | DeliveryOutcome::DeadLettered), Some(id)) =
            (outcome, &event_id)
        {
            recorder.delivered.insert(id.clone(), ());
        }
        forget_in_flight(&recorder, event_id.as_deref());
        let _ = outcome_tx.send(outcome);
    });
    match tokio::time::timeout(settings.ack_timeout, outcome_rx).await {
        Ok(Ok(Some(DeliveryOutcome::Produced | DeliveryOutcome::DeadLettered))) => {
            state.outcome(&pipeline, Outcome::Accepted, StatusCode::OK, "accepted")
        }
        Ok(_) => state.outcome(
            &pipeline,
            Outcome::DeliveryTimeout,
            StatusCode::SERVICE_UNAVAILABLE,
            "the event could not be stored; retry later",
        ),
        Err(_) => state.outcome(
            &pipeline,
            Outcome::DeliveryTimeout,
            StatusCode::SERVICE_UNAVAILABLE,
            "Kafka did not acknowledge the event in time; retry later",
        ),
    }
}

fn forget_in_flight(state: &Receiver, event_id: Option<&str>) {
    if let Some(id) = event_id {
        state
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
