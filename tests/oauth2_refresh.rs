//! The OAuth2 refresh-token grant against a token endpoint that rotates refresh tokens (each
//! token response carries a new one and voids the old): a restart uses the token the previous
//! run stored with its positions, not the configured one, on Apache Kafka with the binary.

mod common;

use std::{
    process::Command,
    sync::{Arc, Mutex},
};

use common::{
    api::{self, ApiServer},
    free_port,
    process::{binary, write_config, Daemon},
    Broker,
};

/// The token endpoint and the API: refresh token `refresh-<n>` is the only one accepted, and
/// trading it gives `access-<n+1>` and `refresh-<n+1>`; the API wants the latest access token.
async fn provider() -> (ApiServer, Arc<Mutex<u32>>) {
    let generation = Arc::new(Mutex::new(0u32));
    let current = Arc::clone(&generation);
    let server = ApiServer::start(move |request| {
        let current = Arc::clone(&current);
        async move {
            let mut generation = current.lock().unwrap();
            if request.path() == "/token" {
                let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
                    .into_owned()
                    .collect();
                let field = |name: &str| {
                    form.iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.clone())
                };
                if field("grant_type").as_deref() != Some("refresh_token")
                    || field("refresh_token") != Some(format!("refresh-{generation}"))
                {
                    return api::json(400, r#"{"error":"invalid_grant"}"#, &[]);
                }
                *generation += 1;
                let body = format!(
                    r#"{{"access_token":"access-{g}","token_type":"bearer","expires_in":3600,"refresh_token":"refresh-{g}"}}"#,
                    g = *generation
                );
                return api::json(200, body, &[]);
            }
            let expected = format!("Bearer access-{generation}");
            if request.header("authorization") != Some(expected.as_str()) {
                return api::status(401, &[]);
            }
            api::json(200, r#"[{"id":1},{"id":2}]"#, &[])
        }
    })
    .await;
    (server, generation)
}

fn config(brokers: &str, state: &std::path::Path, port: u16, base: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:{port}"

[sources.crm]
type = "rest"
url = "{base}/items"
topic = "crm.items"
records = ""
key = "/id"
interval = "1h"
auth = {{ type = "oauth2_refresh_token", token_url = "{base}/token", client_id = "tributary", client_secret = "client-secret", refresh_token = "refresh-0" }}
"#,
        state = state.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_stored_and_used_after_a_restart() {
    let broker = Broker::kafka();
    broker.create_topic("crm.items").await;
    let (server, generation) = provider().await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        state.path(),
        &config(&broker.brokers(), state.path(), port, &server.base),
    );

    // The first run trades the configured token for `refresh-1`.
    let mut first = Daemon::spawn(&path, port);
    first.wait_for_produced("crm", 2).await;
    assert_eq!(*generation.lock().unwrap(), 1);
    assert!(first.terminate().await.success());

    // The second run starts with the stored `refresh-1`: the configured `refresh-0` is void.
    let mut second = Daemon::spawn(&path, port);
    second.wait_for_produced("crm", 2).await;
    assert!(second.terminate().await.success());
    assert_eq!(*generation.lock().unwrap(), 2);
    let traded: Vec<String> = server
        .requests()
        .iter()
        .filter(|request| request.path() == "/token")
        .map(|request| {
            url::form_urlencoded::parse(&request.body)
                .find(|(key, _)| key == "refresh_token")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(traded, ["refresh-0", "refresh-1"]);
    assert_eq!(broker.read("crm.items").await.len(), 4);

    // `positions list` shows the source's position, never the token kept beside it.
    let listed = Command::new(binary())
        .args(["positions", "list", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{printed}");
    assert!(printed.contains("crm"), "{printed}");
    assert!(!printed.contains("refresh-2"), "{printed}");

    // After a new login, the stored token is reset, and the configured one is used again.
    let reset = Command::new(binary())
        .args(["positions", "reset", "crm/oauth2-refresh-token", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&reset.stdout);
    assert!(
        reset.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(printed.contains("position forgotten"), "{printed}");
}
