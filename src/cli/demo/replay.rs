//! An SSE server on 127.0.0.1 that replays recorded events, for the demo, the integration
//! tests and the benchmark.
//!
//! Every event carries an `id:`; a request with `Last-Event-ID` resumes right after that event
//! (WHATWG HTML §9.2). It can end connections after a number of events (to exercise resume),
//! start each stream with a `retry:` field, and count what it served. After the last event the
//! connection stays open and idle, as a live feed's would.
//!
//! [`ReplayServer::start`] serves a list of events held in memory;
//! [`ReplayServer::start_wikimedia`] serves the same events as [`wikimedia_feed`] but makes each
//! one when it is written, so a feed of millions of events costs no memory (the benchmark).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One event to serve.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    /// The `id:` field (unique within the feed).
    pub id: String,
    /// The `event:` field, if any.
    pub event_type: Option<String>,
    /// The `data:` payload (one line).
    pub data: String,
}

/// How the server behaves.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// End the connection after this many events, on each of the first `drops` connections.
    pub drop_after: Option<usize>,
    /// How many connections are dropped (see `drop_after`).
    pub drops: usize,
    /// A `retry:` value (milliseconds) sent at the start of every stream.
    pub retry_ms: Option<u64>,
    /// Hold back the event with this index, and every later one, on every connection until
    /// [`ReplayServer::release`] is called (the connection stays open and idle meanwhile).
    pub pause_before: Option<usize>,
    /// Makes the feed live: it grows at this many events per second from the server's start
    /// (event `i` exists `i / rate` seconds after it), so a connection gets the backlog that
    /// exists at once, then each event as it appears. `None`: every event exists from the start.
    pub events_per_second: Option<u32>,
}

/// What the server saw and did.
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Events written to a socket (an event re-sent after a resume counts again).
    pub events_served: AtomicU64,
    /// The `Last-Event-ID` header of each request, in order (`None` when absent).
    pub last_event_ids: Mutex<Vec<Option<String>>>,
    /// When each request arrived, in order.
    pub connected_at: Mutex<Vec<std::time::Instant>>,
}

struct Feed {
    events: Events,
    options: ReplayOptions,
    /// True once [`ReplayServer::release`] was called.
    released: tokio::sync::watch::Sender<bool>,
    stats: Arc<ReplayStats>,
    /// When the server started (the origin of `events_per_second`).
    started: tokio::time::Instant,
}

impl Feed {
    /// How many events exist now (see [`ReplayOptions::events_per_second`]).
    fn existing(&self) -> usize {
        match self.options.events_per_second {
            Some(rate) => (self.started.elapsed().as_secs_f64() * f64::from(rate))
                .min(usize::MAX as f64) as usize,
            None => usize::MAX,
        }
    }

    /// Waits until event `i` exists.
    async fn appeared(&self, i: usize) {
        if let Some(rate) = self.options.events_per_second.filter(|rate| *rate > 0) {
            let at = self.started + Duration::from_secs_f64((i + 1) as f64 / f64::from(rate));
            tokio::time::sleep_until(at).await;
        }
    }
}

/// What a feed serves.
enum Events {
    /// Events held in memory, with the position of each id.
    Listed {
        events: Vec<FeedEvent>,
        index: HashMap<String, usize>,
    },
    /// `count` Wikimedia events made on the fly, as [`wikimedia_feed`] would list them.
    Wikimedia {
        count: usize,
        recorded: Vec<&'static str>,
    },
}

impl Events {
    fn len(&self) -> usize {
        match self {
            Events::Listed { events, .. } => events.len(),
            Events::Wikimedia { count, .. } => *count,
        }
    }

    /// The position of the event with `id`, if the feed has it.
    fn position(&self, id: &str) -> Option<usize> {
        match self {
            Events::Listed { index, .. } => index.get(id).copied(),
            Events::Wikimedia { count, .. } => wikimedia_event_index(id).filter(|i| i < count),
        }
    }

    /// Writes the `i`-th event in SSE framing.
    fn write(&self, i: usize, out: &mut BytesMut) {
        match self {
            Events::Listed { events, .. } => write_event(out, &events[i]),
            Events::Wikimedia { recorded, .. } => {
                use std::fmt::Write as _;
                out.put_slice(b"event: message\nid: ");
                out.put_slice(WIKIMEDIA_ID_PREFIX.as_bytes());
                write!(out, "{i}").expect("writing to BytesMut cannot fail");
                out.put_slice(WIKIMEDIA_ID_SUFFIX.as_bytes());
                out.put_slice(b"\ndata: ");
                out.put_slice(recorded[i % recorded.len()].as_bytes());
                out.put_slice(b"\n\n");
            }
        }
    }
}

/// A running replay server.
pub struct ReplayServer {
    address: SocketAddr,
    stats: Arc<ReplayStats>,
    stop: CancellationToken,
    feed: Arc<Feed>,
}

impl ReplayServer {
    /// Serves `events` at `http://<address>/stream` until dropped.
    ///
    /// # Errors
    /// 127.0.0.1 cannot be bound.
    pub async fn start(events: Vec<FeedEvent>, options: ReplayOptions) -> std::io::Result<Self> {
        let index = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
        Self::serve(Events::Listed { events, index }, options).await
    }

    /// Serves the same `count` events as `wikimedia_feed(count)` (same ids, types and data,
    /// same resume behaviour), making each event when it is written instead of holding them.
    ///
    /// # Errors
    /// 127.0.0.1 cannot be bound.
    pub async fn start_wikimedia(count: usize, options: ReplayOptions) -> std::io::Result<Self> {
        let recorded = recorded_wikimedia_events();
        Self::serve(Events::Wikimedia { count, recorded }, options).await
    }

    async fn serve(events: Events, options: ReplayOptions) -> std::io::Result<Self> {
        let stats = Arc::new(ReplayStats::default());
        let feed = Arc::new(Feed {
            events,
            options,
            released: tokio::sync::watch::Sender::new(false),
            stats: Arc::clone(&stats),
            started: tokio::time::Instant::now(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let stop = CancellationToken::new();
        let feed_handle = Arc::clone(&feed);
        let app = Router::new().route("/stream", get(stream)).with_state(feed);
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            // Open streams never finish by themselves, so the server is stopped by dropping
            // the task rather than by a graceful shutdown that would wait for them.
            tokio::select! {
                _ = serve_stop.cancelled() => {}
                _ = axum::serve(listener, app) => {}
            }
        });
        Ok(ReplayServer {
            address,
            stats,
            stop,
            feed: feed_handle,
        })
    }

    /// Lets every connection go past `pause_before` (see [`ReplayOptions`]).
    pub fn release(&self) {
        self.feed.released.send_replace(true);
    }

    /// The stream URL.
    pub fn url(&self) -> String {
        format!("http://{}/stream", self.address)
    }

    /// What the server saw and did.
    pub fn stats(&self) -> &ReplayStats {
        &self.stats
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Events written per body chunk: large chunks keep the server from being the bottleneck.
const CHUNK_BYTES: usize = 64 * 1024;

async fn stream(State(feed): State<Arc<Feed>>, headers: HeaderMap) -> Response {
    let connection = feed.stats.connections.fetch_add(1, Ordering::Relaxed);
    feed.stats
        .connected_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(std::time::Instant::now());
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    feed.stats
        .last_event_ids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(last_event_id.clone());
    let start = match &last_event_id {
        Some(id) => match feed.events.position(id) {
            Some(i) => i + 1,
            None => return (StatusCode::BAD_REQUEST, "unknown Last-Event-ID").into_response(),
        },
        None => 0,
    };
    let limit = match feed.options.drop_after {
        Some(n) if connection < feed.options.drops => Some(n),
        _ => None,
    };
    let len = feed.events.len();
    let end = limit.map_or(len, |n| (start + n).min(len));
    let closes = limit.is_some();
    let retry = feed.options.retry_ms;
    let feed_for_body = Arc::clone(&feed);
    let body = async_stream_body(feed_for_body, start, end, closes, retry);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response parts are valid")
}

fn async_stream_body(
    feed: Arc<Feed>,
    start: usize,
    end: usize,
    closes: bool,
    retry: Option<u64>,
) -> Body {
    let chunks = futures::stream::unfold((start, retry, false), move |(next, retry, done)| {
        let feed = Arc::clone(&feed);
        async move {
            if done {
                return None;
            }
            if next >= end {
                if closes {
                    return None;
                }
                // Idle like a live feed until the client goes away.
                futures::future::pending::<()>().await;
                return None;
            }
            let mut chunk = BytesMut::with_capacity(CHUNK_BYTES + 2048);
            if let Some(ms) = retry {
                // In the first event's block, as most servers send it.
                chunk.put_slice(format!("retry: {ms}\n").as_bytes());
            }
            // Held back events wait for the release (the connection stays open meanwhile).
            let mut released = feed.released.subscribe();
            let held_from = feed.options.pause_before.filter(|_| !*released.borrow());
            let mut stop_at = held_from.map_or(end, |p| end.min(p.max(next)));
            if stop_at == next {
                let _ = released.wait_for(|released| *released).await;
                stop_at = end;
            }
            // A live feed serves what exists, then waits for the next event to appear.
            if feed.existing() <= next {
                feed.appeared(next).await;
            }
            stop_at = stop_at.min(feed.existing().max(next + 1));
            let mut i = next;
            while i < stop_at && chunk.len() < CHUNK_BYTES {
                feed.events.write(i, &mut chunk);
                i += 1;
            }
            feed.stats
                .events_served
                .fetch_add((i - next) as u64, Ordering::Relaxed);
            let item: Result<Bytes, Infallible> = Ok(chunk.freeze());
            Some((item, (i, None, false)))
        }
    });
    Body::from_stream(chunks)
}

fn write_event(out: &mut BytesMut, event: &FeedEvent) {
    if let Some(event_type) = &event.event_type {
        out.put_slice(b"event: ");
        out.put_slice(event_type.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"id: ");
    out.put_slice(event.id.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(event.data.as_bytes());
    out.put_slice(b"\n\n");
}

/// The 100 recorded Wikimedia recentchange events shipped in `data/wikimedia/` (MIT, see the
/// licence files there), one JSON document each.
pub fn recorded_wikimedia_events() -> Vec<&'static str> {
    include_str!("../../../data/wikimedia/recentchange-99-events.polars-book.ndjson")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect()
}

/// `count` events cycling through the recorded Wikimedia events, with ids in EventStreams'
/// own format (a JSON array of topic/partition/offset) and consecutive offsets.
pub fn wikimedia_feed(count: usize) -> Vec<FeedEvent> {
    let recorded = recorded_wikimedia_events();
    (0..count)
        .map(|i| FeedEvent {
            id: wikimedia_event_id(i),
            event_type: Some("message".to_owned()),
            data: recorded[i % recorded.len()].to_owned(),
        })
        .collect()
}

/// The id of the `i`-th replayed event, in EventStreams' format.
pub fn wikimedia_event_id(i: usize) -> String {
    format!("{WIKIMEDIA_ID_PREFIX}{i}{WIKIMEDIA_ID_SUFFIX}")
}

/// The index `i` of an id made by [`wikimedia_event_id`]`(i)`; `None` for any other text.
pub fn wikimedia_event_index(id: &str) -> Option<usize> {
    let digits = id
        .strip_prefix(WIKIMEDIA_ID_PREFIX)?
        .strip_suffix(WIKIMEDIA_ID_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: usize = digits.parse().ok()?;
    // Only the canonical spelling (no leading zeros) is an id the feed made.
    (i.to_string() == digits).then_some(i)
}

const WIKIMEDIA_ID_PREFIX: &str =
    r#"[{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":"#;
const WIKIMEDIA_ID_SUFFIX: &str = "}]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikimedia_ids_round_trip() {
        for i in [0, 1, 98, 99, 123_456_789] {
            assert_eq!(wikimedia_event_index(&wikimedia_event_id(i)), Some(i));
        }
        assert_eq!(
            wikimedia_event_id(7),
            r#"[{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":7}]"#
        );
        for other in [
            "",
            "7",
            "[{\"offset\":7}]",
            &wikimedia_event_id(7).replace('7', "07"),
        ] {
            assert_eq!(wikimedia_event_index(other), None, "{other}");
        }
    }

    #[test]
    fn generated_events_are_framed_like_listed_ones() {
        let count = 250;
        let listed = Events::Listed {
            events: wikimedia_feed(count),
            index: HashMap::new(),
        };
        let generated = Events::Wikimedia {
            count,
            recorded: recorded_wikimedia_events(),
        };
        for i in [0, 1, 98, 99, 249] {
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            listed.write(i, &mut a);
            generated.write(i, &mut b);
            assert_eq!(a, b, "event {i}");
        }
        assert_eq!(generated.position(&wikimedia_event_id(249)), Some(249));
        assert_eq!(generated.position(&wikimedia_event_id(250)), None);
    }
}
