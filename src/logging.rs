//! Logging: RFC 3164 lines to the syslog socket, never held up by the daemon (a full
//! socket drops the line and counts it), a quiet fallback when there is no socket, stderr
//! for manual foreground runs only, and the panic hook. Under spawn(8) stderr is the smtpd
//! socket, so nothing here writes to it unless the administrator asked for `--foreground`.
//!
//! The sender is written by hand rather than taken from the `syslog` crate (which still
//! supplies the `Facility` type of the configuration): that crate sends on a blocking
//! socket, and a syslog daemon that hangs while its socket still exists (or journald under
//! I/O pressure) then stalls every answer of every instance. Here the socket is a
//! non-blocking `UnixDatagram`: when the daemon's queue is full a line waits a bounded
//! moment for room (a burst from many instances), then is dropped and counted; while the
//! daemon stays stuck further lines are dropped at once. The count rides along in the next
//! line that gets through and in the `log_dropped` counter of `stats`. Only datagram
//! sockets are supported, as `/dev/log` is on every current syslog daemon.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Syslog {
    /// The facility code, already shifted (`LOG_MAIL` is 16).
    facility: u32,
    path: PathBuf,
    socket: Option<UnixDatagram>,
    /// When the socket was last opened; an absent daemon is not asked again before
    /// `RECONNECT` has passed.
    last_attempt: Option<Instant>,
    pid: u32,
    /// A line was dropped for want of room and none got through since: the daemon is
    /// stuck, so lines are dropped at once rather than after `ROOM_WAIT` each.
    stalled: bool,
}

enum Sink {
    Syslog(Syslog),
    Stderr,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Lines dropped since the last line that got through; that next line reports them.
static UNREPORTED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped that the `log_dropped` counter has not been told about yet.
static UNCOUNTED: AtomicU64 = AtomicU64::new(0);

/// How long a line may wait for room in a full socket. A burst that a healthy daemon
/// drains at once costs nothing; a stuck daemon costs this once, then lines are dropped
/// without waiting until one gets through again.
const ROOM_WAIT: Duration = Duration::from_millis(100);

/// How long to wait before trying an absent syslog socket again.
const RECONNECT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    /// The syslog severity code (RFC 3164 table 2).
    fn severity(self) -> u32 {
        match self {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Info => 6,
        }
    }
}

/// Severity of a panic: critical, as the old logger sent it.
const CRITICAL: u32 = 2;

/// Chooses the sink. `foreground` logs to stderr, otherwise syslog at `socket`, connected
/// at once (before a daemon gives up root, which a private socket may need).
pub fn init(facility: syslog::Facility, socket: PathBuf, foreground: bool) {
    set_sink(facility, socket, foreground, true);
}

/// The sink for what goes wrong before the configuration is read: syslog at `socket`,
/// connected only if a line comes (most starts log nothing before `init`, and the
/// connection would cost a spawned instance four system calls for nothing).
pub fn init_early(facility: syslog::Facility, socket: PathBuf) {
    set_sink(facility, socket, false, false);
}

fn set_sink(facility: syslog::Facility, socket: PathBuf, foreground: bool, connect: bool) {
    let sink = if foreground {
        Sink::Stderr
    } else {
        let mut s = Syslog {
            facility: facility as u32,
            path: socket,
            socket: None,
            last_attempt: None,
            pid: std::process::id(),
            stalled: false,
        };
        if connect {
            s.connect();
        }
        Sink::Syslog(s)
    };
    if let Ok(mut g) = SINK.lock() {
        *g = Some(sink);
    }
}

/// The pid changes when the keeper detaches (it forks): the tag must follow it.
pub fn reset_pid() {
    if let Ok(mut g) = SINK.lock()
        && let Some(Sink::Syslog(s)) = g.as_mut()
    {
        s.pid = std::process::id();
    }
}

/// Takes the number of dropped lines not yet handed to the `log_dropped` counter.
pub fn take_dropped() -> u64 {
    UNCOUNTED.swap(0, Ordering::Relaxed)
}

/// Opens a non-blocking datagram socket connected to `path`.
fn open(path: &Path) -> std::io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.set_nonblocking(true)?;
    s.connect(path)?;
    Ok(s)
}

fn count_drop() {
    UNREPORTED.fetch_add(1, Ordering::Relaxed);
    UNCOUNTED.fetch_add(1, Ordering::Relaxed);
}

impl Syslog {
    fn connect(&mut self) {
        self.last_attempt = Some(Instant::now());
        self.socket = open(&self.path).ok();
    }

    /// Sends one line, never waiting. Without a socket the line is lost quietly (a minimal
    /// container has no syslog daemon); a line the socket refuses is counted as dropped.
    fn send(&mut self, severity: u32, msg: &str) {
        if self.socket.is_none() && self.last_attempt.is_none_or(|t| t.elapsed() >= RECONNECT) {
            self.connect();
        }
        if self.socket.is_none() {
            return;
        }
        let dropped = UNREPORTED.load(Ordering::Relaxed);
        let line = datagram(self.facility | severity, self.pid, msg, dropped);
        let mut result = self.send_or_wait(&line);
        if result.as_ref().is_err_and(|e| !full(e)) {
            // The daemon went away or was restarted: the old socket is dead, a new one
            // may be there already.
            self.connect();
            result = self.try_send(&line);
        }
        match result {
            Ok(()) => {
                self.stalled = false;
                UNREPORTED.fetch_sub(dropped, Ordering::Relaxed);
            }
            Err(e) => {
                self.stalled = full(&e);
                count_drop();
            }
        }
    }

    /// Sends, waiting at most `ROOM_WAIT` in all for room unless the daemon is known to be
    /// stuck. Room can be taken by another process between the wake-up and the send, so
    /// the wait goes on until the deadline.
    fn send_or_wait(&self, line: &str) -> std::io::Result<()> {
        let deadline = Instant::now() + ROOM_WAIT;
        loop {
            match self.try_send(line) {
                Err(e) if full(&e) && !self.stalled => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !self.wait_for_room(left) {
                        return Err(e);
                    }
                }
                r => return r,
            }
        }
    }

    /// Waits at most `limit` for the daemon to make room; true when it did.
    fn wait_for_room(&self, limit: Duration) -> bool {
        let Some(s) = &self.socket else { return false };
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = limit.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: one pollfd of our own, on a descriptor that lives as long as `s`.
        unsafe { libc::poll(&mut p, 1, ms) > 0 && p.revents & libc::POLLOUT != 0 }
    }

    fn try_send(&self, line: &str) -> std::io::Result<()> {
        match &self.socket {
            Some(s) => s.send(line.as_bytes()).map(|_| ()),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// The socket is there but its queue is full: the daemon is slow or stuck.
fn full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// One RFC 3164 line: `<PRI>Mmm dd hh:mm:ss greyspf[pid]: msg`, local time as syslog(3)
/// writes it, and the count of lines lost before this one.
fn datagram(priority: u32, pid: u32, msg: &str, dropped: u64) -> String {
    let mut line = format!("<{priority}>{} greyspf[{pid}]: {msg}", timestamp());
    if dropped > 0 {
        line.push_str(&format!(", log_dropped={dropped}"));
    }
    line
}

/// The RFC 3164 timestamp in local time, `Feb  5 09:03:07`.
fn timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) only returns the clock; localtime_r writes into our own struct.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return "Jan  1 00:00:00".into();
        }
        tm
    };
    let month = MONTHS[tm.tm_mon.clamp(0, 11) as usize];
    format!(
        "{month} {:>2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

/// Log messages are one line: control characters would split or forge syslog records.
fn clean(msg: &str) -> String {
    msg.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn log(level: Level, msg: &str) {
    let msg = clean(msg);
    let Ok(mut guard) = SINK.lock() else { return };
    match guard.as_mut() {
        Some(Sink::Stderr) => {
            // Foreground mode only: the administrator asked for stderr.
            eprintln!("greyspf[{}]: {msg}", std::process::id());
        }
        Some(Sink::Syslog(s)) => s.send(level.severity(), &msg),
        None => {}
    }
}

pub fn info(msg: &str) {
    log(Level::Info, msg);
}

pub fn warning(msg: &str) {
    log(Level::Warning, &format!("warning: {msg}"));
}

pub fn error(msg: &str) {
    log(Level::Error, &format!("error: {msg}"));
}

/// Replaces the default hook, which prints to stderr (the smtpd socket under spawn).
/// Installed first thing, so that no panic ever takes the default path.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let msg = clean(&format!("panic: {payload}{location}"));
        // try_lock: a panic while the sink is held must not deadlock the hook.
        let Ok(mut g) = SINK.try_lock() else { return };
        match g.as_mut() {
            Some(Sink::Syslog(s)) => s.send(CRITICAL, &msg),
            Some(Sink::Stderr) => eprintln!("greyspf: {msg}"),
            None => {}
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reports_the_drops_before_it() {
        let l = datagram(22, 7, "hello", 0);
        assert!(l.starts_with("<22>"), "{l}");
        assert!(l.ends_with(" greyspf[7]: hello"), "{l}");
        assert!(datagram(19, 7, "x", 3).ends_with("greyspf[7]: x, log_dropped=3"));
    }

    #[test]
    fn a_full_socket_drops_and_counts_without_waiting_twice() {
        let dir = std::env::temp_dir().join(format!("greyspf-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("log");
        let daemon = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Syslog {
            facility: 16,
            path,
            socket: None,
            last_attempt: None,
            pid: 1,
            stalled: false,
        };
        s.connect();
        let start = Instant::now();
        for i in 0..500 {
            s.send(6, &format!("line {i}"));
        }
        // One wait for room at most, however many lines are dropped.
        assert!(start.elapsed() < ROOM_WAIT * 4, "{:?}", start.elapsed());
        assert!(s.stalled);
        let mut buf = [0u8; 512];
        daemon
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = 0;
        while daemon.recv(&mut buf).is_ok() {
            got += 1;
        }
        let dropped = 500 - got;
        assert!(dropped > 0);
        assert_eq!(take_dropped(), dropped);
        s.send(6, "after");
        let n = daemon.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            line.ends_with(&format!("greyspf[1]: after, log_dropped={dropped}")),
            "{line}"
        );
        assert!(!s.stalled);
        assert_eq!(take_dropped(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_timestamp_has_the_rfc_3164_shape() {
        let t = timestamp();
        let re = crate::pattern::build(
            r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123]\d \d\d:\d\d:\d\d$",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(re.is_match(t.as_bytes()), "{t:?}");
    }
}
