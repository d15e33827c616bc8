//! The store keeper: the only process that opens sled. It serves greylist decisions to the
//! spawn instances over a unix socket, expires entries a little at a time, and exits when idle.
//! `greyspf daemon` runs the same core inside itself (`Keeper::embedded`): it owns sled for
//! as long as it runs, serves the keeper socket to spawn instances and admin commands, and
//! decides its own connections' requests in process (`LocalStore`).

use std::io::{BufReader, BufWriter};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::db::{Db, Filter, Row, instance_counter};
use super::wire::{read_frame, write_frame};
use super::{KeeperSettings, StoreError, db_path, socket_path};
use crate::date::now_ms;
use crate::greylist::decide::{Timers, Verdict};
use crate::greylist::{ClientStanding, GreyQuery, Greylister, StoreUnavailable};
use crate::logging;
use crate::net::Network;

/// Entries examined per expiry step: small enough that a step never stalls decisions.
const EXPIRY_STEP: usize = 500;

struct Shared {
    db: Db,
    active: AtomicUsize,
    last_activity_ms: AtomicU64,
    max_age_ms: u64,
    /// The digest of the settings this keeper was started with, told in HELLO.
    digest: String,
    socket: PathBuf,
    socket_ino: u64,
    /// Inside the daemon: no idle exit, no retiring, and leaving means the daemon's exit.
    embedded: bool,
}

/// Counts one connection as active for as long as it lives: dropped on every way out of
/// the connection's thread, a panic included, and when the thread could not be started,
/// so a lost connection cannot keep the keeper from its idle exit.
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: &Arc<Shared>) -> Active {
        shared.active.fetch_add(1, Ordering::SeqCst);
        shared.last_activity_ms.store(now_ms(), Ordering::SeqCst);
        Active(Arc::clone(shared))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.last_activity_ms.store(now_ms(), Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The pause after `errors` failed accepts in a row: a descriptor shortage must not spin
/// a core, and clears itself when connections end.
fn accept_pause(errors: u32) -> Duration {
    Duration::from_millis(10u64 << errors.min(7)).min(Duration::from_secs(1))
}

/// The daemon's exit status when its store fails under it (EX_SOFTWARE, as the
/// composition root's runtime errors): the service manager starts it again, and the new
/// daemon opens the store from what is on disk.
const EMBEDDED_FAILURE_EXIT: i32 = 70;

impl Shared {
    /// Writes everything to disk and gives the socket up, if it is still ours (a successor
    /// may have bound a new one).
    fn close(&self) {
        self.db.flush();
        if std::fs::metadata(&self.socket).map(|m| m.ino()).ok() == Some(self.socket_ino) {
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    fn exit(&self, why: &str) -> ! {
        self.close();
        if self.embedded {
            logging::error(&format!("daemon exiting: {why}"));
            std::process::exit(EMBEDDED_FAILURE_EXIT)
        }
        logging::info(&format!("keeper exiting: {why}"));
        std::process::exit(0)
    }
}

/// Detaches from the caller: a new session, stdio on /dev/null, and a fork so the keeper is
/// nobody's child (the instance that started it reaps the intermediate process at once).
/// Must run before any thread exists.
pub fn detach() -> Result<(), StoreError> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(StoreError::Spawn)?;
    // SAFETY: single-threaded at this point; fork/setsid/dup2 are async-signal-safe and the
    // parent leaves at once with _exit.
    unsafe {
        match libc::fork() {
            -1 => return Err(StoreError::Spawn(std::io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::setsid();
        // Do not hold the caller's working directory (Postfix's queue directory) busy.
        libc::chdir(c"/".as_ptr());
        for fd in 0..3 {
            libc::dup2(devnull.as_raw_fd(), fd);
        }
    }
    logging::reset_pid();
    Ok(())
}

/// When started by root (an administrator's command), run as the owner of the state
/// directory so that the store and socket stay usable by the unprivileged instances.
fn drop_privileges(dir: &Path) -> Result<(), StoreError> {
    // SAFETY: plain libc calls without pointers.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let meta = std::fs::metadata(dir).map_err(|source| StoreError::StateDir {
        path: dir.display().to_string(),
        source,
    })?;
    if meta.uid() == 0 {
        return Ok(());
    }
    // SAFETY: as above; group first, while we still may.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(meta.gid()) == 0
            && libc::setuid(meta.uid()) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::StateDir {
            path: dir.display().to_string(),
            source: std::io::Error::last_os_error(),
        })
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// What a failed open means for the store on disk.
#[derive(Debug, PartialEq, Eq)]
enum OpenFailure {
    /// Another keeper holds it.
    Locked,
    /// The operating system refused (full disk, no descriptors, I/O error, permissions):
    /// the store may be intact, so keep it and try again later.
    System,
    /// sled read it and found it damaged or in a format it does not know.
    Damaged,
}

fn classify(e: &sled::Error) -> OpenFailure {
    match e {
        _ if is_lock_error(e) => OpenFailure::Locked,
        // An error with an errno came from a system call; one without it is sled's own
        // verdict on what it read (a short or garbled file).
        sled::Error::Io(io) if io.raw_os_error().is_some() => OpenFailure::System,
        sled::Error::Io(_)
        | sled::Error::Corruption { .. }
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_)
        | sled::Error::CollectionNotFound(_) => OpenFailure::Damaged,
    }
}

/// Whether the file system of `dir` has at least 1 MiB and one inode free for us; true
/// when that cannot be told.
fn has_room(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return true;
    };
    // SAFETY: statvfs is plain data, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st is writable.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return true;
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    free >= 1 << 20 && st.f_favail > 0
}

/// Opens the store. `Ok(None)`: another keeper holds it. A store sled reports as damaged is
/// moved aside with a timestamp and a fresh one is started, so mail keeps flowing; one the
/// system could not open (a full disk, say) is kept for the next start.
fn open_store(dir: &Path, flush: Duration) -> Result<Option<sled::Db>, StoreError> {
    let path = db_path(dir);
    let flush_ms = flush.as_millis().max(1) as u64;
    let open = || {
        std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(&path)
                .flush_every_ms(Some(flush_ms))
                .cache_capacity(16 << 20)
                .open()
        })
    };
    let open_error = |message: String| StoreError::Open {
        path: path.display().to_string(),
        message,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut moved = false;
    loop {
        let failure = match open() {
            Ok(Ok(db)) => return Ok(Some(db)),
            Ok(Err(e)) => match classify(&e) {
                OpenFailure::Locked => {
                    // A retiring keeper releases the lock a moment after it says goodbye.
                    if std::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                OpenFailure::System => {
                    return Err(open_error(format!("{e} (store kept; will try again)")));
                }
                OpenFailure::Damaged => e.to_string(),
            },
            // A panic is no verdict on the data: on a full disk, keep the store.
            Err(_) if !has_room(dir) => {
                return Err(open_error(
                    "the store library panicked while opening it on a full disk \
                     (store kept; will try again)"
                        .into(),
                ));
            }
            Err(_) => "the store library panicked while opening it".to_string(),
        };
        if moved {
            return Err(open_error(failure));
        }
        let aside = dir.join(format!("store.corrupt-{}", now_ms() / 1000));
        std::fs::rename(&path, &aside)
            .map_err(|e| open_error(format!("{failure}; moving it aside failed: {e}")))?;
        logging::error(&format!(
            "store {} unreadable ({failure}): moved to {} and started a fresh store",
            path.display(),
            aside.display()
        ));
        moved = true;
    }
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing and sized for SO_PEERCRED.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Runs the keeper until it is idle, retired, or its socket is taken away.
pub fn run(settings: &KeeperSettings) -> Result<(), StoreError> {
    // Before any thread exists (sled starts its own), so that every thread inherits the mask.
    let signals = block_stop_signals();
    let Some((shared, listener)) = start(settings, false)? else {
        return Ok(());
    };
    {
        let shared = Arc::clone(&shared);
        spawn_thread("signals", move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: the set was initialised by block_stop_signals; sig is writable.
            if unsafe { libc::sigwait(&signals, &mut sig) } == 0 {
                shared.exit(&format!("signal {sig}"));
            }
        })?;
    }
    accept_loop(&shared, &listener);
    Ok(())
}

/// The store core inside the daemon: sled opened here, the keeper socket served for spawn
/// instances and admin commands on this host.
pub struct Keeper {
    shared: Arc<Shared>,
}

impl Keeper {
    /// Opens the store and serves the keeper socket from threads of this process. A keeper
    /// process that holds the store (started by spawn instances) is asked to retire first.
    pub fn embedded(settings: &KeeperSettings) -> Result<Keeper, StoreError> {
        retire_running(&settings.state_directory);
        for attempt in 0..3 {
            if let Some((shared, listener)) = start(settings, true)? {
                let accept = Arc::clone(&shared);
                spawn_thread("keeper-accept", move || accept_loop(&accept, &listener))?;
                return Ok(Keeper { shared });
            }
            if attempt < 2 {
                retire_running(&settings.state_directory);
            }
        }
        Err(StoreError::Open {
            path: db_path(&settings.state_directory).display().to_string(),
            message: "held by another process that does not retire".into(),
        })
    }

    /// A store handle for one of the daemon's connections.
    pub fn store(&self) -> LocalStore {
        LocalStore {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Writes the store to disk and removes the socket: the daemon's last step.
    pub fn close(&self) {
        self.shared.close();
        logging::info("store written to disk and closed");
    }
}

/// Asks a keeper process to retire, and waits a moment for it to let the store go.
fn retire_running(dir: &Path) {
    let sock = socket_path(dir);
    let Ok(s) = UnixStream::connect(&sock) else {
        return;
    };
    {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if let Ok(r) = s.try_clone() {
            let mut w = BufWriter::new(s);
            if write_frame(&mut w, &["RETIRE"]).is_ok() {
                let _ = read_frame(&mut BufReader::new(r));
            }
        }
        logging::info("asked the running keeper to hand the store to the daemon");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The daemon's connections decide in process, under the same lock as the socket's clients.
pub struct LocalStore {
    shared: Arc<Shared>,
}

impl Greylister for LocalStore {
    fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreUnavailable> {
        let r = self.shared.db.grey(
            q.client_key,
            q.sender,
            q.recipient,
            q.client_address,
            &q.timers,
            now_ms(),
        );
        exit_on_io_failure(&self.shared);
        r.map_err(|e| {
            self.shared.db.count("store_failures", 1);
            StoreUnavailable(e)
        })
    }

    fn count(&mut self, name: &str) {
        if instance_counter(name) {
            self.shared.db.count(name, 1);
        }
    }

    fn client_standing(
        &mut self,
        address: &str,
        t: &Timers,
    ) -> Result<ClientStanding, StoreUnavailable> {
        self.shared
            .db
            .client_standing(address, t, now_ms())
            .map_err(StoreUnavailable)
    }
}

/// Prepares the directory, opens the store, binds the socket and starts housekeeping.
/// `Ok(None)`: another keeper holds the store.
fn start(
    settings: &KeeperSettings,
    embedded: bool,
) -> Result<Option<(Arc<Shared>, UnixListener)>, StoreError> {
    let dir = &settings.state_directory;
    super::statedir::prepare(dir)?;
    drop_privileges(dir)?;
    // Checked again as the user that will own the files.
    super::statedir::check(dir)?;
    let Some(db) = open_store(dir, settings.flush_interval)? else {
        return Ok(None);
    };
    let secret = settings
        .privacy
        .then_some(settings.privacy_secret_file.as_path());
    let db = Db::new(db, secret).map_err(StoreError::Db)?;

    let sock = socket_path(dir);
    // We hold the store lock, so a socket file left here belongs to a dead keeper.
    let _ = std::fs::remove_file(&sock);
    let socket_error = |source| StoreError::Socket {
        path: sock.display().to_string(),
        source,
    };
    let listener = UnixListener::bind(&sock).map_err(socket_error)?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(socket_error)?;
    let socket_ino = std::fs::metadata(&sock)
        .map(|m| m.ino())
        .map_err(socket_error)?;
    logging::info(&format!(
        "{} for {}",
        if embedded {
            "store opened by the daemon, keeper socket served"
        } else {
            "keeper started"
        },
        dir.display()
    ));

    let shared = Arc::new(Shared {
        db,
        active: AtomicUsize::new(0),
        last_activity_ms: AtomicU64::new(now_ms()),
        max_age_ms: settings.max_age.as_millis() as u64,
        digest: settings.digest(),
        socket: sock,
        socket_ino,
        embedded,
    });
    let idle = settings.idle_timeout;
    {
        let shared = Arc::clone(&shared);
        spawn_thread("housekeeping", move || housekeeping(&shared, idle))?;
    }
    Ok(Some((shared, listener)))
}

fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| StoreError::Db(format!("starting the {name} thread: {e}")))
}

/// Serves each connection from a peer of our own uid (or root) on a thread of its own.
fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    // SAFETY: plain libc call.
    let me = unsafe { libc::geteuid() };
    let mut errors = 0u32;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => {
                errors = 0;
                s
            }
            Err(e) => {
                if errors == 0 {
                    logging::warning(&format!("keeper: accept: {e}"));
                }
                errors = errors.saturating_add(1);
                std::thread::sleep(accept_pause(errors));
                continue;
            }
        };
        match peer_uid(&stream) {
            Some(uid) if uid == me || uid == 0 => {}
            other => {
                logging::warning(&format!("keeper: refused a connection from uid {other:?}"));
                continue;
            }
        }
        let active = Active::new(shared);
        let spawned = spawn_thread("connection", move || {
            if let Err(e) = serve_connection(&active.0, stream) {
                logging::warning(&format!("keeper: connection ended: {e}"));
            }
        });
        // The closure, the stream and the guard are dropped: the client sees the
        // connection close and tries again.
        if let Err(e) = spawned {
            logging::warning(&format!("keeper: {e}"));
        }
    }
}

/// Blocks TERM, INT and HUP in this thread and every thread spawned after it, so that one
/// thread can wait for them and stop the keeper (or the daemon) with a flush: a shutdown
/// must not cost the last flush interval of greylist state.
pub fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Idle exit, loss of the socket, counters to disk, and incremental expiry.
fn housekeeping(shared: &Shared, idle: Duration) {
    let mut cursors: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut socket_lost = false;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = now_ms();
        let idle_for = now.saturating_sub(shared.last_activity_ms.load(Ordering::SeqCst));
        if !shared.embedded
            && shared.active.load(Ordering::SeqCst) == 0
            && idle_for >= idle.as_millis() as u64
        {
            shared.exit("idle");
        }
        // The daemon keeps serving its own connections without the socket; a keeper
        // process without its socket has no clients left to serve.
        match std::fs::metadata(&shared.socket) {
            Ok(m) if m.ino() == shared.socket_ino => {}
            _ if shared.embedded => {
                if !socket_lost {
                    logging::error(&format!(
                        "keeper socket {} removed or replaced: spawn instances and admin \
                         commands cannot reach the daemon's store until it restarts",
                        shared.socket.display()
                    ));
                }
                socket_lost = true;
            }
            _ => shared.exit("socket removed or replaced"),
        }
        // The keeper's own log lines that a stuck syslog made it drop count in `stats` too.
        let dropped = logging::take_dropped();
        if dropped > 0 {
            shared.db.count("log_dropped", dropped);
        }
        shared.db.persist_counters();
        exit_on_io_failure(shared);
        log_expired(
            shared
                .db
                .expire(&mut cursors, now, shared.max_age_ms, EXPIRY_STEP),
        );
    }
}

/// sled refuses every operation after an I/O error, even once space is back: exit, and the
/// next request starts a keeper that opens the store again from what is on disk.
fn exit_on_io_failure(shared: &Shared) {
    if let Some(e) = shared.db.io_failure() {
        logging::error(&format!("store: {e}"));
        shared.exit("store I/O error; the next keeper opens the store again");
    }
}

/// A triplet that expired without ever passing is spam that greylisting stopped: one line
/// each, for fail2ban-style tools.
fn log_expired(never: Vec<String>) {
    for t in never {
        let mut parts = t.splitn(3, ' ');
        logging::info(&format!(
            "action=expired, reason=never-retried, client={}, sender={}, recipient={}",
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        ));
    }
}

fn num(fields: &[String], i: usize) -> Result<u64, String> {
    fields
        .get(i)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| format!("field {i} missing or not a number"))
}

fn field(fields: &[String], i: usize) -> &str {
    fields.get(i).map(String::as_str).unwrap_or("")
}

fn filter(fields: &[String]) -> Result<Filter, String> {
    let f: Vec<&str> = fields.iter().skip(1).map(String::as_str).collect();
    Filter::from_fields(&f)
}

fn network(fields: &[String]) -> Result<Network, String> {
    field(fields, 1).parse::<Network>()
}

/// Adds `name value` pairs to the counters, ignoring names an instance may not set.
fn note_counts(shared: &Shared, pairs: &[String]) {
    for pair in pairs.chunks(2) {
        if let [name, n] = pair
            && instance_counter(name)
            && let Ok(n) = n.parse()
        {
            shared.db.count(name, n);
        }
    }
}

/// `CLIENT address awl_clients max_age_ms`: `none 0`, `whitelist 0` or `awl remaining_ms`.
fn client_standing(shared: &Shared, f: &[String]) -> Result<Vec<String>, String> {
    let t = Timers {
        delay_ms: 0,
        retry_window_ms: 0,
        max_age_ms: num(f, 3)?,
        awl_clients: u32::try_from(num(f, 2)?).map_err(|e| e.to_string())?,
        awl_interval_ms: 0,
    };
    let (kind, ms) = match shared.db.client_standing(field(f, 1), &t, now_ms())? {
        ClientStanding::Unknown => ("none", 0),
        ClientStanding::Whitelisted => ("whitelist", 0),
        ClientStanding::AutoWhitelisted { remaining_ms } => ("awl", remaining_ms),
    };
    Ok(vec![kind.into(), ms.to_string()])
}

/// Answers one request frame.
fn handle(shared: &Shared, f: &[String]) -> Result<Vec<String>, String> {
    let ok = |rest: Vec<String>| {
        let mut v = vec!["OK".to_string()];
        v.extend(rest);
        v
    };
    match field(f, 0) {
        "HELLO" => Ok(vec![
            "HELLO".into(),
            crate::VERSION.into(),
            shared.digest.clone(),
        ]),
        "GREY" => {
            let t = Timers {
                delay_ms: num(f, 5)?,
                retry_window_ms: num(f, 6)?,
                max_age_ms: num(f, 7)?,
                awl_clients: u32::try_from(num(f, 8)?).map_err(|e| e.to_string())?,
                awl_interval_ms: num(f, 9)?,
            };
            let v = shared.db.grey(
                field(f, 1),
                field(f, 2),
                field(f, 3),
                field(f, 4),
                &t,
                now_ms(),
            )?;
            Ok(ok(vec![v.reason().into(), v.value_ms().to_string()]))
        }
        "CLIENT" => client_standing(shared, f).map(ok),
        "STATS" => Ok(ok(shared
            .db
            .stats()
            .into_iter()
            .flat_map(|(k, v)| [k, v.to_string()])
            .collect())),
        "LIST" => {
            let limit = num(f, 6).unwrap_or(u64::MAX) as usize;
            let rows = shared.db.list(&filter(f)?, limit);
            Ok(ok(rows.into_iter().flat_map(Row::fields).collect()))
        }
        "DELETE" => Ok(ok(vec![shared.db.delete(&filter(f)?)?.to_string()])),
        "PURGE" => {
            let mut cursors = [Vec::new(), Vec::new()];
            let never = shared
                .db
                .expire(&mut cursors, now_ms(), shared.max_age_ms, usize::MAX);
            let n = never.len();
            log_expired(never);
            Ok(ok(vec![n.to_string()]))
        }
        "WLADD" => Ok(ok(vec![
            u8::from(shared.db.whitelist_add(&network(f)?)?).to_string(),
        ])),
        "WLDEL" => Ok(ok(vec![
            u8::from(shared.db.whitelist_remove(&network(f)?)?).to_string(),
        ])),
        "WLLIST" => Ok(ok(shared.db.whitelist_list())),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn serve_connection(shared: &Shared, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    while let Some(fields) = read_frame(&mut reader)? {
        shared.last_activity_ms.store(now_ms(), Ordering::SeqCst);
        if fields.first().map(String::as_str) == Some("NOTE") {
            // Counts from an instance: no answer, so counting costs it no round trip.
            note_counts(shared, &fields[1..]);
            continue;
        }
        if fields.first().map(String::as_str) == Some("RETIRE") && shared.embedded {
            logging::warning(
                "keeper: a client of another version or with other settings asked the \
                 daemon's store to retire; refused (restart the daemon after an upgrade)",
            );
            write_frame(
                &mut writer,
                &["ERR", "the daemon owns the store and does not retire"],
            )?;
            continue;
        }
        if fields.first().map(String::as_str) == Some("RETIRE") {
            let _ = write_frame(&mut writer, &["BYE"]);
            shared.exit("asked to retire by a client of another version or with other settings");
        }
        let reply = handle(shared, &fields).unwrap_or_else(|e| vec!["ERR".into(), e]);
        let refs: Vec<&str> = reply.iter().map(String::as_str).collect();
        write_frame(&mut writer, &refs)?;
        exit_on_io_failure(shared);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Arc::new(Shared {
            db: Db::new(db, None).unwrap(),
            active: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
            max_age_ms: 0,
            digest: String::new(),
            socket: PathBuf::new(),
            socket_ino: 0,
            embedded: false,
        })
    }

    #[test]
    fn a_panicking_connection_is_no_longer_counted() {
        let s = shared();
        let active = Active::new(&s);
        assert_eq!(s.active.load(Ordering::SeqCst), 1);
        let t = std::thread::spawn(move || {
            let _keep = active;
            panic!("connection thread panics");
        });
        assert!(t.join().is_err());
        assert_eq!(s.active.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn accept_pause_grows_to_a_second() {
        let ms: Vec<u128> = (1..=8).map(|n| accept_pause(n).as_millis()).collect();
        assert_eq!(ms, [20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[test]
    fn room_on_a_file_system() {
        assert!(has_room(&std::env::temp_dir()));
    }

    #[test]
    fn open_failures_are_told_apart() {
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(classify(&full), OpenFailure::System);
        let emfile = sled::Error::Io(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(classify(&emfile), OpenFailure::System);
        let short = sled::Error::Io(std::io::ErrorKind::UnexpectedEof.into());
        assert_eq!(classify(&short), OpenFailure::Damaged);
        let bad = sled::Error::Unsupported("format".into());
        assert_eq!(classify(&bad), OpenFailure::Damaged);
    }
}
