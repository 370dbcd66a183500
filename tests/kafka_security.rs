//! Kafka's own security against Apache Kafka: one broker (`kafka.sh start --security`) with
//! SASL_PLAINTEXT and SASL_SSL listeners (SCRAM-SHA-512 and PLAIN) and an SSL listener that
//! requires a client certificate, its CA and certificates made at start.
//!
//! - Each mechanism: a `tributary run` child process reads an SSE feed on 127.0.0.1, produces
//!   every event to its topic through the secured listener, and commits its position through
//!   the Kafka store (`checkpoint.store = "kafka"`), whose clients must carry the same
//!   security settings as the producer; once more with an exactly-once source, whose
//!   transactional producer writes both.
//! - Refusals (a wrong password, a client certificate from a CA the broker does not trust, a
//!   broker certificate the client does not trust, SASL against a listener without it):
//!   `check --connect` exits 3 and `run` exits 1 (and `positions list` and `topics create`
//!   1), each with a message that names the mechanism, instead of librdkafka retrying
//!   forever.
//! - `config/kafka-sasl-tls.toml`, pointed at this broker, passes `check --connect` and
//!   produces.
//! - No password reaches the output: every daemon logs at `RUST_LOG=trace`, the refused ones
//!   with librdkafka's own `debug = "all"` (which dumps its configuration), and stdout, stderr
//!   and `/metrics` are searched for the password.
//!
//! One broker serves every case, and the cases run side by side: the suite's time is about
//! one broker start plus its slowest case.

mod common;
#[path = "kafka_security/connections.rs"]
mod connections;

use std::{
    future::Future,
    pin::Pin,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::FutureExt as _;

use common::{
    blocking, free_port,
    kafka::{KafkaCluster, Security},
    positions_store,
    process::{binary, metric, Daemon},
    Broker, Scripted, ScriptedServer,
};
use connections::{accepted, assert_no_password, config, refused, write, Connection};

/// Events each feed serves (ids 1..=EVENTS).
const EVENTS: usize = 5;
/// The password of the refusal cases: long and unique, so that a leak cannot hide.
const WRONG_PASSWORD: &str = "WrongKafkaPassword4Tq9Lz";
/// How long a refused daemon may take to stop: start-up, one refused login and the shutdown
/// (flush_timeout 2 s). A daemon still running then is stalled, which is the failure.
const REFUSAL_BOUND: Duration = Duration::from_secs(40);

/// The broker, how to reach its secured listeners, and a folder for the cases' files.
struct Fixture {
    broker: Broker,
    security: Security,
    dir: tempfile::TempDir,
}

/// A feed of [`EVENTS`] events that stays open.
async fn feed() -> ScriptedServer {
    let body: String = (1..=EVENTS)
        .map(|n| format!("id: {n}\ndata: {{\"n\":{n}}}\n\n"))
        .collect();
    ScriptedServer::start(vec![Scripted::events(&body, true)]).await
}

/// `connection` works: a daemon produces every event through it and commits the position of
/// the last through the Kafka store; its output at trace level never holds the password.
async fn produces_and_commits_positions(
    fixture: &Fixture,
    connection: Connection,
    delivery: &'static str,
) {
    let name = connection.name;
    let topic = format!("secured.{name}");
    fixture.broker.create_topic(&topic).await;
    let feed = feed().await;
    let port = free_port();
    let dir = fixture.dir.path();
    let state = dir.join(format!("state-{name}"));
    let url = format!("{}/events", feed.base_url);
    // librdkafka's own debug lines of the login and the connections go to the log too.
    let debug = "\"debug\" = \"security,broker,conf\"\n";
    let path = write(
        dir,
        name,
        &(config(&connection, &topic, &url, "kafka", &state, port, debug)
            + &format!("delivery = \"{delivery}\"\n")),
    );
    let log = dir.join(format!("{name}.log"));
    let mut daemon = Daemon::spawn_with(&path, port, |command| {
        let file = std::fs::File::create(&log).unwrap();
        command
            .env("RUST_LOG", "trace")
            .env("KAFKA_SASL_PASSWORD", &fixture.security.password)
            .stdout(file.try_clone().unwrap())
            .stderr(file);
    });
    daemon.wait_for_produced("feed", EVENTS as u64).await;
    daemon
        .wait_for_metric("tributary_checkpoint_commits_total", "feed", 1)
        .await;
    let store = positions_store(&fixture.broker, &format!("positions.{name}"), name).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = store.positions().await.expect("read the positions topic");
        let position = stored.get("feed").and_then(|p| p.position.clone());
        if position.as_ref().map(|p| p.as_str()) == Some(&*EVENTS.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the stored position is {position:?}, not `{EVENTS}`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scrape = daemon.scrape().await.expect("a /metrics scrape");
    assert_eq!(
        metric(&scrape, "tributary_records_produced_total", "feed"),
        EVENTS as u64
    );
    let status = daemon.terminate().await;
    assert!(status.success(), "{name}: the daemon exited with {status}");
    let records = fixture.broker.read(&topic).await;
    let mut payloads: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    payloads.sort();
    let expected: Vec<String> = (1..=EVENTS).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(payloads, expected, "{name}: the records in `{topic}`");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "{name}: the daemon did not log at trace level"
    );
    assert_no_password(
        &output,
        &fixture.security.password,
        &format!("{name}'s output"),
    );
    assert_no_password(
        &scrape,
        &fixture.security.password,
        &format!("{name}'s /metrics"),
    );
}

/// `check --connect` with a refused `connection` exits 3, its Kafka line naming the mechanism,
/// and prints no password.
async fn check_connect_names_the_refused_mechanism(fixture: &Fixture, connection: Connection) {
    let name = connection.name;
    let dir = fixture.dir.path();
    let toml = config(
        &connection,
        &format!("secured.{name}"),
        "http://127.0.0.1:9/events",
        "kafka",
        &dir.join(format!("state-check-{name}")),
        free_port(),
        "",
    );
    let path = write(dir, &format!("check-{name}"), &toml);
    let output = tokio::process::Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(&path)
        .env("RUST_LOG", "trace")
        .env("KAFKA_SASL_PASSWORD", WRONG_PASSWORD)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{name}:\n{stdout}\n{stderr}");
    let brokers = stdout
        .lines()
        .find(|line| line.starts_with("kafka brokers"))
        .unwrap_or_else(|| panic!("{name}: no `kafka brokers` line:\n{stdout}"));
    assert!(
        brokers.contains("FAILED") && brokers.contains(connection.named),
        "{name}: the Kafka line does not name `{}`:\n{brokers}",
        connection.named
    );
    for text in [&*stdout, &*stderr] {
        assert_no_password(text, WRONG_PASSWORD, &format!("{name}'s check output"));
        assert_no_password(
            text,
            &fixture.security.password,
            &format!("{name}'s check output"),
        );
    }
}

/// `run` with a refused `connection` stops by itself with exit code 1 and an error naming the
/// mechanism (librdkafka alone would retry for ever), and logs no password at trace level
/// with librdkafka's `debug = "all"`.
async fn run_stops_naming_the_refused_mechanism(
    fixture: &Fixture,
    connection: Connection,
    store: &'static str,
) {
    let name = connection.name;
    let dir = fixture.dir.path();
    let feed = feed().await;
    let port = free_port();
    let toml = config(
        &connection,
        &format!("secured.{name}"),
        &format!("{}/events", feed.base_url),
        store,
        &dir.join(format!("state-run-{name}")),
        port,
        "\"debug\" = \"all\"\n",
    );
    let path = write(dir, &format!("run-{name}"), &toml);
    let started = Instant::now();
    let output = tokio::time::timeout(
        REFUSAL_BOUND,
        tokio::process::Command::new(binary())
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "trace")
            .env("KAFKA_SASL_PASSWORD", WRONG_PASSWORD)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("{name} ({store} store): `run` was still running after {REFUSAL_BOUND:?}: it stalls instead of stopping")
    })
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{name} ({store} store) after {:?}:\n{}",
        started.elapsed(),
        errors.join("\n")
    );
    assert!(
        errors
            .iter()
            .any(|line| line.contains("tributary") && line.contains(connection.named)),
        "{name} ({store} store): no error names `{}`:\n{}",
        connection.named,
        errors.join("\n")
    );
    // librdkafka's configuration dump was written (so the search below means something).
    assert!(
        stderr.contains("librdkafka: CONF") && stderr.contains("Client configuration:"),
        "{name}: librdkafka's configuration dump is missing"
    );
    if connection.named.starts_with("SASL") {
        assert!(
            stderr.contains("sasl.password = [redacted]"),
            "{name}: librdkafka's dump has no hidden `sasl.password`"
        );
    }
    for text in [&*stdout, &*stderr] {
        assert_no_password(text, WRONG_PASSWORD, &format!("{name}'s run output"));
    }
}

/// `positions list` (the Kafka store) and `topics create` with a refused `connection` exit 1
/// with an error naming the mechanism, instead of waiting out their requests' timeouts.
async fn commands_name_the_refused_mechanism(fixture: &Fixture, connection: Connection) {
    let name = connection.name;
    let dir = fixture.dir.path();
    let toml = config(
        &connection,
        &format!("secured.{name}"),
        "http://127.0.0.1:9/events",
        "kafka",
        &dir.join(format!("state-commands-{name}")),
        free_port(),
        "",
    );
    let path = write(dir, &format!("commands-{name}"), &toml);
    for command in [&["positions", "list"][..], &["topics", "create"]] {
        let output = tokio::process::Command::new(binary())
            .args(command)
            .arg("--config")
            .arg(&path)
            .env("KAFKA_SASL_PASSWORD", WRONG_PASSWORD)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{name}: {command:?}:\n{stderr}"
        );
        assert!(
            stderr.contains(connection.named),
            "{name}: {command:?} does not name `{}`:\n{stderr}",
            connection.named
        );
        assert_no_password(&stderr, WRONG_PASSWORD, &format!("{name}: {command:?}"));
    }
}

/// `config/kafka-sasl-tls.toml` (SCRAM-SHA-512 over SASL_SSL, host name verification on) as
/// shipped, with only what points at a real place changed: the brokers, the CA, the state
/// folder and the feed, plus a metrics port. `check --connect` passes and `run` produces the
/// feed's events, with the credentials from the environment variables the example names.
async fn the_example_config_connects_and_produces(fixture: &Fixture) {
    let dir = fixture.dir.path();
    let security = &fixture.security;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/kafka-sasl-tls.toml");
    let mut toml = std::fs::read_to_string(example).unwrap();
    let feed = feed().await;
    let port = free_port();
    let state = dir.join("state-example");
    let replacements = [
        (
            "brokers = \"kafka-0.example.com:9094,kafka-1.example.com:9094,kafka-2.example.com:9094\"",
            format!("brokers = \"{}\"", security.sasl_ssl),
        ),
        (
            "\"ssl.ca.location\" = \"/etc/ssl/certs/ca-certificates.crt\"",
            format!("\"ssl.ca.location\" = \"{}\"", security.ca),
        ),
        (
            "dir = \"/var/lib/tributary\"",
            format!("dir = \"{}\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"", state.display()),
        ),
        (
            "url = \"https://stream.wikimedia.org/v2/stream/recentchange\"",
            format!("url = \"{}/events\"", feed.base_url),
        ),
    ];
    for (from, to) in replacements {
        assert!(toml.contains(from), "{example} no longer holds `{from}`");
        toml = toml.replace(from, &to);
    }
    let path = write(dir, "example", &toml);
    let topic = "wikimedia.recentchange";
    fixture.broker.create_topic(topic).await;
    let credentials = [
        ("KAFKA_SASL_USERNAME", security.username.as_str()),
        ("KAFKA_SASL_PASSWORD", security.password.as_str()),
    ];
    let output = tokio::process::Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(&path)
        .envs(credentials)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "example config: check --connect failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut daemon = Daemon::spawn_with(&path, port, |command| {
        command.envs(credentials).stderr(Stdio::null());
    });
    daemon.wait_for_produced("wikimedia", EVENTS as u64).await;
    let status = daemon.terminate().await;
    assert!(
        status.success(),
        "example config: the daemon exited with {status}"
    );
    assert_eq!(
        fixture.broker.read(topic).await.len(),
        EVENTS,
        "records in `{topic}`"
    );
}

type Case<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sasl_and_tls_listeners_authenticate_and_refusals_stop_with_the_mechanism_named() {
    let started = Instant::now();
    let cluster = blocking(KafkaCluster::start_secure)
        .unwrap_or_else(|e| panic!("Apache Kafka with SASL and SSL listeners did not start: {e}"));
    let security = cluster.security().unwrap();
    let plaintext = cluster.bootstrap_servers().to_owned();
    let fixture = Fixture {
        broker: Broker::Kafka(cluster),
        security: security.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    eprintln!("broker up after {:?}", started.elapsed());
    let mut cases: Vec<(String, Case<'_>)> = vec![(
        "config/kafka-sasl-tls.toml: check --connect passes and run produces".to_owned(),
        Box::pin(the_example_config_connects_and_produces(&fixture)),
    )];
    for connection in accepted(&security) {
        let name = format!("{}: produces and commits positions", connection.name);
        cases.push((
            name,
            Box::pin(produces_and_commits_positions(
                &fixture,
                connection,
                "at_least_once",
            )),
        ));
    }
    // An exactly-once source: its transactional producer logs in as the shared one does, and
    // its positions go in its transactions.
    let exactly_once = connections::sasl(
        "scram-ssl-exactly-once",
        "SASL_SSL",
        "SCRAM-SHA-512",
        &security.sasl_ssl,
        Some(&security.ca),
        "",
    );
    cases.push((
        "scram-ssl-exactly-once: produces and commits positions in transactions".to_owned(),
        Box::pin(produces_and_commits_positions(
            &fixture,
            exactly_once,
            "exactly_once",
        )),
    ));
    for connection in refused(&security, &plaintext) {
        let name = format!("{}: check --connect exits 3 naming it", connection.name);
        cases.push((
            name,
            Box::pin(check_connect_names_the_refused_mechanism(
                &fixture, connection,
            )),
        ));
    }
    for connection in refused(&security, &plaintext).into_iter().take(3) {
        let name = format!("{}: positions and topics name it", connection.name);
        cases.push((
            name,
            Box::pin(commands_name_the_refused_mechanism(&fixture, connection)),
        ));
    }
    // `run` with each store: the Kafka store's start-up (its clients are refused first), and
    // the file store, where the daemon has started when the producer is refused.
    for (index, connection) in refused(&security, &plaintext).into_iter().enumerate() {
        let store = if index % 2 == 0 { "kafka" } else { "file" };
        let name = format!("{}: run stops naming it ({store} store)", connection.name);
        cases.push((
            name,
            Box::pin(run_stops_naming_the_refused_mechanism(
                &fixture, connection, store,
            )),
        ));
    }
    // Side by side on this task; a case that panics fails alone, and the report names it.
    let (names, cases): (Vec<String>, Vec<Case>) = cases.into_iter().unzip();
    let results = futures::future::join_all(
        cases
            .into_iter()
            .map(|case| std::panic::AssertUnwindSafe(case).catch_unwind()),
    )
    .await;
    let failed: Vec<String> = names
        .into_iter()
        .zip(results)
        .filter(|(_, result)| result.is_err())
        .map(|(name, _)| name)
        .collect();
    eprintln!("every case done after {:?}", started.elapsed());
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}
