//! `tributary status --config F` of a cluster (`checkpoint.store = "kafka"` with `[cluster]`)
//! against three real `tributary run` replicas on Apache Kafka: the members with their
//! replica ids and the one config fingerprint, every source owned by exactly one replica as the
//! replicas themselves say (`/readyz`), and the positions the Kafka store holds; the table fits
//! 100 columns. With brokers that do not answer: a message naming them, exit code 1.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{feeds::*, process::*, *};
use rdkafka::config::ClientConfig;
use tributary::{
    cli::demo::replay,
    state::checkpoint::{KafkaStore, KafkaStoreConfig, StoredPosition},
    status::cluster::ClusterReport,
};

/// The cluster's name.
const CLUSTER: &str = "status";
/// The positions topic.
const POSITIONS_TOPIC: &str = "status.positions";
/// How long each awaited state may take (the replicas' start and the group's rebalances
/// included).
const DEADLINE: Duration = Duration::from_secs(60);
/// The replicas' ids.
const REPLICAS: [&str; 3] = ["r1", "r2", "r3"];
/// The widest line the table prints.
const WIDTH: usize = 100;

/// Six sources, two of each kind.
fn sources() -> Vec<(String, Kind)> {
    [Kind::Sse, Kind::Ws, Kind::Rest]
        .into_iter()
        .flat_map(|kind| (0..2).map(move |n| (format!("{}-{n}", kind.name()), kind)))
        .collect()
}

fn config(feeds: &Feeds, brokers: &str, port: u16, replica: &str) -> String {
    let mut toml = format!(
        r#"
[kafka]
brokers = "{brokers}"
flush_timeout = "5s"

[checkpoint]
store = "kafka"
topic = "{POSITIONS_TOPIC}"
topic_replication_factor = 1
commit_interval = "50ms"

[cluster]
name = "{CLUSTER}"
replication_factor = 1
replica = "{replica}"
session_timeout = "6s"
handoff_timeout = "5s"

[server]
listen = "127.0.0.1:{port}"
"#
    );
    for (name, kind) in sources() {
        // A REST walk that is done is not walked again when its source moves: the next poll
        // asks from the watermark on.
        let extra = match kind {
            Kind::Rest => r#"watermark = { field = "/n", param = "since" }"#,
            _ => "",
        };
        toml += &feeds.source_toml(kind, &name, &format!("s.{name}"), extra);
    }
    toml
}

/// A replica process.
struct Replica {
    name: String,
    config: PathBuf,
    daemon: Daemon,
}

impl Replica {
    fn start(dir: &Path, feeds: &Feeds, brokers: &str, name: &str) -> Self {
        let port = free_port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = write_config(&dir, &config(feeds, brokers, port, name));
        Replica {
            name: name.to_owned(),
            daemon: Daemon::spawn(&config, port),
            config,
        }
    }

    /// The sources this replica runs now (from `/readyz`), empty while it is not up.
    async fn owned(&mut self) -> BTreeSet<String> {
        self.daemon.running_sources(&self.name).await
    }
}

/// Who runs what, as each replica says.
async fn owners(replicas: &mut [Replica]) -> BTreeMap<String, BTreeSet<String>> {
    let mut owned = BTreeMap::new();
    for replica in replicas.iter_mut() {
        owned.insert(replica.name.clone(), replica.owned().await);
    }
    owned
}

/// Whether every source runs on exactly one replica, and every replica runs two.
fn spread(owned: &BTreeMap<String, BTreeSet<String>>) -> bool {
    let listed: Vec<&String> = owned.values().flatten().collect();
    let distinct: BTreeSet<&&String> = listed.iter().collect();
    listed.len() == sources().len()
        && distinct.len() == listed.len()
        && owned.values().all(|sources| sources.len() == 2)
}

/// Runs `tributary status` with `args`.
fn status(args: &[&str]) -> Output {
    blocking(|| {
        Command::new(binary())
            .arg("status")
            .args(args)
            .output()
            .expect("run tributary status")
    })
}

/// The source's final position once its feed is consumed: the last SSE event id, the last
/// WebSocket sequence, and for a REST walk the last record's `n` as its watermark, with no
/// walk left.
fn is_final(kind: Kind, position: Option<&str>, feeds: &Feeds) -> bool {
    let Some(position) = position else {
        return false;
    };
    match kind {
        Kind::Sse => position == replay::wikimedia_event_id(feeds.sse_events - 1),
        Kind::Ws => position == feeds.ws_frames.to_string(),
        Kind::Rest => {
            let last = (feeds.rest_pages * PAGE_RECORDS - 1).to_string();
            serde_json::from_str::<serde_json::Value>(position).is_ok_and(|value| {
                value["walk"].is_null() && value["watermark"].as_str() == Some(last.as_str())
            })
        }
    }
}

/// The store's entries, once every source's position is final.
async fn final_positions(store: &KafkaStore, feeds: &Feeds) -> BTreeMap<String, StoredPosition> {
    let started = Instant::now();
    loop {
        let stored = store.positions().await.unwrap();
        let done = sources().iter().all(|(name, kind)| {
            let position = stored.get(name).and_then(|entry| entry.position.as_ref());
            is_final(*kind, position.map(|p| p.as_str()), feeds)
        });
        if done {
            return stored;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the sources did not store their final positions within {DEADLINE:?}: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `text` as the table shows it in a column of `width` characters.
fn shown(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    text.chars().take(width - 1).chain(['…']).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_shows_every_member_owner_and_stored_position() {
    let began = Instant::now();
    let broker = Broker::kafka();
    let brokers = broker.brokers();
    for (name, _) in sources() {
        broker
            .create_topics(&[&format!("s.{name}"), &format!("s.{name}.dlq")], 1)
            .await;
    }
    // Small feeds that end: 20 SSE events and 20 WebSocket frames over 2 s, 2 REST pages.
    let feeds = Feeds::start(2, 10, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = REPLICAS
        .iter()
        .map(|name| Replica::start(dir.path(), &feeds, &brokers, name))
        .collect();
    let kafka_started = began.elapsed();

    // The replicas join one by one: wait until the group has spread the sources over all
    // three.
    let started = Instant::now();
    loop {
        let owned = owners(&mut replicas).await;
        if spread(&owned) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the group did not spread the sources within {DEADLINE:?}: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replicas create the positions topic; the test reads it once it is there.
    let store = loop {
        let opened = KafkaStore::open(KafkaStoreConfig {
            connection: ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .clone(),
            topic: POSITIONS_TOPIC.into(),
            partitions: 1,
            replication_factor: 1,
            cluster: CLUSTER.into(),
            replica: "test".into(),
        })
        .await;
        match opened {
            Ok(store) => break store,
            Err(error) => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "the positions topic is not readable: {error}"
                );
                eprintln!("positions topic not readable yet: {error}");
            }
        }
    };
    let stored = final_positions(&store, &feeds).await;

    // The command, with one replica's config. The group's stored assignment can lag the
    // replicas' own view while a rebalance ends: ask until both agree (the replicas' view
    // taken before and after, unchanged).
    let path = replicas[0].config.to_str().unwrap().to_owned();
    let (report, owned) = loop {
        let before = owners(&mut replicas).await;
        let output = status(&["--config", &path, "--json"]);
        assert!(output.status.success(), "{output:?}");
        let report: ClusterReport = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        let after = owners(&mut replicas).await;
        let reported: BTreeMap<String, BTreeSet<String>> = report
            .members
            .iter()
            .map(|m| (m.name().to_owned(), m.sources.iter().cloned().collect()))
            .collect();
        if before == after && spread(&after) && reported == after {
            break (report, after);
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the status never matched the replicas: {reported:?} vs {before:?} / {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Three members: the replicas, with this config's fingerprint.
    assert_eq!(
        (report.cluster.as_str(), report.group_state.as_str()),
        (CLUSTER, "Stable")
    );
    assert_eq!(report.group, format!("tributary.{CLUSTER}"));
    assert_eq!(report.positions_topic, POSITIONS_TOPIC);
    let members: Vec<(Option<&str>, Option<&str>, Option<bool>)> = report
        .members
        .iter()
        .map(|m| {
            (
                m.replica.as_deref(),
                m.fingerprint.as_deref(),
                m.same_config,
            )
        })
        .collect();
    let fingerprint = Some(report.fingerprint.as_str());
    assert_eq!(
        members,
        REPLICAS.map(|replica| (Some(replica), fingerprint, Some(true)))
    );
    for member in &report.members {
        assert_eq!(
            member.client_id,
            format!("tributary/{}/{}", member.name(), report.fingerprint)
        );
        assert_eq!(member.assignment_error, None);
        assert!(member.other_topics.is_empty(), "{member:?}");
    }

    // Every configured source, owned by the one replica that runs it, with the store's
    // position.
    let names: Vec<String> = report.sources.iter().map(|s| s.name.clone()).collect();
    let mut configured: Vec<String> = sources().into_iter().map(|(name, _)| name).collect();
    configured.sort();
    assert_eq!(names, configured);
    for source in &report.sources {
        let runner: Vec<&String> = owned
            .iter()
            .filter(|(_, sources)| sources.contains(&source.name))
            .map(|(replica, _)| replica)
            .collect();
        assert_eq!(
            source.owners.iter().collect::<Vec<_>>(),
            runner,
            "{source:?}"
        );
        assert!(source.configured && !source.every_replica, "{source:?}");
        let entry = &stored[&source.name];
        assert_eq!(
            source.position.as_deref(),
            entry.position.as_ref().map(|p| p.as_str()),
            "{source:?}"
        );
        assert_eq!(source.position_written_at.as_ref(), Some(&entry.written_at));
        assert_eq!(source.position_written_by.as_ref(), Some(&entry.replica));
        assert_eq!(source.position_epoch, Some(entry.epoch));
        assert!(source.position_age_seconds.is_some(), "{source:?}");
    }
    // The positions were final before the command ran: the store still holds them.
    assert_eq!(store.positions().await.unwrap(), stored);

    // The table: the same, each line at most 100 characters.
    let output = status(&["--config", &path]);
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    eprintln!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.iter().all(|line| line.chars().count() <= WIDTH),
        "{table}"
    );
    assert!(
        lines[0].starts_with(&format!(
            "cluster {CLUSTER} (group tributary.{CLUSTER}, Stable); 3 member(s)"
        )),
        "{table}"
    );
    assert!(lines[1].starts_with("REPLICA"), "{table}");
    for (replica, sources) in &owned {
        let row = format!(
            "{replica:<24} {:<16} same     2 {}",
            report.fingerprint,
            sources.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        assert!(lines.contains(&row.as_str()), "no `{row}` in\n{table}");
    }
    assert!(lines.contains(&""), "{table}");
    for source in &report.sources {
        let prefix = format!("{:<24} {:<20} ", source.name, source.owners[0]);
        let row = lines
            .iter()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no row of {} in\n{table}", source.name));
        let position = source.position.as_deref().unwrap();
        assert!(row.ends_with(&shown(position, 46)), "{row}");
    }
    assert!(!table.contains("MISMATCH"), "{table}");

    eprintln!(
        "Kafka up after {:.1} s, whole test {:.1} s",
        kafka_started.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    for replica in replicas {
        assert!(replica.daemon.terminate().await.success());
    }
}

#[tokio::test]
async fn brokers_that_do_not_answer_are_named_and_the_exit_code_is_1() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let brokers = format!("127.0.0.1:{}", free_port());
    let path = write_config(
        dir.path(),
        &format!(
            r#"
[kafka]
brokers = "{brokers}"

[checkpoint]
store = "kafka"

[cluster]
name = "nowhere"

[sources.wiki]
type = "sse"
url = "http://127.0.0.1:1/stream"
topic = "wiki"
"#
        ),
    );
    let output = status(&["--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "tributary status: cannot describe the consumer group `tributary.nowhere` on the brokers `{brokers}`"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
}
