//! A WebSocket server on 127.0.0.1 that hands each accepted connection to a test's handler,
//! and records each connection's request URI and arrival time.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_tungstenite::{
    tungstenite::{
        handshake::server::{Request, Response},
        Message,
    },
    WebSocketStream,
};

pub type Socket = WebSocketStream<tokio::net::TcpStream>;

/// One accepted connection: its index, its request URI, when it came.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub uri: String,
    pub at: Instant,
}

/// A WebSocket server on 127.0.0.1 that hands each connection to `handler` with its index.
pub struct WsServer {
    pub url: String,
    accepted: Arc<Mutex<Vec<Accepted>>>,
}

impl WsServer {
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(usize, String, Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
        let log = Arc::clone(&accepted);
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let uri = Arc::new(Mutex::new(String::new()));
                let seen = Arc::clone(&uri);
                // The error type is tungstenite's, fixed by `accept_hdr_async`.
                #[allow(clippy::result_large_err)]
                let callback = move |request: &Request, response: Response| {
                    *seen.lock().unwrap() = request.uri().to_string();
                    Ok(response)
                };
                let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    continue;
                };
                let uri = uri.lock().unwrap().clone();
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(Accepted {
                        uri: uri.clone(),
                        at: Instant::now(),
                    });
                    log.len() - 1
                };
                let handler = Arc::clone(&handler);
                tokio::spawn(async move { handler(index, uri, socket).await });
            }
        });
        WsServer { url, accepted }
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }
}

/// Reads `count` text messages (the subscribe messages).
pub async fn read_texts(socket: &mut Socket, count: usize) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < count {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
            Some(Ok(_)) => {}
            other => panic!("the client went away before subscribing: {other:?}"),
        }
    }
    texts
}

/// Keeps a connection open, answering pings, until the client leaves.
pub async fn idle(mut socket: Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}

/// The `after` query parameter of a resuming connection's URI (0 when empty or absent).
pub fn after_param(uri: &str) -> u64 {
    uri.split("after=")
        .nth(1)
        .filter(|v| !v.is_empty())
        .map_or(0, |v| v.parse().unwrap())
}
