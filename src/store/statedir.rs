//! The state directory's ownership and mode: the check run at every start and by
//! `--check-config`, and its creation with the owner the unprivileged instances need.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use super::StoreError;

/// The system user the package creates; a root command creates the directory for it.
pub const SERVICE_USER: &str = "greyspf";

/// What the check needs to know about the directory, so that the decision is pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirFacts {
    pub is_dir: bool,
    pub mode: u32,
    pub uid: u32,
}

/// Why greyspf, running as `euid`, must not use a state directory with these facts, with
/// the command that repairs it; `None` when it is fine. `service_uid` is the uid of the
/// user greyspf when that user exists.
pub fn problem(dir: &Path, f: DirFacts, euid: u32, service_uid: Option<u32>) -> Option<String> {
    let d = dir.display();
    if !f.is_dir {
        return Some(format!("{d} is not a directory"));
    }
    if f.mode & 0o022 != 0 {
        return Some(format!(
            "{d} is group- or world-writable (mode {:04o}): others could replace the keeper \
             socket or the store; fix: chmod 0700 {d}",
            f.mode & 0o7777
        ));
    }
    if euid != 0 && f.uid != euid {
        let owner = user_name(f.uid).unwrap_or_else(|| format!("uid {}", f.uid));
        let me = user_name(euid).unwrap_or_else(|| euid.to_string());
        return Some(format!(
            "{d} is owned by {owner}, but greyspf runs as {me} (uid {euid}): it cannot create \
             its lock, socket and store there, so greylisting would be off; fix: \
             chown -R {me}: {d}"
        ));
    }
    if let Some(service) = service_uid
        && euid == 0
        && f.uid == 0
        && service != 0
    {
        // Root could use it, but the instances Postfix runs as greyspf could not: the
        // administrator's command would turn greylisting off for everyone else.
        return Some(format!(
            "{d} is owned by root, but the user {SERVICE_USER} exists and the policy \
             processes Postfix runs as {SERVICE_USER} could not use it; fix: \
             chown -R {SERVICE_USER}: {d}"
        ));
    }
    None
}

fn facts(meta: &std::fs::Metadata) -> DirFacts {
    DirFacts {
        is_dir: meta.is_dir(),
        mode: meta.mode(),
        uid: meta.uid(),
    }
}

/// The service user's uid and gid when `dir` is that user's home, the state directory the
/// package makes for it; looked up only by root (the only case that needs it). Other
/// directories, an administrator's test directory say, are judged by their owner alone.
fn service_owner_of(dir: &Path) -> Option<(u32, u32)> {
    if euid() != 0 {
        return None;
    }
    find_user(Some(SERVICE_USER), |e| {
        (Path::new(e.home) == dir).then_some((e.uid, e.gid))
    })
}

/// The service user's uid for `problem`, which needs it only when root finds a directory
/// root owns: the other cases do not look the service user up.
fn service_uid(dir: &Path, meta: &std::fs::Metadata) -> Option<u32> {
    if meta.uid() != 0 {
        return None;
    }
    service_owner_of(dir).map(|(uid, _)| uid)
}

fn euid() -> u32 {
    // SAFETY: plain libc call without arguments.
    unsafe { libc::geteuid() }
}

/// Checks an existing state directory; a missing one is fine (it is created when needed).
pub fn check(dir: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(dir).and_then(|m| {
        // A symlink to a directory is an administrator's choice: judge what it points to.
        if m.file_type().is_symlink() {
            std::fs::metadata(dir)
        } else {
            Ok(m)
        }
    }) {
        Ok(m) => match problem(dir, facts(&m), euid(), service_uid(dir, &m)) {
            Some(p) => Err(StoreError::StateDirUnsafe(p)),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::StateDir {
            path: dir.display().to_string(),
            source,
        }),
    }
}

/// Creates the directory if it is missing (mode 0700: the store holds addresses), then
/// checks it. Root creates it for the service user when that user exists, so that a
/// command an administrator runs first does not lock the instances out.
pub fn prepare(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::StateDir {
        path: dir.display().to_string(),
        source,
    };
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        if let Some((uid, gid)) = service_owner_of(dir) {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io)?;
        }
    }
    check(dir)
}

/// When root works in a directory owned by someone else, a file it creates there is handed
/// to the directory's owner, who runs the instances and must be able to use it.
pub fn give_to_owner(dir: &Path, file: &std::fs::File) -> std::io::Result<()> {
    if euid() != 0 {
        return Ok(());
    }
    let owner = std::fs::metadata(dir)?;
    if owner.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))
}

/// One `/etc/passwd` entry: name, uid, gid, home. The binary is linked statically, where
/// glibc's NSS lookups (getpwnam) cannot load their modules, so the file is read directly;
/// the package creates its system user there. Fields borrow from the file's text: a root
/// start looks one user up, and a copy of every entry cost more than the rest of the check.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// The first entry of `/etc/passwd` for which `pick` gives something; with a `name`, only
/// that user's lines are parsed.
fn find_user<T>(name: Option<&str>, pick: impl FnMut(PasswdEntry<'_>) -> Option<T>) -> Option<T> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    let named =
        |l: &&str| name.is_none_or(|n| l.strip_prefix(n).is_some_and(|rest| rest.starts_with(':')));
    text.lines()
        .filter(named)
        .filter_map(passwd_entry)
        .find_map(pick)
}

fn passwd_entry(line: &str) -> Option<PasswdEntry<'_>> {
    let mut f = line.split(':');
    let name = f.next()?;
    let uid = f.nth(1)?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let home = f.nth(1)?;
    Some(PasswdEntry {
        name,
        uid,
        gid,
        home,
    })
}

fn user_name(uid: u32) -> Option<String> {
    find_user(None, |e| (e.uid == uid).then(|| e.name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(mode: u32, uid: u32) -> DirFacts {
        DirFacts {
            is_dir: true,
            mode: 0o040000 | mode,
            uid,
        }
    }

    #[test]
    fn passwd_lines() {
        let text = "root:x:0:0:root:/root:/bin/bash\ngreyspf:x:110:120::/var/lib/greyspf:/usr/sbin/nologin\nbroken\n";
        let entries: Vec<_> = text
            .lines()
            .filter_map(passwd_entry)
            .map(|e| (e.name, e.uid, e.gid, e.home))
            .collect();
        assert_eq!(
            entries,
            [
                ("root", 0, 0, "/root"),
                ("greyspf", 110, 120, "/var/lib/greyspf")
            ]
        );
    }

    #[test]
    fn decisions() {
        let d = Path::new("/var/lib/greyspf");
        assert_eq!(problem(d, f(0o700, 110), 110, None), None);
        assert_eq!(problem(d, f(0o755, 0), 0, None), None);
        assert_eq!(problem(d, f(0o700, 110), 0, Some(110)), None);
        let p = problem(d, f(0o770, 110), 110, None).unwrap();
        assert!(p.contains("group- or world-writable (mode 0770)"), "{p}");
        assert!(p.ends_with("fix: chmod 0700 /var/lib/greyspf"), "{p}");
        let p = problem(d, f(0o700, 0), 110, None).unwrap();
        assert!(
            p.starts_with("/var/lib/greyspf is owned by root, but"),
            "{p}"
        );
        assert!(p.contains("fix: chown -R "), "{p}");
        let p = problem(d, f(0o700, 0), 0, Some(110)).unwrap();
        assert!(
            p.ends_with("fix: chown -R greyspf: /var/lib/greyspf"),
            "{p}"
        );
        let not_dir = DirFacts {
            is_dir: false,
            mode: 0o100600,
            uid: 110,
        };
        assert_eq!(
            problem(d, not_dir, 110, None).as_deref(),
            Some("/var/lib/greyspf is not a directory")
        );
    }
}
