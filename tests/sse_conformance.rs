//! The SSE vectors of web-platform-tests (`tests/data/sse-conformance`, BSD-3-Clause) through
//! the whole pipeline: each vector is served by an HTTP server on 127.0.0.1 to its own SSE
//! source of one daemon, and the records read back from Kafka must be exactly the events the
//! vector expects — data, order, event type and last event id.
//!
//! A vector may span several connections (a `<reconnect>` chunk, or a `<reconnect …>` marker in
//! its expected events, which means the server sends the same input again). Once a vector's
//! connections are used up the server answers 204 No Content, which per WHATWG HTML §9.2 ends
//! the source: the test waits for every source to finish rather than for a count of records.

mod common;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use common::*;
use serde::Deserialize;
use tributary::runtime::health::SourceState;

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    input: Option<String>,
    chunks: Option<Vec<String>>,
    expected: Vec<serde_json::Value>,
}

/// What the server sends for one vector: one list of writes per connection, and the content
/// type of its responses.
struct Served {
    connections: Vec<Vec<String>>,
    content_type: &'static str,
}

/// One connection as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    last_event_id: Option<String>,
}

#[derive(Default)]
struct ServerState {
    served: Vec<Served>,
    seen: Mutex<HashMap<usize, Vec<Seen>>>,
}

impl Vector {
    fn served(&self) -> Served {
        let reconnects_with_same_input = self
            .expected
            .iter()
            .any(|e| e.as_str().is_some_and(|m| m.starts_with("<reconnect")));
        let connections = match (&self.input, &self.chunks) {
            (Some(input), _) if reconnects_with_same_input => {
                vec![vec![input.clone()], vec![input.clone()]]
            }
            (Some(input), _) => vec![vec![input.clone()]],
            (None, Some(chunks)) => chunks
                .split(|chunk| chunk == "<reconnect>")
                .map(<[String]>::to_vec)
                .collect(),
            (None, None) => panic!("vector `{}` has neither input nor chunks", self.name),
        };
        let content_type = if self.name.starts_with("wrong Content-Type") {
            "text/x-bogus"
        } else if self.name.starts_with("charset parameter") {
            "text/event-stream;charset=windows-1252"
        } else {
            "text/event-stream"
        };
        Served {
            connections,
            content_type,
        }
    }

    /// The expected events: (type, data, last event id where the vector asserts one).
    fn expected_events(&self) -> Vec<(String, String, Option<String>)> {
        self.expected
            .iter()
            .filter_map(|e| e.as_object())
            .map(|e| {
                let text = |key: &str| e.get(key).and_then(|v| v.as_str()).map(str::to_owned);
                (
                    text("type").unwrap_or_else(|| "message".into()),
                    text("data").expect("an expected event has data"),
                    text("lastEventId"),
                )
            })
            .collect()
    }
}

async fn serve_vector(
    State(state): State<Arc<ServerState>>,
    Path(index): Path<usize>,
    headers: HeaderMap,
) -> Response {
    let connection = {
        let mut seen = state.seen.lock().unwrap();
        let connections = seen.entry(index).or_default();
        connections.push(Seen {
            at: Instant::now(),
            last_event_id: headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        connections.len() - 1
    };
    let served = &state.served[index];
    let Some(writes) = served.connections.get(connection) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    // Separate writes with a pause so that chunks reach the client as separate reads.
    let writes = writes.clone();
    let body =
        futures::stream::iter(writes.into_iter().enumerate()).then(|(i, write)| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, Infallible>(Bytes::from(write))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, served.content_type)
        .body(Body::from_stream(body))
        .unwrap()
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wpt_vector_produces_exactly_the_expected_records() {
    let file: VectorFile = serde_json::from_str(include_str!(
        "data/sse-conformance/wpt-eventsource-vectors.json"
    ))
    .unwrap();
    let vectors = file.vectors;
    assert_eq!(vectors.len(), 22, "the vector file has 22 vectors");

    let state = Arc::new(ServerState {
        served: vectors.iter().map(Vector::served).collect(),
        seen: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/vector/{index}", get(serve_vector))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let broker = Broker::mock();
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    let state_dir = tempfile::tempdir().unwrap();
    let mut toml = sse_config(
        &broker.brokers(),
        state_dir.path(),
        "v0",
        &format!("http://{address}/vector/0"),
        "wpt.0",
        "format = \"text\"",
    );
    for index in 0..vectors.len() {
        // One partition per topic, so that the topic's order is the feed's order.
        cluster.create_topic(&format!("wpt.{index}"), 1, 1).unwrap();
        cluster
            .create_topic(&format!("wpt.{index}.dlq"), 1, 1)
            .unwrap();
        if index > 0 {
            toml.push_str(&format!(
                r#"
[sources.v{index}]
type = "sse"
url = "http://{address}/vector/{index}"
topic = "wpt.{index}"
format = "text"
reconnect = {{ initial_delay = "20ms", max_delay = "2s" }}
"#
            ));
        }
    }
    let daemon = start_daemon(&toml).await;
    let sources: Vec<String> = (0..vectors.len()).map(|i| format!("v{i}")).collect();
    wait_until(
        "every source to finish (204) or fail",
        Duration::from_secs(60),
        || {
            sources.iter().all(|s| {
                matches!(
                    daemon.health().get(s),
                    Some(SourceState::Finished(_) | SourceState::Failed(_))
                )
            })
        },
    )
    .await;
    let states: Vec<Option<SourceState>> = sources.iter().map(|s| daemon.health().get(s)).collect();
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert!(
        !scrape.contains("tributary_records_dead_lettered_total{"),
        "nothing is dead-lettered in text format:\n{scrape}"
    );

    let seen = state.seen.lock().unwrap().clone();
    let mut failures = Vec::new();
    for (index, vector) in vectors.iter().enumerate() {
        let records = broker.read(&format!("wpt.{index}")).await;
        let got: Vec<(String, String, Option<String>)> = records
            .iter()
            .map(|r| {
                (
                    r.header("tributary.event_type").unwrap_or("").to_owned(),
                    String::from_utf8(r.payload.clone()).unwrap(),
                    r.header("tributary.event_id").map(str::to_owned),
                )
            })
            .collect();
        let expected = vector.expected_events();
        let matches = got.len() == expected.len()
            && got.iter().zip(&expected).all(|(g, e)| {
                g.0 == e.0
                    && g.1 == e.1
                    && match e.2.as_deref() {
                        None => true,
                        Some("") => g.2.is_none(),
                        Some(id) => g.2.as_deref() == Some(id),
                    }
            });
        if !matches {
            failures.push(format!(
                "`{}`: expected {expected:?}, got {got:?}",
                vector.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );

    // Connection-level expectations.
    let by_name = |prefix: &str| {
        let index = vectors
            .iter()
            .position(|v| v.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no vector named `{prefix}…`"));
        (index, seen.get(&index).cloned().unwrap_or_default())
    };
    let (index, connections) = by_name("lastEventId persists across reconnect");
    assert_eq!(
        connections[1].last_event_id.as_deref(),
        Some("42"),
        "vector {index}: the reconnect sends Last-Event-ID 42"
    );
    let (index, connections) = by_name("incomplete final event");
    let gap = connections[1].at - connections[0].at;
    assert!(
        gap >= Duration::from_millis(1_000),
        "vector {index}: reconnected after {gap:?}, before `retry:1000`"
    );
    assert_eq!(
        connections[1].last_event_id, None,
        "vector {index}: the id of the undispatched event is not sent"
    );
    let (index, connections) = by_name("wrong Content-Type");
    assert_eq!(
        connections.len(),
        1,
        "vector {index}: a wrong content type is not retried"
    );
    assert!(
        matches!(states[index], Some(SourceState::Failed(ref why)) if why.contains("text/x-bogus")),
        "vector {index}: the source fails and says why: {:?}",
        states[index]
    );
}
