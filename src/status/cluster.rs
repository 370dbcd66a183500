//! `tributary status` for a cluster (`checkpoint.store = "kafka"` with `[cluster]`): the whole
//! cluster from the brokers alone, without asking any replica.
//!
//! - **Members** come from the group coordinator: the cluster's consumer group
//!   (`tributary.<cluster>`) described with one request. A replica's client id is
//!   `tributary/<replica>/<fingerprint>` ([`assignment::client_id`]), and its assignment (the
//!   Kafka consumer protocol's bytes, [`decode_assignment`]) lists the control topics it holds:
//!   each one is a source (`<cluster.topic>.<source>`, partition 0). A member whose fingerprint
//!   differs from this config's runs other source settings (a rolling update not finished).
//! - **Positions** come from the Kafka store, read to its end as `tributary positions list`
//!   reads it, with when and by whom each was written.
//!
//! What it does not show: what the replicas are doing right now (states, rates, errors); that
//! is each replica's `GET /api/v1/sources` ([`super::table`]). The assignment is the one the
//! group's last rebalance stored, so during a rebalance a source may show no owner for a
//! moment. Nothing is written: a positions topic that does not exist yet reads as no
//! positions (it is not created).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

use crate::{
    config::Config,
    error::CheckpointError,
    state::checkpoint::{KafkaStore, StoredPosition},
    state::cluster::assignment::{self, parse_client_id},
};

use super::{
    assignment::decode_assignment,
    table::{age, fit, WIDTH},
};

/// How long describing the group and reading the positions topic's metadata may take each.
pub const GROUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster as the brokers know it: what `tributary status --config F` prints for a config
/// with `checkpoint.store = "kafka"` and `[cluster]`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterReport {
    /// `cluster.name`.
    pub cluster: String,
    /// The consumer group the replicas join (`tributary.<cluster>`).
    pub group: String,
    /// The group's state as the coordinator says it (`Stable`, `PreparingRebalance`,
    /// `CompletingRebalance`, `Empty`, `Dead` for a group it does not know).
    pub group_state: String,
    /// `kafka.brokers`, as asked.
    pub brokers: String,
    /// The Kafka store's topic (`checkpoint.topic`).
    pub positions_topic: String,
    /// The fingerprint of this config's shared sources, as a replica running it would put in
    /// its client id.
    pub fingerprint: String,
    /// The group's members, by replica id (client id for members that are not replicas).
    pub members: Vec<ClusterMember>,
    /// Every source this config names, any other source a member owns, and any other source
    /// the store holds a position for; by name.
    pub sources: Vec<ClusterSource>,
}

/// One member of the cluster's consumer group.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its `client.id` as the coordinator lists it.
    pub client_id: String,
    /// Its `cluster.replica_id` (`None`: the client id is not a Tributary replica's).
    pub replica: Option<String>,
    /// The fingerprint of its sources' settings (`None`: not a replica).
    pub fingerprint: Option<String>,
    /// Whether that fingerprint is this config's: `false` when the replica runs other source
    /// settings (`None`: not a replica).
    pub same_config: Option<bool>,
    /// The address the coordinator saw it connect from (`/10.0.0.7`).
    pub host: String,
    /// The sources it owns (the control topics of its assignment), by name.
    pub sources: Vec<String>,
    /// Topics of its assignment that are not a source's control topic (the bare control topic
    /// of a replica with no source to share; anything else is not Tributary's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_topics: Vec<String>,
    /// Why its assignment could not be read (its sources are then unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_error: Option<String>,
}

impl ClusterMember {
    /// The name to show: the replica id, or the client id of a member that is not a replica.
    pub fn name(&self) -> &str {
        self.replica.as_deref().unwrap_or(&self.client_id)
    }
}

/// One source of the cluster.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterSource {
    /// The source's name.
    pub name: String,
    /// Whether this config names it (`false`: only a member's assignment or the store does).
    pub configured: bool,
    /// A webhook source: served by every replica, never assigned.
    pub every_replica: bool,
    /// The members that own it ([`ClusterMember::name`]): one once the group has settled,
    /// none while it is unassigned (no replica runs a config with it, or a rebalance is
    /// moving it).
    pub owners: Vec<String>,
    /// The position the Kafka store holds for it (`None`: none stored).
    pub position: Option<String>,
    /// When the store's entry was written (RFC 3339, UTC).
    pub position_written_at: Option<String>,
    /// Seconds from then to this report (`None`: no entry, or a time that does not parse).
    pub position_age_seconds: Option<f64>,
    /// The replica that wrote the entry.
    pub position_written_by: Option<String>,
    /// The entry's owner epoch (one more each time a replica acquired the source).
    pub position_epoch: Option<u64>,
}

/// Why `tributary status` could not describe the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStatusError {
    /// The config has no cluster (`checkpoint.store = "file"`).
    #[error("the config has no cluster: the cluster view needs `checkpoint.store = \"kafka\"` and `[cluster]`")]
    NotClustered,
    /// The brokers did not answer a request, or refused it.
    #[error("cannot {operation} on the brokers `{brokers}`: {error}; are they up, and is `kafka.brokers` right (and the ACLs, to describe the group)?")]
    Brokers {
        /// `kafka.brokers`.
        brokers: String,
        /// What was asked.
        operation: String,
        /// librdkafka's error.
        error: String,
    },
    /// The Kafka store could not be read.
    #[error("cannot read the positions on the brokers `{brokers}`: {error}")]
    Store {
        /// `kafka.brokers`.
        brokers: String,
        /// The store's error.
        error: CheckpointError,
    },
}

/// A member as the coordinator lists it, before its assignment is read.
struct ListedMember {
    client_id: String,
    host: String,
    assignment: Option<Vec<u8>>,
}

/// Describes the cluster of `config` from its brokers: the group's members with the sources
/// each owns, and every source with its owner and the position the Kafka store holds.
///
/// # Errors
/// [`ClusterStatusError::NotClustered`] without `checkpoint.store = "kafka"`;
/// [`ClusterStatusError::Brokers`] when the brokers do not answer within [`GROUP_TIMEOUT`] or
/// refuse to describe the group; [`ClusterStatusError::Store`] when the positions topic
/// cannot be read (or is not compacted).
pub async fn cluster_report(config: &Config) -> Result<ClusterReport, ClusterStatusError> {
    let cluster = config
        .cluster
        .as_ref()
        .ok_or(ClusterStatusError::NotClustered)?;
    let brokers = config.kafka.brokers.clone();
    let group = cluster.group_id();
    let positions_topic = config.checkpoint.topic.clone();
    let connection = crate::state::cluster::connection(&config.kafka);
    let (group_state, listed, store_exists) = tokio::task::spawn_blocking({
        let (group, topic) = (group.clone(), positions_topic.clone());
        let brokers = brokers.clone();
        move || -> Result<_, ClusterStatusError> {
            let failed = |operation: String, error: String| ClusterStatusError::Brokers {
                brokers: brokers.clone(),
                operation,
                error,
            };
            let consumer: BaseConsumer = connection
                .create()
                .map_err(|e| failed("create a Kafka client".into(), e.to_string()))?;
            let (state, members) = describe_group(&consumer, &group)
                .map_err(|e| failed(format!("describe the consumer group `{group}`"), e))?;
            let exists = topic_exists(&consumer, &topic)
                .map_err(|e| failed(format!("read the metadata of topic `{topic}`"), e))?;
            Ok((state, members, exists))
        }
    })
    .await
    .map_err(|e| ClusterStatusError::Brokers {
        brokers: brokers.clone(),
        operation: "describe the cluster".into(),
        error: e.to_string(),
    })??;
    let stored = if store_exists {
        let mut store_config =
            crate::state::cluster::store_config(&config.kafka, &config.checkpoint, cluster);
        store_config.replica = format!("tributary-status-{}", std::process::id());
        let read = async { KafkaStore::open(store_config).await?.positions().await };
        read.await.map_err(|error| ClusterStatusError::Store {
            brokers: brokers.clone(),
            error,
        })?
    } else {
        BTreeMap::new()
    };
    // The fingerprint a replica running this config joins with: that of the sources the group
    // shares (not webhooks), as `cluster::join` computes it.
    let shared: BTreeSet<String> = config
        .sources
        .iter()
        .filter(|(info, _)| !info.kind.is_pushed())
        .map(|(info, _)| info.name.to_string())
        .collect();
    let webhooks: BTreeSet<String> = config
        .sources
        .iter()
        .filter(|(info, _)| info.kind.is_pushed())
        .map(|(info, _)| info.name.to_string())
        .collect();
    let shared_configs = config
        .source_configs
        .iter()
        .filter(|(name, _)| shared.contains(*name))
        .map(|(name, source)| (name.clone(), source.clone()))
        .collect();
    Ok(assemble(Assembly {
        cluster: cluster.name.clone(),
        group,
        group_state,
        brokers,
        positions_topic,
        fingerprint: assignment::fingerprint(&shared_configs),
        control_topic: cluster.control_topic(),
        shared,
        webhooks,
        members: listed,
        stored,
        now: SystemTime::now(),
    }))
}

/// The group's state and members (none for a group the coordinator does not know).
/// Blocking.
fn describe_group(
    consumer: &BaseConsumer,
    group: &str,
) -> Result<(String, Vec<ListedMember>), String> {
    let list = crate::state::cluster::list_group(consumer, group, GROUP_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let Some(info) = list.groups().iter().find(|info| info.name() == group) else {
        return Ok(("Dead".into(), Vec::new()));
    };
    let members = info
        .members()
        .iter()
        .map(|member| ListedMember {
            client_id: member.client_id().to_owned(),
            host: member.client_host().to_owned(),
            assignment: member.assignment().map(<[u8]>::to_vec),
        })
        .collect();
    Ok((info.state().to_owned(), members))
}

/// Whether the metadata lists `topic` with partitions (one request; the topic is not
/// created). Blocking.
fn topic_exists(consumer: &BaseConsumer, topic: &str) -> Result<bool, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), GROUP_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

/// What [`assemble`] builds a report from.
struct Assembly {
    cluster: String,
    group: String,
    group_state: String,
    brokers: String,
    positions_topic: String,
    fingerprint: String,
    /// The control topics' prefix (`cluster.control_topic()`).
    control_topic: String,
    /// The sources of this config that the group assigns.
    shared: BTreeSet<String>,
    /// The webhook sources of this config.
    webhooks: BTreeSet<String>,
    members: Vec<ListedMember>,
    stored: BTreeMap<String, StoredPosition>,
    now: SystemTime,
}

/// The report from what the brokers answered.
fn assemble(input: Assembly) -> ClusterReport {
    let source_prefix = format!("{}.", input.control_topic);
    let mut members: Vec<ClusterMember> = input
        .members
        .into_iter()
        .map(|listed| {
            let parsed = parse_client_id(&listed.client_id);
            let decoded = match listed.assignment.as_deref() {
                // Not assigned yet (joining, or the group is rebalancing).
                None | Some([]) => Ok(Vec::new()),
                Some(bytes) => decode_assignment(bytes),
            };
            let (mut sources, mut other_topics) = (Vec::new(), Vec::new());
            if let Ok(topics) = &decoded {
                // Partition 0 stands for the source; any other partition of a control topic
                // created by hand with more stands for nothing (as the replicas read it).
                for (topic, _) in topics.iter().filter(|(_, p)| p.contains(&0)) {
                    match topic.strip_prefix(&source_prefix) {
                        Some(source) if !source.is_empty() => sources.push(source.to_owned()),
                        _ => other_topics.push(topic.clone()),
                    }
                }
            }
            sources.sort();
            sources.dedup();
            ClusterMember {
                replica: parsed.map(|(replica, _)| replica.to_owned()),
                fingerprint: parsed.map(|(_, fingerprint)| fingerprint.to_owned()),
                same_config: parsed.map(|(_, fingerprint)| fingerprint == input.fingerprint),
                host: listed.host,
                sources,
                other_topics,
                assignment_error: decoded.err(),
                client_id: listed.client_id,
            }
        })
        .collect();
    members.sort_by(|a, b| (a.name(), &a.client_id).cmp(&(b.name(), &b.client_id)));

    let mut owners: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for member in &members {
        for source in &member.sources {
            owners
                .entry(source.as_str())
                .or_default()
                .push(member.name().to_owned());
        }
    }
    let names: BTreeSet<&str> = input
        .shared
        .iter()
        .chain(&input.webhooks)
        .map(String::as_str)
        .chain(owners.keys().copied())
        .chain(
            input
                .stored
                .keys()
                .map(String::as_str)
                // A refresh token kept beside its source's position is not a source.
                .filter(|key| !crate::http::refresh_token::is_credentials_key(key)),
        )
        .collect();
    let sources = names
        .into_iter()
        .map(|name| {
            let stored = input.stored.get(name);
            ClusterSource {
                name: name.to_owned(),
                configured: input.shared.contains(name) || input.webhooks.contains(name),
                every_replica: input.webhooks.contains(name),
                owners: owners.get(name).cloned().unwrap_or_default(),
                position: stored
                    .and_then(|s| s.position.as_ref())
                    .map(|p| p.as_str().to_owned()),
                position_written_at: stored.map(|s| s.written_at.clone()),
                position_age_seconds: stored
                    .and_then(|s| humantime::parse_rfc3339_weak(&s.written_at).ok())
                    .map(|at| {
                        input
                            .now
                            .duration_since(at)
                            .unwrap_or_default()
                            .as_secs_f64()
                    }),
                position_written_by: stored.map(|s| s.replica.clone()),
                position_epoch: stored.map(|s| s.epoch),
            }
        })
        .collect();
    ClusterReport {
        cluster: input.cluster,
        group: input.group,
        group_state: input.group_state,
        brokers: input.brokers,
        positions_topic: input.positions_topic,
        fingerprint: input.fingerprint,
        members,
        sources,
    }
}

/// The widths of the members table's columns (REPLICA, FINGERPRINT, CONFIG, N); SOURCES
/// takes the rest of [`WIDTH`].
const MEMBER_COLUMNS: [usize; 4] = [24, 16, 6, 3];
/// The widths of the sources table's columns (SOURCE, OWNER, STORED); POSITION takes the
/// rest of [`WIDTH`].
const SOURCE_COLUMNS: [usize; 3] = [24, 20, 7];

/// The report as two tables, members then sources, every line at most [`WIDTH`] characters
/// (long values cut with `…`; `--json` has them whole), then notes: members with another
/// config, unreadable assignments, sources this config does not name.
pub fn render_cluster(report: &ClusterReport) -> String {
    let mut lines: Vec<String> = Vec::new();
    lines.push(format!(
        "cluster {} (group {}, {}); {} member(s); positions in {}",
        report.cluster,
        report.group,
        report.group_state,
        report.members.len(),
        report.positions_topic
    ));
    let [replica, fingerprint, config, count] = MEMBER_COLUMNS;
    let sources_width = WIDTH - MEMBER_COLUMNS.iter().map(|w| w + 1).sum::<usize>();
    lines.push(format!(
        "{:<replica$} {:<fingerprint$} {:<config$} {:>count$} SOURCES",
        "REPLICA", "FINGERPRINT", "CONFIG", "N"
    ));
    for member in &report.members {
        let same = match member.same_config {
            Some(true) => "same",
            Some(false) => "OTHER",
            None => "-",
        };
        let sources = if member.assignment_error.is_some() {
            "?".to_owned()
        } else {
            member.sources.len().to_string()
        };
        lines.push(format!(
            "{:<replica$} {:<fingerprint$} {:<config$} {:>count$} {}",
            fit(member.name(), replica),
            fit(member.fingerprint.as_deref().unwrap_or("-"), fingerprint),
            same,
            fit(&sources, count),
            fit(&member.sources.join(", "), sources_width),
        ));
    }
    if report.members.is_empty() {
        lines.push("(no member: no replica of this cluster runs)".into());
    }
    lines.push(String::new());
    let [source, owner, stored] = SOURCE_COLUMNS;
    let position_width = WIDTH - SOURCE_COLUMNS.iter().map(|w| w + 1).sum::<usize>();
    lines.push(format!(
        "{:<source$} {:<owner$} {:>stored$} POSITION",
        "SOURCE", "OWNER", "STORED"
    ));
    for entry in &report.sources {
        let owners = if entry.every_replica {
            "(every replica)".to_owned()
        } else if entry.owners.is_empty() {
            "-".to_owned()
        } else {
            entry.owners.join(",")
        };
        lines.push(format!(
            "{:<source$} {:<owner$} {:>stored$} {}",
            fit(&entry.name, source),
            fit(&owners, owner),
            age(entry.position_age_seconds),
            fit(entry.position.as_deref().unwrap_or("-"), position_width),
        ));
    }
    let other: Vec<&str> = report
        .members
        .iter()
        .filter(|m| m.same_config == Some(false))
        .map(ClusterMember::name)
        .collect();
    if !other.is_empty() {
        lines.push(format!(
            "CONFIG MISMATCH: {} run(s) other source settings than this config (fingerprint {}); finish the rolling update",
            other.join(", "),
            report.fingerprint
        ));
    }
    for member in &report.members {
        if let Some(error) = &member.assignment_error {
            lines.push(format!(
                "{}: its assignment cannot be read: {error}",
                member.name()
            ));
        }
    }
    let unconfigured: Vec<&str> = report
        .sources
        .iter()
        .filter(|s| !s.configured)
        .map(|s| s.name.as_str())
        .collect();
    if !unconfigured.is_empty() {
        lines.push(format!("not in this config: {}", unconfigured.join(", ")));
    }
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{}", fit(&line, WIDTH));
    }
    out
}

#[cfg(test)]
mod tests;
