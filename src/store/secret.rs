//! Privacy mode's secret and keyed hash, for both store engines: reading or creating
//! `privacy_secret_file`, and HMAC-SHA-256 of key parts under it, so that one secret
//! file gives the same keys in sled and in Redis.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The keyed hash, set up once from the secret and cloned for each use.
#[derive(Clone)]
pub struct KeyedHash(Hmac<Sha256>);

impl KeyedHash {
    pub fn new(secret: &[u8]) -> Result<KeyedHash, String> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .map(KeyedHash)
            .map_err(|e| format!("privacy secret: {e}"))
    }

    /// HMAC-SHA-256 (RFC 2104) of `data`.
    pub fn digest(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// A key part as stored in privacy mode: the first 128 bits of the hash, in hex.
    pub fn key_part(&self, s: &str) -> String {
        hex(&self.digest(s.as_bytes())[..16])
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_error(path: &Path, e: impl std::fmt::Display) -> String {
    format!("privacy_secret_file {}: {e}", path.display())
}

/// Why a secret file with these permission bits may not be used, if it may not: a key that
/// others can read lets them reverse the hashes of guessable addresses.
fn secret_mode_problem(mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "readable or writable by others (mode {:04o}); it must be 0600: chmod 0600 it, or \
             remove it to start over with a new secret (stored keys are then forgotten)",
            mode & 0o7777
        )
    })
}

/// Reads the secret, creating it (32 random bytes, mode 0600) when the file does not exist:
/// the first host (or the first keeper) makes it, other hosts get a copy.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, String> {
    if let Some(s) = read_secret(path)? {
        return Ok(s);
    }
    // The file's directory may not exist yet (a Redis host that never ran the sled keeper,
    // or a path of the administrator's choice); it holds secrets, so it is private.
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| secret_error(dir, e))?;
    }
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    match create_atomically(path, &secret) {
        Ok(()) => Ok(secret),
        // Another process made it first: its secret is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(path)?.ok_or_else(|| secret_error(path, "vanished while created"))
        }
        Err(e) => Err(secret_error(path, e)),
    }
}

/// The secret in the file, None when there is no file.
fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(secret_error(path, e)),
    };
    let mode = f.metadata().map_err(|e| secret_error(path, e))?.mode();
    if let Some(why) = secret_mode_problem(mode) {
        return Err(secret_error(path, why));
    }
    let mut s = Vec::new();
    f.read_to_end(&mut s).map_err(|e| secret_error(path, e))?;
    if s.len() < 32 {
        return Err(secret_error(path, "secret too short"));
    }
    Ok(Some(s))
}

/// Creates a new file whole or not at all, and never replaces one: a crash or a full disk
/// must not leave a short secret behind (every later start would refuse it), and two
/// instances starting at once must not end up with two secrets. The data goes to a
/// temporary file first, which is then linked into place (which fails if the name exists).
fn create_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let key = KeyedHash::new(b"Jefe").unwrap();
        assert_eq!(
            hex(&key.digest(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            key.key_part("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
    }

    #[test]
    fn secret_modes() {
        assert_eq!(secret_mode_problem(0o100600), None);
        assert_eq!(secret_mode_problem(0o100400), None);
        assert!(secret_mode_problem(0o100640).unwrap().contains("mode 0640"));
        assert!(secret_mode_problem(0o100604).is_some());
    }

    #[test]
    fn a_secret_is_made_once_and_then_read() {
        let dir = std::env::temp_dir().join(format!("greyspf-secret-{}", std::process::id()));
        let path = dir.join("sub").join("privacy.secret");
        let made = load_secret(&path).unwrap();
        assert_eq!(made.len(), 32);
        assert_eq!(load_secret(&path).unwrap(), made);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        // An existing file is never replaced.
        assert_eq!(
            create_atomically(&path, &[1u8; 32]).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert_eq!(load_secret(&path).unwrap(), made);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
