//! The embedded default [`CheckpointStore`]: one JSON file in a state directory.
//!
//! A commit writes the whole file crash-safely: write a temporary file (a unique name, so that
//! no two writers share it), fsync it, rename it over the old one, fsync the directory. After a
//! crash at any point the file holds either the old or the new positions, never a torn mix.
//!
//! A daemon opens the store with [`FileStore::open_exclusive`]: it holds an exclusive `flock`
//! on `<dir>/tributary.lock` (with its pid written in it) for as long as the store lives, so a
//! second daemon on the same directory fails at start instead of overwriting positions, and it
//! proves at start that the directory is writable.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use futures::future::BoxFuture;

use super::CheckpointStore;
use crate::{error::CheckpointError, record::Position};

const FILE_NAME: &str = "checkpoints.json";
const LOCK_FILE_NAME: &str = "tributary.lock";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFile {
    version: u32,
    sources: BTreeMap<String, Position>,
}

/// Positions in `<dir>/checkpoints.json`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    path: PathBuf,
    positions: Mutex<BTreeMap<String, Position>>,
    /// The locked lock file, for a store opened with [`FileStore::open_exclusive`]; the lock is
    /// released when it is closed.
    _lock: Option<File>,
}

fn io_error(path: &Path, operation: &'static str, error: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        operation,
        error,
    }
}

impl FileStore {
    /// Opens (creating the directory if needed) the store in `dir` and reads its positions.
    ///
    /// # Errors
    /// The directory cannot be created, or the file exists but cannot be read or parsed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "create directory", e))?;
        let path = dir.join(FILE_NAME);
        let positions = match fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredFile =
                    serde_json::from_slice(&bytes).map_err(|error| CheckpointError::Corrupt {
                        path: path.display().to_string(),
                        error,
                    })?;
                stored.sources
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_error(&path, "read", e)),
        };
        Ok(FileStore {
            dir,
            path,
            positions: Mutex::new(positions),
            _lock: None,
        })
    }

    /// Opens the store for a daemon: takes an exclusive lock on `<dir>/tributary.lock` (held
    /// until the store is dropped; the kernel releases it if the process dies), proves that the
    /// directory is writable, then reads the positions as [`FileStore::open`] does.
    ///
    /// # Errors
    /// [`CheckpointError::Locked`] when another process holds the lock; an I/O error naming
    /// the path when the directory cannot be created or written; the errors of
    /// [`FileStore::open`].
    pub fn open_exclusive(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "create directory", e))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, "open the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|pid| pid.trim().to_owned())
                    .filter(|pid| !pid.is_empty())
                    .unwrap_or_else(|| "unknown".into());
                return Err(CheckpointError::Locked {
                    path: lock_path.display().to_string(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, "lock", e)),
        }
        lock.set_len(0)
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .and_then(|()| lock.sync_all())
            .map_err(|e| io_error(&lock_path, "write", e))?;
        // The write probe: a commit needs to create a file here.
        tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| io_error(&dir, "create a file in the directory", e))?;
        let mut store = Self::open(dir)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// The file that holds the positions.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored position, by source name.
    pub fn positions(&self) -> BTreeMap<String, Position> {
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes the position of `source` (crash-safely, as a commit writes); true when one was
    /// stored. Meant for a store opened with [`FileStore::open_exclusive`], so that no daemon
    /// writes it meanwhile.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn remove(&self, source: &str) -> Result<bool, CheckpointError> {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = positions.clone();
        if next.remove(source).is_none() {
            return Ok(false);
        }
        self.write(&next)?;
        *positions = next;
        Ok(true)
    }

    fn write(&self, positions: &BTreeMap<String, Position>) -> Result<(), CheckpointError> {
        let stored = StoredFile {
            version: 1,
            sources: positions.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).expect("positions serialize to JSON");
        self.write_atomically(&bytes)
    }

    fn write_atomically(&self, contents: &[u8]) -> Result<(), CheckpointError> {
        let mut file = tempfile::Builder::new()
            .prefix(&format!(".{FILE_NAME}."))
            .tempfile_in(&self.dir)
            .map_err(|e| io_error(&self.dir, "create a temporary file in", e))?;
        let temporary = file.path().to_owned();
        file.write_all(contents)
            .map_err(|e| io_error(&temporary, "write", e))?;
        file.as_file()
            .sync_all()
            .map_err(|e| io_error(&temporary, "fsync", e))?;
        file.persist(&self.path)
            .map_err(|e| io_error(&self.path, "rename", e.error))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(&self.dir, "fsync directory", e))
    }
}

impl FileStore {
    /// The stored position of `source`, if any.
    ///
    /// # Errors
    /// None today (the file is read when the store is opened); kept for symmetry with the
    /// Kafka store.
    pub fn load(&self, source: &str) -> Result<Option<Position>, CheckpointError> {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(positions.get(source).cloned())
    }

    /// Stores the given positions atomically (blocking: writes and fsyncs the file): after a
    /// crash either all of them or none of them are visible.
    ///
    /// # Errors
    /// The file cannot be written; the previous positions stay in force.
    pub fn commit(&self, updates: &[(String, Position)]) -> Result<(), CheckpointError> {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = positions.clone();
        for (source, position) in updates {
            next.insert(source.clone(), position.clone());
        }
        self.write(&next)?;
        *positions = next;
        Ok(())
    }
}

/// The daemon's view: a shared file store whose writes run on the blocking pool.
impl CheckpointStore for std::sync::Arc<FileStore> {
    fn acquire<'a>(
        &'a self,
        source: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, CheckpointError>> {
        Box::pin(async move { self.load(source) })
    }

    fn commit(
        &self,
        positions: Vec<(String, Position)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        let store = std::sync::Arc::clone(self);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || FileStore::commit(&store, &positions))
                .await
                .unwrap_or_else(|error| Err(CheckpointError::Task(error.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_reopen_reads_the_positions_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load("wiki").unwrap(), None);
        store
            .commit(&[("wiki".into(), Position("42".into()))])
            .unwrap();
        store
            .commit(&[("other".into(), Position("x".into()))])
            .unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load("wiki").unwrap(), Some(Position("42".into())));
        assert_eq!(reopened.load("other").unwrap(), Some(Position("x".into())));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name != FILE_NAME)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_second_exclusive_open_names_the_process_that_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::open_exclusive(dir.path()).unwrap();
        let error = FileStore::open_exclusive(dir.path()).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, CheckpointError::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        FileStore::open_exclusive(dir.path()).expect("the lock is released with the store");
    }

    #[test]
    fn an_unwritable_directory_fails_the_exclusive_open_and_names_it() {
        // procfs refuses new files even to root, so this holds wherever the tests run.
        let error = FileStore::open_exclusive("/proc/self/fdinfo")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`/proc/self/fdinfo/"), "{error}");
        assert!(error.contains("writable"), "{error}");
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let error = FileStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("cannot parse"), "{error}");
        assert!(error.contains("checkpoints.json"), "{error}");
    }
}
