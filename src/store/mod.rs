//! The greylist store: one keeper process owns sled; instances and admin commands are its
//! clients over a unix socket in the state directory.

pub mod client;
pub mod db;
pub mod keeper;
pub mod statedir;
pub mod wire;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Everything that can go wrong between an instance and the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("state directory {0}")]
    StateDirUnsafe(String),
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

/// A digest of the settings the keeper applies on its own (privacy, expiry, flush, idle
/// exit). Instances send theirs with HELLO and retire a keeper started with others, as
/// they do for another version: otherwise whichever process started the keeper would
/// silently decide for all.
pub fn settings_digest(cfg: &Config) -> String {
    let text = format!(
        "privacy={} max_age_ms={} flush_ms={} idle_ms={}",
        cfg.greylist_privacy,
        cfg.greylist_max_age.as_millis(),
        cfg.store_flush_interval.as_millis(),
        cfg.keeper_idle_timeout.as_millis()
    );
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
