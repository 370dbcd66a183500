//! Polled REST sources under faults: 429 storms with `Retry-After` in both forms, a spent
//! rate budget, 5xx bursts and timeouts, permanent errors, OAuth2 tokens that expire or are
//! refused, and `kill -9` in the middle of a 1,000-page walk.

mod common;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{api::*, process::*, *};
use serde_json::json;
use tributary::state::checkpoint::FileStore;

/// A source table polling `path` of `server` with cursor pagination (`/next`, `cursor`).
fn cursor_source(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "rest"
url = "{url}"
topic = "{name}"
records = "/data"
key = "/id"
interval = "1h"
pagination = {{ type = "cursor", cursor = "/next", param = "cursor" }}
retry = {{ max_attempts = 8, initial_delay = "10ms", max_delay = "50ms" }}
{extra}
"#
    )
}

/// Page `cursor` (from 0) of `pages`: two records, and the next cursor unless it is the last.
fn cursor_page(cursor: usize, pages: usize) -> String {
    let next = (cursor + 1 < pages).then(|| (cursor + 1).to_string());
    json!({
        "data": [{ "id": format!("p{cursor}-a") }, { "id": format!("p{cursor}-b") }],
        "next": next,
    })
    .to_string()
}

fn cursor_of(request: &ApiRequest) -> usize {
    request.param("cursor").map_or(0, |c| c.parse().unwrap())
}

fn expected_keys(pages: usize) -> Vec<String> {
    let mut keys: Vec<String> = (0..pages)
        .flat_map(|p| [format!("p{p}-a"), format!("p{p}-b")])
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_as_retry_after_asks_in_seconds_and_as_a_date() {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let server = ApiServer::start(move |request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                // Page 0: a storm, first with delay-seconds, then with an HTTP-date.
                0 | 1 => status(429, &[("retry-after", "1".into())]),
                2 => {
                    let at = SystemTime::now() + Duration::from_secs(2);
                    status(429, &[("retry-after", httpdate::fmt_http_date(at))])
                }
                _ => json(200, cursor_page(cursor_of(&request), 2), &[]),
            }
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("storm").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &cursor_source("storm", &format!("{}/x", server.base), ""),
    ))
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "storm",
        1,
    )
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(sorted_keys(&broker, "storm").await, expected_keys(2));
    let times: Vec<Instant> = server.requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 5, "3 refused, then 2 pages");
    for (after, wanted) in [(0, 900), (1, 900), (2, 900)] {
        let gap = times[after + 1] - times[after];
        assert!(
            gap >= Duration::from_millis(wanted),
            "request {} came {gap:?} after a 429 asking for more",
            after + 1
        );
    }
    assert_eq!(metric(&scrape, "tributary_retries_total", "storm"), 3);
    assert!(metric(&scrape, "tributary_rate_limit_wait_seconds_total", "storm") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_waited_out_until_its_reset_without_a_429() {
    // The budget: 2 requests, then empty until the reset, 2 s after the first request. A
    // request before the reset gets a 429 (and is counted).
    let reset_at = Arc::new(Mutex::new(None::<u64>));
    let early = Arc::new(AtomicUsize::new(0));
    let (reset, refused) = (Arc::clone(&reset_at), Arc::clone(&early));
    let server = ApiServer::start(move |request| {
        let (reset, refused) = (Arc::clone(&reset), Arc::clone(&refused));
        async move {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let reset_epoch = *reset.lock().unwrap().get_or_insert(now.as_secs() + 2);
            let cursor = cursor_of(&request);
            let remaining = if now.as_secs() >= reset_epoch {
                100
            } else {
                1 - cursor.min(1)
            };
            if cursor >= 2 && now.as_secs() < reset_epoch {
                refused.fetch_add(1, Ordering::SeqCst);
                return status(429, &[]);
            }
            json(
                200,
                cursor_page(cursor, 4),
                &[
                    ("x-ratelimit-limit", "2".into()),
                    ("x-ratelimit-remaining", remaining.to_string()),
                    ("x-ratelimit-reset", reset_epoch.to_string()),
                ],
            )
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("budget").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &cursor_source("budget", &format!("{}/x", server.base), ""),
    ))
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "budget",
        1,
    )
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(sorted_keys(&broker, "budget").await, expected_keys(4));
    assert_eq!(early.load(Ordering::SeqCst), 0, "no request ran into a 429");
    assert_eq!(server.request_count(), 4);
    // The reset is the next whole second but one after the first request: the wait lasts
    // between 1 and 2 s, less the time the first two requests took.
    let waited: f64 = scrape
        .lines()
        .find(|line| line.starts_with("tributary_rate_limit_wait_seconds_total{source=\"budget\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(waited > 0.5, "waited {waited} s for the budget\n{scrape}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_and_a_timeout_are_retried_and_the_walk_completes() {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let server = ApiServer::start(move |request| {
        let cursor = cursor_of(&request);
        let n = if cursor == 1 {
            counter.fetch_add(1, Ordering::SeqCst)
        } else {
            usize::MAX
        };
        async move {
            match n {
                0 => status(500, &[]),
                1 => status(502, &[]),
                2 => status(503, &[]),
                3 => {
                    // Longer than the source's timeout.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    json(200, cursor_page(cursor, 3), &[])
                }
                _ => json(200, cursor_page(cursor, 3), &[]),
            }
        }
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("flaky").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &cursor_source(
            "flaky",
            &format!("{}/x", server.base),
            "timeout = \"300ms\"",
        ),
    ))
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "flaky",
        1,
    )
    .await;
    let scrape = daemon.metrics().render();
    daemon.shutdown().await;
    assert_eq!(sorted_keys(&broker, "flaky").await, expected_keys(3));
    assert_eq!(metric(&scrape, "tributary_retries_total", "flaky"), 4);
    assert_eq!(
        metric(
            &scrape,
            "tributary_http_requests_total{source=\"flaky\",status_class=\"5xx\"",
            "flaky"
        ),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried_and_readyz_shows_the_source_failing() {
    let server = ApiServer::start(|request| async move {
        match request.path() {
            "/gone" => status(404, &[]),
            "/forbidden" => status(403, &[]),
            _ => status(422, &[]),
        }
    })
    .await;
    let broker = Broker::kafka();
    let mut sources = String::new();
    for name in ["gone", "forbidden", "invalid"] {
        broker.create_topic(name).await;
        sources.push_str(&cursor_source(
            name,
            &format!("{}/{name}?api_key=hunter2", server.base),
            "",
        ));
    }
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(&broker.brokers(), state.path(), &sources)).await;
    for name in ["gone", "forbidden", "invalid"] {
        wait_for_metric(&daemon, "tributary_polls_total{outcome=\"failed\"", name, 1).await;
    }
    let (status_code, body) =
        http_get(&format!("http://{}/readyz", daemon.metrics_address())).await;
    daemon.shutdown().await;
    assert_eq!(status_code, 503, "{body}");
    for (name, code) in [("gone", 404), ("forbidden", 403), ("invalid", 422)] {
        let requests = server
            .requests()
            .iter()
            .filter(|r| r.path() == format!("/{name}"))
            .count();
        assert_eq!(requests, 1, "{name}: a permanent error is not retried");
        assert!(body.contains(&format!("HTTP {code}")), "{body}");
    }
    assert!(body.contains("failing"), "{body}");
    assert!(
        !body.contains("hunter2"),
        "secrets stay out of /readyz: {body}"
    );
    assert!(broker.read("gone").await.is_empty());
}

/// An OAuth2 token endpoint (RFC 6749 §4.4) for client `tributary` / `s3cret`: each token
/// lives `lifetime` seconds (`expires_in`); `revoked` tokens are refused by the API.
struct TokenEndpoint {
    issued: Mutex<Vec<(String, Instant)>>,
    revoked: Mutex<HashSet<String>>,
    lifetime: u64,
}

impl TokenEndpoint {
    fn answer(&self, request: &ApiRequest) -> axum::response::Response {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("tributary:s3cret")
        );
        let form = String::from_utf8_lossy(&request.body).into_owned();
        if request.header("authorization") != Some(expected.as_str())
            || !form.contains("grant_type=client_credentials")
        {
            return json(400, r#"{"error":"invalid_client"}"#, &[]);
        }
        let mut issued = self.issued.lock().unwrap();
        let token = format!("token-{}", issued.len() + 1);
        issued.push((token.clone(), Instant::now()));
        json(
            200,
            json!({ "access_token": token, "token_type": "Bearer", "expires_in": self.lifetime })
                .to_string(),
            &[],
        )
    }

    /// True when `authorization` carries a token that was issued, is not revoked and has not
    /// expired.
    fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        let issued = self.issued.lock().unwrap();
        issued
            .iter()
            .any(|(t, at)| t == token && at.elapsed() < Duration::from_secs(self.lifetime))
            && !self.revoked.lock().unwrap().contains(token)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_cached_renewed_before_expiry_and_refreshed_once_on_a_401() {
    // Tokens live 2 s; the default skew (30 s) is longer, so each is used for half its life.
    let tokens = Arc::new(TokenEndpoint {
        issued: Mutex::default(),
        revoked: Mutex::default(),
        lifetime: 2,
    });
    // The "never" source gets its tokens elsewhere, so they are not counted here.
    let other_tokens = Arc::new(TokenEndpoint {
        issued: Mutex::default(),
        revoked: Mutex::default(),
        lifetime: 3600,
    });
    let api_calls = Arc::new(AtomicUsize::new(0));
    let (endpoint, other, calls) = (
        Arc::clone(&tokens),
        Arc::clone(&other_tokens),
        Arc::clone(&api_calls),
    );
    let server = ApiServer::start(move |request| {
        let (endpoint, other, calls) = (
            Arc::clone(&endpoint),
            Arc::clone(&other),
            Arc::clone(&calls),
        );
        async move {
            if request.path() == "/token" {
                return endpoint.answer(&request);
            }
            if request.path() == "/other-token" {
                return other.answer(&request);
            }
            if request.path() == "/never" {
                return status(401, &[]);
            }
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n == 3 {
                // The provider revokes the token in use: one 401, cured by a new token.
                let current = request
                    .header("authorization")
                    .unwrap()
                    .strip_prefix("Bearer ")
                    .unwrap()
                    .to_owned();
                endpoint.revoked.lock().unwrap().insert(current);
            }
            if !endpoint.accepts(request.header("authorization")) {
                return status(401, &[]);
            }
            json(200, cursor_page(cursor_of(&request), 2), &[])
        }
    })
    .await;
    let broker = Broker::kafka();
    let auth = |secret: &str, token_path: &str| {
        format!(
            r#"auth = {{ type = "oauth2_client_credentials", token_url = "{}{token_path}", client_id = "tributary", client_secret = "{secret}", scopes = ["read"] }}"#,
            server.base
        )
    };
    let mut sources = String::new();
    let cursor_source = |name: &str, url: &str, extra: &str| {
        cursor_source(name, url, extra).replace("interval = \"1h\"", "interval = \"200ms\"")
    };
    sources.push_str(&cursor_source(
        "api",
        &format!("{}/api", server.base),
        &auth("s3cret", "/token"),
    ));
    sources.push_str(&cursor_source(
        "wrong",
        &format!("{}/api-wrong", server.base),
        &auth("wrong", "/token"),
    ));
    sources.push_str(&cursor_source(
        "never",
        &format!("{}/never", server.base),
        &auth("s3cret", "/other-token"),
    ));
    for name in ["api", "wrong", "never"] {
        broker.create_topic(name).await;
    }
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&daemon_config(&broker.brokers(), state.path(), &sources)).await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"complete\"",
        "api",
        12,
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"failed\"",
        "wrong",
        1,
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"failed\"",
        "never",
        1,
    )
    .await;
    // Read once the daemon has stopped: no poll runs between the scrape and the count of the
    // server's requests.
    let metrics = std::sync::Arc::clone(daemon.metrics());
    daemon.shutdown().await;
    let scrape = metrics.render();

    // "api": 401 once (the revoked token), cured by a refresh; never a 401 from expiry.
    let api_401 = metric(
        &scrape,
        "tributary_http_requests_total{source=\"api\",status_class=\"4xx\"",
        "api",
    );
    assert_eq!(api_401, 1, "one 401, from the revocation only");
    assert!(broker.read("api").await.len() >= 4);
    // Cached: far fewer tokens than requests, but renewed as they neared expiry.
    let issued = tokens.issued.lock().unwrap().len();
    let requests = server
        .requests()
        .iter()
        .filter(|r| r.path() == "/api")
        .count();
    assert!(
        issued >= 3 && issued * 2 < requests + 6,
        "{issued} tokens for {requests} requests"
    );
    // "wrong": the token endpoint refused, so the API was never called.
    assert_eq!(metric(&scrape, "tributary_retries_total", "wrong"), 0);
    assert!(server.requests().iter().all(|r| r.path() != "/api-wrong"));
    // "never": a 401 that a new token does not cure is permanent: two tries per poll.
    let never = server
        .requests()
        .iter()
        .filter(|r| r.path() == "/never")
        .count();
    let never_polls = metric(&scrape, "tributary_polls_total{outcome=\"failed\"", "never") as usize;
    // The shutdown may cut one last poll short, after one or both of its requests.
    assert!(
        (2 * never_polls..=2 * never_polls + 2).contains(&never),
        "one refresh per poll, then permanent: {never} requests for {never_polls} failed polls"
    );
    assert!(!scrape.contains("s3cret") && !scrape.contains("token-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_1000_page_walk_resumes_at_the_first_unacknowledged_page() {
    const PAGES: usize = 1000;
    // 5 ms per page: the walk lasts at least 5 s, so the kill below lands in its middle even
    // when the daemon is a release build.
    let server = ApiServer::start(|request| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        json(200, cursor_page(cursor_of(&request), PAGES), &[])
    })
    .await;
    let broker = Broker::kafka();
    broker.create_topic("walk").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = daemon_config(
        &broker.brokers(),
        &dir.path().join("state"),
        &cursor_source("walk", &format!("{}/x", server.base), ""),
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = write_config(dir.path(), &toml);

    let mut first = Daemon::spawn(&config, port);
    first.wait_for_produced("walk", 600).await;
    // Kill once a position past the first page is on disk (the walk is well under way), so
    // that the restart has a page in the middle of the walk to resume from.
    let stored_page = || {
        FileStore::open(dir.path().join("state"))
            .ok()?
            .load("walk")
            .ok()??
            .as_str()
            .parse::<serde_json::Value>()
            .ok()?["walk"]["page"]
            .as_u64()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stored_page().is_none_or(|page| page <= 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "no position past page 2 was committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.kill().unwrap(); // SIGKILL: no flush, no final commit.
    first.child.wait().unwrap();
    let fetched_before = server.request_count();
    let stored = FileStore::open(dir.path().join("state"))
        .unwrap()
        .load("walk")
        .unwrap()
        .expect("a position was committed before the kill");
    let position: serde_json::Value = serde_json::from_str(stored.as_str()).unwrap();
    let resume_at: usize = position["walk"]["next"]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        resume_at > 1 && resume_at < PAGES,
        "killed mid-walk: {position}"
    );

    let mut second = Daemon::spawn(&config, port);
    second
        .wait_for_metric("tributary_polls_total{outcome=\"complete\"", "walk", 1)
        .await;
    let status = second.terminate().await;
    assert!(status.success(), "{status}");

    let after: Vec<usize> = server.requests()[fetched_before..]
        .iter()
        .map(cursor_of)
        .collect();
    assert_eq!(
        after[0], resume_at,
        "the restart asked for the stored page first"
    );
    assert!(
        after.iter().all(|cursor| *cursor >= resume_at),
        "no acknowledged page was fetched again"
    );
    let records = broker.read("walk").await;
    let unique: HashSet<Vec<u8>> = records.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(unique.len(), 2 * PAGES, "nothing lost");
    let duplicated = records.len() - unique.len();
    eprintln!("kill -9 at page {resume_at} of {PAGES}: {duplicated} records duplicated, 0 lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_fails_the_poll_and_is_never_buffered_whole() {
    use std::io::Write as _;
    // 64 MiB of digits inside one JSON string: about 64 KiB once gzipped.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(br#"{"data":[{"id":"x","blob":""#)
        .unwrap();
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.write_all(br#""}]}"#).unwrap();
    let bomb = bytes::Bytes::from(encoder.finish().unwrap());
    assert!(bomb.len() < 1 << 20, "the compressed body is small");
    let server = ApiServer::start(move |_| {
        let bomb = bomb.clone();
        async move {
            axum::response::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(axum::body::Body::from(bomb))
                .unwrap()
        }
    })
    .await;
    let broker = Broker::mock();
    let state = tempfile::tempdir().unwrap();
    let daemon = start_with_source(
        &broker,
        state.path(),
        "bomb",
        &cursor_source(
            "bomb",
            &format!("{}/items", server.base),
            "max_body_bytes = 1048576",
        )
        .replace("\n[sources.bomb]\n", ""),
    )
    .await;
    wait_for_metric(
        &daemon,
        "tributary_polls_total{outcome=\"failed\"",
        "bomb",
        1,
    )
    .await;
    let (status_code, body) =
        http_get(&format!("http://{}/readyz", daemon.metrics_address())).await;
    let received = daemon
        .metrics()
        .registered("bomb")
        .expect("a registered source")
        .records_received
        .get();
    daemon.shutdown().await;
    assert_eq!(status_code, 503, "{body}");
    assert!(
        body.contains("a body larger than 1048576 bytes (after decompression)"),
        "{body}"
    );
    assert_eq!(
        server.request_count(),
        1,
        "a body too large is not asked for again"
    );
    assert_eq!(received, 0);
}
