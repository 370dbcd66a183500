//! The command line as an operator types it: `--log-level` next to `RUST_LOG`, and what
//! `tributary demo` prints.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{process::*, *};

/// `run` in `cwd` with a config (state in `state_dir`, as written in the file) whose
/// `server.listen` is taken: the start fails at once with an error log line (`cannot start`),
/// before any broker is contacted. Returns stderr.
fn run_failing_start_in(
    cwd: &std::path::Path,
    state_dir: &str,
    args: &[&str],
    rust_log: &str,
) -> String {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = sse_config(
        "127.0.0.1:1",
        std::path::Path::new(state_dir),
        "wiki",
        "http://127.0.0.1:1/feed",
        "wiki",
        "",
    )
    .replace("127.0.0.1:0", &taken.local_addr().unwrap().to_string());
    let config = write_config(dir.path(), &toml);
    let output = Command::new(binary())
        .current_dir(cwd)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", rust_log)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "the start fails: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn run_failing_start(args: &[&str], rust_log: &str) -> String {
    let cwd = tempfile::tempdir().unwrap();
    run_failing_start_in(cwd.path(), "state", args, rust_log)
}

#[test]
fn a_relative_checkpoint_dir_is_logged_as_an_absolute_path() {
    let cwd = tempfile::tempdir().unwrap();
    let stderr = run_failing_start_in(cwd.path(), "relative/state", &[], "info");
    let absolute = cwd.path().canonicalize().unwrap().join("relative/state");
    assert!(
        stderr.contains(&absolute.display().to_string()),
        "the log names {}: {stderr}",
        absolute.display()
    );
}

#[test]
fn a_typo_in_an_environment_variable_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sse_config(
            "127.0.0.1:9092",
            &dir.path().join("state"),
            "wiki",
            "http://127.0.0.1:1/feed",
            "wiki",
            "",
        ),
    );
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .env("TRIBUTARY__KAFKA__BROKRS", "127.0.0.1:9092")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("environment variable `TRIBUTARY__KAFKA__BROKRS`"),
        "{stderr}"
    );
    assert!(stderr.contains("not from the file"), "{stderr}");
}

#[test]
fn log_level_takes_precedence_over_rust_log() {
    let quiet = run_failing_start(&[], "off");
    assert!(!quiet.contains("cannot start"), "RUST_LOG=off: {quiet}");
    let flag_wins = run_failing_start(&["--log-level", "error"], "off");
    assert!(
        flag_wins.contains("cannot start"),
        "--log-level error beats RUST_LOG=off: {flag_wins}"
    );
    let silenced = run_failing_start(&["--log-level", "off"], "info");
    assert!(
        !silenced.contains("cannot start"),
        "--log-level off beats RUST_LOG=info: {silenced}"
    );
}

#[test]
fn an_invalid_log_level_is_a_usage_error_that_says_what_is_accepted() {
    let output = Command::new(binary())
        .args([
            "check",
            "--config",
            "missing.toml",
            "--log-level",
            "tributary=loud",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--log-level"), "{stderr}");
    assert!(stderr.contains("use a level"), "{stderr}");
}

#[test]
fn the_demo_names_the_resume_position_and_no_dead_metrics_url() {
    let output = Command::new(binary())
        .args(["demo", "--events", "3000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("resumed after        event 1500 of 3000"),
        "{stdout}"
    );
    assert!(stdout.contains("Wikimedia's own SSE event id"), "{stdout}");
    assert!(
        !stdout.contains("http://"),
        "no URL of a daemon that has stopped: {stdout}"
    );
    assert!(stdout.contains("--keep-running"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_keep_running_prints_a_metrics_url_that_answers() {
    let mut child = Command::new(binary())
        .args(["demo", "--events", "2000", "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                let rest = line.trim_start().strip_prefix("metrics")?;
                Some(rest.split_whitespace().next()?.to_owned())
            })
    })
    .await
    .unwrap()
    .expect("a metrics line");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        if let Some(answer) = try_http_get(&url).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "{url} does not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    assert!(body.contains("tributary_records_produced_total"), "{body}");
    send_signal(&child, libc::SIGINT);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "Ctrl-C ends the demo: {status}");
}
