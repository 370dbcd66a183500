//! The embedded default [`CheckpointStore`]: one JSON file in a state directory.
//!
//! A commit writes the whole file crash-safely: write a temporary file, fsync it, rename it over
//! the old one, fsync the directory. After a crash at any point the file holds either the old or
//! the new positions, never a torn mix.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use super::CheckpointStore;
use crate::{error::CheckpointError, record::Position};

const FILE_NAME: &str = "checkpoints.json";

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
        })
    }

    /// The file that holds the positions.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_atomically(&self, contents: &[u8]) -> Result<(), CheckpointError> {
        let temporary = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut file = File::create(&temporary).map_err(|e| io_error(&temporary, "create", e))?;
        file.write_all(contents)
            .map_err(|e| io_error(&temporary, "write", e))?;
        file.sync_all()
            .map_err(|e| io_error(&temporary, "fsync", e))?;
        drop(file);
        fs::rename(&temporary, &self.path).map_err(|e| io_error(&self.path, "rename", e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(&self.dir, "fsync directory", e))
    }
}

impl CheckpointStore for FileStore {
    fn load(&self, source: &str) -> Result<Option<Position>, CheckpointError> {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(positions.get(source).cloned())
    }

    fn commit(&self, updates: &[(String, Position)]) -> Result<(), CheckpointError> {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = positions.clone();
        for (source, position) in updates {
            next.insert(source.clone(), position.clone());
        }
        let stored = StoredFile {
            version: 1,
            sources: next,
        };
        let bytes = serde_json::to_vec_pretty(&stored).expect("positions serialize to JSON");
        self.write_atomically(&bytes)?;
        *positions = stored.sources;
        Ok(())
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
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
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
