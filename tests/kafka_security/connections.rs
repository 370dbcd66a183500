//! The ways the suite connects to the secured broker: each accepted one, each refused one
//! with what its refusal must name, and the daemon config that uses one.

use std::path::{Path, PathBuf};

use super::common::kafka::Security;

/// One way to connect: its name, the listener, and the `[kafka.producer]` lines.
pub struct Connection {
    pub name: &'static str,
    pub brokers: String,
    /// Properties; `${env:KAFKA_SASL_PASSWORD}` takes the password from the child's
    /// environment, as `config/kafka-sasl-tls.toml` does.
    pub properties: Vec<(&'static str, String)>,
    /// What the refusal message names (the mechanism, and the protocol).
    pub named: &'static str,
}

pub fn sasl(
    name: &'static str,
    protocol: &str,
    mechanism: &str,
    brokers: &str,
    ca: Option<&str>,
    named: &'static str,
) -> Connection {
    let mut properties = vec![
        ("security.protocol", protocol.to_owned()),
        ("sasl.mechanism", mechanism.to_owned()),
        ("sasl.username", "tributary".to_owned()),
        ("sasl.password", "${env:KAFKA_SASL_PASSWORD}".to_owned()),
    ];
    if let Some(ca) = ca {
        properties.push(("ssl.ca.location", ca.to_owned()));
    }
    Connection {
        name,
        brokers: brokers.to_owned(),
        properties,
        named,
    }
}

fn mutual_tls(
    name: &'static str,
    security: &Security,
    ca: &str,
    cert: &str,
    key: &str,
    named: &'static str,
) -> Connection {
    Connection {
        name,
        brokers: security.ssl.clone(),
        properties: vec![
            ("security.protocol", "SSL".to_owned()),
            ("ssl.ca.location", ca.to_owned()),
            ("ssl.certificate.location", cert.to_owned()),
            ("ssl.key.location", key.to_owned()),
        ],
        named,
    }
}

/// The connections that must work.
pub fn accepted(security: &Security) -> Vec<Connection> {
    let s = security;
    vec![
        sasl(
            "scram-plaintext",
            "SASL_PLAINTEXT",
            "SCRAM-SHA-512",
            &s.sasl_plaintext,
            None,
            "",
        ),
        sasl(
            "plain-plaintext",
            "SASL_PLAINTEXT",
            "PLAIN",
            &s.sasl_plaintext,
            None,
            "",
        ),
        sasl(
            "scram-ssl",
            "SASL_SSL",
            "SCRAM-SHA-512",
            &s.sasl_ssl,
            Some(&s.ca),
            "",
        ),
        sasl(
            "plain-ssl",
            "SASL_SSL",
            "PLAIN",
            &s.sasl_ssl,
            Some(&s.ca),
            "",
        ),
        mutual_tls("client-cert", s, &s.ca, &s.client_cert, &s.client_key, ""),
    ]
}

/// The connections the broker (or the client) must refuse, and what the message names. The
/// SASL ones are run with [`WRONG_PASSWORD`].
pub fn refused(security: &Security, plaintext: &str) -> Vec<Connection> {
    let s = security;
    vec![
        sasl(
            "wrong-scram-password",
            "SASL_PLAINTEXT",
            "SCRAM-SHA-512",
            &s.sasl_plaintext,
            None,
            "SASL authentication failed (SCRAM-SHA-512 over SASL_PLAINTEXT)",
        ),
        sasl(
            "wrong-plain-password",
            "SASL_SSL",
            "PLAIN",
            &s.sasl_ssl,
            Some(&s.ca),
            "SASL authentication failed (PLAIN over SASL_SSL)",
        ),
        mutual_tls(
            "untrusted-client-cert",
            s,
            &s.ca,
            &s.untrusted_cert,
            &s.untrusted_key,
            "TLS authentication failed (client certificate over SSL)",
        ),
        sasl(
            "untrusted-broker-cert",
            "SASL_SSL",
            "SCRAM-SHA-512",
            &s.sasl_ssl,
            Some(&s.untrusted_ca),
            "TLS authentication failed (SCRAM-SHA-512 over SASL_SSL)",
        ),
        // The listener speaks no SASL at all.
        sasl(
            "sasl-on-plaintext-listener",
            "SASL_PLAINTEXT",
            "PLAIN",
            plaintext,
            None,
            "SASL authentication failed (PLAIN over SASL_PLAINTEXT)",
        ),
    ]
}

/// A daemon config: one SSE source `feed` reading `url` into topic `topic`, positions in the
/// Kafka store (`store = "kafka"`) or in `state` (`store = "file"`), metrics on `port`.
pub fn config(
    connection: &Connection,
    topic: &str,
    url: &str,
    store: &str,
    state: &Path,
    port: u16,
    extra_properties: &str,
) -> String {
    let properties: String = connection
        .properties
        .iter()
        .map(|(key, value)| format!("\"{key}\" = \"{value}\"\n"))
        .collect();
    format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "2s"

[kafka.producer]
{properties}{extra_properties}

[checkpoint]
store = "{store}"
dir = "{state}"
topic = "positions.{name}"
topic_replication_factor = 1
commit_interval = "50ms"
{cluster}
[server]
listen = "127.0.0.1:{port}"

[sources.feed]
type = "sse"
url = "{url}"
topic = "{topic}"
"#,
        brokers = connection.brokers,
        name = connection.name,
        cluster = if store == "kafka" {
            format!(
                "\n[cluster]\nname = \"{}\"\nreplication_factor = 1\nsession_timeout = \"6s\"\n",
                connection.name
            )
        } else {
            String::new()
        },
        state = state.display(),
    )
}

/// Writes `toml` as `<dir>/<name>.toml`.
pub fn write(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Fails, quoting the lines, when `text` holds `password`, raw or in base64 (SASL PLAIN's
/// `\0user\0password` too).
pub fn assert_no_password(text: &str, password: &str, what: &str) {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let forms = [
        password.to_owned(),
        STANDARD.encode(password),
        STANDARD.encode(format!("\0tributary\0{password}")),
    ];
    let leaks: Vec<&str> = text
        .lines()
        .filter(|line| forms.iter().any(|form| line.contains(form.as_str())))
        .collect();
    assert!(
        leaks.is_empty(),
        "the password appears in {what}:\n{}",
        leaks.join("\n")
    );
}
