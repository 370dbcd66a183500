//! A programmable HTTP API on 127.0.0.1 for the polled sources' tests: every request is
//! recorded (method, path and query, headers, body, arrival time) and answered by the test's
//! handler.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    /// Path and query, e.g. `/items?page=2`.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl ApiRequest {
    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(&format!("http://x{}", self.target)).ok()?;
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// The running server.
pub struct ApiServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    requests: Arc<Mutex<Vec<ApiRequest>>>,
    in_flight_max: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Starts a server that answers every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<ApiRequest>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight_max = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (seen, current, max) = (
            Arc::clone(&requests),
            Arc::clone(&in_flight),
            Arc::clone(&in_flight_max),
        );
        let app = axum::Router::new().fallback(move |request: Request| {
            let (handler, seen, current, max) = (
                Arc::clone(&handler),
                Arc::clone(&seen),
                Arc::clone(&current),
                Arc::clone(&max),
            );
            async move {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let request = ApiRequest {
                    method: parts.method.to_string(),
                    target: parts
                        .uri
                        .path_and_query()
                        .map_or("/".into(), |p| p.to_string()),
                    headers: parts.headers,
                    body,
                    at: Instant::now(),
                };
                seen.lock().unwrap().push(request.clone());
                let response = handler(request).await;
                current.fetch_sub(1, Ordering::SeqCst);
                response
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ApiServer {
            base,
            requests,
            in_flight_max,
            task,
        }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The number of requests so far.
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight_max.load(Ordering::SeqCst)
    }
}

/// A JSON answer with extra headers.
pub fn json(status: u16, body: impl Into<String>, headers: &[(&str, String)]) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response.body(Body::from(body.into())).unwrap()
}

/// An answer with a status and headers only.
pub fn status(status: u16, headers: &[(&str, String)]) -> Response {
    let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response.body(Body::empty()).unwrap()
}

/// A collection of `count` items `{"id": "item-<n>", "n": <n>, "updated_at": <n>}`, n from 1.
pub fn items(range: std::ops::Range<usize>) -> Vec<serde_json::Value> {
    range
        .map(|n| serde_json::json!({ "id": format!("item-{n:04}"), "n": n, "updated_at": n }))
        .collect()
}
