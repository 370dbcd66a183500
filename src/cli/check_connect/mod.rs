//! `tributary check --connect`: beyond parsing, one look at everything the daemon will need.
//!
//! - **Kafka** ([`kafka`]): the brokers answer a metadata request; each source's topic and
//!   dead-letter topic exist; with `checkpoint.store = "kafka"`, whether the positions topic
//!   exists and, if it does, whether it is compacted (a missing one is fine: `run` creates it).
//! - **Feeds** ([`crate::sources::Source::probe`]): one request per source, with its headers,
//!   authentication, TLS, timeouts and redirect policy, and no retries. Webhook sources have no
//!   URL to check.
//!
//! Nothing is consumed from a feed or produced to Kafka. Each check is one line of a table
//! (what, target, result, detail); URLs are printed redacted, and no detail carries a secret.
//!
//! Exit codes: [`KAFKA_FAILED`] (3) when the brokers do not answer or a topic is missing
//! (or the positions topic is not compacted); else [`SOURCE_FAILED`] (4) when a source's URL
//! fails; else 0. Kafka comes first: without it no source can deliver anything.

mod kafka;

use std::{fmt, time::Duration};

use crate::{
    config::Config,
    sources::{Probe, SourceInfo},
};

/// Exit code when the brokers do not answer, a topic is missing, or the positions topic is
/// not compacted.
pub const KAFKA_FAILED: u8 = 3;
/// Exit code when a source's URL does not answer as it should (and Kafka is fine).
pub const SOURCE_FAILED: u8 = 4;
/// The longest a source's probe may take, whatever its own timeouts say.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// What a failed check is about, which decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The brokers or a topic.
    Kafka,
    /// A source's feed.
    Source,
}

/// The result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It passed.
    Ok,
    /// It failed.
    Failed(Class),
    /// Nothing to check (a webhook source's URL).
    NotApplicable,
    /// Not checked, because an earlier check failed (topics while the brokers do not answer).
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed(_) => "FAILED",
            Status::NotApplicable => "-",
            Status::Skipped => "skipped",
        }
    }
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Line {
    /// What was checked, e.g. `topic (wiki)`.
    pub what: String,
    /// Where: the brokers, a topic name, or a redacted URL.
    pub target: String,
    /// The result.
    pub status: Status,
    /// What was found, or why it failed.
    pub detail: String,
}

/// Every check's line, in the order printed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The lines.
    pub lines: Vec<Line>,
}

impl Report {
    /// 0 when every check passed; [`KAFKA_FAILED`] when a Kafka check failed; else
    /// [`SOURCE_FAILED`] when a source's URL failed.
    pub fn exit_code(&self) -> u8 {
        let failed = |class| {
            self.lines
                .iter()
                .any(|line| line.status == Status::Failed(class))
        };
        if failed(Class::Kafka) {
            KAFKA_FAILED
        } else if failed(Class::Source) {
            SOURCE_FAILED
        } else {
            0
        }
    }

    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.lines
            .iter()
            .filter(|line| matches!(line.status, Status::Failed(_)))
            .count()
    }
}

/// The table: a header, then one line per check, columns padded to their widest cell.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = ["CHECK", "TARGET", "RESULT", "DETAIL"];
        let rows: Vec<[&str; 4]> = std::iter::once(header)
            .chain(self.lines.iter().map(|line| {
                [
                    line.what.as_str(),
                    line.target.as_str(),
                    line.status.label(),
                    line.detail.as_str(),
                ]
            }))
            .collect();
        let width = |column: usize| rows.iter().map(|row| row[column].len()).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2)];
        for row in &rows {
            writeln!(
                f,
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            )?;
        }
        Ok(())
    }
}

/// Runs every check of `config` (Kafka and the sources' URLs at the same time) and returns
/// the table's lines: the brokers, then per source its topic, dead-letter topic and URL, then
/// the positions topic.
pub async fn run(config: &Config) -> Report {
    crate::tls::install_crypto_provider();
    let infos: Vec<&SourceInfo> = config.sources.iter().map(|(info, _)| info).collect();
    let kafka = kafka::check(config);
    let probes = futures::future::join_all(config.sources.iter().map(|(_, source)| async {
        match tokio::time::timeout(PROBE_LIMIT, source.probe()).await {
            Ok(Probe::Ok(detail)) => (Status::Ok, detail),
            Ok(Probe::Failed(detail)) => (Status::Failed(Class::Source), detail),
            Ok(Probe::NotApplicable) => (
                Status::NotApplicable,
                "not applicable: this kind has no URL to check (the feed is pushed to the daemon)"
                    .to_owned(),
            ),
            Err(_) => (
                Status::Failed(Class::Source),
                format!("no answer within {PROBE_LIMIT:?}"),
            ),
        }
    }));
    let (kafka, probes) = futures::future::join(kafka, probes).await;
    let mut lines = vec![kafka.brokers.clone()];
    for (info, (status, detail)) in infos.iter().zip(probes) {
        let name = &info.name;
        lines.push(kafka.topic(format!("topic ({name})"), &info.topic));
        lines.push(kafka.topic(
            format!("dead-letter topic ({name})"),
            &info.dead_letter_topic,
        ));
        let target = if status == Status::NotApplicable {
            "-".to_owned()
        } else {
            info.redacted_url.clone()
        };
        lines.push(Line {
            what: format!("url ({name})"),
            target,
            status,
            detail,
        });
    }
    lines.extend(kafka.positions);
    lines.extend(kafka.control);
    Report { lines }
}
