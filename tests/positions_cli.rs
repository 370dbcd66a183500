//! `tributary positions list | get | set | reset` on real files, through the binary.

mod common;

use std::{path::Path, process::Output};

use common::process::{binary, write_config};
use tributary::checkpoint::FileStore;

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
