//! Tests of `config.rs`: loading, validation and the errors it reports.

use super::*;
use crate::config::explain::without_string_values;

fn write(contents: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), contents).unwrap();
    file
}

#[test]
fn errors_name_the_place_but_quote_no_value() {
    let quoted = r#"invalid type: string "Bearer \"s3cr3t\"", expected a map for key `x`"#;
    assert_eq!(
        without_string_values(quoted),
        "invalid type: a string, expected a map for key `x`"
    );
    let error = parse_toml("[kafka]\nbrokers = \"s3cr3t\nflush_timeout = \"1s\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("TOML parse error at line 2, column 18"),
        "{error}"
    );
    assert!(!error.contains("s3cr3t"), "{error}");
}

const VALID: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
[kafka.producer]
"compression.type" = "zstd"

[sources.wiki]
type = "sse"
url = "https://stream.wikimedia.org/v2/stream/recentchange"
topic = "wikimedia.recentchange"
read_timeout = "30s"
"#;

#[test]
fn a_valid_file_loads_with_dotted_producer_properties() {
    let file = write(VALID);
    let config = load(file.path()).unwrap().validate().unwrap();
    assert_eq!(config.sources.len(), 1);
    assert_eq!(
        config.sources[0].0.dead_letter_topic,
        "wikimedia.recentchange.dlq"
    );
    assert!(config.kafka.properties.contains_key("compression.type"));
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let file = write(&VALID.replace("read_timeout", "read_timout"));
    let errors = load(file.path()).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("sources.wiki"), "{text}");
    assert!(text.contains("read_timout"), "{text}");
    assert!(text.contains("source `wiki`"), "{text}");
}

#[test]
fn producer_properties_that_break_delivery_are_refused_with_why() {
    let file = write(
        r#"
[kafka]
brokers = "localhost:9092"
[kafka.producer]
"transactional.id" = "x"
"message.timeout.ms" = "30000"
"enable.idempotence" = "false"
[sources.wiki]
type = "sse"
url = "http://example.com/stream"
topic = "wiki"
"#,
    );
    let Err(errors) = load(file.path()).unwrap().validate() else {
        panic!("the config should be invalid");
    };
    let text = errors.to_string();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "kafka.producer.enable.idempotence",
            "kafka.producer.message.timeout.ms",
            "kafka.producer.transactional.id",
        ],
        "{text}"
    );
    assert!(
        text.contains(
            "each source with `delivery = \"exactly_once\"` has its own transactional producer"
        ),
        "{text}"
    );
    assert!(text.contains("must be `0` (no timeout)"), "{text}");
    let file = write(
        r#"
[kafka]
brokers = "localhost:9092"
[kafka.producer]
"message.timeout.ms" = "0"
[sources.wiki]
type = "sse"
url = "http://example.com/stream"
topic = "wiki"
"#,
    );
    assert!(load(file.path()).unwrap().validate().is_ok());
}

#[test]
fn server_limits_have_defaults_and_zero_is_refused() {
    let config = load(write(VALID).path()).unwrap().validate().unwrap();
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.server.write_timeout, Duration::from_secs(30));
    assert_eq!(config.server.max_connections, 512);
    let file = write(&format!(
        "{VALID}\n[server]\nheader_read_timeout = \"0s\"\nwrite_timeout = \"0s\"\nmax_connections = 0\n"
    ));
    let Err(errors) = load(file.path()).unwrap().validate() else {
        panic!("the config should be invalid");
    };
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "server.header_read_timeout",
            "server.write_timeout",
            "server.max_connections"
        ]
    );
}

#[test]
fn validation_collects_every_error() {
    let file = write(
        r#"
[kafka]
brokers = ""
[kafka.producer]
acks = "1"
[sources.bad]
type = "sse"
url = "ftp://example.com"
topic = "no spaces allowed"
key = "whatever"
max_event_bytes = 0
"#,
    );
    let Err(errors) = load(file.path()).unwrap().validate() else {
        panic!("the config should be invalid");
    };
    let errors = errors.0;
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "kafka.brokers",
            "kafka.producer.acks",
            "sources.bad.url",
            "sources.bad.topic",
            "sources.bad.key",
            "sources.bad.max_event_bytes"
        ]
    );
}

const REST: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"

[sources.items]
type = "rest"
url = "http://127.0.0.1:1/items"
topic = "items"
records = "/items"
"#;

fn only_error(text: &str) -> ConfigError {
    let mut errors = parse_toml(text)
        .and_then(|raw| raw.validate().map(|_| ()))
        .expect_err("the config is invalid")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn a_duration_given_as_a_number_names_the_field_and_suggests_a_string() {
    let error = only_error(&format!("{REST}interval = 10\n"));
    assert_eq!(error.field, "sources.items.interval");
    assert_eq!(error.scope, "source `items`");
    assert!(error.fix.contains(r#"`"10s"`"#), "{error}");
    assert!(!error.problem.contains("for key"), "{error}");
}

#[test]
fn a_typo_in_a_pagination_type_names_the_type_field() {
    let error = only_error(&format!(
        "{REST}pagination = {{ type = \"curser\", cursor = \"/next\", param = \"c\" }}\n"
    ));
    assert_eq!(error.field, "sources.items.pagination.type");
    assert!(
        error.problem.contains("unknown variant `curser`"),
        "{error}"
    );
    assert!(
        error.problem.contains("`cursor`"),
        "the choices are listed: {error}"
    );
}

#[test]
fn a_host_name_in_listen_says_to_use_an_ip_address() {
    let error = only_error(&VALID.replace(
        "[sources.wiki]",
        "[server]\nlisten = \"localhost:9464\"\n\n[sources.wiki]",
    ));
    assert_eq!(error.field, "server.listen");
    assert!(
        error.problem.contains("host name is not resolved"),
        "{error}"
    );
    assert!(error.problem.contains("127.0.0.1:9464"), "{error}");
}

#[test]
fn a_checkpoint_dir_that_is_not_a_string_is_refused() {
    let error =
        only_error(&VALID.replace("[sources.wiki]", "[checkpoint]\ndir = 5\n\n[sources.wiki]"));
    assert_eq!(error.field, "checkpoint.dir");
    assert!(error.problem.contains("integer `5`"), "{error}");
}

#[test]
fn a_relative_checkpoint_dir_is_made_absolute() {
    let config = parse_toml(&VALID.replace(
        "[sources.wiki]",
        "[checkpoint]\ndir = \"state/here\"\n\n[sources.wiki]",
    ))
    .unwrap()
    .validate()
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.checkpoint.dir.is_absolute());
    assert_eq!(
        config.checkpoint.dir,
        std::env::current_dir().unwrap().join("state/here")
    );
}

#[test]
fn record_stage_settings_load_for_every_kind_and_typos_are_still_refused() {
    let staged = VALID.replace(
        "read_timeout = \"30s\"",
        "read_timeout = \"30s\"\ntransform = 'select(.type == \"edit\") | {id, title}'\n\
         timestamp = \"/meta/dt\"\ntimestamp_unit = \"rfc3339\"\n\
         record_headers = { pipeline = \"wiki\" }",
    );
    let config = parse_toml(&staged).unwrap().validate().unwrap();
    let stage = &config.sources[0].0.stage;
    assert!(!stage.is_passthrough());
    assert_eq!(
        stage.headers(),
        [("pipeline".to_owned(), "wiki".to_owned())]
    );
    let typo = parse_toml(&staged.replace("timestamp_unit", "timestamp_units")).unwrap_err();
    // The stage's keys are the kind's own: a typo names its path and the known keys.
    let typo = typo.to_string();
    assert!(typo.contains("sources.wiki.timestamp_units"), "{typo}");
    assert!(
        typo.contains("expected one of") && typo.contains("`transform`"),
        "{typo}"
    );
    // A jq syntax error is a config error with its position.
    let broken = staged.replace("{id, title}", "{id, title");
    let errors = parse_toml(&broken)
        .unwrap()
        .validate()
        .err()
        .unwrap()
        .to_string();
    assert!(errors.contains("sources.wiki.transform"), "{errors}");
    assert!(errors.contains("line 1, column"), "{errors}");
    // A topic template needs a fixed dead-letter topic.
    let routed = VALID.replace(
        "topic = \"wikimedia.recentchange\"",
        "topic = \"wiki.{/wiki}\"",
    );
    let errors = parse_toml(&routed)
        .unwrap()
        .validate()
        .err()
        .unwrap()
        .to_string();
    assert!(
        errors.contains("sources.wiki.dead_letter_topic"),
        "{errors}"
    );
    let routed = routed.replace(
        "topic = \"wiki.{/wiki}\"",
        "topic = \"wiki.{/wiki}\"\ndead_letter_topic = \"wiki.dlq\"",
    );
    let config = parse_toml(&routed).unwrap().validate().unwrap();
    assert!(config.sources[0].0.stage.routes_topic());
}

#[test]
fn exactly_once_needs_the_kafka_store_and_says_so() {
    let toml = r#"
[kafka]
brokers = "localhost:9092"

[sources.wiki]
type = "sse"
url = "https://example.com/stream"
topic = "wiki"
delivery = "exactly_once"
"#;
    let errors = crate::config::parse_toml(toml)
        .unwrap()
        .validate()
        .err()
        .expect("exactly-once without the Kafka store is refused");
    let text = errors.to_string();
    assert!(text.contains("sources.wiki.delivery"), "{text}");
    assert!(text.contains("checkpoint.store = \"kafka\""), "{text}");
    let accepted = toml.replace(
        "[sources.wiki]",
        "[checkpoint]\nstore = \"kafka\"\n\n[sources.wiki]",
    );
    let config = crate::config::parse_toml(&accepted)
        .unwrap()
        .validate()
        .expect("exactly-once with the Kafka store is accepted");
    assert_eq!(
        config.sources[0].0.delivery,
        crate::sources::Delivery::ExactlyOnce
    );
}

#[test]
fn a_webhook_secret_that_does_not_resolve_is_one_error_naming_its_variable() {
    let error = only_error(
        r#"
[kafka]
brokers = "127.0.0.1:9092"
[sources.hooks]
type = "webhook"
topic = "hooks"
signature = { scheme = "github", secrets = ["${env:TRIBUTARY_TEST_NEVER_SET_SECRET}"] }
"#,
    );
    assert_eq!(
        error.field, "sources.hooks.signature.secrets[0]",
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("TRIBUTARY_TEST_NEVER_SET_SECRET"),
        "{error}"
    );
}

#[test]
fn a_transaction_idle_longer_than_the_interval_is_refused_by_name() {
    let file = write(&VALID.replace(
        "brokers = \"127.0.0.1:9092\"",
        "brokers = \"127.0.0.1:9092\"\ntransaction_interval = \"1s\"\ntransaction_idle = \"2s\"",
    ));
    let Err(errors) = load(file.path()).unwrap().validate() else {
        panic!("a transaction_idle longer than the interval was accepted");
    };
    let text = errors.to_string();
    assert!(text.contains("kafka.transaction_idle"), "{text}");
    assert!(text.contains("kafka.transaction_interval"), "{text}");
}

/// Each kind's own required keys, for a table that is otherwise only shared keys.
const KINDS: &[(&str, &str)] = &[
    ("sse", "url = \"https://example.com/stream\""),
    ("websocket", "url = \"wss://example.com/ws\""),
    ("webhook", "signature = { scheme = \"none\" }"),
    ("rest", "url = \"https://example.com/items\"\nrecords = \"/items\""),
    (
        "graphql",
        "url = \"https://example.com/graphql\"\nquery = \"{ items { id } }\"\nrecords = \"/data/items\"",
    ),
    (
        "graphql_subscription",
        "url = \"wss://example.com/graphql\"\nquery = \"subscription { items { id } }\"",
    ),
];

#[test]
fn every_kind_takes_the_shared_keys_and_refuses_an_unknown_key_beside_them() {
    for (kind, own) in KINDS {
        let table = format!(
            r#"
[kafka]
brokers = "127.0.0.1:9092"
[sources.feed]
type = "{kind}"
{own}
topic = "feed"
dead_letter_topic = "feed.dead"
transform = "."
timestamp = "/at"
timestamp_unit = "seconds"
record_headers = {{ pipeline = "p" }}
on_drift = "count"
delivery = "at_least_once"
channel_max_records = 10
channel_max_bytes = 1000
"#
        );
        let config = parse_toml(&table)
            .and_then(|raw| raw.validate())
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let info = &config.sources[0].0;
        assert_eq!(info.dead_letter_topic, "feed.dead", "{kind}");
        assert_eq!(
            (info.channel_max_records, info.channel_max_bytes),
            (10, 1000),
            "{kind}"
        );
        assert_eq!(
            info.stage.headers(),
            [("pipeline".to_owned(), "p".to_owned())],
            "{kind}"
        );
        assert!(info.stage.is_costly(), "{kind}: the transform is set");

        let error = only_error(&table.replace("on_drift", "on_drfit"));
        assert_eq!(error.field, "sources.feed.on_drfit", "{kind}: {error}");
        assert_eq!(error.scope, "source `feed`", "{kind}: {error}");
        assert!(
            error.problem.contains("unknown field `on_drfit`"),
            "{kind}: {error}"
        );
        // The known keys listed are the shared ones and the kind's own.
        for known in ["`on_drift`", "`topic`", "`channel_max_bytes`"] {
            assert!(error.problem.contains(known), "{kind}: {error}");
        }
        let own_key = own.split(' ').next().unwrap();
        assert!(
            error.problem.contains(&format!("`{own_key}`")),
            "{kind}: {error}"
        );
    }
}
