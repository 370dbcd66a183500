//! `tributary positions list | get | set | reset` on real files, through the binary.

mod common;

use std::{path::Path, process::Output};

use common::process::{binary, try_http_get, write_config, Daemon};
use tributary::state::checkpoint::FileStore;

fn positions(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(binary())
        .args(["positions", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run tributary positions")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    assert!(!output.status.success(), "the command must fail");
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn positions_are_listed_set_and_reset_and_never_behind_a_running_daemons_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[kafka]
brokers = "127.0.0.1:9092"

[checkpoint]
dir = "{}"

[sources.wiki]
type = "sse"
url = "http://127.0.0.1:1/stream"
topic = "wiki"

[sources.ticks]
type = "websocket"
url = "ws://127.0.0.1:1/"
topic = "ticks"
"#,
            state.display()
        ),
    );

    assert_eq!(
        stdout(&positions(&config, &["list"])),
        "ticks\t-\nwiki\t-\n"
    );
    assert_eq!(
        stdout(&positions(&config, &["set", "wiki", "event-42"])),
        "wiki\tevent-42\n"
    );
    assert_eq!(stdout(&positions(&config, &["get", "wiki"])), "event-42\n");
    assert_eq!(
        stdout(&positions(&config, &["list"])),
        "ticks\t-\nwiki\tevent-42\n"
    );
    assert!(stderr(&positions(&config, &["get", "ticks"])).contains("no position is stored"));
    assert!(stderr(&positions(&config, &["set", "wikk", "1"])).contains("no source `wikk`"));

    // While a process holds the store's lock, as a running daemon does, nothing changes.
    {
        let _daemon = FileStore::open_exclusive(&state).unwrap();
        let refused = stderr(&positions(&config, &["set", "wiki", "event-7"]));
        assert!(
            refused.contains(&std::process::id().to_string()),
            "the refusal names the daemon's pid: {refused}"
        );
        stderr(&positions(&config, &["reset", "wiki"]));
        // Reading does not need the lock.
        assert_eq!(stdout(&positions(&config, &["get", "wiki"])), "event-42\n");
    }

    assert_eq!(
        stdout(&positions(&config, &["reset", "wiki"])),
        "wiki\tposition forgotten\n"
    );
    assert_eq!(
        stdout(&positions(&config, &["list"])),
        "ticks\t-\nwiki\t-\n"
    );
}

/// The Kafka store, on Apache Kafka: an install moves from the file store with `copy`, the
/// positions are read and changed through the CLI, and nothing changes while a replica is a
/// member of the cluster's group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_on_the_kafka_store_are_copied_from_the_file_store_and_never_changed_under_a_replica(
) {
    let broker = common::Broker::kafka();
    broker.create_topic("wiki").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = common::free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
store = "kafka"
dir = "{state}"
topic_replication_factor = 1

[cluster]
name = "cli"
partitions = 2
replication_factor = 1
replica = "replica-1"

[server]
listen = "127.0.0.1:{port}"

[sources.wiki]
type = "sse"
url = "http://127.0.0.1:1/stream"
topic = "wiki"
"#,
            brokers = broker.brokers(),
            state = state.display()
        ),
    );
    let run = |args: &'static [&'static str]| {
        let config = config.clone();
        async move { common::blocking(move || positions(&config, args)) }
    };
    // An install on the file store, moved to Kafka.
    FileStore::open(&state)
        .unwrap()
        .commit(&[(
            "wiki".into(),
            tributary::record::Position("event-42".into()),
        )])
        .unwrap();
    assert_eq!(stdout(&run(&["list"]).await), "wiki\t-\n");
    assert_eq!(
        stdout(&run(&["copy", "--from", "file", "--to", "kafka"]).await),
        "wiki\tevent-42\ncopied 1 position(s)\n"
    );
    assert_eq!(stdout(&run(&["get", "wiki"]).await), "event-42\n");
    assert_eq!(
        stdout(&run(&["set", "wiki", "event-43"]).await),
        "wiki\tevent-43\n"
    );
    assert_eq!(stdout(&run(&["list"]).await), "wiki\tevent-43\n");

    // A running replica is a member of the group: set and reset refuse, naming it.
    let mut daemon = Daemon::spawn(&config, port);
    let members = format!("http://127.0.0.1:{port}/readyz");
    common::wait_until_async("the replica runs the source", || async {
        try_http_get(&members)
            .await
            .is_some_and(|(_, body)| body.contains("\"wiki\""))
    })
    .await;
    // A second replica finds the one source taken: it owns nothing and is ready.
    let idle_port = common::free_port();
    std::fs::create_dir_all(dir.path().join("idle")).unwrap();
    let idle_config = write_config(
        &dir.path().join("idle"),
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("replica-1", "replica-2")
            // Another setting: the replicas see that they run different configs.
            .replace("127.0.0.1:1/stream", "127.0.0.1:2/stream")
            .replace(
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{idle_port}"),
            ),
    );
    let idle = Daemon::spawn(&idle_config, idle_port);
    let idle_ready = format!("http://127.0.0.1:{idle_port}/readyz");
    common::wait_until_async("the idle replica is ready", || async {
        try_http_get(&idle_ready)
            .await
            .is_some_and(|(status, body)| status == 200 && body.contains("\"sources\":{}"))
    })
    .await;
    let mut idle = idle;
    idle.wait_for_metric_value("tributary_cluster_config_mismatch", 1)
        .await;
    let refused = stderr(&run(&["set", "wiki", "event-7"]).await);
    assert!(refused.contains("tributary/replica-1/"), "{refused}");
    assert!(refused.contains("live members"), "{refused}");
    stderr(&run(&["reset", "wiki"]).await);
    assert_eq!(stdout(&run(&["get", "wiki"]).await), "event-43\n");
    assert!(daemon.child.try_wait().unwrap().is_none());
    assert!(idle.terminate().await.success());
    assert!(daemon.terminate().await.success());

    // Once it has left the group, they work again.
    assert_eq!(
        stdout(&run(&["reset", "wiki"]).await),
        "wiki\tposition forgotten\n"
    );
    assert!(stderr(&run(&["get", "wiki"]).await).contains("no position is stored"));
}
