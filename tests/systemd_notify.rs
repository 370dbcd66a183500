//! The daemon under a service manager's notify socket (`Type=notify`, `sd_notify(3)`): the
//! test owns `NOTIFY_SOCKET` (a Unix datagram socket in a temporary directory) and reads what
//! the real binary sends, in order.

mod common;

use std::{
    os::unix::net::UnixDatagram,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{process::*, *};
use tributary::cli::demo::replay::{self, ReplayOptions, ReplayServer};

/// Every datagram received on the socket, in order, each split into its `KEY=value` lines.
fn listen(socket: UnixDatagram) -> Arc<Mutex<Vec<Vec<String>>>> {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&messages);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            sink.lock()
                .unwrap()
                .push(text.lines().map(str::to_owned).collect());
        }
    });
    messages
}

fn lines(messages: &Mutex<Vec<Vec<String>>>) -> Vec<String> {
    messages.lock().unwrap().iter().flatten().cloned().collect()
}

async fn wait_for_line(
    messages: &Mutex<Vec<Vec<String>>>,
    what: &str,
    mut found: impl FnMut(&str) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines(messages).iter().any(|line| found(line)) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; received: {:?}",
            lines(messages)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The records per second a `STATUS=` line reports.
fn rate(line: &str) -> Option<f64> {
    let status = line.strip_prefix("STATUS=")?;
    let (before, _) = status.split_once(" records/s to Kafka")?;
    before.rsplit(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_then_stopping_in_that_order() {
    let broker = Broker::kafka();
    broker.create_topic("notify").await;
    // A live feed (200 events/s), so the status line has a rate to report.
    let feed = ReplayServer::start(
        replay::wikimedia_feed(20_000),
        ReplayOptions {
            events_per_second: Some(200),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let messages = listen(UnixDatagram::bind(&socket_path).unwrap());
    let port = free_port();
    let config = write_config(
        dir.path(),
        &process_toml(&broker, dir.path(), "notify", &feed.url(), port, ""),
    );
    let mut daemon = Daemon::spawn_with(&config, port, |command| {
        command
            .env("RUST_LOG", "warn")
            .env("NOTIFY_SOCKET", &socket_path)
            // WatchdogSec=1s: a keep-alive every 500 ms.
            .env("WATCHDOG_USEC", "1000000");
    });

    wait_for_line(&messages, "READY=1", |line| line == "READY=1").await;
    // READY=1 comes once the HTTP server answers.
    assert!(
        daemon.scrape().await.is_some(),
        "/metrics answers after READY=1"
    );
    daemon.wait_for_produced("notify", 100).await;
    wait_for_line(&messages, "a status line with a rate", |line| {
        line.starts_with("STATUS=1 of 1 sources connected") && rate(line).is_some_and(|r| r > 0.0)
    })
    .await;
    wait_for_line(&messages, "WATCHDOG=1", |line| line == "WATCHDOG=1").await;
    let status = daemon.terminate().await;
    assert!(status.success(), "SIGTERM ends the daemon with 0: {status}");

    let all = lines(&messages);
    let position = |wanted: &str| all.iter().position(|line| line == wanted);
    let ready = position("READY=1").expect("READY=1 was sent");
    let stopping = position("STOPPING=1").expect("STOPPING=1 was sent on SIGTERM");
    assert!(ready < stopping, "READY=1 before STOPPING=1: {all:?}");
    assert_eq!(
        all.iter().filter(|line| *line == "READY=1").count(),
        1,
        "READY=1 once: {all:?}"
    );
    let first_status = all[ready + 1..]
        .iter()
        .find(|line| line.starts_with("STATUS="))
        .expect("a STATUS line with READY=1");
    assert!(
        first_status.contains("sources connected") || first_status.contains("starting"),
        "{first_status}"
    );
    let watchdogs = all.iter().filter(|line| *line == "WATCHDOG=1").count();
    assert!(
        watchdogs >= 1,
        "WATCHDOG=1 while the pipeline runs: {all:?}"
    );
    assert!(
        all.iter()
            .position(|line| line == "WATCHDOG=1")
            .is_some_and(|first| first > ready),
        "keep-alives start after READY=1: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watchdog_keepalives_without_watchdog_usec() {
    let broker = Broker::kafka();
    broker.create_topic("quiet").await;
    let feed = ReplayServer::start(replay::wikimedia_feed(100), ReplayOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let messages = listen(UnixDatagram::bind(&socket_path).unwrap());
    let port = free_port();
    let config = write_config(
        dir.path(),
        &process_toml(&broker, dir.path(), "quiet", &feed.url(), port, ""),
    );
    let mut daemon = Daemon::spawn_with(&config, port, |command| {
        command
            .env("RUST_LOG", "warn")
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC");
    });
    wait_for_line(&messages, "READY=1", |line| line == "READY=1").await;
    daemon.wait_for_produced("quiet", 100).await;
    // Wait for the first periodic status (5 s after READY=1), so the daemon ran a while.
    wait_for_line(&messages, "a periodic status", |_| {
        messages.lock().unwrap().len() >= 2
    })
    .await;
    let status = daemon.terminate().await;
    assert!(status.success());
    let all = lines(&messages);
    assert!(
        !all.iter().any(|line| line == "WATCHDOG=1"),
        "no WATCHDOG=1 when systemd did not ask for one: {all:?}"
    );
    assert!(all.iter().any(|line| line == "STOPPING=1"), "{all:?}");
}
