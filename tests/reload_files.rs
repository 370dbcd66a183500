//! Hot reload notices the files a source's record stage reads: an edit to the content of its
//! `transform_file` or `schema` (same path, same table) restarts that source, which then runs
//! the new program; the other sources keep running, and a reload with nothing edited changes
//! nothing. The broker does not matter here: librdkafka's mock cluster, in process.

mod common;

use std::path::Path;

use common::{process::write_config, *};
use tokio_util::sync::CancellationToken;
use tributary::{
    cli::demo::replay::{ReplayOptions, ReplayServer},
    config,
    runtime::daemon::{self, RunningDaemon},
    runtime::reload::ReloadOutcome,
};

async fn start(path: &Path) -> RunningDaemon {
    let config = config::load(path)
        .and_then(|raw| raw.validate())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    daemon::start(config, CancellationToken::new())
        .await
        .expect("start the daemon")
}

/// True once `topic` holds a record whose `v` field is `version`.
async fn has_version(broker: &Broker, topic: &str, version: u64) -> bool {
    broker.read(topic).await.iter().any(|record| {
        serde_json::from_slice::<serde_json::Value>(&record.payload)
            .is_ok_and(|event| event["v"] == version)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_transform_or_schema_file_restarts_its_source_on_reload() {
    let broker = Broker::mock();
    for topic in ["wiki", "checked", "plain"] {
        broker.create_topic(topic).await;
    }
    let feed = ReplayServer::start_wikimedia(
        30_000,
        ReplayOptions {
            events_per_second: Some(200),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let transform = dir.path().join("wiki.jq");
    let schema = dir.path().join("checked.schema.json");
    std::fs::write(&transform, ". + {v: 1}").unwrap();
    std::fs::write(&schema, r#"{"type": "object"}"#).unwrap();
    let source = |name: &str, extra: &str| {
        format!(
            "\n[sources.{name}]\ntype = \"sse\"\nurl = \"{url}\"\ntopic = \"{name}\"\nformat = \"json\"\n{extra}\n",
            url = feed.url()
        )
    };
    let toml = [
        sse_config(
            &broker.brokers(),
            &dir.path().join("state"),
            "wiki",
            &feed.url(),
            "wiki",
            &format!(
                "format = \"json\"\ntransform_file = \"{}\"",
                transform.display()
            ),
        ),
        source("checked", &format!("schema = \"{}\"", schema.display())),
        source("plain", ""),
    ]
    .concat();
    let path = write_config(dir.path(), &toml);
    let daemon = start(&path).await;
    let reloader = daemon.reloader();
    wait_until_async("the first transform's records", || {
        has_version(&broker, "wiki", 1)
    })
    .await;
    assert_eq!(reloader.reload_file(&path).await, ReloadOutcome::Unchanged);

    // The same paths and tables; only the files' content changes.
    std::fs::write(&transform, ". + {v: 2}").unwrap();
    std::fs::write(&schema, r#"{"type": "object", "description": "edited"}"#).unwrap();
    assert_eq!(
        reloader.reload_file(&path).await,
        ReloadOutcome::Applied {
            started: vec![],
            stopped: vec![],
            restarted: vec!["checked".into(), "wiki".into()],
        }
    );
    wait_until_async("the edited transform's records", || {
        has_version(&broker, "wiki", 2)
    })
    .await;
    assert_eq!(reloader.reload_file(&path).await, ReloadOutcome::Unchanged);
    daemon.shutdown().await;
}
