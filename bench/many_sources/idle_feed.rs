//! Idle SSE feeds for many sources: one HTTP server on 127.0.0.1 whose `GET /stream/<i>`
//! answers `200 text/event-stream`, sends one SSE comment (`: idle`, WHATWG HTML §9.2.6: a
//! line starting with a colon is ignored by the client) and then holds the stream open without
//! an event until the client goes away, as a quiet live feed does.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{
    body::Body,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

/// Pending connections the listening socket queues before `accept` (the kernel caps it at
/// `net.core.somaxconn`): thousands of sources connect at once when the daemon starts.
const LISTEN_BACKLOG: u32 = 4096;

/// What the server saw.
#[derive(Default)]
pub struct IdleStats {
    /// Stream requests answered.
    pub requests: AtomicUsize,
    /// Streams open now (a stream closes when its client goes away).
    pub open: AtomicUsize,
}

/// Counts a stream open until its body is dropped (the connection closed).
struct OpenStream(Arc<IdleStats>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running idle-feed server, stopped (no new connection accepted) when dropped; the streams
/// already open end when their clients close them.
pub struct IdleFeed {
    address: SocketAddr,
    stats: Arc<IdleStats>,
    stop: CancellationToken,
}

impl IdleFeed {
    /// Binds 127.0.0.1 on a free port and serves `/stream/<i>`.
    ///
    /// # Errors
    /// The socket cannot be made or bound.
    pub fn start() -> std::io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(([127, 0, 0, 1], 0).into())?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let address = listener.local_addr()?;
        let stats = Arc::new(IdleStats::default());
        let router = Router::new()
            .route("/stream/{i}", get(stream))
            .with_state(Arc::clone(&stats));
        let stop = CancellationToken::new();
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_stop.cancelled() => {}
                result = axum::serve(listener, router) => {
                    if let Err(error) = result {
                        eprintln!("idle feed server: {error}");
                    }
                }
            }
        });
        Ok(IdleFeed {
            address,
            stats,
            stop,
        })
    }

    /// The URL of stream `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}/stream/{i}", self.address)
    }

    /// What the server saw.
    pub fn stats(&self) -> &IdleStats {
        &self.stats
    }
}

impl Drop for IdleFeed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn stream(State(stats): State<Arc<IdleStats>>) -> Response {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let open = OpenStream(stats);
    let body =
        futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b": idle\n\n")) })
            .chain(futures::stream::pending())
            // The guard lives as long as the body stream, i.e. the connection.
            .map(move |chunk| {
                let _ = &open;
                chunk
            });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
