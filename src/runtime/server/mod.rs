//! The HTTP server: `/metrics` (Prometheus text format, gzip when asked), `/healthz`, `/readyz`,
//! `/api/v1/sources` (each source's status, [`crate::status`]), and the routes of webhook
//! sources.
//!
//! Built as a plain [`axum::Router`] so tests can drive it with `oneshot`; served by
//! [`listener::serve`] (HTTP/1.1, a header read timeout, a connection limit) with graceful
//! shutdown bound to the daemon's token.

pub mod listener;

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use tokio::net::TcpListener;

use crate::{metrics::Metrics, runtime::health::Health, sinks::kafka::KafkaProducer};

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    /// Every metric family.
    pub metrics: Arc<Metrics>,
    /// Source states.
    pub health: Health,
    /// For broker reachability.
    pub producer: KafkaProducer,
    /// This replica's id (`single` without `[cluster]`).
    pub replica: Arc<str>,
    /// Each source's received-records rate.
    pub rates: Arc<crate::status::RateSampler>,
}

/// The router with every endpoint.
pub fn router(state: ServerState) -> Router {
    Router::new()
        // Compressed when the scraper asks (Prometheus sends `Accept-Encoding: gzip`): a scrape
        // of a thousand sources is a few hundred kilobytes of text.
        .route(
            "/metrics",
            get(metrics).layer(tower_http::compression::CompressionLayer::new().gzip(true)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(crate::status::API_PATH, get(sources))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    state
        .metrics
        .observe_readiness(&state.health.readiness(state.producer.brokers_reachable()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    let readiness = state.health.readiness(state.producer.brokers_reachable());
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

async fn sources(State(state): State<ServerState>) -> impl IntoResponse {
    Json(crate::status::report(
        &state.metrics,
        &state.health,
        &state.rates,
        &state.replica,
        state.producer.brokers_reachable(),
    ))
}

/// Binds `listen` and returns the bound address (useful with port 0).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}
