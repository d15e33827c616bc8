//! The keeper's clients: spawn instances and admin commands. Connects lazily, starts the
//! keeper when nobody listens (one at a time, under a start lock), and never waits longer
//! than the store timeout.

use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::wire::{read_frame, write_frame};
use super::{KeeperSettings, StoreError, socket_path, start_lock_path, statedir};
use crate::greylist::decide::{Timers, Verdict};
use crate::greylist::{ClientStanding, GreyQuery, Greylister, StoreUnavailable};
use std::ffi::OsString;

struct Conn {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

/// What a keeper client needs: the keeper's own settings (for the state directory and the
/// HELLO digest), how long to wait, and the arguments that start a keeper configured as
/// this process is.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub keeper: KeeperSettings,
    pub timeout: Duration,
    /// `-c FILE` and `-o key=value` arguments, given before `keeper --detach`.
    pub keeper_args: Vec<OsString>,
}

pub struct KeeperClient {
    dir: PathBuf,
    keeper_args: Vec<OsString>,
    timeout: Duration,
    conn: Option<Conn>,
    /// Digest of the keeper-side settings, sent with HELLO.
    digest: String,
    /// After a failed start, later requests do not try again before this instant, so a
    /// broken store costs one timeout per interval, not one per request.
    retry_after: Option<Instant>,
    /// Failed starts in a row: the wait before the next attempt grows with them.
    failures: u32,
    /// Counters not yet handed to the keeper (store failures among them).
    pending_counts: std::collections::BTreeMap<String, u64>,
}

/// Counts held back before they are sent on their own.
const COUNT_BATCH: u64 = 64;

impl KeeperClient {
    pub fn new(settings: &ClientSettings) -> Self {
        let dir = &settings.keeper.state_directory;
        // Said at start and in full: with a directory the instances cannot use, every
        // request gets the store-failure action, and greylisting is off.
        if let Err(e) = statedir::check(dir) {
            crate::logging::error(&format!("greylisting is off: {e}"));
        }
        KeeperClient {
            dir: dir.clone(),
            keeper_args: settings.keeper_args.clone(),
            timeout: settings.timeout,
            digest: settings.keeper.digest(),
            conn: None,
            retry_after: None,
            failures: 0,
            pending_counts: std::collections::BTreeMap::new(),
        }
    }

    /// Hands the held-back counts to the keeper in one NOTE frame, which it does not
    /// answer. Best effort: counts must never cost mail anything.
    fn send_counts(&mut self) {
        if self.pending_counts.is_empty() {
            return;
        }
        if self.conn.is_none() {
            if self.retry_after.is_some_and(|t| Instant::now() < t) {
                return;
            }
            match self.connect() {
                Ok(c) => self.conn = Some(c),
                Err(_) => return,
            }
        }
        let numbers: Vec<(String, String)> = self
            .pending_counts
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let mut fields = vec!["NOTE"];
        for (k, v) in &numbers {
            fields.push(k);
            fields.push(v);
        }
        if let Some(conn) = self.conn.as_mut() {
            if write_frame(&mut conn.writer, &fields).is_ok() {
                self.pending_counts.clear();
            } else {
                self.conn = None;
            }
        }
    }

    fn connect_once(&self) -> std::io::Result<Conn> {
        let s = UnixStream::connect(socket_path(&self.dir))?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: BufWriter::new(s),
        })
    }

    fn start_keeper(&self) -> Result<(), StoreError> {
        let exe = std::env::current_exe().map_err(StoreError::Spawn)?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&self.keeper_args);
        // Never hand the smtpd socket (our stdio) to a process that outlives the session.
        cmd.arg("keeper")
            .arg("--detach")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().map_err(StoreError::Spawn)?;
        // The child forks the real keeper and exits at once; reap it.
        child.wait().map_err(StoreError::Spawn)?;
        Ok(())
    }

    /// Connects, starting a keeper if needed, and checks the keeper's version.
    fn connect(&mut self) -> Result<Conn, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut retired = false;
        loop {
            let conn = match self.connect_once() {
                Ok(c) => Some(c),
                Err(_) => {
                    statedir::prepare(&self.dir)?;
                    let lock = StartLock::acquire(&self.dir, deadline, self.timeout)?;
                    let c = match self.connect_once() {
                        Ok(c) => c,
                        Err(_) => {
                            self.start_keeper()?;
                            loop {
                                if let Ok(c) = self.connect_once() {
                                    break c;
                                }
                                if Instant::now() >= deadline {
                                    return Err(StoreError::Timeout(self.timeout));
                                }
                                std::thread::sleep(Duration::from_millis(2));
                            }
                        }
                    };
                    drop(lock);
                    Some(c)
                }
            };
            let Some(mut c) = conn else { continue };
            write_frame(&mut c.writer, &["HELLO", crate::VERSION, &self.digest])
                .map_err(StoreError::Io)?;
            let reply = read_frame(&mut c.reader).map_err(StoreError::Io)?;
            match reply.as_deref() {
                Some([h, v, d]) if h == "HELLO" && v == crate::VERSION && *d == self.digest => {
                    return Ok(c);
                }
                // Another version, or a keeper started with other settings.
                Some([h, ..]) if h == "HELLO" && !retired => {
                    let _ = write_frame(&mut c.writer, &["RETIRE"]);
                    // The daemon owns its store and refuses: say why at once.
                    if let Ok(Some(reply)) = read_frame(&mut c.reader)
                        && let [e, why] = reply.as_slice()
                        && e == "ERR"
                    {
                        return Err(StoreError::Protocol(format!(
                            "the keeper's version or settings differ from ours: {why}"
                        )));
                    }
                    retired = true;
                    // Give the old keeper a moment to remove its socket before we look.
                    while socket_path(&self.dir).exists() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                other => {
                    return Err(StoreError::Protocol(format!(
                        "unexpected greeting {other:?}"
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout(self.timeout));
            }
        }
    }

    /// Sends one request and reads its reply, reconnecting once if the keeper went away
    /// (it may have exited idle or been killed between two requests).
    pub fn call(&mut self, fields: &[&str]) -> Result<Vec<String>, StoreError> {
        let r = self.call_inner(fields);
        if r.is_err() && fields.first() == Some(&"GREY") {
            *self
                .pending_counts
                .entry("store_failures".into())
                .or_insert(0) += 1;
        }
        r
    }

    fn call_inner(&mut self, fields: &[&str]) -> Result<Vec<String>, StoreError> {
        if let Some(t) = self.retry_after {
            if Instant::now() < t {
                return Err(StoreError::Protocol(
                    "keeper unavailable, not retrying yet".into(),
                ));
            }
            self.retry_after = None;
        }
        // A kept connection may have gone stale (the keeper idled out or was replaced): one
        // failure on it, other than a timeout, earns one more try on a fresh connection.
        let mut retried = false;
        loop {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => {
                        self.failures = 0;
                        c
                    }
                    Err(e) => {
                        self.failures = self.failures.saturating_add(1);
                        self.retry_after = Some(Instant::now() + retry_delay(self.failures));
                        return Err(e);
                    }
                },
            };
            let result =
                write_frame(&mut conn.writer, fields).and_then(|_| read_frame(&mut conn.reader));
            match result {
                Ok(Some(reply)) => {
                    self.conn = Some(conn);
                    return Ok(reply);
                }
                Ok(None) if !retried => retried = true,
                Err(e)
                    if !retried
                        && e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut =>
                {
                    retried = true;
                }
                Ok(None) => {
                    return Err(StoreError::Protocol("keeper closed the connection".into()));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(StoreError::Timeout(self.timeout));
                }
                Err(e) => return Err(StoreError::Io(e)),
            }
        }
    }
}

impl Greylister for KeeperClient {
    /// Counts locally; the counts travel to the keeper with the next greylist question,
    /// so counting never costs a request a round trip of its own.
    fn count(&mut self, name: &str) {
        *self.pending_counts.entry(name.to_string()).or_insert(0) += 1;
        if self.pending_counts.values().sum::<u64>() >= COUNT_BATCH {
            self.send_counts();
        }
    }

    fn finish(&mut self) {
        self.send_counts();
    }

    fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreUnavailable> {
        self.ask_keeper(q)
            .map_err(|e| StoreUnavailable(e.to_string()))
    }

    fn client_standing(
        &mut self,
        address: &str,
        t: &Timers,
    ) -> Result<ClientStanding, StoreUnavailable> {
        let (awl, age) = (t.awl_clients.to_string(), t.max_age_ms.to_string());
        let reply = self
            .call(&["CLIENT", address, &awl, &age])
            .map_err(|e| StoreUnavailable(e.to_string()))?;
        parse_standing(&reply).map_err(|e| StoreUnavailable(e.to_string()))
    }
}

fn parse_standing(reply: &[String]) -> Result<ClientStanding, StoreError> {
    let bad = || StoreError::Protocol(format!("unexpected reply {reply:?}"));
    match reply {
        [ok, kind, ms] if ok == "OK" => match (kind.as_str(), ms.parse::<u64>()) {
            ("none", Ok(_)) => Ok(ClientStanding::Unknown),
            ("whitelist", Ok(_)) => Ok(ClientStanding::Whitelisted),
            ("awl", Ok(remaining_ms)) => Ok(ClientStanding::AutoWhitelisted { remaining_ms }),
            _ => Err(bad()),
        },
        [err, msg] if err == "ERR" => Err(StoreError::Db(msg.clone())),
        _ => Err(bad()),
    }
}

impl KeeperClient {
    /// One GREY round trip, with the counts held back sent first.
    fn ask_keeper(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreError> {
        if !self.pending_counts.is_empty() && self.conn.is_some() {
            self.send_counts();
        }
        let t = &q.timers;
        let nums = [
            t.delay_ms,
            t.retry_window_ms,
            t.max_age_ms,
            u64::from(t.awl_clients),
            t.awl_interval_ms,
        ]
        .map(|n| n.to_string());
        let reply = self.call(&[
            "GREY",
            q.client_key,
            q.sender,
            q.recipient,
            q.client_address,
            &nums[0],
            &nums[1],
            &nums[2],
            &nums[3],
            &nums[4],
        ])?;
        parse_verdict(&reply)
    }
}

fn parse_verdict(reply: &[String]) -> Result<Verdict, StoreError> {
    let bad = || StoreError::Protocol(format!("unexpected reply {reply:?}"));
    match reply {
        [ok, reason, value] if ok == "OK" => {
            let v: u64 = value.parse().map_err(|_| bad())?;
            Verdict::from_reason(reason, v).ok_or_else(bad)
        }
        [err, msg] if err == "ERR" => Err(StoreError::Db(msg.clone())),
        _ => Err(bad()),
    }
}

/// How long an instance leaves the keeper alone after `failures` failed starts in a row:
/// each attempt may cost a request the whole store timeout, so a store that stays down
/// must cost less and less often, up to once a minute.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// An exclusive flock on the start lock file, so concurrent instances start one keeper.
struct StartLock(std::fs::File);

impl StartLock {
    fn acquire(
        dir: &std::path::Path,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<StartLock, StoreError> {
        let path = start_lock_path(dir);
        let err = |source| StoreError::StateDir {
            path: path.display().to_string(),
            source,
        };
        // flock works on a read-only descriptor. O_NOFOLLOW: whoever can plant a symlink
        // here must not make us create or lock a file elsewhere.
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(err)?;
                // Root's admin command must not leave a lock file the instances cannot open.
                statedir::give_to_owner(dir, &f).map_err(err)?;
                f
            }
            Err(e) => return Err(err(e)),
        };
        loop {
            // SAFETY: a valid open descriptor.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(StartLock(f));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        // SAFETY: a valid open descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
