//! The greylist store: one keeper process owns sled; instances and admin commands are its
//! clients over a unix socket in the state directory.

pub mod client;
pub mod db;
pub mod keeper;
pub mod redis;
pub mod wire;

use std::path::{Path, PathBuf};

/// Everything that can go wrong between an instance and the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store {path}: {message}")]
    Open { path: String, message: String },
    #[error("keeper socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("keeper did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("starting the keeper: {0}")]
    Spawn(std::io::Error),
    #[error("talking to the keeper: {0}")]
    Io(std::io::Error),
    #[error("keeper protocol: {0}")]
    Protocol(String),
    #[error("store: {0}")]
    Db(String),
}

pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("keeper.sock")
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("store")
}

pub fn start_lock_path(dir: &Path) -> PathBuf {
    dir.join("keeper.lock")
}

/// Milliseconds since the epoch: the store's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
