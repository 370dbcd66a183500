//! The subscription's connection loop.
//!
//! Each connection: the WebSocket handshake (the WebSocket source's: size caps,
//! `connect_timeout`, no redirects) with the protocol's `Sec-WebSocket-Protocol`;
//! `connection_init` with the auth payload; the server's `connection_ack` within
//! `ack_timeout`; then `subscribe` (or `start`) with the configured variables, the stored
//! position in `position_variable`. Every record of a `next` message carries its position, so
//! the stored position moves only past records Kafka holds; a reconnect subscribes again from
//! the last position read. Liveness: a WebSocket ping every `ping_interval` answered within
//! `pong_timeout`, the protocol's `ping` answered with `pong`, and `read_timeout` for a silent
//! server. Any failure reconnects with exponential backoff and full jitter; a subscription the
//! server refuses (`error`), and close codes 4400, 4401, 4403, 4406, 1003 and 1008, stop the
//! source with the server's reason.

use std::{
    pin::pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::{future::BoxFuture, StreamExt};
use rand::SeedableRng;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, protocol::CloseFrame, Message};

use super::{
    config::SubscriptionSettings,
    protocol::{parse, ServerMessage, OPERATION_ID},
    records::extract,
};
use crate::{
    backoff::Backoff,
    error::SourceError,
    runtime::health::SourceState,
    sources::{
        websocket::{
            handshake::{open, Handshake, HandshakeError, Socket},
            source::send,
        },
        Probe, Source, SourceContext,
    },
};

/// A configured GraphQL subscription, ready to run.
pub struct SubscriptionSource {
    settings: Arc<SubscriptionSettings>,
}

impl SubscriptionSource {
    pub(crate) fn new(settings: SubscriptionSettings) -> Self {
        SubscriptionSource {
            settings: Arc::new(settings),
        }
    }
}

impl Source for SubscriptionSource {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(probe(&self.settings))
    }

    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(run(self.settings, context))
    }
}

/// Why a connection ended (besides shutdown).
enum Ended {
    /// Shutdown was requested, or the sink is gone.
    Shutdown,
    /// Worth another connection.
    Transient(String),
    /// Retrying will not help; with the fix.
    Permanent(String, &'static str),
}

/// Completes the handshake and `connection_init` → `connection_ack` as a new source would, then
/// closes the connection without subscribing: for `tributary check --connect`.
async fn probe(settings: &SubscriptionSettings) -> Probe {
    match initialised(settings).await {
        Ok(mut socket) => {
            let _ = send(&mut socket, Message::Close(None), settings.send_timeout).await;
            Probe::Ok(format!(
                "connection acknowledged ({})",
                settings.protocol.subprotocol()
            ))
        }
        Err(Ended::Transient(message) | Ended::Permanent(message, _)) => Probe::Failed(message),
        Err(Ended::Shutdown) => Probe::Failed("shut down".to_owned()),
    }
}

async fn run(
    settings: Arc<SubscriptionSettings>,
    context: SourceContext,
) -> Result<(), SourceError> {
    let mut position: Option<Arc<str>> = context.resume.as_ref().map(|p| Arc::clone(&p.0));
    let mut backoff = Backoff::new(
        settings.reconnect.initial_delay,
        settings.reconnect.max_delay,
    );
    let mut rng = rand::rngs::StdRng::from_os_rng();
    context.set_state(SourceState::Starting);
    loop {
        let mut received = false;
        let ended = tokio::select! {
            biased;
            _ = context.shutdown.cancelled() => Ended::Shutdown,
            ended = connection(&settings, &context, &mut position, &mut received) => ended,
        };
        let reason = match ended {
            Ended::Shutdown => {
                context.set_state(SourceState::Stopped);
                return Ok(());
            }
            Ended::Permanent(message, fix) => {
                let error = SourceError::Permanent {
                    source_name: context.name.to_string(),
                    url: settings.redacted_url.clone(),
                    message,
                    fix: fix.to_owned(),
                };
                tracing::error!(source = %context.name, %error, "source stopped");
                context.set_state(SourceState::Failed(error.to_string()));
                return Err(error);
            }
            Ended::Transient(message) => message,
        };
        if received {
            backoff.reset();
        }
        let delay = backoff.next_delay(None, &mut rng);
        if !context
            .wait_to_reconnect(backoff.attempt(), delay, reason)
            .await
        {
            return Ok(());
        }
    }
}

/// Opens a connection and completes `connection_init` → `connection_ack`.
async fn initialised(settings: &SubscriptionSettings) -> Result<Socket, Ended> {
    let handshake = Handshake {
        url: settings.url.expose_secret().to_owned(),
        headers: &settings.headers,
        max_message_bytes: settings.max_message_bytes,
        max_frame_bytes: settings.max_frame_bytes,
        connect_timeout: settings.connect_timeout,
        network: &settings.network,
    };
    let mut socket = open(&handshake).await.map_err(|error| match error {
        HandshakeError::Transient(message) => Ended::Transient(message),
        HandshakeError::Permanent(message, fix) => Ended::Permanent(message, fix),
    })?;
    let payload: serde_json::Value =
        serde_json::from_str(settings.init_payload.expose_secret()).unwrap_or_default();
    let init = settings.protocol.connection_init(&payload);
    send(&mut socket, Message::text(init), settings.send_timeout)
        .await
        .map_err(|error| Ended::Transient(format!("cannot send connection_init: {error}")))?;
    let deadline = Instant::now() + settings.ack_timeout;
    loop {
        let read = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| {
                Ended::Transient(format!(
                    "no connection_ack within {:?} (ack_timeout)",
                    settings.ack_timeout
                ))
            })?;
        let text = match read {
            None => return Err(Ended::Transient("the server closed the connection".into())),
            Some(Err(error)) => return Err(Ended::Transient(format!("read failed: {error}"))),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return Err(closed(settings, frame)),
            Some(Ok(_)) => continue,
        };
        match parse(settings.protocol, text.as_str()) {
            Ok(ServerMessage::ConnectionAck) => return Ok(socket),
            Ok(ServerMessage::Ping) => {
                if let Some(pong) = settings.protocol.pong() {
                    send(&mut socket, Message::text(pong), settings.send_timeout)
                        .await
                        .map_err(|error| {
                            Ended::Transient(format!("cannot send a pong: {error}"))
                        })?;
                }
            }
            Ok(ServerMessage::KeepAlive) => {}
            Ok(ServerMessage::Error { payload, .. }) => {
                return Err(Ended::Permanent(
                    format!(
                        "the server refused the connection: {}",
                        payload.map_or("", |p| excerpt(p.get()))
                    ),
                    "check the credentials in `init_payload`",
                ))
            }
            Ok(other) => {
                return Err(Ended::Transient(format!(
                    "expected connection_ack, the server sent {other:?}"
                )))
            }
            Err(error) => return Err(Ended::Transient(error)),
        }
    }
}

/// One connection: initialise, subscribe from `position`, and read until it ends.
async fn connection(
    settings: &SubscriptionSettings,
    context: &SourceContext,
    position: &mut Option<Arc<str>>,
    received: &mut bool,
) -> Ended {
    let mut socket = match initialised(settings).await {
        Ok(socket) => socket,
        Err(ended) => return ended,
    };
    let mut variables = settings.variables.clone();
    if let (Some(variable), Some(position)) = (&settings.position_variable, position.as_deref()) {
        // The position is stored as JSON text: a number goes back as a number.
        let value = serde_json::from_str(position)
            .unwrap_or_else(|_| serde_json::Value::String(position.to_owned()));
        variables.insert(variable.clone(), value);
    }
    let subscribe = settings.protocol.subscribe(
        &settings.query,
        &variables,
        settings.operation_name.as_deref(),
    );
    if let Err(error) = send(&mut socket, Message::text(subscribe), settings.send_timeout).await {
        return Ended::Transient(format!("cannot send the subscription: {error}"));
    }
    tracing::info!(source = %context.name, url = %settings.redacted_url, position = position.as_deref().unwrap_or(""), "connected and subscribed");
    context.set_state(SourceState::Connected);

    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    let mut pong_deadline = pin!(tokio::time::sleep(Duration::ZERO));
    let mut awaiting_pong = false;
    let mut idle_deadline = pin!(tokio::time::sleep(settings.read_timeout));
    loop {
        tokio::select! {
            biased;
            _ = ping.tick() => {
                if !awaiting_pong {
                    if let Err(error) = send(&mut socket, Message::Ping(Bytes::new()), settings.send_timeout).await {
                        return Ended::Transient(format!("cannot send a ping: {error}"));
                    }
                    awaiting_pong = true;
                    pong_deadline.as_mut().reset(Instant::now() + settings.pong_timeout);
                }
            }
            read = socket.next() => {
                let text: Bytes = match read {
                    None => return Ended::Transient("the server closed the connection".into()),
                    Some(Err(tungstenite::Error::Capacity(error))) => {
                        return Ended::Transient(format!(
                            "a message is larger than max_message_bytes ({}) or max_frame_bytes ({}): {error}",
                            settings.max_message_bytes, settings.max_frame_bytes
                        ))
                    }
                    Some(Err(error)) => return Ended::Transient(format!("read failed: {error}")),
                    Some(Ok(Message::Text(text))) => text.into(),
                    Some(Ok(Message::Pong(_))) => {
                        awaiting_pong = false;
                        continue;
                    }
                    Some(Ok(Message::Close(frame))) => return closed(settings, frame),
                    Some(Ok(Message::Binary(_))) => {
                        return Ended::Transient("the server sent a binary message; the protocol's messages are text".into())
                    }
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
                };
                idle_deadline.as_mut().reset(Instant::now() + settings.read_timeout);
                let Ok(message_text) = std::str::from_utf8(&text) else {
                    return Ended::Transient("a text message is not UTF-8".into());
                };
                match parse(settings.protocol, message_text) {
                    Ok(
                        ServerMessage::Next { id, .. }
                        | ServerMessage::Complete { id }
                        | ServerMessage::Error { id: Some(id), .. },
                    ) if id != OPERATION_ID => {
                        tracing::warn!(source = %context.name, %id, "a message for an operation this source did not start; left out");
                    }
                    Ok(ServerMessage::Next { payload, .. }) => {
                        *received = true;
                        let records = extract(&settings.rules, &text, payload, SystemTime::now());
                        context.metrics.records_received.inc_by(records.len() as u64);
                        for record in records {
                            if let Some(at) = &record.position {
                                *position = Some(Arc::clone(&at.0));
                            }
                            if context.records.send(record).await.is_err() {
                                return Ended::Shutdown;
                            }
                        }
                    }
                    Ok(ServerMessage::Ping) => {
                        if let Some(pong) = settings.protocol.pong() {
                            if let Err(error) = send(&mut socket, Message::text(pong), settings.send_timeout).await {
                                return Ended::Transient(format!("cannot send a pong: {error}"));
                            }
                        }
                    }
                    Ok(ServerMessage::KeepAlive | ServerMessage::ConnectionAck) => {}
                    Ok(ServerMessage::Error { payload, .. }) => {
                        return Ended::Permanent(
                            format!(
                                "the server refused the subscription: {}",
                                payload.map_or("", |p| excerpt(p.get()))
                            ),
                            "check the subscription's `query`, `variables` and `operation_name`",
                        );
                    }
                    Ok(ServerMessage::Complete { .. }) => {
                        return Ended::Transient("the server completed the subscription; subscribing again".into());
                    }
                    Err(error) => return Ended::Transient(error),
                }
            }
            _ = &mut idle_deadline => {
                return Ended::Transient(format!("no message for {:?} (read_timeout)", settings.read_timeout));
            }
            _ = &mut pong_deadline, if awaiting_pong => {
                return Ended::Transient(format!("no pong within {:?} (pong_timeout)", settings.pong_timeout));
            }
        }
    }
}

/// The end for a close frame: the protocol's refusals stop the source, the rest reconnects.
fn closed(settings: &SubscriptionSettings, frame: Option<CloseFrame>) -> Ended {
    let Some(frame) = frame else {
        return Ended::Transient("the server closed the connection without a code".into());
    };
    let code = u16::from(frame.code);
    let message = format!(
        "the server closed the connection with code {code}: `{}`",
        frame.reason.as_str()
    );
    if settings.protocol.is_permanent_close(code) {
        Ended::Permanent(
            message,
            "check the credentials in `init_payload` and `headers`, and the subscription",
        )
    } else {
        Ended::Transient(message)
    }
}

/// The start of `text`, at most 300 bytes, for an error message.
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
