//! `tributary positions`: read and change the stored positions without editing files by hand.
//!
//! `list` and `get` read the store of a config's `checkpoint.dir`. `set` and `reset` change it,
//! and only while no daemon runs on it: they take the store's exclusive lock (the lock a running
//! daemon holds, see [`FileStore::open_exclusive`]) and refuse, naming the daemon's pid, when it
//! is held. `set` and `reset` also refuse a source the config does not name, so that a typo
//! cannot store a position no source will read.

use std::{collections::BTreeSet, io::Write};

use crate::{
    checkpoint::{CheckpointStore, FileStore},
    config::Config,
    error::CheckpointError,
    record::Position,
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
}

/// Why `tributary positions` failed.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    /// The store cannot be opened, is locked by a running daemon, or cannot be written.
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
}

/// Runs `action` on the store of `config`, writing what it prints to `out`.
///
/// # Errors
/// See [`PositionsError`]; `set` and `reset` fail with [`CheckpointError::Locked`] while a
/// daemon runs on the store.
pub fn run(config: &Config, action: Action, out: &mut dyn Write) -> Result<(), PositionsError> {
    let dir = &config.checkpoint.dir;
    let configured: BTreeSet<&str> = config
        .sources
        .iter()
        .map(|(info, _)| info.name.as_ref())
        .collect();
    let known = |source: &str| {
        configured
            .contains(source)
            .then_some(())
            .ok_or_else(|| PositionsError::UnknownSource(source.to_owned()))
    };
    match action {
        Action::List => {
            let stored = FileStore::open(dir)?.positions();
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
            let position = FileStore::open(dir)?
                .load(&source)?
                .ok_or(PositionsError::NoPosition(source))?;
            writeln!(out, "{}", position.as_str()).ok();
        }
        Action::Set(source, position) => {
            known(&source)?;
            if position.is_empty() {
                return Err(PositionsError::EmptyPosition(source));
            }
            let store = FileStore::open_exclusive(dir)?;
            store.commit(&[(source.clone(), Position(position.as_str().into()))])?;
            writeln!(out, "{source}\t{position}").ok();
        }
        Action::Reset(source) => {
            known(&source)?;
            let removed = FileStore::open_exclusive(dir)?.remove(&source)?;
            let what = if removed {
                "position forgotten"
            } else {
                "no position was stored"
            };
            writeln!(out, "{source}\t{what}").ok();
        }
    }
    Ok(())
}
