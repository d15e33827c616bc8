//! `greyspf daemon`: the listeners (TCP and unix, bound here or passed by systemd), the
//! bounded pool of connection threads, the access check, the privilege drop after binding,
//! and the life cycle (SIGHUP reload keeping the old configuration on error, SIGTERM drain).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::ServerSettings;
use super::postscreen::{self, PostscreenSettings};
use crate::greylist::Greylister;
use crate::logging;
use crate::net::Network;

/// How long SIGTERM waits for the requests in progress before the daemon exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loop looks at the stop flag.
const POLL_MS: libc::c_int = 200;

/// One listener address as Postfix writes them: `inet:ADDRESS:PORT` (IPv6 in brackets) or
/// `unix:/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Endpoint, String> {
        if let Some(a) = s.strip_prefix("inet:") {
            return a.parse::<SocketAddr>().map(Endpoint::Inet).map_err(|_| {
                format!("bad endpoint {s:?}: expected inet:ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)")
            });
        }
        match s.strip_prefix("unix:") {
            Some(p) if p.starts_with('/') => Ok(Endpoint::Unix(PathBuf::from(p))),
            _ => Err(format!(
                "bad endpoint {s:?}: expected inet:ADDRESS:PORT or unix:/PATH"
            )),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet(a) => write!(f, "inet:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What the daemon fixes at start: listeners and the user (a reload cannot change them).
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub listen: Vec<Endpoint>,
    pub postscreen_listen: Vec<Endpoint>,
    pub max_connections: usize,
    pub unix_mode: u32,
    /// Empty: leave the group as created.
    pub unix_group: String,
    pub user: String,
}

/// Makes one store engine handle per connection.
pub type StoreFactory = Box<dyn Fn() -> Box<dyn Greylister> + Send + Sync>;

/// What each new connection is served with; replaced whole by a reload. Connections
/// already open keep the one they started with.
pub struct Runtime {
    pub server: ServerSettings,
    pub postscreen: PostscreenSettings,
    pub allowed_clients: Vec<Network>,
    pub idle_timeout: Duration,
    pub store: StoreFactory,
}

/// Builds a new runtime from the configuration as it is now (SIGHUP).
pub type Reload = Box<dyn FnMut() -> Result<Runtime, String> + Send>;

/// Builds the first runtime (opening the store) once the sockets are bound and the
/// privileges dropped, so that the store's files belong to the user that serves.
pub type Start = Box<dyn FnOnce() -> Result<(Runtime, Reload), String>>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unix(String),
    #[error("no listeners: listen and postscreen_listen are empty")]
    NoListeners,
    #[error("cannot serve as root: {0}")]
    User(String),
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Start(String),
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Policy,
    Postscreen,
}

enum Sock {
    Tcp(TcpListener),
    Unix(UnixListener),
}

struct Listener {
    sock: Sock,
    kind: Kind,
    name: String,
    /// A socket file we created and remove at exit.
    created: Option<PathBuf>,
}

impl Listener {
    fn fd(&self) -> RawFd {
        match &self.sock {
            Sock::Tcp(l) => l.as_raw_fd(),
            Sock::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// An accepted connection of either family.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn prepare(&self, idle: Duration) -> std::io::Result<()> {
        match self {
            // A client that stops reading its replies must not hold a place forever.
            Conn::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(idle))?;
                s.set_write_timeout(Some(idle))
            }
            Conn::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(idle))?;
                s.set_write_timeout(Some(idle))
            }
        }
    }

    fn into_fd(self) -> OwnedFd {
        match self {
            Conn::Tcp(s) => s.into(),
            Conn::Unix(s) => s.into(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The connections being served: their count bounds the pool, and a duplicate of each
/// socket lets SIGTERM end their input while their replies still go out.
struct Pool {
    state: Mutex<PoolState>,
    changed: Condvar,
    next_id: AtomicU64,
}

#[derive(Default)]
struct PoolState {
    active: usize,
    conns: HashMap<u64, OwnedFd>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One place in the pool, given back on every way out of a connection's thread.
struct Slot {
    pool: Arc<Pool>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = locked(&self.pool.state);
        st.active -= 1;
        st.conns.remove(&self.id);
        self.pool.changed.notify_all();
    }
}

impl Pool {
    /// Waits for a free place; None when the daemon is stopping.
    fn acquire(self: &Arc<Pool>, max: usize, stop: &AtomicBool) -> Option<Slot> {
        let mut st = locked(&self.state);
        while st.active >= max {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(POLL_MS as u64))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.active += 1;
        Some(Slot {
            pool: Arc::clone(self),
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
        })
    }

    fn register(&self, id: u64, fd: OwnedFd) {
        locked(&self.state).conns.insert(id, fd);
    }

    /// Ends the input of every connection: each answers what it has read, then sees EOF.
    fn end_input(&self) {
        for fd in locked(&self.state).conns.values() {
            // SAFETY: a descriptor we own; shutdown does not close it.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
        }
    }

    /// Waits until no connection is left, or the deadline; returns how many are left.
    fn drain(&self, deadline: Instant) -> usize {
        let mut st = locked(&self.state);
        while st.active > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.active
    }
}

struct Shared {
    runtime: RwLock<Arc<Runtime>>,
    pool: Arc<Pool>,
    stop: AtomicBool,
}

impl Shared {
    fn current(&self) -> Arc<Runtime> {
        Arc::clone(&self.runtime.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then drains.
pub fn run(settings: &DaemonSettings, start: Start) -> Result<(), DaemonError> {
    // Before any thread exists, so that every thread inherits the mask and one thread
    // receives the signals with sigwait.
    let signals = crate::store::keeper::block_stop_signals();
    let listeners = listeners(settings)?;
    if listeners.is_empty() {
        return Err(DaemonError::NoListeners);
    }
    drop_privileges(&settings.user)?;
    let (runtime, reload) = start().map_err(DaemonError::Start)?;
    for l in &listeners {
        let kind = match l.kind {
            Kind::Policy => "SMTPD policy",
            Kind::Postscreen => "postscreen callout",
        };
        logging::info(&format!("daemon listening on {} ({kind})", l.name));
    }
    let shared = Arc::new(Shared {
        runtime: RwLock::new(Arc::new(runtime)),
        pool: Arc::new(Pool {
            state: Mutex::new(PoolState::default()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(0),
        }),
        stop: AtomicBool::new(false),
    });
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || signal_loop(&shared, signals, reload))
            .map_err(DaemonError::Thread)?;
    }
    notify("READY=1");
    accept_loop(&shared, &listeners, settings.max_connections.max(1));
    notify("STOPPING=1");
    for l in &listeners {
        if let Some(p) = &l.created {
            let _ = std::fs::remove_file(p);
        }
    }
    shared.pool.end_input();
    let left = shared.pool.drain(Instant::now() + DRAIN_TIMEOUT);
    if left > 0 {
        logging::warning(&format!(
            "daemon stopping with {left} connections still busy after {DRAIN_TIMEOUT:?}"
        ));
    }
    logging::info("daemon stopped");
    Ok(())
}

fn signal_loop(shared: &Shared, signals: libc::sigset_t, mut reload: Reload) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set was initialised by block_signals; sig is writable.
        if unsafe { libc::sigwait(&signals, &mut sig) } != 0 {
            continue;
        }
        if sig == libc::SIGHUP {
            notify("RELOADING=1");
            match reload() {
                Ok(rt) => {
                    *shared
                        .runtime
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Arc::new(rt);
                    logging::info("configuration reloaded; new connections use it");
                }
                Err(e) => logging::error(&format!(
                    "configuration reload refused, the previous configuration stays: {e}"
                )),
            }
            notify("READY=1");
            continue;
        }
        logging::info(&format!(
            "daemon stopping on signal {sig}: no new connections, answering what was read"
        ));
        shared.stop.store(true, Ordering::SeqCst);
        return;
    }
}

/// The listeners: those passed by systemd (LISTEN_FDS) when there are any, else those of
/// the configuration, bound here.
fn listeners(s: &DaemonSettings) -> Result<Vec<Listener>, DaemonError> {
    let passed = systemd_fds();
    if !passed.is_empty() {
        return passed.into_iter().map(|fd| adopt(fd, s)).collect();
    }
    let mut out = Vec::new();
    for (list, kind) in [
        (&s.listen, Kind::Policy),
        (&s.postscreen_listen, Kind::Postscreen),
    ] {
        for e in list {
            out.push(bind(e, kind, s)?);
        }
    }
    Ok(out)
}

fn bind(e: &Endpoint, kind: Kind, s: &DaemonSettings) -> Result<Listener, DaemonError> {
    let err = |source| DaemonError::Bind {
        endpoint: e.to_string(),
        source,
    };
    match e {
        Endpoint::Inet(a) => {
            let l = TcpListener::bind(a).map_err(err)?;
            let name = format!("inet:{}", l.local_addr().map_err(err)?);
            l.set_nonblocking(true).map_err(err)?;
            Ok(Listener {
                sock: Sock::Tcp(l),
                kind,
                name,
                created: None,
            })
        }
        Endpoint::Unix(p) => {
            // A socket file nobody answers on is left over from a daemon that died.
            if p.exists() {
                if UnixStream::connect(p).is_ok() {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another process serves this socket",
                    )));
                }
                let _ = std::fs::remove_file(p);
            }
            let l = UnixListener::bind(p).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            unix_access(p, s)?;
            Ok(Listener {
                sock: Sock::Unix(l),
                kind,
                name: e.to_string(),
                created: Some(p.clone()),
            })
        }
    }
}

/// Mode, and group (and the daemon user as owner when we are root) of a unix socket.
fn unix_access(p: &std::path::Path, s: &DaemonSettings) -> Result<(), DaemonError> {
    let fail =
        |what: &str, e: std::io::Error| DaemonError::Unix(format!("{}: {what}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(s.unix_mode))
        .map_err(|e| fail("setting its mode", e))?;
    let gid = if s.unix_group.is_empty() {
        None
    } else {
        Some(group_id(&s.unix_group).ok_or_else(|| {
            DaemonError::Unix(format!("listen_unix_group: no group {:?}", s.unix_group))
        })?)
    };
    // SAFETY: plain libc call.
    let uid = if unsafe { libc::geteuid() } == 0 {
        user_ids(&s.user).map(|(u, _)| u)
    } else {
        None
    };
    if gid.is_none() && uid.is_none() {
        return Ok(());
    }
    std::os::unix::fs::chown(p, uid, gid).map_err(|e| fail("setting its owner", e))
}

/// The sockets systemd passed (LISTEN_PID is us, LISTEN_FDS of them from fd 3).
fn systemd_fds() -> Vec<OwnedFd> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !ours || n <= 0 {
        return Vec::new();
    }
    (3..3 + n)
        .map(|fd| {
            // SAFETY: systemd hands these descriptors to us and nothing else owns them.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            // SAFETY: as above; each is wrapped once.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect()
}

/// A passed socket speaks the postscreen protocol when its address is in
/// postscreen_listen, the SMTPD policy protocol otherwise.
fn adopt(fd: OwnedFd, s: &DaemonSettings) -> Result<Listener, DaemonError> {
    let raw = fd.as_raw_fd();
    let err = |source| DaemonError::Bind {
        endpoint: format!("fd {raw}"),
        source,
    };
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: domain and len are valid for writing and sized for SO_DOMAIN.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let (sock, endpoint) = if domain == libc::AF_UNIX {
        let l = UnixListener::from(fd);
        let path = l
            .local_addr()
            .map_err(err)?
            .as_pathname()
            .map(PathBuf::from)
            .unwrap_or_default();
        (Sock::Unix(l), Endpoint::Unix(path))
    } else {
        let l = TcpListener::from(fd);
        let a = l.local_addr().map_err(err)?;
        (Sock::Tcp(l), Endpoint::Inet(a))
    };
    let kind = if s.postscreen_listen.contains(&endpoint) {
        Kind::Postscreen
    } else {
        Kind::Policy
    };
    let l = Listener {
        sock,
        kind,
        name: format!("{endpoint} (from systemd)"),
        created: None,
    };
    match &l.sock {
        Sock::Tcp(t) => t.set_nonblocking(true).map_err(err)?,
        Sock::Unix(u) => u.set_nonblocking(true).map_err(err)?,
    }
    Ok(l)
}

/// The uid and gid of a user, from /etc/passwd. Read as a file: the static binary must
/// never call into NSS (see packaging/check-static.sh).
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    database_entry(&text, name)
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
}

/// The gid of a group, from /etc/group (as `user_ids`).
fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    database_entry(&text, name).and_then(|f| f.get(2)?.parse().ok())
}

/// The fields of the line of `name` in a colon-separated system database.
fn database_entry<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
}

/// Started as root, become `user` (its group only) now that the sockets are bound.
fn drop_privileges(user: &str) -> Result<(), DaemonError> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let (uid, gid) = user_ids(user)
        .ok_or_else(|| DaemonError::User(format!("daemon_user {user:?} does not exist")))?;
    if uid == 0 {
        return Err(DaemonError::User(format!("daemon_user {user:?} is root")));
    }
    // SAFETY: plain libc calls; groups first, while we still may.
    let ok = unsafe {
        libc::setgroups(1, &gid) == 0 && libc::setgid(gid) == 0 && libc::setuid(uid) == 0
    };
    if ok {
        logging::info(&format!("daemon serving as user {user}"));
        Ok(())
    } else {
        Err(DaemonError::User(format!(
            "switching to {user:?}: {}",
            std::io::Error::last_os_error()
        )))
    }
}

/// Tells systemd (Type=notify) how we are; nothing when not started by it.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
}

/// Accepts while the pool has room, until the stop flag is set.
fn accept_loop(shared: &Arc<Shared>, listeners: &[Listener], max: usize) {
    let mut pfds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut errors = 0u32;
    while !shared.stop.load(Ordering::SeqCst) {
        // Past max_connections, new connections wait in the listen backlog.
        let Some(slot) = shared.pool.acquire(max, &shared.stop) else {
            break;
        };
        // SAFETY: pfds is a valid array of its length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, POLL_MS) };
        if n <= 0 {
            continue;
        }
        for (l, p) in listeners.iter().zip(pfds.iter()) {
            if p.revents == 0 {
                continue;
            }
            match accept(l) {
                Ok(Some((conn, peer))) => {
                    errors = 0;
                    start_connection(shared, slot, conn, peer, l.kind);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    if errors == 0 {
                        logging::warning(&format!("daemon: accept on {}: {e}", l.name));
                    }
                    errors = errors.saturating_add(1);
                    // A descriptor shortage must not spin a core.
                    std::thread::sleep(Duration::from_millis(10u64 << errors.min(6)));
                }
            }
        }
    }
}

fn accept(l: &Listener) -> std::io::Result<Option<(Conn, Option<IpAddr>)>> {
    let r = match &l.sock {
        Sock::Tcp(t) => t
            .accept()
            .map(|(s, a)| (Conn::Tcp(s), Some(a.ip().to_canonical()))),
        Sock::Unix(u) => u.accept().map(|(s, _)| (Conn::Unix(s), None)),
    };
    match r {
        Ok(c) => Ok(Some(c)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn start_connection(
    shared: &Arc<Shared>,
    slot: Slot,
    conn: Conn,
    peer: Option<IpAddr>,
    kind: Kind,
) {
    let rt = shared.current();
    if let Some(ip) = peer
        && !rt.allowed_clients.iter().any(|n| n.contains(ip))
    {
        logging::warning(&format!(
            "daemon: refused a connection from {ip}: not in allowed_clients"
        ));
        return;
    }
    match conn.try_clone() {
        Ok(dup) => shared.pool.register(slot.id, dup.into_fd()),
        Err(e) => {
            logging::warning(&format!("daemon: connection dropped: {e}"));
            return;
        }
    }
    let spawned = std::thread::Builder::new()
        .name("connection".into())
        .spawn(move || {
            let _slot = slot;
            serve_connection(conn, kind, &rt);
        });
    // On failure the closure is dropped with its slot and connection: the client sees the
    // connection close and tries again.
    if let Err(e) = spawned {
        logging::warning(&format!("daemon: starting a connection thread: {e}"));
    }
}

fn serve_connection(conn: Conn, kind: Kind, rt: &Runtime) {
    let result = conn
        .prepare(rt.idle_timeout)
        .and_then(|_| conn.try_clone())
        .map_err(|e| e.to_string())
        .and_then(|input| {
            let input = BufReader::new(input);
            let output = BufWriter::new(conn);
            let mut store = (rt.store)();
            match kind {
                Kind::Policy => super::serve(input, output, &rt.server, store.as_mut()),
                Kind::Postscreen => {
                    postscreen::serve(input, output, &rt.postscreen, store.as_mut())
                }
            }
            .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        logging::info(&format!("daemon: connection ended: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_databases() {
        let text = "root:x:0:0:root:/root:/bin/sh\npostfix:x:102:105::/var/spool:/bin/false\n";
        assert_eq!(database_entry(text, "postfix").unwrap()[3], "105");
        assert!(database_entry(text, "post").is_none());
    }

    #[test]
    fn endpoints() {
        let e: Endpoint = "inet:127.0.0.1:10023".parse().unwrap();
        assert_eq!(e, Endpoint::Inet("127.0.0.1:10023".parse().unwrap()));
        let e: Endpoint = "inet:[::1]:10023".parse().unwrap();
        assert_eq!(e.to_string(), "inet:[::1]:10023");
        let e: Endpoint = "unix:/run/greyspf/policy".parse().unwrap();
        assert_eq!(e, Endpoint::Unix("/run/greyspf/policy".into()));
        for bad in [
            "127.0.0.1:10023",
            "inet:localhost:10023",
            "inet:::1:25",
            "unix:rel",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
