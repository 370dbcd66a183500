//! The opening handshake (RFC 6455 §4): the request with the source's headers, the size caps,
//! and `connect_timeout`. Used by each connection of the source, by the GraphQL subscription
//! source (which adds its subprotocol header), and by `tributary check --connect`, which
//! completes it and closes the connection.

use secrecy::ExposeSecret;
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::config::WebSocketSettings;
use crate::{
    http::{classify_status, StatusClass},
    sources::Probe,
};

/// An open WebSocket connection.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What a handshake needs: where, with which headers, the size caps and the time allowed.
pub(crate) struct Handshake<'a> {
    /// The URL (may hold secrets; never logged).
    pub url: String,
    /// Request headers (values may be secrets), e.g. `Sec-WebSocket-Protocol`.
    pub headers: &'a [(String, secrecy::SecretString)],
    /// Largest message, bytes (all its frames together).
    pub max_message_bytes: usize,
    /// Largest single frame, bytes.
    pub max_frame_bytes: usize,
    /// Time allowed for TCP, TLS and the HTTP upgrade together.
    pub connect_timeout: std::time::Duration,
    /// The proxy and TLS settings.
    pub network: &'a crate::http::Network,
}

impl WebSocketSettings {
    /// The handshake of a connection resuming at `position` (`{position}` in the URL).
    fn handshake(&self, position: Option<&str>) -> Handshake<'_> {
        Handshake {
            url: self.url_at(position),
            headers: &self.headers,
            max_message_bytes: self.max_message_bytes,
            max_frame_bytes: self.max_frame_bytes,
            connect_timeout: self.connect_timeout,
            network: &self.network,
        }
    }
}

/// Why a handshake failed.
pub(crate) enum HandshakeError {
    /// Worth another attempt (a timeout, a refused connection, a 5xx or 429).
    Transient(String),
    /// Retrying will not help (a bad URL or header, a 4xx, a redirect); with the fix.
    Permanent(String, &'static str),
}

/// Connects to the source's URL (`{position}` replaced by `position`) with its headers, and
/// completes the handshake within `connect_timeout` (see [`open`]).
///
/// # Errors
/// [`HandshakeError`], its message free of the URL (which may carry secrets).
pub(super) async fn connect(
    settings: &WebSocketSettings,
    position: Option<&str>,
) -> Result<Socket, HandshakeError> {
    open(&settings.handshake(position)).await
}

/// Connects to `handshake.url` with its headers and size caps, through the proxy and TLS
/// settings of `network`, and completes the handshake within `connect_timeout`. No redirect is
/// followed: tungstenite reports a 3xx as an HTTP error. A `Sec-WebSocket-Protocol` header
/// makes tungstenite require the server to choose one of the subprotocols it lists.
///
/// # Errors
/// [`HandshakeError`], its message free of the URL (which may carry secrets).
pub(crate) async fn open(settings: &Handshake<'_>) -> Result<Socket, HandshakeError> {
    let url = settings.url.as_str();
    let target = url::Url::parse(url).map_err(|error| {
        HandshakeError::Permanent(format!("invalid URL: {error}"), "fix the source's `url`")
    })?;
    let mut request = url.into_client_request().map_err(|error| {
        HandshakeError::Permanent(
            format!("invalid WebSocket request: {error}"),
            "fix the source's `url`",
        )
    })?;
    for (name, value) in settings.headers {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value.expose_secret()),
        ) else {
            return Err(HandshakeError::Permanent(
                format!("invalid value for header `{name}`"),
                "fix the source's `headers`",
            ));
        };
        request.headers_mut().insert(name, value);
    }
    // Size caps set here, not left to tungstenite's defaults (64 MiB messages).
    let limits = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_frame_bytes));
    // The TCP connection (through the proxy, if one applies), then TLS from the source's own
    // rustls config (`tls`) for `wss://`, then the handshake, all within `connect_timeout`.
    let connector = tokio_tungstenite::Connector::Rustls(settings.network.rustls());
    let connect = async {
        let stream = settings
            .network
            .connect(&target)
            .await
            .map_err(HandshakeError::Transient)?;
        Ok::<_, HandshakeError>(
            tokio_tungstenite::client_async_tls_with_config(
                request,
                stream,
                Some(limits),
                Some(connector),
            )
            .await,
        )
    };
    let handshake = match tokio::time::timeout(settings.connect_timeout, connect).await {
        Ok(Err(error)) => return Err(error),
        Ok(Ok(done)) => Ok(done),
        Err(elapsed) => Err(elapsed),
    };
    match handshake {
        Err(_) => Err(HandshakeError::Transient(format!(
            "no connection within {:?} (connect_timeout)",
            settings.connect_timeout
        ))),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let message = format!("handshake answered HTTP {status}");
            Err(match classify_status(status) {
                StatusClass::Transient => HandshakeError::Transient(message),
                _ => HandshakeError::Permanent(
                    message,
                    "check the URL and the credentials in `headers`",
                ),
            })
        }
        Ok(Err(tungstenite::Error::Url(error))) => Err(HandshakeError::Permanent(
            format!("invalid URL: {error}"),
            "fix the source's `url`",
        )),
        Ok(Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(error),
        ))) => Err(HandshakeError::Permanent(
            format!("the server did not accept the WebSocket subprotocol: {error}"),
            "check that the server speaks the configured `protocol`",
        )),
        Ok(Err(error)) => Err(HandshakeError::Transient(format!(
            "cannot connect: {error}"
        ))),
        Ok(Ok((socket, _response))) => Ok(socket),
    }
}

/// Completes the handshake as a new source would (no position), then closes the connection
/// (close code 1000) without subscribing or reading a message.
pub(super) async fn probe(settings: &WebSocketSettings) -> Probe {
    match connect(settings, None).await {
        Ok(mut socket) => {
            use futures::SinkExt;
            // The close is a courtesy: the handshake already answered the question.
            let _ = tokio::time::timeout(settings.send_timeout, socket.send(Message::Close(None)))
                .await;
            Probe::Ok("handshake completed (HTTP 101)".to_owned())
        }
        Err(HandshakeError::Transient(message) | HandshakeError::Permanent(message, _)) => {
            Probe::Failed(message)
        }
    }
}
