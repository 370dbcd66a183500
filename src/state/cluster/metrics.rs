//! The cluster's metric families.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Metric handles of a cluster replica.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// `tributary_cluster_sources_owned`: assigned sources this replica runs now.
    pub sources_owned: IntGauge,
    /// `tributary_cluster_members`: replicas in the group, as the coordinator last said.
    pub members: IntGauge,
    /// `tributary_cluster_config_mismatch`: 1 while another replica runs a different config.
    pub config_mismatch: IntGauge,
    /// `tributary_cluster_rebalances_total{event}`: partitions assigned, revoked or lost.
    pub rebalances: IntCounterVec,
    /// `tributary_cluster_handoff_seconds{phase}`: `stop` is revocation → final commit,
    /// `start` is assignment → the source running from its acquired position.
    pub handoff_seconds: HistogramVec,
}

impl ClusterMetrics {
    /// Registers the families on `registry`.
    ///
    /// # Panics
    /// When called twice on one registry (a bug: one membership per daemon).
    pub fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::with_opts(Opts::new(name, help)).expect("static metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("registered once");
            gauge
        };
        let rebalances = IntCounterVec::new(
            Opts::new(
                "tributary_cluster_rebalances_total",
                "Control partitions this replica was assigned, or had revoked or lost, by the group.",
            ),
            &["event"],
        )
        .expect("static metric");
        let handoff_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tributary_cluster_handoff_seconds",
                "Seconds a handoff phase took: `stop` from revocation to the final commit, \
                 `start` from assignment to the source running.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["phase"],
        )
        .expect("static metric");
        // Every series exists from the start, so that `increase()` sees the first event.
        for event in ["assigned", "revoked", "lost"] {
            rebalances.with_label_values(&[event]);
        }
        for phase in ["stop", "start"] {
            handoff_seconds.with_label_values(&[phase]);
        }
        registry
            .register(Box::new(rebalances.clone()))
            .expect("registered once");
        registry
            .register(Box::new(handoff_seconds.clone()))
            .expect("registered once");
        ClusterMetrics {
            sources_owned: gauge(
                "tributary_cluster_sources_owned",
                "Assigned sources (not webhooks) this replica runs now.",
            ),
            members: gauge(
                "tributary_cluster_members",
                "Replicas in the cluster's consumer group, as the coordinator last reported.",
            ),
            config_mismatch: gauge(
                "tributary_cluster_config_mismatch",
                "1 while a replica of the group runs sources with different settings (a rolling update in progress, or a mistake).",
            ),
            rebalances,
            handoff_seconds,
        }
    }
}
