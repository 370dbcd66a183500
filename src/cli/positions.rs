//! `tributary positions`: read and change the stored positions without editing files or
//! producing to an internal topic by hand.
//!
//! `list` and `get` read the store the config selects (`checkpoint.store`). `set` and `reset`
//! change it, and only while no daemon runs on it:
//! - **file store:** they take the store's exclusive lock (the lock a running daemon holds,
//!   see [`FileStore::open_exclusive`]) and refuse, naming the daemon's pid, when it is held;
//! - **Kafka store:** they ask the group coordinator for the members of the cluster's
//!   consumer group (`tributary.<cluster>`) and refuse, naming them, while there are any: a
//!   running replica is a member, and a replica that died stops being one after
//!   `cluster.session_timeout`. The write carries the next owner epoch, so it wins over any
//!   earlier write.
//!
//! `set` and `reset` also refuse a source the config does not name, so that a typo cannot
//! store a position no source will read. `copy --from file --to kafka` (or back) moves an
//! install from one store to the other, under both checks.

use crate::http::refresh_token::is_credentials_key;
use std::{collections::BTreeMap, collections::BTreeSet, io::Write};

use crate::{
    config::{Config, StoreKind},
    error::CheckpointError,
    record::Position,
    state::checkpoint::{FileStore, KafkaStore},
    state::cluster::{self, ClusterSection},
};

/// What `tributary positions` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print every configured source and every stored position, one per line:
    /// `<source>\t<position>` (`-` when none is stored; `(not configured)` after a stored
    /// source the config no longer names).
    List,
    /// Print the stored position of a source.
    Get(String),
    /// Store a position for a source (the text as the source stores it: an SSE event id, a
    /// WebSocket sequence, a polled source's JSON position).
    Set(String, String),
    /// Forget a source's position: it starts as a new source would.
    Reset(String),
    /// Copy every stored position from one store to the other (`checkpoint.dir` and
    /// `checkpoint.topic` of the same config), overwriting what the target holds for those
    /// sources.
    Copy {
        /// The store read.
        from: StoreKind,
        /// The store written.
        to: StoreKind,
    },
}

/// Why `tributary positions` failed.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    /// The store cannot be opened, is in use by a running daemon, or cannot be written.
    #[error(transparent)]
    Store(#[from] CheckpointError),
    /// The config names no such source.
    #[error(
        "the config has no source `{0}`; `tributary positions list` shows the configured sources"
    )]
    UnknownSource(String),
    /// `get` on a source with no stored position.
    #[error("no position is stored for source `{0}`")]
    NoPosition(String),
    /// The new position is empty.
    #[error("a position cannot be empty; use `tributary positions reset {0}` to forget it")]
    EmptyPosition(String),
    /// `copy` with the same store on both sides.
    #[error("`--from` and `--to` name the same store; use `--from file --to kafka` or `--from kafka --to file`")]
    SameStore,
}

/// One store, opened for reading or (after the in-use checks) for writing.
enum Store {
    File(FileStore),
    Kafka(KafkaStore),
}

impl Store {
    /// Opens `kind` for reading.
    async fn read(config: &Config, kind: StoreKind) -> Result<Self, CheckpointError> {
        Ok(match kind {
            StoreKind::File => Store::File(FileStore::open(&config.checkpoint.dir)?),
            StoreKind::Kafka => Store::Kafka(KafkaStore::open(kafka_store_config(config)).await?),
        })
    }

    /// Opens `kind` for writing: refuses while a daemon runs on it.
    async fn write(config: &Config, kind: StoreKind) -> Result<Self, CheckpointError> {
        Ok(match kind {
            StoreKind::File => Store::File(FileStore::open_exclusive(&config.checkpoint.dir)?),
            StoreKind::Kafka => {
                let cluster = cluster_of(config);
                let members = tokio::task::spawn_blocking({
                    let (kafka, cluster) = (config.kafka.clone(), cluster.clone());
                    move || cluster::live_members(&kafka, &cluster)
                })
                .await
                .map_err(|e| CheckpointError::Task(e.to_string()))??;
                if !members.is_empty() {
                    return Err(CheckpointError::InUse {
                        group: cluster.group_id(),
                        members: members.join(", "),
                    });
                }
                Store::Kafka(KafkaStore::open(kafka_store_config(config)).await?)
            }
        })
    }

    async fn positions(&self) -> Result<BTreeMap<String, Position>, CheckpointError> {
        Ok(match self {
            Store::File(store) => store.positions(),
            Store::Kafka(store) => store
                .positions()
                .await?
                .into_iter()
                .filter_map(|(source, stored)| Some((source, stored.position?)))
                .collect(),
        })
    }

    async fn set(&self, source: &str, position: Option<Position>) -> Result<(), CheckpointError> {
        match (self, position) {
            (Store::File(store), Some(position)) => store.commit(&[(source.to_owned(), position)]),
            (Store::File(store), None) => store.remove(source).map(drop),
            (Store::Kafka(store), position) => store.overwrite(source, position).await,
        }
    }
}

fn cluster_of(config: &Config) -> ClusterSection {
    config.cluster.clone().unwrap_or_default()
}

fn kafka_store_config(config: &Config) -> crate::state::checkpoint::KafkaStoreConfig {
    let mut store = cluster::store_config(&config.kafka, &config.checkpoint, &cluster_of(config));
    store.replica = format!("tributary-positions-{}", std::process::id());
    store
}

/// Runs `action` on the store of `config`, writing what it prints to `out`.
///
/// # Errors
/// See [`PositionsError`]; `set`, `reset` and `copy` fail with [`CheckpointError::Locked`] or
/// [`CheckpointError::InUse`] while a daemon runs on the store they write.
pub async fn run(
    config: &Config,
    action: Action,
    out: &mut dyn Write,
) -> Result<(), PositionsError> {
    let kind = config.checkpoint.store;
    let configured: BTreeSet<&str> = config
        .sources
        .iter()
        .map(|(info, _)| info.name.as_ref())
        .collect();
    // A source's refresh token (`<source>/oauth2-refresh-token`) can be reset as its
    // position can, to start over from the configured one.
    let known = |source: &str| {
        let owner = source.split('/').next().unwrap_or(source);
        (configured.contains(source) || (is_credentials_key(source) && configured.contains(owner)))
            .then_some(())
            .ok_or_else(|| PositionsError::UnknownSource(source.to_owned()))
    };
    match action {
        Action::List => {
            let mut stored = Store::read(config, kind).await?.positions().await?;
            // Refresh tokens kept beside their sources' positions are secrets, not positions.
            stored.retain(|key, _| !is_credentials_key(key));
            for source in &configured {
                let position = stored.get(*source).map_or("-", Position::as_str);
                writeln!(out, "{source}\t{position}").ok();
            }
            for (source, position) in &stored {
                if !configured.contains(source.as_str()) {
                    writeln!(out, "{source}\t{}\t(not configured)", position.as_str()).ok();
                }
            }
        }
        Action::Get(source) => {
            let stored = Store::read(config, kind).await?.positions().await?;
            let position = stored
                .get(&source)
                .filter(|_| !is_credentials_key(&source))
                .ok_or(PositionsError::NoPosition(source))?;
            writeln!(out, "{}", position.as_str()).ok();
        }
        Action::Set(source, position) => {
            known(&source)?;
            if position.is_empty() {
                return Err(PositionsError::EmptyPosition(source));
            }
            let store = Store::write(config, kind).await?;
            store
                .set(&source, Some(Position(position.as_str().into())))
                .await?;
            writeln!(out, "{source}\t{position}").ok();
        }
        Action::Reset(source) => {
            known(&source)?;
            let store = Store::write(config, kind).await?;
            let stored = store.positions().await?.contains_key(&source);
            store.set(&source, None).await?;
            let what = if stored {
                "position forgotten"
            } else {
                "no position was stored"
            };
            writeln!(out, "{source}\t{what}").ok();
        }
        Action::Copy { from, to } => {
            if from == to {
                return Err(PositionsError::SameStore);
            }
            // Both stores must be idle: the source's daemon could move on after the copy.
            let source_store = Store::write(config, from).await?;
            let target = Store::write(config, to).await?;
            let stored = source_store.positions().await?;
            for (source, position) in &stored {
                target.set(source, Some(position.clone())).await?;
                if is_credentials_key(source) {
                    writeln!(out, "{source}\t(a refresh token, not shown)").ok();
                } else {
                    writeln!(out, "{source}\t{}", position.as_str()).ok();
                }
            }
            writeln!(out, "copied {} position(s)", stored.len()).ok();
        }
    }
    Ok(())
}
