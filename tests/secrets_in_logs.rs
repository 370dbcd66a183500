//! No secret reaches the log. The `tributary` binary runs at `RUST_LOG=trace` (every line
//! `debug` writes, and more; its dependencies, hyper-util, reqwest, rustls,
//! tungstenite and librdkafka, log at that level too) with a secret in every place its config can hold one: SSE, REST and
//! WebSocket URLs (query, path, user info, a parameter of no secret-looking name), request
//! headers, API-key, basic and OAuth2 auth, webhook signing secrets and the Kafka SASL
//! password, many through `${env:…}`. Its feeds and token endpoint on 127.0.0.1 answer with
//! retries (5xx, then 200), 401, 404 and redirects to another origin that repeat the query;
//! signed and forged webhooks arrive. Then its stderr, stdout, `/readyz` and `/metrics` are
//! searched for every secret. Invalid configs holding secrets go to `tributary check` and
//! `tributary run` as well.
//!
//! The secrets and the search for them (raw, percent-encoded, escaped, base64) are in
//! `common/secrets.rs`. The Kafka SASL password meeting a broker that checks it (and one that
//! speaks no SASL), with librdkafka's own `debug = "all"`: `kafka_security.rs`.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{body::Body, response::Response};
use common::{
    api::{json, status, ApiRequest, ApiServer},
    process::*,
    secrets::*,
    *,
};
use futures::StreamExt as _;
use secrecy::SecretString;
use tributary::sources::webhook::signature::{
    GenericHmacScheme, GitHubScheme, SignatureEncoding, StripeScheme,
};

/// The level the daemon logs at: trace writes every line debug writes, and more.
const LEVEL: &str = "trace";

/// An event stream that stays open after two events.
fn event_stream() -> Response {
    let events = "id: 1\ndata: {\"n\":1}\n\nid: 2\ndata: {\"n\":2}\n\n";
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(events) })
        .chain(futures::stream::pending());
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

/// A redirect to another origin that carries the request's query along, as many servers do.
fn redirect_elsewhere(request: &ApiRequest) -> Response {
    let query = request.target.split_once('?').map_or("", |(_, q)| q);
    status(
        302,
        &[("location", format!("http://localhost:9/elsewhere?{query}"))],
    )
}

/// The feeds and the token endpoint: the n-th request to each path gets the n-th answer.
async fn feeds() -> ApiServer {
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    ApiServer::start(move |request| {
        let n = {
            let mut counts = counts.lock().unwrap();
            let n = counts.entry(request.path().to_owned()).or_default();
            *n += 1;
            *n
        };
        async move {
            let path = request.path();
            let page = r#"[{"id":"a"},{"id":"b"}]"#;
            match path {
                "/token" => json(
                    200,
                    format!(
                        r#"{{"access_token":"{ACCESS_TOKEN}{n}","token_type":"Bearer","expires_in":3600}}"#
                    ),
                    &[],
                ),
                _ if path.ends_with("/sse/retry") && n == 1 => status(503, &[]),
                _ if path.ends_with("/sse/retry") => event_stream(),
                "/rest/retry" if n == 1 => status(500, &[]),
                "/rest/retry" if n == 2 => status(503, &[("retry-after", "0".into())]),
                "/rest/retry" => json(200, page, &[]),
                "/ws" if n == 1 => status(503, &[]),
                "/sse/unauthorized" | "/rest/unauthorized" | "/ws" => status(401, &[]),
                "/sse/moved" | "/rest/moved" => redirect_elsewhere(&request),
                _ => status(404, &[]),
            }
        }
    })
    .await
}

/// The daemon's config: every source kind, a secret wherever one fits.
fn sources_config(brokers: &str, state: &Path, port: u16, api: &str) -> String {
    let host = api.strip_prefix("http://").unwrap();
    let template = r#"
[kafka]
brokers = "@BROKERS@"
flush_timeout = "5s"

[checkpoint]
dir = "@STATE@"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:@PORT@"

[sources.sse_retry]
type = "sse"
url = "@API@/bot${env:TRIB_LOG_PATH_TOKEN}/sse/retry?api_key={SSE_QUERY_KEY}&appid=${env:TRIB_LOG_APPID}&lang=en"
topic = "sse_retry"
headers = { "X-Api-Key" = "{HEADER_API_KEY}", Authorization = "Bearer ${env:TRIB_LOG_BEARER}" }
reconnect = { initial_delay = "20ms", max_delay = "200ms" }

[sources.sse_unauthorized]
type = "sse"
url = "@API@/sse/unauthorized?api_key={SSE_QUERY_KEY}"
topic = "sse_unauthorized"
auth = { type = "oauth2_client_credentials", token_url = "@API@/token", client_id = "@CLIENT@", client_secret = "${env:TRIB_LOG_OAUTH_SECRET}" }

[sources.sse_missing]
type = "sse"
url = "http://@URL_USER@:{SSE_USERINFO}@@HOST@/sse/missing"
topic = "sse_missing"
headers = { "X-Api-Key" = "{HEADER_API_KEY}" }

[sources.sse_moved]
type = "sse"
url = "@API@/sse/moved?api_key={SSE_QUERY_KEY}&appid=${env:TRIB_LOG_APPID}"
topic = "sse_moved"

[sources.rest_retry]
type = "rest"
url = "@API@/rest/retry"
query = { appkey = "${env:TRIB_LOG_REST_QUERY}" }
topic = "rest_retry"
key = "/id"
interval = "1h"
retry = { initial_delay = "10ms", max_delay = "50ms" }
auth = { type = "basic", username = "@USER@", password = "{BASIC_PASSWORD}" }

[sources.rest_unauthorized]
type = "rest"
url = "@API@/rest/unauthorized"
topic = "rest_unauthorized"
interval = "1h"
auth = { type = "oauth2_client_credentials", token_url = "@API@/token", client_id = "@CLIENT@", client_secret = "${env:TRIB_LOG_REST_OAUTH_SECRET}", client_auth = "request_body" }

[sources.rest_missing]
type = "rest"
url = "@API@/rest/missing"
topic = "rest_missing"
interval = "1h"
auth = { type = "api_key", query = "key", value = "{REST_AUTH_KEY}" }

[sources.rest_moved]
type = "rest"
url = "@API@/rest/moved?token=${env:TRIB_LOG_REST_QUERY}"
topic = "rest_moved"
interval = "1h"
headers = { Authorization = "Bearer ${env:TRIB_LOG_BEARER}" }
auth = { type = "api_key", query = "key", value = "{REST_AUTH_KEY}" }

[sources.ws]
type = "websocket"
url = "ws://@HOST@/ws?token={WS_URL_TOKEN}"
topic = "ws"
headers = { Authorization = "Bearer {WS_HEADER_TOKEN}" }
subscribe = ['{"type":"subscribe","secret":"${env:TRIB_LOG_WS_SUB}"}']
reconnect = { initial_delay = "20ms", max_delay = "200ms" }

[sources.github]
type = "webhook"
topic = "github"
signature = { scheme = "github", secrets = ["{GITHUB_SECRET}"] }

[sources.hmac]
type = "webhook"
topic = "hmac"
signature = { scheme = "hmac_sha256", secrets = ["${env:TRIB_LOG_HMAC}"], header = "X-Signature", prefix = "sha256=" }

[sources.stripe]
type = "webhook"
topic = "stripe"
signature = { scheme = "stripe", secrets = ["{STRIPE_SECRET}"] }
event_id = { pointer = "/id" }
"#;
    fill(template)
        .replace("@BROKERS@", brokers)
        .replace("@STATE@", &state.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@API@", api)
        .replace("@HOST@", host)
        .replace("@CLIENT@", OAUTH_CLIENT)
        .replace("@USER@", BASIC_USER)
        .replace("@URL_USER@", URL_USER)
}

/// Starts the binary on `config` at [`LEVEL`], with the [`FROM_ENV`] secrets in its
/// environment and its stderr and stdout in files under `dir`.
fn spawn_logged(config: &Path, port: u16, dir: &Path) -> (Daemon, PathBuf, PathBuf) {
    let (stderr, stdout) = (dir.join("stderr.log"), dir.join("stdout.log"));
    let daemon = Daemon::spawn_with(config, port, |command| {
        command
            .env("RUST_LOG", LEVEL)
            .envs(FROM_ENV.iter().copied())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .stdout(std::fs::File::create(&stdout).unwrap());
    });
    (daemon, stderr, stdout)
}

/// Waits until `/readyz` shows each of `sources` in state `failed`.
async fn wait_until_failed(port: u16, sources: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = try_http_get(&url).await.unwrap_or_default().1;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let waiting: Vec<&&str> = sources
            .iter()
            .filter(|name| ready["sources"][**name]["state"] != "failed")
            .collect();
        if waiting.is_empty() {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting:?} never failed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts to each webhook source a delivery signed with its secret, then a forged one;
/// returns the statuses.
async fn deliver_webhooks(port: u16) -> Vec<u16> {
    let body = r#"{"id":"evt_1","n":1}"#;
    let hmac_secret = SecretString::from(literal("TRIB_LOG_HMAC"));
    let hmac = GenericHmacScheme::try_new(
        &[hmac_secret],
        "X-Signature",
        SignatureEncoding::Hex,
        Some("sha256="),
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |source: &str, secret: &str| match source {
        "github" => (
            "x-hub-signature-256",
            GitHubScheme::sign(secret, body.as_bytes()),
        ),
        "hmac" => ("x-signature", hmac.sign(secret, body.as_bytes())),
        _ => (
            "stripe-signature",
            StripeScheme::sign(secret, now, body.as_bytes()),
        ),
    };
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for (source, secret) in [
        ("github", "GITHUB_SECRET"),
        ("hmac", "TRIB_LOG_HMAC"),
        ("stripe", "STRIPE_SECRET"),
    ] {
        for (n, secret) in [literal(secret), "whsec_forged"].into_iter().enumerate() {
            let (header, signature) = sign(source, secret);
            let response = client
                .post(format!("http://127.0.0.1:{port}/webhooks/{source}"))
                .header("content-type", "application/json")
                .header("x-github-delivery", format!("delivery-{n}"))
                .header(header, signature)
                .body(body)
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_any_source_reaches_the_log() {
    let api = feeds().await;
    let broker = Broker::kafka();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = sources_config(
        &broker.brokers(),
        &dir.path().join("state"),
        port,
        &api.base,
    );
    let topics: Vec<String> = toml
        .lines()
        .filter_map(|line| line.strip_prefix("[sources.")?.strip_suffix(']'))
        .flat_map(|name| [name.to_owned(), format!("{name}.dlq")])
        .collect();
    broker
        .create_topics(&topics.iter().map(String::as_str).collect::<Vec<_>>(), 1)
        .await;
    let config = write_config(dir.path(), &toml);
    let (mut daemon, stderr, stdout) = spawn_logged(&config, port, dir.path());

    // Retries that end well: a 503 before the event stream, a 500 and a 503 before the page.
    daemon
        .wait_for_metric("tributary_reconnects_total", "sse_retry", 1)
        .await;
    daemon.wait_for_produced("sse_retry", 2).await;
    daemon
        .wait_for_metric("tributary_retries_total", "rest_retry", 2)
        .await;
    daemon.wait_for_produced("rest_retry", 2).await;
    // Permanent failures: 401 (after a fresh OAuth2 token), 404, a redirect to another origin.
    for source in ["rest_unauthorized", "rest_missing", "rest_moved"] {
        daemon
            .wait_for_metric("tributary_polls_total{outcome=\"failed\"", source, 1)
            .await;
    }
    let sse_failed = ["sse_unauthorized", "sse_missing", "sse_moved", "ws"];
    let readyz = wait_until_failed(port, &sse_failed).await;
    assert_eq!(deliver_webhooks(port).await, [200, 401, 200, 401, 200, 401]);
    let metrics = daemon.scrape().await.unwrap();
    let exit = daemon.terminate().await;
    assert!(exit.success(), "{exit}");

    // Every secret that belongs on the wire went there: the daemon used them all.
    let wire: Vec<String> = api
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {}",
                r.target,
                r.headers,
                String::from_utf8_lossy(&r.body)
            )
        })
        .collect();
    let unsent = [
        "GITHUB_SECRET",
        "STRIPE_SECRET",
        "TRIB_LOG_HMAC",
        "TRIB_LOG_WS_SUB",
        "TRIB_LOG_SASL",
    ];
    for (secret, _) in LITERAL
        .iter()
        .chain(FROM_ENV)
        .filter(|(name, _)| !unsent.contains(name))
    {
        let forms = forbidden()
            .into_iter()
            .filter(|(name, _)| name.starts_with(secret));
        let sent = forms
            .map(|(_, form)| form)
            .any(|form| wire.iter().any(|r| r.contains(&form)));
        assert!(sent, "{secret} was never sent");
    }

    let log = std::fs::read_to_string(&stderr).unwrap();
    let expected = [
        " TRACE ",
        " DEBUG ",
        "HTTP 401",
        "HTTP 404",
        "HTTP 302",
        "not followed",
        "retrying",
        "refused",
    ];
    for expected in expected {
        assert!(log.contains(expected), "the log lacks `{expected}`:\n{log}");
    }
    assert_no_secret(&log, "the log (stderr)");
    assert_no_secret(&std::fs::read_to_string(&stdout).unwrap(), "stdout");
    assert_no_secret(&readyz, "/readyz");
    assert_no_secret(&metrics, "/metrics");
}

/// Runs `tributary <command> --config <path>` at [`LEVEL`] with the [`FROM_ENV`] secrets.
fn run_binary(command: &str, path: &Path) -> std::process::Output {
    Command::new(binary())
        .args([command, "--config"])
        .arg(path)
        .env("RUST_LOG", LEVEL)
        .envs(FROM_ENV.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn invalid_configs_holding_secrets_are_reported_without_them() {
    let head = r#"
[kafka]
brokers = "127.0.0.1:9"
[server]
listen = "127.0.0.1:0"
"#;
    let invalid_values = r#"
[kafka]
brokers = ""
[kafka.producer]
acks = "1"
"sasl.password" = "${env:TRIB_LOG_SASL}"
[sources.feed]
type = "sse"
url = "ftp://feed-user:{SSE_USERINFO}@127.0.0.1:9/bot${env:TRIB_LOG_PATH_TOKEN}?api_key={SSE_QUERY_KEY}"
topic = "has space"
headers = { "X-Api Key" = "{HEADER_API_KEY}", Authorization = "Bearer ${env:TRIB_LOG_UNSET}" }
[sources.poll]
type = "rest"
url = "http://127.0.0.1:9/items?appid=${env:TRIB_LOG_APPID}"
topic = "poll"
auth = { type = "oauth2_client_credentials", token_url = "not a url", client_id = "c", client_secret = "${env:TRIB_LOG_OAUTH_SECRET}" }
[sources.hook]
type = "webhook"
topic = "hook"
signature = { scheme = "standard_webhooks", secrets = ["{GITHUB_SECRET}"] }
"#;
    let wrong_type = r#"[sources.feed]
type = "sse"
url = "http://127.0.0.1:9/s"
topic = "feed"
headers = "Bearer {HEADER_API_KEY}"
"#;
    // The string on line 8 does not end.
    let bad_syntax = r#"[sources.feed]
type = "sse"
url = "http://127.0.0.1:9/s?api_key={SSE_QUERY_KEY}
topic = "feed"
"#;
    // Valid for `check`; librdkafka refuses the mechanism when `run` creates the producer.
    let bad_producer = r#"[kafka.producer]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "NOPE"
"sasl.password" = "${env:TRIB_LOG_SASL}"
[sources.feed]
type = "sse"
url = "http://127.0.0.1:9/s?api_key={SSE_QUERY_KEY}"
topic = "feed"
"#;
    let named = "kafka.brokers, kafka.producer.acks, sources.feed.url, sources.feed.topic, \
        sources.feed.headers.X-Api Key, TRIB_LOG_UNSET, sources.poll.auth.token_url, \
        sources.hook.signature";
    // (what, config, exit code of `check`, of `run`, what a failing command's report names)
    let cases = [
        ("invalid values", invalid_values.to_owned(), 2, 2, named),
        (
            "a value of the wrong type",
            format!("{head}{wrong_type}"),
            2,
            2,
            "sources.feed, invalid type",
        ),
        (
            "a TOML syntax error",
            format!("{head}{bad_syntax}"),
            2,
            2,
            "line 8, column",
        ),
        (
            "a producer property librdkafka refuses",
            format!("{head}{bad_producer}"),
            0,
            1,
            "Unsupported SASL mechanism",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, template, check_code, run_code, named) in cases {
        let listen = format!("127.0.0.1:{}", free_port());
        let path = write_config(dir.path(), &fill(&template).replace("127.0.0.1:0", &listen));
        for (command, code) in [("check", check_code), ("run", run_code)] {
            let output = run_binary(command, &path);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                output.status.code(),
                Some(code),
                "`{command}` on {what}:\n{stderr}"
            );
            for needle in named.split(", ").filter(|_| code != 0) {
                assert!(
                    stderr.contains(needle),
                    "`{command}` on {what} does not name `{needle}`:\n{stderr}"
                );
            }
            assert_no_secret(&stderr, &format!("`{command}` on {what} (stderr)"));
            assert_no_secret(&stdout, &format!("`{command}` on {what} (stdout)"));
        }
    }
}
