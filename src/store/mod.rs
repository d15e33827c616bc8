//! The greylist store: one keeper process owns sled; instances and admin commands are its
//! clients over a unix socket in the state directory.

pub mod client;
pub mod db;
pub mod keeper;
#[cfg(feature = "redis")]
pub mod redis;
pub mod redis_url;
#[cfg(feature = "redis")]
pub mod resolve;
pub mod secret;
pub mod statedir;
#[cfg(feature = "redis")]
pub mod tls;
pub mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

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

/// What the keeper applies on its own: where the store is, privacy, expiry, flush and
/// idle exit. The composition root builds it from the configuration.
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    pub state_directory: PathBuf,
    pub privacy: bool,
    /// The secret of privacy mode: `privacy_secret_file`, by default in the state directory.
    pub privacy_secret_file: PathBuf,
    pub max_age: Duration,
    pub flush_interval: Duration,
    pub idle_timeout: Duration,
}

impl KeeperSettings {
    /// A digest of the settings the keeper applies on its own. Instances send theirs with
    /// HELLO and retire a keeper started with others, as they do for another version:
    /// otherwise whichever process started the keeper would silently decide for all.
    pub fn digest(&self) -> String {
        // The secret file only counts in privacy mode, so that naming one without it does
        // not retire a keeper for nothing.
        let secret = match self.privacy {
            true => self.privacy_secret_file.display().to_string(),
            false => String::new(),
        };
        let text = format!(
            "privacy={} secret={secret} max_age_ms={} flush_ms={} idle_ms={}",
            self.privacy,
            self.max_age.as_millis(),
            self.flush_interval.as_millis(),
            self.idle_timeout.as_millis()
        );
        Sha256::digest(text.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
