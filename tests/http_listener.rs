//! The daemon's HTTP listeners against slow and numerous clients: a client that does not send
//! its request head within `server.header_read_timeout` is disconnected (also during the
//! shutdown), and beyond `server.max_connections` a connection is closed at once and counted,
//! while the other listener and the pipeline go on.

mod common;

use std::{
    io::ErrorKind,
    path::Path,
    time::{Duration, Instant},
};

use common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tributary::runtime::daemon::RunningDaemon;

/// A generous bound for what the daemon does within a few seconds; exceeding it fails the test.
const DEADLINE: Duration = Duration::from_secs(30);

/// A daemon config with one webhook source `hooks` (no signature) and `server` lines.
fn hooks_config(brokers: &str, state: &Path, server: &str) -> String {
    daemon_config(
        brokers,
        state,
        &format!(
            r#"{server}

[sources.hooks]
type = "webhook"
topic = "hooks"
signature = {{ scheme = "none" }}
"#
        ),
    )
}

/// `name{listener="…"}` in a scrape; `None` when the series is absent.
fn listener_metric(scrape: &str, name: &str, listener: &str) -> Option<u64> {
    let series = format!("{name}{{listener=\"{listener}\"}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.parse().unwrap())
}

fn open_connections(daemon: &RunningDaemon, listener: &str) -> Option<u64> {
    listener_metric(
        &daemon.metrics().render(),
        "tributary_http_connections",
        listener,
    )
}

/// Reads until the daemon closes `stream` (end of stream or reset) and returns what it sent;
/// fails the test when the connection is still open after [`DEADLINE`].
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading from the daemon: {e}"),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the daemon left the connection open for {DEADLINE:?}"
    );
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_slow_to_send_a_request_head_are_disconnected_after_header_read_timeout() {
    let broker = Broker::mock();
    broker.create_topic("hooks").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&hooks_config(
        &broker.brokers(),
        state.path(),
        "header_read_timeout = \"1s\"",
    ))
    .await;
    let address = daemon.metrics_address();
    let opened = Instant::now();
    let mut half_line = TcpStream::connect(address).await.unwrap();
    half_line.write_all(b"GET /hea").await.unwrap();
    let mut silent = TcpStream::connect(address).await.unwrap();
    // A keep-alive connection: one request answered, then nothing.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    for (what, stream) in [
        ("half a request line", &mut half_line),
        ("nothing", &mut silent),
    ] {
        let received = until_closed(stream).await;
        assert!(
            received.is_empty(),
            "a client that sent {what} got {:?}",
            String::from_utf8_lossy(&received)
        );
        let elapsed = opened.elapsed();
        assert!(
            elapsed >= Duration::from_secs(1),
            "a client that sent {what} was disconnected after {elapsed:?}, before the timeout"
        );
    }
    let received = String::from_utf8(until_closed(&mut idle).await).unwrap();
    assert!(
        received.starts_with("HTTP/1.1 200") && received.ends_with("ok\n"),
        "the idle keep-alive connection got {received:?} before it was closed"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stuck_in_its_headers_does_not_hold_the_shutdown() {
    let broker = Broker::mock();
    broker.create_topic("hooks").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&hooks_config(
        &broker.brokers(),
        state.path(),
        "header_read_timeout = \"2s\"",
    ))
    .await;
    // Headers begun, never ended: the connection is not idle, so shutting down does not close it.
    let mut stuck = TcpStream::connect(daemon.webhook_address()).await.unwrap();
    stuck
        .write_all(b"POST /webhooks/hooks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    wait_until("the daemon to hold the connection", DEADLINE, || {
        open_connections(&daemon, "listen") == Some(1)
    })
    .await;
    let stopped = tokio::time::timeout(DEADLINE, daemon.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "the shutdown waited on a client that never finished its headers"
    );
    assert!(until_closed(&mut stuck).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_is_closed_at_once_and_counted() {
    let broker = Broker::kafka();
    broker.create_topic("hooks").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&hooks_config(
        &broker.brokers(),
        state.path(),
        "webhook_listen = \"127.0.0.1:0\"\nmax_connections = 2\nheader_read_timeout = \"3s\"",
    ))
    .await;
    let metrics_address = daemon.metrics_address();
    // Two clients that never finish a request fill the metrics listener.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(metrics_address).await.unwrap();
        stream.write_all(b"GET /readyz HTT").await.unwrap();
        slow.push(stream);
    }
    wait_until("the slow clients to hold both slots", DEADLINE, || {
        open_connections(&daemon, "listen") == Some(2)
    })
    .await;

    // A complete request on a third connection is closed unanswered, and counted. The reset
    // may come before the request is written, or even before `connect` returns.
    match TcpStream::connect(metrics_address).await {
        Ok(mut third) => {
            let _ = third
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let received = until_closed(&mut third).await;
            assert!(
                received.is_empty(),
                "answered beyond max_connections: {:?}",
                String::from_utf8_lossy(&received)
            );
        }
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}"),
    }
    let scrape = daemon.metrics().render();
    assert_eq!(
        listener_metric(
            &scrape,
            "tributary_http_connections_rejected_total",
            "listen"
        ),
        Some(1),
        "{scrape}"
    );
    assert_eq!(
        listener_metric(&scrape, "tributary_http_connections", "listen"),
        Some(2),
        "the slow clients still hold their connections"
    );

    // Meanwhile the webhook listener, with its own limit, takes deliveries into Kafka.
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/webhooks/hooks",
            daemon.webhook_address()
        ))
        .header("content-type", "application/json")
        .body(r#"{"delivery":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // The header read timeout frees the slots; the metrics listener answers again.
    for stream in &mut slow {
        assert!(until_closed(stream).await.is_empty());
    }
    let readyz = format!("http://{metrics_address}/readyz");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = http_get(&readyz).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(
        "the closed connections to leave the gauge",
        DEADLINE,
        || open_connections(&daemon, "listen") == Some(0),
    )
    .await;
    let scrape = daemon.metrics().render();
    assert_eq!(
        listener_metric(
            &scrape,
            "tributary_http_connections_rejected_total",
            "listen"
        ),
        Some(1)
    );
    assert_eq!(
        listener_metric(
            &scrape,
            "tributary_http_connections_rejected_total",
            "webhook_listen"
        ),
        Some(0)
    );
    daemon.shutdown().await;
    let records = broker.read("hooks").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, br#"{"delivery":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_disconnected_after_write_timeout() {
    const REQUESTS: usize = 2000;
    let broker = Broker::mock();
    broker.create_topic("hooks").await;
    let state = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&hooks_config(
        &broker.brokers(),
        state.path(),
        "write_timeout = \"1s\"",
    ))
    .await;
    // A small receive window, then thousands of pipelined scrapes never read: the answers
    // (megabytes) cannot all fit in the sockets' buffers, so the daemon's writes wait.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut deaf = socket.connect(daemon.metrics_address()).await.unwrap();
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(REQUESTS);
    deaf.write_all(requests.as_bytes()).await.unwrap();
    wait_until("the connection to be counted", DEADLINE, || {
        open_connections(&daemon, "listen") == Some(1)
    })
    .await;
    // Once a write has waited `write_timeout`, the daemon closes the connection: its slot is
    // free again.
    wait_until("the deaf client's connection to close", DEADLINE, || {
        open_connections(&daemon, "listen") == Some(0)
    })
    .await;
    let (status, body) = http_get(&format!("http://{}/healthz", daemon.metrics_address())).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    drop(deaf);
    daemon.shutdown().await;
}
