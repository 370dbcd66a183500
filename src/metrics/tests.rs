//! Tests of the metric families each source kind exports, and of the gauges read from
//! readiness.

use std::collections::BTreeMap;

use super::*;

/// The `tributary_` families that have a series labelled `source="<source>"`.
fn families_of(scrape: &str, source: &str) -> Vec<String> {
    let label = format!("source=\"{source}\"");
    let mut names: Vec<String> = scrape
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(&label))
        .filter_map(|line| line.split('{').next())
        .map(|name| name.trim_end_matches("_bucket").trim_end_matches("_sum"))
        .map(|name| name.trim_end_matches("_count").to_owned())
        .collect();
    names.dedup();
    names.sort();
    names.dedup();
    names
}

/// One source of each kind, by name.
const EVERY_KIND: [(&str, SourceKind); 7] = [
    ("s", SourceKind::Sse),
    ("w", SourceKind::Websocket),
    ("h", SourceKind::Webhook),
    ("r", SourceKind::Rest),
    ("g", SourceKind::Graphql),
    ("q", SourceKind::GraphqlSubscription),
    ("t", SourceKind::HttpStream),
];

/// Counts once on every handle of `source` whose series appear with their first count.
fn count_on_every_handle(source: &SourceMetrics) {
    for counter in [
        &source.reconnects,
        &source.checkpoint_commits,
        &source.records_filtered,
        &source.sequence_gaps,
        &source.retries,
        &source.pages,
        &source.not_modified,
        &source.records_duplicate,
        &source.invalid_event_ids,
        &source.oversized_events,
        &source.oversized_lines,
        &source.truncated_records,
        &source.relists,
        &source.checkpoint_commit_failures,
    ] {
        counter.inc();
    }
    for gauge in [
        &source.channel_records,
        &source.channel_bytes,
        &source.rate_limit_waiting,
        &source.checkpoint_age_seconds,
    ] {
        gauge.set(1);
    }
    source.rate_limit_wait_seconds.inc_by(0.5);
}

#[test]
fn an_idle_source_exports_only_its_core_series() {
    let metrics = Metrics::new();
    for (name, kind) in EVERY_KIND {
        metrics.source(name, kind);
    }
    let scrape = metrics.render();
    for (name, kind) in EVERY_KIND {
        let core = [
            "tributary_connected",
            "tributary_record_bytes_total",
            "tributary_records_produced_total",
            "tributary_records_received_total",
        ];
        assert_eq!(families_of(&scrape, name), core, "{name} ({kind:?})");
    }
    // The latency histograms are per kind: one set of buckets for each kind in use.
    assert!(scrape.contains("tributary_kafka_delivery_seconds_count{kind=\"sse\"} 0"));
    assert!(!scrape.contains("tributary_kafka_delivery_seconds_count{kind=\"sse\",source"));
}

#[test]
fn per_source_histograms_are_opt_in() {
    let metrics = Metrics::with_options(MetricsOptions {
        per_source_histograms: true,
    });
    let source = metrics.source("s", SourceKind::Sse);
    source.kafka_delivery_seconds.observe(0.01);
    source.event_lag_seconds.observe(1.0);
    let scrape = metrics.render();
    for family in [
        "tributary_kafka_delivery_seconds",
        "tributary_event_lag_seconds",
    ] {
        assert!(
            scrape.contains(&format!("{family}_count{{kind=\"sse\",source=\"s\"}} 1")),
            "{family} in {scrape}"
        );
    }
    metrics.remove_source("s");
    assert!(!metrics.render().contains("source=\"s\""));
}

#[test]
fn each_kind_exports_the_families_that_apply_to_it() {
    let metrics = Metrics::new();
    for (name, kind) in EVERY_KIND {
        let source = metrics.source(name, kind);
        count_on_every_handle(&source);
        source.http_request(Some(200));
        source.kafka_error("other");
        source.pipeline_fault("other");
        if kind.polled() {
            source.poll("complete");
        }
        if kind.is_pushed() {
            source.webhook_request("accepted");
        }
    }
    let scrape = metrics.render();
    let has = |source: &str, family: &str| {
        families_of(&scrape, source)
            .iter()
            .any(|name| name == family)
    };
    for source in ["s", "w", "h", "r", "g", "q", "t"] {
        for family in [
            "tributary_records_received_total",
            "tributary_records_produced_total",
            "tributary_connected",
            "tributary_channel_records",
            "tributary_kafka_errors_total",
            "tributary_pipeline_faults_total",
        ] {
            assert!(has(source, family), "{source} lacks {family}");
        }
    }
    let only = |family: &str, sources: &[&str]| {
        for source in ["s", "w", "h", "r", "g", "q", "t"] {
            assert_eq!(
                has(source, family),
                sources.contains(&source),
                "{family} on {source}"
            );
        }
    };
    only("tributary_polls_total", &["r", "g"]);
    only("tributary_pages_total", &["r", "g"]);
    only("tributary_retries_total", &["r", "g", "t"]);
    only("tributary_records_duplicate_total", &["r", "g"]);
    only("tributary_http_not_modified_total", &["r"]);
    only(
        "tributary_rate_limit_wait_seconds_total",
        &["s", "r", "g", "t"],
    );
    only("tributary_rate_limit_waiting", &["s", "r", "g", "t"]);
    only("tributary_reconnects_total", &["s", "w", "q", "t"]);
    only(
        "tributary_records_filtered_total",
        &["s", "w", "h", "r", "g", "q", "t"],
    );
    only("tributary_sequence_gaps_total", &["w"]);
    only("tributary_invalid_event_ids_total", &["s"]);
    only("tributary_oversized_events_total", &["s"]);
    only("tributary_oversized_lines_total", &["t"]);
    only("tributary_truncated_records_total", &["t"]);
    only("tributary_relists_total", &["t"]);
    only("tributary_webhook_requests_total", &["h"]);
    only(
        "tributary_checkpoint_age_seconds",
        &["s", "w", "r", "g", "q", "t"],
    );
    only(
        "tributary_checkpoint_commits_total",
        &["s", "w", "r", "g", "q", "t"],
    );
}

#[test]
fn connected_and_ready_follow_readiness() {
    let metrics = Metrics::new();
    metrics.source("polled", SourceKind::Rest);
    metrics.source("stream", SourceKind::Sse);
    metrics.source("done", SourceKind::Sse);
    metrics.source("hook", SourceKind::Webhook);
    let sources = BTreeMap::from([
        ("polled".to_owned(), SourceState::Connected),
        ("done".to_owned(), SourceState::Finished("HTTP 204".into())),
        ("hook".to_owned(), SourceState::Listening),
        (
            "stream".to_owned(),
            SourceState::Reconnecting {
                attempts: 3,
                error: "refused".into(),
            },
        ),
    ]);
    metrics.observe_readiness(&Readiness {
        ready: false,
        kafka_reachable: true,
        sources,
        checkpoint_error: None,
        internal_error: None,
    });
    let scrape = metrics.render();
    assert!(
        scrape.contains("tributary_connected{source=\"polled\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("tributary_connected{source=\"stream\"} 0"),
        "{scrape}"
    );
    assert!(scrape.contains("\ntributary_ready 0\n"), "{scrape}");
    // A finished source is not connected, and says why; a webhook listening counts as
    // connected.
    for line in [
        "tributary_connected{source=\"done\"} 0",
        "tributary_finished{source=\"done\"} 1",
        "tributary_connected{source=\"hook\"} 1",
    ] {
        assert!(scrape.contains(line), "{line} in {scrape}");
    }
    // `tributary_finished` appears when a source first finishes.
    assert!(!scrape.contains("tributary_finished{source=\"stream\"}"));
}

#[test]
fn build_info_and_process_metrics_are_exported() {
    let scrape = Metrics::new().render();
    let build_info = format!(
        "tributary_build_info{{revision=\"{REVISION}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(scrape.contains(&build_info), "{scrape}");
    assert!(!REVISION.is_empty());
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(scrape.contains(&format!("# TYPE {family} ")), "{family}");
    }
}

#[tokio::test]
async fn rate_limit_waiting_is_1_only_while_a_wait_lasts() {
    let metrics = Metrics::new();
    let source = metrics.source("polled", SourceKind::Rest);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let waiter = source.clone();
    let wait = tokio::spawn(async move {
        waiter
            .wait_for_budget(async {
                let _ = released.await;
                std::time::Duration::from_millis(1500)
            })
            .await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while source.rate_limit_waiting.get() != 1 {
        assert!(std::time::Instant::now() < deadline, "never waiting");
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    wait.await.unwrap();
    assert_eq!(source.rate_limit_waiting.get(), 0);
    assert!((source.rate_limit_wait_seconds.get() - 1.5).abs() < 1e-9);

    // A wait cut short (shutdown drops it) leaves the gauge at 0 too.
    let dropped = source.wait_for_budget(std::future::pending());
    tokio::select! {
        _ = dropped => unreachable!("a pending wait ended"),
        _ = tokio::task::yield_now() => {}
    }
    assert_eq!(source.rate_limit_waiting.get(), 0);

    // A budget there at once (the time its check took aside) is no wait: no series appears.
    let idle = metrics.source("idle", SourceKind::Sse);
    idle.wait_for_budget(async { std::time::Duration::from_nanos(300) })
        .await;
    let families = families_of(&metrics.render(), "idle");
    assert!(
        !families.iter().any(|family| family.contains("rate_limit")),
        "{families:?}"
    );
}

#[test]
fn a_removed_source_leaves_the_scrape_and_comes_back_fresh() {
    let metrics = Metrics::new();
    let gone = metrics.source("gone", SourceKind::Rest);
    let kept = metrics.source("kept", SourceKind::Rest);
    for handles in [&gone, &kept] {
        handles.records_received.inc_by(5);
        handles.dead_lettered("message_too_large");
        handles.poll("failed");
        handles.kafka_delivery_seconds.observe(0.01);
    }
    metrics.remove_source("gone");
    let scrape = metrics.render();
    assert!(!scrape.contains("source=\"gone\""), "{scrape}");
    assert!(scrape.contains("tributary_records_received_total{source=\"kept\"} 5"));
    assert!(scrape.contains(
        "tributary_records_dead_lettered_total{kind=\"message_too_large\",source=\"kept\"} 1"
    ));
    // The old handles count nowhere, nor make series; registered again, the source starts
    // at 0.
    gone.records_received.inc();
    gone.records_filtered.inc();
    gone.poll("failed");
    assert!(!metrics.render().contains("source=\"gone\""));
    metrics.source("gone", SourceKind::Rest);
    assert!(metrics
        .render()
        .contains("tributary_records_received_total{source=\"gone\"} 0"));
}

#[test]
fn removing_a_source_clears_every_family_with_a_source_label() {
    let metrics = Metrics::new();
    let gone = [
        ("gone_sse", SourceKind::Sse),
        ("gone_websocket", SourceKind::Websocket),
        ("gone_webhook", SourceKind::Webhook),
        ("gone_rest", SourceKind::Rest),
        ("gone_graphql", SourceKind::Graphql),
        ("gone_http_stream", SourceKind::HttpStream),
    ];
    for (name, kind) in gone {
        let handles = metrics.source(name, kind);
        count_on_every_handle(&handles);
        handles.dead_lettered("message_too_large");
        handles.transaction("committed");
        handles.schema_drift("unknown_field");
        handles.http_request(None);
        handles.kafka_error("other");
        handles.pipeline_fault("other");
        handles.poll("failed");
        handles.webhook_request("accepted");
        handles.finished.set(1);
    }
    metrics
        .source("kept", SourceKind::Rest)
        .records_received
        .inc();
    let scrape = metrics.render();
    let mut touched: Vec<String> = gone
        .iter()
        .flat_map(|(name, _)| families_of(&scrape, name))
        .collect();
    touched.sort();
    touched.dedup();
    let mut noted: Vec<String> = metrics
        .per_source
        .iter()
        .map(|family| family.desc()[0].fq_name.clone())
        .collect();
    noted.sort();
    // A family in `touched` only is one `remove_source` does not know; one in `noted` only is
    // one this test leaves without a series.
    assert_eq!(touched, noted);

    for (name, _) in gone {
        metrics.remove_source(name);
    }
    let scrape = metrics.render();
    assert!(!scrape.contains("source=\"gone_"), "{scrape}");
    assert!(scrape.contains("tributary_records_received_total{source=\"kept\"} 1"));
}
