//! The accept loop of one HTTP listener, bounded against slow and numerous clients.
//!
//! `axum::serve` takes no settings, so each listener runs this loop instead. Connections are
//! served by hyper's HTTP/1.1 server with a header read timeout
//! ([`hyper::server::conn::http1::Builder::header_read_timeout`], on tokio's timer): a client
//! that has not sent a complete request head (request line and headers) within
//! [`ConnectionLimits::header_read_timeout`] is disconnected. The clock starts when the
//! connection opens and again after each response, so it also closes keep-alive connections
//! left idle that long. How long a body may take is each webhook source's `body_timeout`. A
//! client that stops reading its answers is disconnected once one write has waited
//! [`ConnectionLimits::write_timeout`] (the socket wrapped in `tokio-io-timeout`'s
//! `TimeoutStream`), so it cannot hold a connection slot.
//!
//! At most [`ConnectionLimits::max_connections`] connections are open at once. Beyond that, a
//! new connection is accepted and closed at once with a reset (`SO_LINGER` 0, no `TIME_WAIT`)
//! and counted in `tributary_http_connections_rejected_total`, rather than left waiting in the
//! kernel's accept queue: a probe, a scrape or a webhook sender fails fast and retries instead
//! of waiting behind slow clients for up to a header read timeout per slot, the queue never
//! fills (which would drop connections silently, uncounted), and the pressure shows in the
//! metric.
//!
//! Only HTTP/1.1 is served: hyper's header read timeout exists for HTTP/1 only, and neither
//! Prometheus, Kubernetes probes nor a TLS-terminating proxy in front of the webhook routes
//! needs cleartext HTTP/2.
//!
//! Shutdown: when the token is cancelled the listener is closed, every connection is asked to
//! finish (hyper-util's [`GracefulShutdown`]: idle ones close at once, a request in progress is
//! answered first), and [`serve`] returns once all are gone. A client stuck in its headers
//! holds the shutdown for at most the header read timeout; one stuck in a webhook body is
//! answered 503 as soon as its source stops, without waiting for its `body_timeout`.

use std::{io, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

use crate::metrics::ListenerMetrics;

/// How long accepting pauses after an error that is not about one connection (out of file
/// descriptors, out of memory), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The bounds of one listener (`server.header_read_timeout`, `server.max_connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time a client may take to send a request's head, from the connection's start or
    /// the end of the previous response; then the connection is closed. Greater than zero.
    pub header_read_timeout: Duration,
    /// Longest time one write of an answer may wait for the client to read; then the
    /// connection is closed. Greater than zero.
    pub write_timeout: Duration,
    /// Most connections open at once; a connection beyond it is closed as soon as it is
    /// accepted. Greater than zero.
    pub max_connections: usize,
}

/// One listener: what it is called in logs and metrics, its socket and its bounds.
pub struct Listener {
    /// The config key of the address: `listen` or `webhook_listen` (the `listener` label).
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// The bounds.
    pub limits: ConnectionLimits,
    /// `tributary_http_connections{listener}` and
    /// `tributary_http_connections_rejected_total{listener}`.
    pub metrics: ListenerMetrics,
}

/// Serves `routes` on `listener` until `shutdown` is cancelled and every open connection has
/// finished (see the module documentation).
pub async fn serve(listener: Listener, routes: Router, shutdown: CancellationToken) {
    let Listener {
        name,
        socket,
        limits,
        metrics,
    } = listener;
    let address = socket.local_addr().ok();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    // Set while connections are being refused, so a burst logs one warning.
    let mut refusing = false;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::error!(listener = name, ?address, %error, "the HTTP server cannot accept connections; retrying in 1 s");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.connections_rejected.inc();
            if !refusing {
                refusing = true;
                tracing::warn!(
                    listener = name,
                    ?address,
                    max_connections = limits.max_connections,
                    "the HTTP listener is full: closing new connections until one ends; see `server.max_connections` and `tributary_http_connections_rejected_total`"
                );
            }
            // A reset, not a FIN: the client knows at once, and no socket lingers here.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        };
        refusing = false;
        let open = OpenConnection::new(slot, &metrics);
        // A write that waits longer than `write_timeout` for the client to read fails the
        // connection (hyper has no write timeout of its own).
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let connection = graceful.watch(http.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(routes.clone()),
        ));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Header read timeouts, resets, malformed requests: the client's doing.
                tracing::debug!(listener = name, %error, "HTTP connection closed with an error");
            }
            drop(open);
        });
    }
    drop(socket);
    graceful.shutdown().await;
}

/// Errors about one connection (it was reset before being accepted): the next accept is fine.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One open connection: holds its slot and counts itself in the gauge until dropped (also when
/// its task panics).
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, metrics: &ListenerMetrics) -> Self {
        metrics.connections.inc();
        OpenConnection {
            _slot: slot,
            gauge: metrics.connections.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
