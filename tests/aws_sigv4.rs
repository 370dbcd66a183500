//! AWS SigV4 (`auth = { type = "aws_sigv4" }`) against moto's server with its IAM
//! authentication on: moto checks each request's signature with its own implementation, so a
//! request Tributary signs wrongly is refused (HTTP 403). The REST source polls a JSON export
//! in an S3 bucket into Apache Kafka; keys come from the environment or a credentials file
//! profile. (moto refuses even boto3's own signed GETs to its REST-JSON services, such as API
//! Gateway and Lambda, so S3 is the service these tests sign for.)

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{
    free_port,
    process::{binary, write_config, Daemon},
    Broker,
};

/// `tributary check --connect`'s exit code when a source's URL does not answer as it should.
const SOURCE_FAILED: i32 = 4;

fn tools() -> PathBuf {
    std::env::var_os("TRIBUTARY_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tributary"))
}

/// moto's server on a free port, with IAM authentication on after the setup's three
/// unauthenticated requests; the access key made for the tests.
struct Moto {
    endpoint: String,
    key_id: String,
    secret: String,
    child: std::process::Child,
}

impl Moto {
    async fn start(apis: usize) -> Self {
        let root = tools().join("moto");
        let server = root.join("bin/moto_server");
        assert!(
            server.exists(),
            "moto's server is not installed: run `bash tests/servers/moto/install.sh` (.ci/run does)"
        );
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // The setup's create_user, put_user_policy and create_access_key.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        common::wait_until_async("moto's server to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        let endpoint = format!("http://127.0.0.1:{port}");
        let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/moto/setup.py");
        let output = Command::new(root.join("bin/python"))
            .arg(setup)
            .arg(&endpoint)
            .arg(apis.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8(output.stdout).unwrap();
        let mut lines = printed.lines();
        Moto {
            endpoint,
            key_id: lines.next().unwrap().to_owned(),
            secret: lines.next().unwrap().to_owned(),
            child,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(brokers: &str, state: &Path, port: u16, endpoint: &str, auth_extra: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
dir = "{state}"
commit_interval = "50ms"

[server]
listen = "127.0.0.1:{port}"

[sources.apis]
type = "rest"
url = "{endpoint}/tributary-test/exports/records.json"
records = ""
key = "/id"
interval = "1h"
topic = "aws.apis"
auth = {{ type = "aws_sigv4", service = "s3", region = "us-east-1"{auth_extra} }}
"#,
        state = state.display()
    )
}

fn without_aws_environment(command: &mut Command) -> &mut Command {
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        command.env_remove(name);
    }
    command
}

fn check_connect(config: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(binary());
    without_aws_environment(&mut command)
        .args(["check", "--connect", "--config"])
        .arg(config);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn printed(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_source_signs_its_requests_and_moto_s3_accepts_them() {
    let broker = Broker::kafka();
    let moto = Moto::start(3).await;
    broker.create_topic("aws.apis").await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        state.path(),
        &config(&broker.brokers(), state.path(), port, &moto.endpoint, ""),
    );
    let (key_id, secret) = (moto.key_id.clone(), moto.secret.clone());
    let mut daemon = Daemon::spawn_with(&path, port, |command| {
        without_aws_environment(command)
            .env("AWS_ACCESS_KEY_ID", &key_id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("RUST_LOG", "warn");
    });
    daemon.wait_for_produced("apis", 3).await;
    let mut names: Vec<String> = broker
        .read("aws.apis")
        .await
        .iter()
        .map(|record| {
            let value: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            value["name"].as_str().unwrap().to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["record-0", "record-1", "record-2"]);
    assert!(daemon.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_signs_too_a_wrong_secret_is_refused_and_missing_keys_fail_check() {
    let broker = Broker::kafka();
    let moto = Moto::start(1).await;
    broker.create_topic("aws.apis").await;
    let state = tempfile::tempdir().unwrap();
    let credentials = state.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {id}\naws_secret_access_key = not-the-secret\n\n[ops]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n",
            id = moto.key_id,
            secret = moto.secret
        ),
    )
    .unwrap();
    let file = credentials.to_str().unwrap();
    let with_profile = write_config(
        state.path(),
        &config(
            &broker.brokers(),
            state.path(),
            0,
            &moto.endpoint,
            r#", profile = "ops""#,
        ),
    );
    let output = check_connect(&with_profile, &[("AWS_SHARED_CREDENTIALS_FILE", file)]);
    assert!(output.status.success(), "{}", printed(&output));

    // The default profile's secret is wrong: moto refuses the signature.
    let other = tempfile::tempdir().unwrap();
    let default = write_config(
        other.path(),
        &config(&broker.brokers(), state.path(), 0, &moto.endpoint, ""),
    );
    let output = check_connect(&default, &[("AWS_SHARED_CREDENTIALS_FILE", file)]);
    assert_eq!(
        output.status.code(),
        Some(SOURCE_FAILED),
        "{}",
        printed(&output)
    );
    assert!(printed(&output).contains("403"), "{}", printed(&output));
    assert!(
        !printed(&output).contains("not-the-secret"),
        "{}",
        printed(&output)
    );

    // No keys anywhere: `check` says where it looked, and what to set.
    let output = check_connect(
        &default,
        &[("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")],
    );
    assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
    assert!(
        printed(&output).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        printed(&output)
    );
}
