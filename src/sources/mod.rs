//! Sources: tasks that read one feed each and emit records.
//!
//! A source owns its connection and its reconnect loop. It receives its resume position (the
//! stored checkpoint) at start, attaches a position to each record it emits, and awaits the
//! bounded channel — which is how backpressure reaches the socket. It never writes a checkpoint
//! itself: the AckTracker does, once Kafka has acknowledged the records.
//!
//! Adding a source kind = one module here, one variant in [`SourceConfig`], one example config.

pub(crate) mod common;
pub mod graphql;
pub mod graphql_subscription;
pub mod http_stream;
pub mod poll;
mod probe;
pub mod rest;
pub mod sse;
pub mod webhook;
pub mod websocket;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    channel::RecordSender,
    error::{ConfigError, SourceError},
    metrics::{SourceKind, SourceMetrics},
    record::Position,
    runtime::health::{Health, SourceState},
    stage::{Admission, SourceRules, Stage, StageConfig, Template},
};

/// A source's delivery guarantee into Kafka (`delivery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The idempotent producer: every event reaches Kafka at least once; after a crash the
    /// records between the last stored position and the crash are produced again.
    #[default]
    AtLeastOnce,
    /// A transactional producer per source (Kafka's transactions, KIP-98): the records, their
    /// dead-letter records and the source's position are committed together, so a reader with
    /// `isolation.level=read_committed` sees each event once. Needs `checkpoint.store = "kafka"`.
    ExactlyOnce,
}

/// The `[sources.<name>]` table: one variant per source kind, chosen by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Server-Sent Events (`type = "sse"`).
    Sse(sse::SseConfig),
    /// WebSocket (`type = "websocket"`).
    Websocket(websocket::WebSocketConfig),
    /// Webhooks pushed to the HTTP server (`type = "webhook"`).
    Webhook(webhook::WebhookConfig),
    /// A polled REST endpoint (`type = "rest"`).
    Rest(rest::RestConfig),
    /// A polled GraphQL endpoint (`type = "graphql"`).
    Graphql(graphql::GraphqlConfig),
    /// A GraphQL subscription over WebSocket (`type = "graphql_subscription"`).
    GraphqlSubscription(graphql_subscription::GraphqlSubscriptionConfig),
    /// A long-lived HTTP response of JSON lines or a JSON text sequence
    /// (`type = "http_stream"`).
    HttpStream(http_stream::HttpStreamConfig),
}

pub use common::{PayloadFormat, ReconnectConfig};
pub use probe::Probe;

/// What every source kind has: its topic, dead-letter topic, channel bounds and URL.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// The configured name.
    pub name: Arc<str>,
    /// The topic records go to.
    pub topic: String,
    /// The dead-letter topic.
    pub dead_letter_topic: String,
    /// The feed URL with secrets stripped, for logs and the `tributary.url` header.
    pub redacted_url: String,
    /// Channel bound in records.
    pub channel_max_records: usize,
    /// Channel bound in bytes.
    pub channel_max_bytes: u32,
    /// Commit each position as soon as Kafka has acknowledged it (polled sources, whose
    /// positions move once per page), not only every `checkpoint.commit_interval`.
    pub commit_each_position: bool,
    /// The source's kind (its `type`), which decides the metric families it exports.
    pub kind: SourceKind,
    /// The record stage (transform, topic and key templates, event time, static headers),
    /// compiled; set by [`SourceConfig::build`].
    pub stage: Arc<Stage>,
    /// The delivery guarantee; set by [`SourceConfig::build`].
    pub delivery: Delivery,
    /// Builds the source again from its config (an exactly-once source that rewinds starts a
    /// new instance of its feed); set by [`SourceConfig::build`].
    pub rebuild: Option<SourceFactory>,
}

/// Builds a source again from its config (see [`SourceInfo::rebuild`]).
#[derive(Clone)]
pub struct SourceFactory(Arc<dyn Fn() -> Result<Box<dyn Source>, String> + Send + Sync>);

impl SourceFactory {
    /// A new instance of the source.
    ///
    /// # Errors
    /// The config no longer builds (a secret file that went away), with every problem found.
    pub fn build(&self) -> Result<Box<dyn Source>, String> {
        (self.0)()
    }
}

impl std::fmt::Debug for SourceFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceFactory")
    }
}

impl SourceInfo {
    /// The info of source `name`; the dead-letter topic defaults to `<topic>.dlq`. The kind is
    /// set by [`SourceConfig::build`].
    pub fn new(
        name: &str,
        topic: &str,
        dead_letter_topic: Option<&str>,
        redacted_url: String,
        channel_max_records: usize,
        channel_max_bytes: u32,
    ) -> Self {
        SourceInfo {
            name: name.into(),
            topic: topic.to_owned(),
            dead_letter_topic: dead_letter_topic
                .map_or_else(|| format!("{topic}.dlq"), str::to_owned),
            redacted_url,
            channel_max_records,
            channel_max_bytes,
            commit_each_position: false,
            kind: SourceKind::Sse,
            stage: Arc::default(),
            delivery: Delivery::default(),
            rebuild: None,
        }
    }
}

impl SourceConfig {
    /// Validates this source's config and builds it.
    ///
    /// # Errors
    /// Every problem found, each naming the source and the field.
    pub fn build(&self, name: &str) -> Result<(SourceInfo, Box<dyn Source>), Vec<ConfigError>> {
        let built = match self {
            SourceConfig::Sse(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
            SourceConfig::Websocket(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
            SourceConfig::Webhook(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
            SourceConfig::Rest(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
            SourceConfig::Graphql(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
            SourceConfig::GraphqlSubscription(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
            SourceConfig::HttpStream(config) => config
                .build(name)
                .map(|(info, source)| (info, Box::new(source) as Box<dyn Source>)),
        };
        let (stage_config, topic, rules) = self.stage_fields();
        let stage = Stage::build(name, &stage_config, topic, rules);
        match (built, stage) {
            (Ok((info, source)), Ok(stage)) => Ok((
                SourceInfo {
                    kind: self.kind(),
                    stage: Arc::new(stage),
                    delivery: self.delivery(),
                    rebuild: Some(self.factory(name)),
                    ..info
                },
                source,
            )),
            (built, stage) => Err(built
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(stage.err().unwrap_or_default())
                .collect()),
        }
    }

    /// The source's `tls` files, for the kinds that make HTTP requests and have them set.
    pub fn tls(&self) -> Option<&crate::http::TlsConfig> {
        match self {
            SourceConfig::Sse(c) => c.tls.as_ref(),
            SourceConfig::Websocket(c) => c.tls.as_ref(),
            SourceConfig::Rest(c) => c.tls.as_ref(),
            SourceConfig::Graphql(c) => c.tls.as_ref(),
            SourceConfig::GraphqlSubscription(c) => c.tls.as_ref(),
            SourceConfig::HttpStream(c) => c.tls.as_ref(),
            SourceConfig::Webhook(_) => None,
        }
    }

    /// Builds this source again, as [`SourceConfig::build`] does.
    fn factory(&self, name: &str) -> SourceFactory {
        let (config, name) = (self.clone(), name.to_owned());
        SourceFactory(Arc::new(move || {
            config
                .build(&name)
                .map(|(_, source)| source)
                .map_err(|errors| {
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
        }))
    }

    /// The source's delivery guarantee (`delivery`).
    pub fn delivery(&self) -> Delivery {
        match self {
            SourceConfig::Sse(c) => c.delivery,
            SourceConfig::Websocket(c) => c.delivery,
            SourceConfig::Webhook(c) => c.delivery,
            SourceConfig::Rest(c) => c.delivery,
            SourceConfig::Graphql(c) => c.delivery,
            SourceConfig::GraphqlSubscription(c) => c.delivery,
            SourceConfig::HttpStream(c) => c.delivery,
        }
    }

    /// The record stage's settings, the topic, and what this kind leaves to the stage: an SSE or
    /// WebSocket source's key template; the other kinds read their key themselves (it is also
    /// their event id and deduplication key).
    fn stage_fields(&self) -> (StageConfig, &str, SourceRules<'_>) {
        match self {
            // The SSE source admits its events (the JSON check, a pointer key) in its own task,
            // in parallel with the pump: done in the pump, they cost a fifth of the throughput.
            SourceConfig::Sse(c) => (
                c.stage_config(),
                &c.topic,
                SourceRules {
                    json: c.format == PayloadFormat::Json,
                    // `id` and `none` are the source's own; anything else but a pointer or a
                    // template is reported by the SSE config check.
                    key: Some(c.key.as_str())
                        .filter(|key| key.starts_with('/') || Template::is_template(key)),
                    admission: Admission::Source,
                },
            ),
            // The WebSocket source parses each message anyway (splitting, sequence numbers) and
            // reads a pointer key there; the stage fills a key template.
            SourceConfig::Websocket(c) => (
                c.stage_config(),
                &c.topic,
                SourceRules {
                    json: false,
                    key: c.key.as_deref().filter(|key| Template::is_template(key)),
                    admission: Admission::Source,
                },
            ),
            SourceConfig::Webhook(c) => (c.stage_config(), &c.topic, SourceRules::default()),
            SourceConfig::Rest(c) => (c.stage_config(), &c.topic, SourceRules::default()),
            SourceConfig::Graphql(c) => (c.stage_config(), &c.topic, SourceRules::default()),
            SourceConfig::GraphqlSubscription(c) => {
                (c.stage_config(), &c.topic, SourceRules::default())
            }
            // The stream source parses each line anyway (its position, a preset's line kinds)
            // and admits it in its own task, as the SSE source does.
            SourceConfig::HttpStream(c) => (
                c.stage_config(),
                &c.topic,
                SourceRules {
                    json: true,
                    key: c.effective_key(),
                    admission: Admission::Source,
                },
            ),
        }
    }

    /// The record stage's settings of this source (`transform`, `transform_file`, `timestamp`,
    /// `timestamp_unit`, `record_headers`, `schema`, `on_drift`), which every kind has.
    pub fn stage_config(&self) -> StageConfig {
        self.stage_fields().0
    }

    /// Whether this source is pushed to (a webhook; see [`SourceKind::is_pushed`]).
    pub fn is_pushed(&self) -> bool {
        self.kind().is_pushed()
    }

    /// The kind this `type` names.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Sse(_) => SourceKind::Sse,
            SourceConfig::Websocket(_) => SourceKind::Websocket,
            SourceConfig::Webhook(_) => SourceKind::Webhook,
            SourceConfig::Rest(_) => SourceKind::Rest,
            SourceConfig::Graphql(_) => SourceKind::Graphql,
            SourceConfig::GraphqlSubscription(_) => SourceKind::GraphqlSubscription,
            SourceConfig::HttpStream(_) => SourceKind::HttpStream,
        }
    }
}

/// A running source's surroundings.
pub struct SourceContext {
    /// The configured name.
    pub name: Arc<str>,
    /// Where records go; `send` waits while the channel is full.
    pub records: RecordSender,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// The stored position to resume from, if any.
    pub resume: Option<Position>,
    /// This source's metric handles.
    pub metrics: SourceMetrics,
    /// Where the source reports its state for `/readyz`.
    pub health: Health,
    /// The request budgets of every host, shared by all polled sources.
    pub hosts: Arc<crate::http::HostLimits>,
    /// The source's record stage: a source kind that admits its events itself
    /// ([`crate::stage::Admission::Source`]) calls [`Stage::admit`] on each.
    pub stage: Arc<Stage>,
}

impl SourceContext {
    /// Reports this source's state.
    pub fn set_state(&self, state: SourceState) {
        self.health.set(&self.name, state);
    }

    /// Waits `delay` before connection attempt `attempt`: logs `reason`, counts the reconnect
    /// and shows the attempt in `/readyz`. Returns `false` when shutdown came first (the state
    /// is then `stopped`).
    pub async fn wait_to_reconnect(
        &self,
        attempt: u32,
        delay: std::time::Duration,
        reason: String,
    ) -> bool {
        tracing::warn!(source = %self.name, error = %reason, attempt, delay_ms = delay.as_millis() as u64, "feed connection ended; reconnecting");
        self.set_state(SourceState::Reconnecting {
            attempts: attempt,
            error: reason,
        });
        self.metrics.reconnects.inc();
        tokio::select! {
            _ = self.shutdown.cancelled() => {
                self.set_state(SourceState::Stopped);
                false
            }
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// A feed reader.
pub trait Source: Send + 'static {
    /// Routes this source serves on the daemon's HTTP server (webhooks), if any. Called once,
    /// before [`Source::run`].
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }

    /// Sends one request to the feed, with the source's headers, authentication, TLS,
    /// timeouts and redirect policy but without retries, and says how it answered; nothing is
    /// read from the feed or produced. `tributary check --connect` calls it on a source that
    /// does not run. The default: [`Probe::NotApplicable`].
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async { Probe::NotApplicable })
    }

    /// Another instance of this source that shares what the daemon already holds of it (a
    /// webhook source's routes are part of the HTTP server, built from the first instance), for
    /// an exactly-once source that rewinds; `None` (the default): the source is built again
    /// from its config instead.
    fn sibling(&self) -> Option<Box<dyn Source>> {
        None
    }

    /// The OAuth2 tokens of a refresh-token grant (`auth.type = "oauth2_refresh_token"`),
    /// whose rotated refresh tokens the runner keeps in the position store; `None` (the
    /// default) for every other kind of authentication.
    fn refresh_token_grant(&self) -> Option<Arc<crate::http::OAuth2Tokens>> {
        None
    }

    /// Reads the feed until shutdown, or until the feed ends for good.
    ///
    /// # Errors
    /// A permanent [`SourceError`]; transient errors are retried inside.
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>>;
}
