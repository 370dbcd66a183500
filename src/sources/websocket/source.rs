//! The WebSocket connection loop (RFC 6455, via tokio-tungstenite).
//!
//! Each connection: connect (TLS for `wss://`) within `connect_timeout`, send the subscribe
//! messages with `{position}` replaced by the last position read, then read messages until the
//! connection fails. Liveness: a ping every `ping_interval` that must be answered within
//! `pong_timeout`, an optional application heartbeat, and `read_timeout` for a silent
//! connection. Any failure reconnects, forever, with exponential backoff and full jitter; every
//! attempt is logged, counted and shown in `/readyz`. Close codes 1003 (unsupported data) and
//! 1008 (policy violation) are permanent: the source stops with the server's reason.
//!
//! Messages are decoded by [`FrameDecoder`]; reading stops while the channel is full, so a slow
//! broker leaves the data in the socket (backpressure).

use std::{
    pin::pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::{future::BoxFuture, SinkExt, StreamExt};
use rand::SeedableRng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

use super::{config::WebSocketSettings, frames::FrameDecoder, handshake::HandshakeError};
use crate::{
    backoff::Backoff,
    error::SourceError,
    runtime::health::SourceState,
    sources::{Probe, Source, SourceContext},
};

/// A configured WebSocket source, ready to run.
pub struct WebSocketSource {
    settings: Arc<WebSocketSettings>,
}

impl WebSocketSource {
    pub(crate) fn new(settings: WebSocketSettings) -> Self {
        WebSocketSource {
            settings: Arc::new(settings),
        }
    }
}

impl Source for WebSocketSource {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(super::handshake::probe(&self.settings))
    }

    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(run(self.settings, context))
    }
}

/// How one connection ended.
enum ConnectionEnd {
    /// Shutdown was requested (or the sink is gone).
    Shutdown,
    /// A sequence gap was found and `resubscribe_on_gap` is set.
    Gap,
    /// The connection failed; reconnect unless the error is permanent.
    Failed(SourceError),
}

/// What a connection carries over to the next one.
struct Progress {
    /// The last position read (or the stored one at start): fills `{position}`.
    position: Option<Arc<str>>,
    decoder: FrameDecoder,
    /// Set once a connection got as far as subscribing.
    connected: bool,
}

async fn run(settings: Arc<WebSocketSettings>, context: SourceContext) -> Result<(), SourceError> {
    let mut progress = Progress {
        position: context.resume.as_ref().map(|p| Arc::clone(&p.0)),
        decoder: FrameDecoder::new(settings.rules.clone()),
        connected: false,
    };
    let mut backoff = Backoff::new(
        settings.reconnect.initial_delay,
        settings.reconnect.max_delay,
    );
    let mut rng = rand::rngs::StdRng::from_os_rng();
    context.set_state(SourceState::Starting);
    loop {
        progress.connected = false;
        let end = tokio::select! {
            biased;
            _ = context.shutdown.cancelled() => ConnectionEnd::Shutdown,
            end = connection(&settings, &context, &mut progress) => end,
        };
        let reason = match end {
            ConnectionEnd::Shutdown => {
                context.set_state(SourceState::Stopped);
                return Ok(());
            }
            ConnectionEnd::Failed(error) if !error.is_transient() => {
                tracing::error!(source = %context.name, %error, "source stopped");
                context.set_state(SourceState::Failed(error.to_string()));
                return Err(error);
            }
            ConnectionEnd::Failed(error) => error.to_string(),
            ConnectionEnd::Gap => {
                // The feed restarts its sequences after a resubscribe (typically with a
                // snapshot): compare only what the new subscription sends.
                progress.decoder.reset_sequences();
                "sequence gap: resubscribing".to_owned()
            }
        };
        if progress.connected {
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

/// Opens one connection, subscribes, and reads it until it ends.
async fn connection(
    settings: &WebSocketSettings,
    context: &SourceContext,
    progress: &mut Progress,
) -> ConnectionEnd {
    let transient = |message: String| {
        ConnectionEnd::Failed(SourceError::Transient {
            source_name: context.name.to_string(),
            url: settings.redacted_url.clone(),
            message,
            retry_after: None,
        })
    };
    let permanent = |message: String, fix: &str| {
        ConnectionEnd::Failed(SourceError::Permanent {
            source_name: context.name.to_string(),
            url: settings.redacted_url.clone(),
            message,
            fix: fix.to_owned(),
        })
    };
    let position = progress.position.as_deref();
    let mut socket = match super::handshake::connect(settings, position).await {
        Ok(socket) => socket,
        Err(HandshakeError::Transient(message)) => return transient(message),
        Err(HandshakeError::Permanent(message, fix)) => return permanent(message, fix),
    };
    // Every send has a deadline: a peer that stops reading is a dead connection.
    let send_timeout = settings.send_timeout;
    for message in settings.subscribe_at(position) {
        if let Err(error) = send(&mut socket, Message::text(message), send_timeout).await {
            return transient(format!("cannot send the subscribe messages: {error}"));
        }
    }
    tracing::info!(source = %context.name, url = %settings.redacted_url, position = position.unwrap_or(""), "connected and subscribed");
    context.set_state(SourceState::Connected);

    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    let heartbeat_every = settings
        .heartbeat
        .as_ref()
        .map_or(Duration::from_secs(3600), |h| h.interval);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
    let mut pong_deadline = pin!(tokio::time::sleep(Duration::ZERO));
    let mut awaiting_pong = false;
    // Pongs do not count as data: a feed that answers pings but sends nothing is idle.
    let mut idle_deadline = pin!(tokio::time::sleep(settings.read_timeout));
    loop {
        // Timers that send come first: a feed that is always readable (busy, or backpressured)
        // must not starve pings and heartbeats. Deadlines come after the read, so that a pong
        // or data already in the socket is seen before the connection is declared dead.
        tokio::select! {
            biased;
            _ = ping.tick() => {
                if !awaiting_pong {
                    if let Err(error) = send(&mut socket, Message::Ping(Bytes::new()), send_timeout).await {
                        return transient(format!("cannot send a ping: {error}"));
                    }
                    awaiting_pong = true;
                    pong_deadline.as_mut().reset(Instant::now() + settings.pong_timeout);
                }
            }
            _ = heartbeat.tick(), if settings.heartbeat.is_some() => {
                let message = settings.heartbeat.as_ref().map(|h| h.message.clone()).unwrap_or_default();
                if let Err(error) = send(&mut socket, Message::text(message), send_timeout).await {
                    return transient(format!("cannot send the heartbeat: {error}"));
                }
            }
            read = socket.next() => {
                let message = match read {
                    None => return transient("the server closed the connection".to_owned()),
                    Some(Err(error)) => return transient(format!("read failed: {error}")),
                    Some(Ok(message)) => message,
                };
                let payload: Bytes = match message {
                    Message::Text(text) => text.into(),
                    Message::Binary(bytes) => bytes,
                    Message::Pong(_) => {
                        awaiting_pong = false;
                        continue;
                    }
                    // tungstenite answers pings by itself.
                    Message::Ping(_) | Message::Frame(_) => continue,
                    Message::Close(frame) => return closed(frame, transient, permanent),
                };
                idle_deadline.as_mut().reset(Instant::now() + settings.read_timeout);
                match deliver(settings, context, progress, payload).await {
                    Delivered::Continue => {}
                    Delivered::Gap => return ConnectionEnd::Gap,
                    Delivered::SinkGone => return ConnectionEnd::Shutdown,
                }
            }
            _ = &mut idle_deadline => {
                return transient(format!("no data for {:?} (read_timeout)", settings.read_timeout));
            }
            _ = &mut pong_deadline, if awaiting_pong => {
                return transient(format!("no pong within {:?} (pong_timeout)", settings.pong_timeout));
            }
        }
    }
}

/// Sends `message`, failing when the peer does not take it within `timeout`.
///
/// # Errors
/// The send failed, or did not finish within `timeout`.
pub(crate) async fn send<S>(
    socket: &mut S,
    message: Message,
    timeout: Duration,
) -> Result<(), String>
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    match tokio::time::timeout(timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "the peer took no data for {timeout:?} (send_timeout)"
        )),
    }
}

/// The connection end for a close frame: 1003 and 1008 stop the source, anything else
/// reconnects.
fn closed(
    frame: Option<CloseFrame>,
    transient: impl Fn(String) -> ConnectionEnd,
    permanent: impl Fn(String, &str) -> ConnectionEnd,
) -> ConnectionEnd {
    let Some(frame) = frame else {
        return transient("the server closed the connection without a code".to_owned());
    };
    let code = u16::from(frame.code);
    let reason = frame.reason.as_str();
    match frame.code {
        CloseCode::Policy | CloseCode::Unsupported => permanent(
            format!("the server closed the connection with code {code}: `{reason}`"),
            "check the subscribe messages, the credentials and the provider's limits",
        ),
        _ => transient(format!(
            "the server closed the connection with code {code}: `{reason}`"
        )),
    }
}

/// What became of one message.
enum Delivered {
    Continue,
    Gap,
    SinkGone,
}

/// Decodes one message and sends its records (waiting while the channel is full).
async fn deliver(
    settings: &WebSocketSettings,
    context: &SourceContext,
    progress: &mut Progress,
    payload: Bytes,
) -> Delivered {
    let decoded = progress.decoder.decode(payload, SystemTime::now());
    let metrics = &context.metrics;
    metrics
        .records_received
        .inc_by(decoded.records.len() as u64 + decoded.filtered);
    if decoded.filtered > 0 {
        metrics.records_filtered.inc_by(decoded.filtered);
    }
    for gap in &decoded.gaps {
        metrics.sequence_gaps.inc();
        tracing::warn!(source = %context.name, scope = %gap.scope, first_missing = gap.first, last_missing = gap.last, "sequence gap: the feed skipped records");
    }
    // Data arrived: this connection counts as healthy for the backoff.
    progress.connected = true;
    let resubscribe = settings.resubscribe_on_gap && !decoded.gaps.is_empty();
    let first_gap_record = decoded.gaps.first().map(|gap| gap.record);
    for (index, mut record) in decoded.records.into_iter().enumerate() {
        if resubscribe && first_gap_record.is_some_and(|gap| index >= gap) {
            // The resubscribe asks again from the last position before the gap: records from
            // the gap on must not move the position past the missing ones.
            record.position = None;
        }
        if let Some(position) = &record.position {
            progress.position = Some(Arc::clone(&position.0));
        }
        if context.records.send(record).await.is_err() {
            return Delivered::SinkGone;
        }
    }
    if resubscribe {
        Delivered::Gap
    } else {
        Delivered::Continue
    }
}
