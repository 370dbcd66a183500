//! The generated JSON API of the `rest_poll` benchmark: an axum server on 127.0.0.1 in the
//! benchmark process, serving collections `/items/<c>` of cursor-paginated pages
//! `{"data": [records], "next_cursor": "p00000001"}` (`null` on the last page) of generated
//! [`RECORD_BYTES`]-byte JSON records with unique ids, with an optional latency per page and an
//! optional budget (429 with `Retry-After: 1` above it), and logging every exchange; then the
//! figures drawn from that log ([`Log`]).

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::ensure;
use axum::{
    extract::{Path as UrlPath, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

/// Size of every generated record, bytes (the padding of its `body` field makes it so).
pub(crate) const RECORD_BYTES: usize = 200;
/// The budget's window.
const WINDOW: Duration = Duration::from_secs(1);

/// The generated API's content and behaviour.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Collections `/items/0` … `/items/<collections - 1>`.
    pub(crate) collections: u32,
    /// Pages per collection.
    pub(crate) pages: u64,
    /// Records per page.
    pub(crate) records_per_page: u32,
    /// Sleep before answering a page.
    pub(crate) latency: Duration,
    /// Requests per sliding second above which the API answers 429.
    pub(crate) budget: Option<usize>,
}

impl Shape {
    /// Records of all collections.
    pub(crate) fn records(&self) -> u64 {
        self.collections as u64 * self.pages * self.records_per_page as u64
    }

    /// Bytes of all records.
    pub(crate) fn payload_bytes(&self) -> u64 {
        self.records() * RECORD_BYTES as u64
    }

    /// An error if the largest ids do not fit a record of [`RECORD_BYTES`].
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let mut record = String::new();
        push_record(
            &mut record,
            self.collections.saturating_sub(1),
            self.pages.saturating_sub(1),
            self.records_per_page.saturating_sub(1),
        );
        ensure!(
            self.collections <= 999 && self.pages <= 99_999_999 && record.len() == RECORD_BYTES,
            "records do not fit {RECORD_BYTES} bytes with this many collections, pages or records"
        );
        Ok(())
    }
}

/// The id of record `index` of page `page` (0-based) of collection `collection`.
pub(crate) fn record_id(collection: u32, page: u64, index: u32) -> String {
    format!("c{collection:03}-p{page:08}-r{index:04}")
}

/// The cursor that asks for page `page`.
pub(crate) fn cursor(page: u64) -> String {
    format!("p{page:08}")
}

/// Appends one record of exactly [`RECORD_BYTES`] bytes (its `body` pads it).
pub(crate) fn push_record(out: &mut String, collection: u32, page: u64, index: u32) {
    let start = out.len();
    let _ = write!(
        out,
        r#"{{"id":"c{collection:03}-p{page:08}-r{index:04}","collection":{collection},"page":{page},"index":{index},"updated_at":"2024-05-01T12:{:02}:{:02}Z","status":"open","title":"Item {index} of page {page}","body":""#,
        page % 60,
        index % 60,
    );
    let closing = 2; // `"}`
    let used = out.len() - start + closing;
    out.extend(std::iter::repeat_n('x', RECORD_BYTES.saturating_sub(used)));
    out.push_str("\"}");
}

/// The body of page `page` of `collection`.
fn page_body(shape: &Shape, collection: u32, page: u64) -> String {
    let mut body = String::with_capacity(shape.records_per_page as usize * (RECORD_BYTES + 1) + 64);
    body.push_str(r#"{"data":["#);
    for index in 0..shape.records_per_page {
        if index > 0 {
            body.push(',');
        }
        push_record(&mut body, collection, page, index);
    }
    body.push_str(r#"],"next_cursor":"#);
    if page + 1 < shape.pages {
        let _ = write!(body, "\"{}\"", cursor(page + 1));
    } else {
        body.push_str("null");
    }
    body.push('}');
    body
}

/// One request as the API saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exchange {
    /// When the handler got it.
    arrived: Instant,
    /// When the handler returned the answer (after the latency).
    answered: Instant,
    /// The collection asked for.
    collection: u32,
    /// The page asked for (`u64::MAX` for a cursor that is not one).
    page: u64,
    /// The status answered.
    status: u16,
}

/// The API's state: its shape, the arrivals of the last second, and every exchange.
struct ApiState {
    /// What it serves.
    shape: Shape,
    /// Arrivals of the last [`WINDOW`], when there is a budget.
    recent: Mutex<VecDeque<Instant>>,
    /// Every exchange, in the order the answers were made.
    log: Mutex<Vec<Exchange>>,
}

/// The API on 127.0.0.1, stopped when dropped.
pub(crate) struct Api {
    /// Where it listens.
    pub(crate) address: SocketAddr,
    /// Shared with the handler.
    state: Arc<ApiState>,
    /// The server task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Api {
    /// Serves `shape` on a free port of 127.0.0.1.
    pub(crate) async fn start(shape: Shape) -> anyhow::Result<Self> {
        let state = Arc::new(ApiState {
            shape,
            recent: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::with_capacity(
                (shape.collections as u64 * shape.pages) as usize + 1024,
            )),
        });
        let router = Router::new()
            .route("/items/{collection}", get(serve_page))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("the API server failed: {error}");
            }
        });
        Ok(Api {
            address,
            state,
            task,
        })
    }

    /// The URL of `collection`.
    pub(crate) fn url(&self, collection: u32) -> String {
        format!("http://{}/items/{collection}", self.address)
    }

    /// Whether any request arrived yet.
    pub(crate) fn requested(&self) -> bool {
        !self.state.log.lock().expect("log lock").is_empty()
    }

    /// Every exchange so far.
    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        self.state.log.lock().expect("log lock").clone()
    }
}

/// `GET /items/{collection}[?cursor=pNNNNNNNN]`: 429 when over the budget (at once), else the
/// page after the latency; 404 for a page or collection that does not exist.
async fn serve_page(
    State(api): State<Arc<ApiState>>,
    UrlPath(collection): UrlPath<u32>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let arrived = Instant::now();
    let shape = api.shape;
    let over_budget = shape.budget.is_some_and(|budget| {
        let mut recent = api.recent.lock().expect("window lock");
        while recent
            .front()
            .is_some_and(|at| arrived.duration_since(*at) >= WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back(arrived);
        recent.len() > budget
    });
    let page = match query.get("cursor") {
        None => Some(0),
        Some(text) => text.strip_prefix('p').and_then(|n| n.parse::<u64>().ok()),
    }
    .filter(|page| collection < shape.collections && *page < shape.pages);
    let (status, response) = if over_budget {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")].into_response(),
        )
    } else if let Some(page) = page {
        if !shape.latency.is_zero() {
            tokio::time::sleep(shape.latency).await;
        }
        let body = page_body(&shape, collection, page);
        (
            StatusCode::OK,
            ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        )
    } else {
        (StatusCode::NOT_FOUND, ().into_response())
    };
    api.log.lock().expect("log lock").push(Exchange {
        arrived,
        answered: Instant::now(),
        collection,
        page: page.unwrap_or(u64::MAX),
        status: status.as_u16(),
    });
    (status, response).into_response()
}

/// What the API's log says.
pub(crate) struct Log {
    /// Every request.
    pub(crate) requests: usize,
    /// Answered 200.
    pub(crate) ok: usize,
    /// Answered 429.
    pub(crate) too_many: usize,
    /// Answered anything else.
    pub(crate) other: usize,
    /// Distinct (collection, page) answered 200.
    pub(crate) distinct_pages: usize,
    /// The first request's arrival.
    pub(crate) first_request: Instant,
    /// The last 200's answer (the first request's arrival when there was none).
    pub(crate) last_page: Instant,
    /// Most requests that arrived in one sliding second (`(t - 1 s, t]`).
    pub(crate) busiest_second: usize,
    /// Shortest time between a request and the `budget`-th after it, if there were that many.
    pub(crate) shortest_span: Option<Duration>,
    /// Requests that arrived in each whole second after the first.
    pub(crate) per_second: Vec<usize>,
    /// Per collection: first request → its last 200's answer (`None` if it had no 200).
    pub(crate) finished: Vec<Option<Duration>>,
    /// First request → the end of the first walk to end (the earliest of [`Log::finished`]):
    /// while every source was still walking, and so (when they are enough) demand exceeded
    /// the budget. `None` when no walk served a page.
    pub(crate) saturated: Option<Duration>,
    /// Requests (429s included) that arrived within [`Log::saturated`].
    pub(crate) saturated_requests: usize,
    /// Of [`Log::saturated_requests`], those answered 429.
    pub(crate) saturated_too_many: usize,
    /// Gaps between consecutive arrivals within [`Log::saturated`], shortest first.
    pub(crate) saturated_gaps: Vec<Duration>,
}

impl Log {
    /// The log's figures, `None` when it is empty; `budget` sizes [`Log::shortest_span`].
    pub(crate) fn of(exchanges: &[Exchange], budget: usize) -> Option<Log> {
        let mut arrivals: Vec<Instant> = exchanges.iter().map(|x| x.arrived).collect();
        arrivals.sort_unstable();
        let first_request = *arrivals.first()?;
        let ok: Vec<&Exchange> = exchanges.iter().filter(|x| x.status == 200).collect();
        let too_many = exchanges.iter().filter(|x| x.status == 429).count();
        let last_page = ok.iter().map(|x| x.answered).max().unwrap_or(first_request);
        let distinct_pages = ok
            .iter()
            .map(|x| (x.collection, x.page))
            .collect::<BTreeSet<_>>()
            .len();
        let mut busiest_second = 0;
        let mut start = 0;
        for (end, at) in arrivals.iter().enumerate() {
            while at.duration_since(arrivals[start]) >= WINDOW {
                start += 1;
            }
            busiest_second = busiest_second.max(end - start + 1);
        }
        let shortest_span = arrivals
            .windows(budget.saturating_add(1))
            .map(|w| w[w.len() - 1].duration_since(w[0]))
            .min();
        let mut per_second = Vec::new();
        for at in &arrivals {
            let second = at.duration_since(first_request).as_secs() as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
        let collections = exchanges
            .iter()
            .map(|x| x.collection.saturating_add(1).min(1000))
            .max()
            .unwrap_or(0);
        let finished: Vec<Option<Duration>> = (0..collections)
            .map(|c| {
                ok.iter()
                    .filter(|x| x.collection == c)
                    .map(|x| x.answered.duration_since(first_request))
                    .max()
            })
            .collect();
        let saturated = finished.iter().flatten().min().copied();
        let within = |at: Instant| saturated.is_some_and(|s| at.duration_since(first_request) <= s);
        let saturated_arrivals: Vec<Instant> = arrivals
            .iter()
            .copied()
            .take_while(|at| within(*at))
            .collect();
        let saturated_too_many = exchanges
            .iter()
            .filter(|x| x.status == 429 && within(x.arrived))
            .count();
        let mut saturated_gaps: Vec<Duration> = saturated_arrivals
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .collect();
        saturated_gaps.sort_unstable();
        Some(Log {
            requests: exchanges.len(),
            ok: ok.len(),
            too_many,
            other: exchanges.len() - ok.len() - too_many,
            distinct_pages,
            first_request,
            last_page,
            busiest_second,
            shortest_span,
            per_second,
            finished,
            saturated,
            saturated_requests: saturated_arrivals.len(),
            saturated_too_many,
            saturated_gaps,
        })
    }

    /// The `q`-quantile (0 to 1, nearest rank) of [`Log::saturated_gaps`], if there are any.
    pub(crate) fn saturated_gap(&self, q: f64) -> Option<Duration> {
        let last = self.saturated_gaps.len().checked_sub(1)?;
        let rank = (q.clamp(0.0, 1.0) * last as f64).round() as usize;
        self.saturated_gaps.get(rank).copied()
    }
}
