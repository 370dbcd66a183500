//! How sources reach their servers, on Apache Kafka with real servers on 127.0.0.1: through a
//! real HTTP proxy (Debian's tinyproxy, with Basic credentials), configured per source or read
//! from `HTTP_PROXY`/`NO_PROXY`, and over TLS to servers that demand a client certificate from
//! a private CA (made at test time), with a renewed certificate picked up on SIGHUP.

mod common;

use std::{path::Path, process::Output, sync::atomic::Ordering, time::Duration};

use common::{
    daemon_config, free_port,
    process::{binary, send_signal, write_config, Daemon},
    start_daemon,
    tls::{tls_table, Pki, Proxy, Serve, Server},
    wait_for_acknowledged, wait_until, Broker,
};

/// `tributary check --connect`'s exit code when a source's URL does not answer as it should.
const SOURCE_FAILED: i32 = 4;

/// An SSE, a REST and a WebSocket server, each serving `count` records, over TLS with `tls`.
async fn three_servers(
    count: u64,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> (Server, Server, Server) {
    (
        Server::start(Serve::Sse(count), tls.clone()).await,
        Server::start(Serve::Rest(count), tls.clone()).await,
        Server::start(Serve::WebSocket(count), tls).await,
    )
}

/// A config file in a directory of its own with the three sources and `extra` in each table.
fn three_source_config(
    broker: &Broker,
    servers: (&Server, &Server, &Server),
    state: &Path,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (sse, rest, ws) = servers;
    let path = write_config(
        dir.path(),
        &daemon_config(
            &broker.brokers(),
            state,
            &three_sources(sse, rest, ws, extra),
        ),
    );
    (dir, path)
}

/// One source of each HTTP-speaking stack (hyper for SSE, reqwest for REST, tungstenite for
/// WebSocket), with `extra` TOML lines in each table.
fn three_sources(sse: &Server, rest: &Server, ws: &Server, extra: &str) -> String {
    format!(
        r#"
[sources.sse]
type = "sse"
url = "{sse}/stream"
topic = "net.sse"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
{extra}

[sources.rest]
type = "rest"
url = "{rest}/items"
topic = "net.rest"
records = ""
key = "/id"
interval = "1h"
{extra}

[sources.ws]
type = "websocket"
url = "{ws}/ws"
topic = "net.ws"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
{extra}
"#,
        sse = sse.base,
        rest = rest.base,
        ws = ws.base,
    )
}

async fn create_topics(broker: &Broker) {
    for topic in ["net.sse", "net.rest", "net.ws"] {
        broker.create_topic(topic).await;
    }
}

async fn assert_three_records_each(broker: &Broker) {
    for topic in ["net.sse", "net.rest", "net.ws"] {
        assert_eq!(broker.read(topic).await.len(), 3, "records in {topic}");
    }
}

async fn check_connect(config: &Path, env: &[(&str, String)]) -> Output {
    let mut command = tokio::process::Command::new(binary());
    command.args(["check", "--connect", "--config"]).arg(config);
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        command.env_remove(name).env_remove(name.to_lowercase());
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .await
        .expect("run tributary check --connect")
}

fn printed(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_rest_and_websocket_sources_go_through_their_configured_proxy() {
    let broker = Broker::kafka();
    let proxy = Proxy::start().await;
    let (sse, rest, ws) = three_servers(3, None).await;
    create_topics(&broker).await;
    let state = tempfile::tempdir().unwrap();
    // The proxy's password from a file, as a secret reference.
    let password = state.path().join("proxy-password");
    std::fs::write(&password, proxy.password).unwrap();
    let setting = format!(
        r#"proxy = "http://{}:${{file:{}}}@127.0.0.1:{}""#,
        proxy.user,
        password.display(),
        proxy.port
    );
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &three_sources(&sse, &rest, &ws, &setting),
    ))
    .await;
    for source in ["sse", "rest", "ws"] {
        wait_for_acknowledged(&daemon, source, 3).await;
    }
    for (server, what) in [(&sse, "SSE"), (&rest, "REST"), (&ws, "WebSocket")] {
        assert!(
            proxy.saw(server.port),
            "the {what} server was reached without the proxy; it logged {:?}",
            proxy.requests()
        );
    }
    assert_three_records_each(&broker).await;
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_environment_applies_unless_no_proxy_names_the_host_or_proxy_is_none() {
    let broker = Broker::kafka();
    let proxy = Proxy::start().await;
    let (sse, rest, ws) = three_servers(1, None).await;
    create_topics(&broker).await;
    let state = tempfile::tempdir().unwrap();
    let (_dir, config) = three_source_config(&broker, (&sse, &rest, &ws), state.path(), "");
    // HTTP_PROXY for the http:// and ws:// URLs: every source goes through it.
    let through = check_connect(&config, &[("HTTP_PROXY", proxy.url())]).await;
    assert!(through.status.success(), "{}", printed(&through));
    for server in [&sse, &rest, &ws] {
        assert!(proxy.saw(server.port), "{:?}", proxy.requests());
    }
    assert!(!printed(&through).contains(proxy.password));
    // NO_PROXY names the host: direct, and the proxy sees no new request.
    let seen = proxy.requests().len();
    let direct = check_connect(
        &config,
        &[
            ("HTTP_PROXY", proxy.url()),
            ("no_proxy", "localhost,127.0.0.1".into()),
        ],
    )
    .await;
    assert!(direct.status.success(), "{}", printed(&direct));
    assert_eq!(proxy.requests().len(), seen, "{:?}", proxy.requests());
    // `proxy = "none"` ignores the environment too.
    let (_none_dir, none) = three_source_config(
        &broker,
        (&sse, &rest, &ws),
        state.path(),
        r#"proxy = "none""#,
    );
    let ignored = check_connect(&none, &[("HTTP_PROXY", proxy.url())]).await;
    assert!(ignored.status.success(), "{}", printed(&ignored));
    assert_eq!(proxy.requests().len(), seen, "{:?}", proxy.requests());
    // A proxy URL the sources cannot use fails the check, naming the variable.
    let bad = check_connect(&config, &[("HTTP_PROXY", "socks5://127.0.0.1:1".into())]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", printed(&bad));
    assert!(printed(&bad).contains("HTTP_PROXY"), "{}", printed(&bad));
    // Wrong credentials: refused by the proxy, and the check says so.
    let wrong = format!(
        "http://{}:not-the-password@127.0.0.1:{}",
        proxy.user, proxy.port
    );
    let refused = check_connect(&config, &[("HTTP_PROXY", wrong)]).await;
    assert_eq!(
        refused.status.code(),
        Some(SOURCE_FAILED),
        "{}",
        printed(&refused)
    );
    assert!(
        !printed(&refused).contains("not-the-password"),
        "{}",
        printed(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_demand_a_client_certificate_from_a_private_ca_get_it() {
    let broker = Broker::kafka();
    let pki = Pki::new();
    let tls = pki.server_config();
    let (sse, rest, ws) = three_servers(3, Some(tls)).await;
    assert!(sse.base.starts_with("https://") && ws.base.starts_with("wss://"));
    create_topics(&broker).await;
    let state = tempfile::tempdir().unwrap();
    let setting = format!("tls = {}", pki.tls_table());
    let daemon = start_daemon(&daemon_config(
        &broker.brokers(),
        state.path(),
        &three_sources(&sse, &rest, &ws, &setting),
    ))
    .await;
    for source in ["sse", "rest", "ws"] {
        wait_for_acknowledged(&daemon, source, 3).await;
    }
    assert_three_records_each(&broker).await;
    daemon.shutdown().await;
    for server in [&sse, &rest, &ws] {
        assert_eq!(server.refused.load(Ordering::SeqCst), 0, "{}", server.base);
    }

    // Without a client certificate, or with one from another CA, the handshake is refused
    // and `check --connect` says so for each source.
    let without = format!(r#"tls = {{ ca_file = "{}" }}"#, pki.ca_file.display());
    let rogue = format!(
        "tls = {}",
        tls_table(&pki.ca_file, &pki.rogue_cert, &pki.rogue_key)
    );
    for (setting, what) in [(without, "no client certificate"), (rogue, "a rogue CA's")] {
        let (_dir, config) =
            three_source_config(&broker, (&sse, &rest, &ws), state.path(), &setting);
        let output = check_connect(&config, &[]).await;
        assert_eq!(
            output.status.code(),
            Some(SOURCE_FAILED),
            "{what}: {}",
            printed(&output)
        );
        let failed = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains("FAILED"))
            .count();
        assert_eq!(failed, 3, "{what}: {}", printed(&output));
    }
    // Without `ca_file`, the private CA's server certificate is not trusted.
    let without_ca = format!(
        r#"tls = {{ cert_file = "{}", key_file = "{}" }}"#,
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let (_dir, config) =
        three_source_config(&broker, (&sse, &rest, &ws), state.path(), &without_ca);
    let output = check_connect(&config, &[]).await;
    assert_eq!(
        output.status.code(),
        Some(SOURCE_FAILED),
        "{}",
        printed(&output)
    );
    assert!(
        printed(&output).contains("UnknownIssuer"),
        "{}",
        printed(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_client_certificate_is_used_after_sighup() {
    let broker = Broker::kafka();
    let pki = Pki::new();
    let sse = Server::start(Serve::Sse(3), Some(pki.server_config())).await;
    broker.create_topic("net.sse").await;
    let state = tempfile::tempdir().unwrap();
    // The files the source names hold, at first, a certificate the server does not accept.
    let (cert, key) = (state.path().join("tls.pem"), state.path().join("tls.key"));
    std::fs::copy(&pki.rogue_cert, &cert).unwrap();
    std::fs::copy(&pki.rogue_key, &key).unwrap();
    let port = free_port();
    let config = format!(
        r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
dir = "{dir}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:{port}"

[sources.sse]
type = "sse"
url = "{url}/stream"
topic = "net.sse"
reconnect = {{ initial_delay = "20ms", max_delay = "200ms" }}
tls = {tls}
"#,
        brokers = broker.brokers(),
        dir = state.path().display(),
        url = sse.base,
        tls = tls_table(&pki.ca_file, &cert, &key),
    );
    let mut daemon = Daemon::spawn(&write_config(state.path(), &config), port);
    wait_until(
        "the server to refuse the first certificate",
        Duration::from_secs(60),
        || sse.refused.load(Ordering::SeqCst) > 0,
    )
    .await;
    assert_eq!(sse.served.load(Ordering::SeqCst), 0);
    // Renewed in place, as cert-manager or certbot do; the reload restarts the source.
    std::fs::copy(&pki.client_cert, &cert).unwrap();
    std::fs::copy(&pki.client_key, &key).unwrap();
    send_signal(&daemon.child, libc::SIGHUP);
    daemon.wait_for_produced("sse", 3).await;
    assert_eq!(broker.read("net.sse").await.len(), 3);
    assert!(daemon.terminate().await.success());
}
