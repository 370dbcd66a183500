//! `[cluster]`: replicas that share the sources.

use std::time::Duration;

use serde::Deserialize;

use crate::{config::check_topic, error::ConfigError};

/// `[cluster]`. Replicas with the same `name` (and the same config) form one Kafka consumer
/// group, `tributary.<name>`, on the sources' control topics, and split the sources between
/// them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster's name: the consumer group is `tributary.<name>`, and it is the first part
    /// of every position key in the Kafka store.
    pub name: String,
    /// The control topics' prefix: each source has its own, `<topic>.<source>`, with one
    /// partition; a replica with no source to share joins on `<topic>` itself. Default
    /// `tributary.<name>.assignments`.
    #[serde(default)]
    pub topic: Option<String>,
    /// No longer used: each source's control topic has one partition. Accepted (and checked)
    /// so that older configs still load. Default 12.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the control topics when Tributary creates them. Default `-1`
    /// (the brokers' `default.replication.factor`).
    #[serde(default = "crate::config::default_replication_factor")]
    pub replication_factor: i32,
    /// How long the group coordinator waits for a replica's heartbeat before it gives the
    /// replica's sources to the others (`session.timeout.ms`). Default `6s`, the brokers'
    /// `group.min.session.timeout.ms`.
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Longest time a revoked source may take to stop, drain and commit before the rebalance
    /// goes on (its unacknowledged records are then read again by the next owner). Default
    /// `30s`.
    #[serde(default = "default_handoff_timeout", with = "humantime_serde")]
    pub handoff_timeout: Duration,
    /// This replica's id in logs, positions and the group's client ids. Default
    /// `<hostname>-<pid>` (the pod name in Kubernetes).
    #[serde(default)]
    pub replica: Option<String>,
}

impl Default for ClusterSection {
    /// The cluster of one that `checkpoint.store = "kafka"` without `[cluster]` runs as.
    fn default() -> Self {
        ClusterSection {
            name: "default".into(),
            topic: None,
            partitions: default_partitions(),
            replication_factor: crate::config::default_replication_factor(),
            session_timeout: default_session_timeout(),
            handoff_timeout: default_handoff_timeout(),
            replica: None,
        }
    }
}

fn default_partitions() -> i32 {
    12
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(6)
}
fn default_handoff_timeout() -> Duration {
    Duration::from_secs(30)
}

impl ClusterSection {
    /// The consumer group's id.
    pub fn group_id(&self) -> String {
        format!("tributary.{}", self.name)
    }

    /// The control topic's name: the prefix of every source's control topic, and the topic a
    /// replica with no source to share (webhooks only) joins the group on.
    pub fn control_topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("tributary.{}.assignments", self.name))
    }

    /// The control topic of `source`: `<control topic>.<source>`, one partition, no records.
    pub fn source_control_topic(&self, source: &str) -> String {
        format!("{}.{source}", self.control_topic())
    }

    /// This replica's id.
    pub fn replica_id(&self) -> String {
        self.replica.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|host| !host.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|host| host.trim().to_owned())
                })
                .unwrap_or_else(|| "replica".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// Adds every problem of this section to `errors`.
    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let legal_name = !self.name.is_empty()
            && self.name.len() <= 200
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !legal_name {
            errors.push(ConfigError::new(
                "cluster",
                "cluster.name",
                "is not allowed: it names a consumer group and a topic",
                "use 1 to 200 characters from `a-z A-Z 0-9 . _ -`",
            ));
        }
        check_topic(errors, "cluster", "cluster.topic", &self.control_topic());
        if self.partitions < 1 {
            errors.push(ConfigError::new(
                "cluster",
                "cluster.partitions",
                "must be at least 1",
                "use at least the number of replicas, e.g. `12`",
            ));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            errors.push(ConfigError::new(
                "cluster",
                "cluster.replication_factor",
                "must be at least 1, or -1 for the brokers' default",
                "use e.g. `3`",
            ));
        }
        if self.session_timeout < Duration::from_secs(1) {
            errors.push(ConfigError::new(
                "cluster",
                "cluster.session_timeout",
                "must be at least 1s (brokers refuse less than their `group.min.session.timeout.ms`, 6s by default)",
                "use e.g. `\"6s\"`",
            ));
        }
        if self.handoff_timeout.is_zero() {
            errors.push(ConfigError::new(
                "cluster",
                "cluster.handoff_timeout",
                "must be greater than zero",
                "use e.g. `\"30s\"`",
            ));
        }
        if self
            .replica
            .as_deref()
            .is_some_and(|replica| replica.is_empty() || replica.contains('/'))
        {
            errors.push(ConfigError::new(
                "cluster",
                "cluster.replica",
                "must not be empty or contain `/`",
                "remove it to use `<hostname>-<pid>`",
            ));
        }
    }
}
