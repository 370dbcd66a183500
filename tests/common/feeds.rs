//! Live feeds for the daemon-process suites (chaos, cluster failover): an SSE feed and a
//! WebSocket feed that grow at a fixed rate and resume from a position, and a REST collection
//! walked page by page; the records' identities, checked against what the feeds served.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tributary::{
    cli::demo::kafka_admin::ConsumedRecord,
    cli::demo::replay::{self, ReplayOptions, ReplayServer},
};

use super::{api::*, ws::*, Broker};

/// The three kinds of feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Sse,
    Ws,
    Rest,
}

impl Kind {
    /// The kind's short name (`sse`, `ws`, `rest`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Ws => "ws",
            Kind::Rest => "rest",
        }
    }
}

/// Records per REST page.
pub const PAGE_RECORDS: usize = 10;
/// How long the REST API takes to answer a page: a walk runs at most 100 pages/s.
pub const PAGE_LATENCY: Duration = Duration::from_millis(10);

/// Live feeds: SSE and WebSocket grow at `rate` records per second from their start; the REST
/// collection exists at once but is walked at most 100 pages per second.
pub struct Feeds {
    /// When the live feeds started growing.
    pub started: Instant,
    pub rate: u32,
    pub sse: ReplayServer,
    pub sse_events: usize,
    pub ws: WsServer,
    pub ws_frames: u64,
    pub rest: ApiServer,
    pub rest_pages: usize,
}

impl Feeds {
    /// Feeds that stay live for about `seconds` at `rate` records/s, and a REST collection of
    /// `rest_pages` pages.
    pub async fn start(seconds: u64, rate: u32, rest_pages: usize) -> Self {
        let sse_events = (seconds * u64::from(rate)) as usize;
        let sse = ReplayServer::start_wikimedia(
            sse_events,
            ReplayOptions {
                events_per_second: Some(rate),
                ..ReplayOptions::default()
            },
        )
        .await
        .unwrap();
        let ws_frames = seconds * u64::from(rate);
        let started = tokio::time::Instant::now();
        let ws = WsServer::start(move |_, uri, mut socket| async move {
            read_texts(&mut socket, 1).await;
            let mut next = after_param(&uri) + 1;
            while next <= ws_frames {
                // Frame `seq` exists `seq / rate` seconds after the start; send what exists.
                let due = started + Duration::from_secs_f64(next as f64 / f64::from(rate));
                // Reading while it waits, it answers the client's pings as a real server does
                // (the pong goes out with the next write).
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => break,
                        message = socket.next() => {
                            if !matches!(message, Some(Ok(_))) {
                                return;
                            }
                        }
                    }
                }
                let existing = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64)
                    .clamp(next, ws_frames);
                for seq in next..=existing {
                    if socket.feed(Message::text(frame(seq))).await.is_err() {
                        return;
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
                next = existing + 1;
            }
            idle(socket).await;
        })
        .await;
        let rest = ApiServer::start(move |request| async move {
            tokio::time::sleep(PAGE_LATENCY).await;
            // `since` (a watermark) asks for the records from that `n` on, as APIs with an
            // inclusive `since` do: the walk starts at the page that holds it.
            let since: usize = request.param("since").map_or(0, |s| s.parse().unwrap());
            let cursor = request
                .param("cursor")
                .map_or(since / PAGE_RECORDS, |c| c.parse().unwrap());
            json(200, page(cursor, rest_pages, since), &[])
        })
        .await;
        Feeds {
            started: Instant::now(),
            rate,
            sse,
            sse_events,
            ws,
            ws_frames,
            rest,
            rest_pages,
        }
    }

    /// How many records the live feeds (SSE, WebSocket) each hold now.
    pub fn existing_now(&self) -> u64 {
        ((self.started.elapsed().as_secs_f64() * f64::from(self.rate)) as u64).min(self.ws_frames)
    }

    /// The records each source must deliver.
    pub fn expected(&self, kind: Kind) -> usize {
        match kind {
            Kind::Sse => self.sse_events,
            Kind::Ws => self.ws_frames as usize,
            Kind::Rest => self.rest_pages * PAGE_RECORDS,
        }
    }

    /// The daemon's config: the three sources, state in `dir/state`, metrics on `port`;
    /// `extra_kafka` and `extra_source` lines go into `[kafka]` and every source.
    pub fn config(
        &self,
        broker: &Broker,
        dir: &Path,
        port: u16,
        extra_kafka: &str,
        extra_source: &str,
    ) -> String {
        let mut toml = format!(
            r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"
{extra_kafka}

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:{port}"
"#,
            brokers = broker.brokers(),
            state = dir.join("state").display(),
        );
        for kind in [Kind::Sse, Kind::Ws, Kind::Rest] {
            let name = kind.name();
            toml += &self.source_toml(kind, name, &format!("chaos.{name}"), extra_source);
        }
        toml
    }

    /// The `[sources.<name>]` table of a source of `kind` reading these feeds into `topic`.
    pub fn source_toml(&self, kind: Kind, name: &str, topic: &str, extra: &str) -> String {
        match kind {
            Kind::Sse => format!(
                r#"
[sources.{name}]
type = "sse"
url = "{sse}"
topic = "{topic}"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
{extra}
"#,
                sse = self.sse.url(),
            ),
            Kind::Ws => format!(
                r#"
[sources.{name}]
type = "websocket"
url = "{ws}/?after={{position}}"
topic = "{topic}"
subscribe = ['{{"op":"subscribe"}}']
sequence = "/seq"
key = "/seq"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
{extra}
"#,
                ws = self.ws.url,
            ),
            Kind::Rest => format!(
                r#"
[sources.{name}]
type = "rest"
url = "{rest}/items"
topic = "{topic}"
records = "/data"
key = "/id"
interval = "1h"
pagination = {{ type = "cursor", cursor = "/next", param = "cursor" }}
max_pages_per_poll = 1000000
retry = {{ max_attempts = 8, initial_delay = "10ms", max_delay = "50ms" }}
{extra}
"#,
                rest = self.rest.base,
            ),
        }
    }
}

/// WebSocket frame `seq`.
pub fn frame(seq: u64) -> String {
    format!(r#"{{"type":"tick","seq":{seq},"price":"{}.5"}}"#, 100 + seq)
}

/// REST page `cursor` of `pages`: its [`PAGE_RECORDS`] records from `n = since` on, and the
/// next cursor unless last.
pub fn page(cursor: usize, pages: usize, since: usize) -> String {
    let data: Vec<_> = (0..PAGE_RECORDS)
        .map(|j| (j, cursor * PAGE_RECORDS + j))
        .filter(|(_, n)| *n >= since)
        .map(|(j, n)| json!({ "id": format!("p{cursor}-{j}"), "n": n }))
        .collect();
    json!({ "data": data, "next": (cursor + 1 < pages).then(|| (cursor + 1).to_string()) })
        .to_string()
}

/// A record's identity within its source (the payload checked against the feed) and its rank
/// (the SSE event index, the WebSocket sequence, the REST page).
pub fn identify(
    kind: Kind,
    source: &str,
    record: &ConsumedRecord,
    recorded: &[&str],
) -> (String, u64) {
    let key = String::from_utf8(record.key.clone().expect("every record has a key")).unwrap();
    assert_eq!(record.header("tributary.source"), Some(source));
    match kind {
        Kind::Sse => {
            let i = replay::wikimedia_event_index(&key).expect("an SSE key is the event id");
            assert_eq!(record.payload, recorded[i % recorded.len()].as_bytes());
            assert_eq!(record.header("tributary.event_id"), Some(key.as_str()));
            (key, i as u64)
        }
        Kind::Ws => {
            let seq: u64 = key.parse().expect("a WebSocket key is the sequence");
            assert_eq!(record.payload, frame(seq).as_bytes());
            (key, seq)
        }
        Kind::Rest => {
            let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            let n = value["n"].as_u64().unwrap() as usize;
            let (page, j) = (n / PAGE_RECORDS, n % PAGE_RECORDS);
            assert_eq!(key, format!("p{page}-{j}"));
            (key, page as u64)
        }
    }
}
