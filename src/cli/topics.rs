//! `tributary topics create`: creates the topics a config names, so that a first run needs no
//! Kafka tooling. Tributary's producer never creates topics (`allow.auto.create.topics=false`),
//! and `run` creates only its own: the Kafka store's positions topic and the cluster's control
//! topics.
//!
//! Every source's fixed `topic` and its dead-letter topic are created with the partitions and
//! replication factor given (an existing topic is left as it is and reported). A source whose
//! `topic` is a template names its topics per record: they cannot be known here and are listed
//! as such.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::config::Config;

/// How long the brokers may take to answer the create request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the brokers may take to say whether they accept the credentials (see
/// [`crate::kafka_auth::check_credentials`]).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(3);

/// What `topics create` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Created now.
    Created,
    /// It existed already (left as it is).
    Exists,
    /// The brokers refused it, with their reason.
    Refused(String),
}

/// Why `topics create` could not ask the brokers.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The admin client could not be made or the brokers did not answer.
    #[error("kafka: cannot create topics on `{brokers}`: {reason}; check `kafka.brokers` and the `kafka.producer` connection properties")]
    Kafka {
        /// `kafka.brokers`.
        brokers: String,
        /// What went wrong.
        reason: String,
    },
}

/// The report of one `topics create`.
#[derive(Debug, Default)]
pub struct Report {
    /// Each fixed topic, by name, and what was done with it.
    pub topics: BTreeMap<String, Outcome>,
    /// Sources whose `topic` is a template (their topics are named per record).
    pub templated: Vec<String>,
}

impl Report {
    /// True when every topic was created or existed.
    pub fn ok(&self) -> bool {
        self.topics
            .values()
            .all(|outcome| !matches!(outcome, Outcome::Refused(_)))
    }

    /// One line per topic, then the templated sources.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (topic, outcome) in &self.topics {
            let _ = match outcome {
                Outcome::Created => writeln!(out, "{topic}: created"),
                Outcome::Exists => writeln!(out, "{topic}: exists (left as it is)"),
                Outcome::Refused(reason) => writeln!(out, "{topic}: REFUSED: {reason}"),
            };
        }
        for source in &self.templated {
            let _ = writeln!(
                out,
                "source `{source}`: its `topic` is a template, so its topics are named per record and cannot be created here; create each one it can name (its dead-letter topic is above)"
            );
        }
        out
    }
}

/// The fixed topics `config` names (every source's topic unless templated, and every
/// dead-letter topic), and the sources whose topic is a template.
pub fn named_topics(config: &Config) -> (Vec<String>, Vec<String>) {
    let mut topics = Vec::new();
    let mut templated = Vec::new();
    for (info, _) in &config.sources {
        if info.stage.routes_topic() {
            templated.push(info.name.to_string());
        } else {
            topics.push(info.topic.clone());
        }
        topics.push(info.dead_letter_topic.clone());
    }
    topics.sort();
    topics.dedup();
    (topics, templated)
}

/// Creates the topics `config` names with `partitions` partitions and `replication_factor`
/// replicas each.
///
/// # Errors
/// [`TopicsError::Kafka`]: no admin client, the brokers refuse the credentials (the message
/// names the mechanism), or no answer from the brokers within 30 s. A
/// refusal of one topic (e.g. no `Create` ACL, a replication factor above the brokers) is in
/// the [`Report`], not an error.
pub async fn create(
    config: &Config,
    partitions: i32,
    replication_factor: i32,
) -> Result<Report, TopicsError> {
    let failed = |reason: String| TopicsError::Kafka {
        brokers: config.kafka.brokers.clone(),
        reason,
    };
    let (names, templated) = named_topics(config);
    let connection = crate::state::cluster::connection(&config.kafka);
    // A refused login would otherwise surface as a timeout of the request below, 30 s on.
    let checked = connection.clone();
    tokio::task::spawn_blocking(move || {
        crate::kafka_auth::check_credentials(&checked, CREDENTIALS_TIMEOUT)
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(|failure| failed(failure.to_string()))?;
    let admin: AdminClient<DefaultClientContext> =
        connection.create().map_err(|e| failed(e.to_string()))?;
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)),
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut report = Report {
        templated,
        ..Report::default()
    };
    for result in results {
        let (topic, outcome) = match result {
            Ok(topic) => (topic, Outcome::Created),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => (topic, Outcome::Exists),
            Err((topic, code)) => (topic, Outcome::Refused(code.to_string())),
        };
        report.topics.insert(topic, outcome);
    }
    Ok(report)
}
