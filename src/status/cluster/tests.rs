//! Tests of how the cluster report is assembled from the group and the store, and how it is
//! rendered.

use super::*;
use crate::{record::Position, status::assignment::tests::encode};

fn stored(position: Option<&str>, replica: &str, epoch: u64) -> StoredPosition {
    StoredPosition {
        position: position.map(|p| Position(p.into())),
        written_at: "2026-12-05T04:00:00Z".into(),
        replica: replica.into(),
        epoch,
        owner: None,
    }
}

fn listed(client_id: &str, topics: &[(&str, &[i32])]) -> ListedMember {
    ListedMember {
        client_id: client_id.into(),
        host: "/127.0.0.1".into(),
        assignment: Some(encode(3, topics, None)),
    }
}

fn assembly(members: Vec<ListedMember>) -> Assembly {
    let now = humantime::parse_rfc3339("2026-12-05T04:00:30Z").unwrap();
    Assembly {
        cluster: "feeds".into(),
        group: "tributary.feeds".into(),
        group_state: "Stable".into(),
        brokers: "k:9092".into(),
        positions_topic: "tributary.positions".into(),
        fingerprint: "00000000000000aa".into(),
        control_topic: "tributary.feeds.assignments".into(),
        shared: ["a.b", "c", "d"].map(String::from).into(),
        webhooks: ["hook"].map(String::from).into(),
        members,
        stored: [
            ("c".to_owned(), stored(Some("17"), "r2", 3)),
            ("gone".to_owned(), stored(Some("9"), "r1", 1)),
            ("d".to_owned(), stored(None, "r1", 2)),
        ]
        .into(),
        now,
    }
}

#[test]
fn each_source_gets_its_owner_and_stored_position() {
    let report = assemble(assembly(vec![
        listed(
            "tributary/r2/00000000000000aa",
            &[("tributary.feeds.assignments.c", &[0])],
        ),
        listed(
            "tributary/r1/00000000000000bb",
            &[
                ("tributary.feeds.assignments.a.b", &[0]),
                ("tributary.feeds.assignments.x", &[1]),
                ("tributary.feeds.assignments", &[0]),
            ],
        ),
        listed("rdkafka", &[]),
        ListedMember {
            client_id: "tributary/r3/00000000000000aa".into(),
            host: "/127.0.0.1".into(),
            assignment: Some(vec![0, 3, 0, 0]),
        },
    ]));
    let names: Vec<&str> = report.members.iter().map(ClusterMember::name).collect();
    assert_eq!(names, ["r1", "r2", "r3", "rdkafka"]);
    let r1 = &report.members[0];
    assert_eq!(r1.sources, ["a.b"]);
    assert_eq!(r1.other_topics, ["tributary.feeds.assignments"]);
    assert_eq!(r1.same_config, Some(false));
    assert_eq!(report.members[1].same_config, Some(true));
    assert!(report.members[2].assignment_error.is_some());
    assert_eq!(report.members[3].replica, None);
    assert_eq!(report.members[3].same_config, None);

    let sources: Vec<(&str, Vec<&str>, Option<&str>, bool)> = report
        .sources
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.owners.iter().map(String::as_str).collect(),
                s.position.as_deref(),
                s.configured,
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("a.b", vec!["r1"], None, true),
            ("c", vec!["r2"], Some("17"), true),
            ("d", vec![], None, true),
            ("gone", vec![], Some("9"), false),
            ("hook", vec![], None, true),
        ]
    );
    let c = &report.sources[1];
    assert_eq!(c.position_age_seconds, Some(30.0));
    assert_eq!(
        (c.position_written_by.as_deref(), c.position_epoch),
        (Some("r2"), Some(3))
    );
    assert!(report.sources[4].every_replica);
}

#[test]
fn every_line_of_the_cluster_view_fits_100_columns() {
    let long = "a-very-long-name-".repeat(8);
    let mut input = assembly(vec![
        listed(
            &format!("tributary/{long}/00000000000000bb"),
            &[("tributary.feeds.assignments.c", &[0])],
        ),
        listed("tributary/r2/00000000000000aa", &[]),
        listed(&format!("rdkafka-{long}"), &[]),
        ListedMember {
            client_id: "tributary/r3/00000000000000aa".into(),
            host: String::new(),
            assignment: Some(vec![1, 2, 3]),
        },
    ]);
    input.cluster = long.clone();
    input.shared.insert(long.clone());
    input
        .stored
        .insert(long.clone(), stored(Some(&"p".repeat(500)), "r1", 1));
    let table = render_cluster(&assemble(input));
    for line in table.lines() {
        assert!(line.chars().count() <= WIDTH, "{line}");
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].starts_with("REPLICA"), "{table}");
    assert!(lines[2].contains(" OTHER "), "{table}");
    assert!(
        table.contains("\nc                        a-very-long-name-a-…"),
        "{table}"
    );
    assert!(table.contains("(every replica)"), "{table}");
    assert!(table.contains("CONFIG MISMATCH: a-very"), "{table}");
    assert!(
        table.contains("r3: its assignment cannot be read"),
        "{table}"
    );
    assert!(table.contains("not in this config: gone"), "{table}");
    assert!(table.contains("   30s 17\n"), "{table}");
}
