//! A private Postfix instance that runs greyspf through spawn(8), for end-to-end tests.
//!
//! Each `Instance` lives in its own temporary directory: its own config_directory,
//! queue_directory and data_directory, an smtpd on 127.0.0.1 and a free port only,
//! accepted mail for `@example.com` delivered by virtual(8) into a Maildir in that
//! directory, nothing ever relayed (every transport but virtual is `error`), Postfix logs
//! in a file (`maillog_file` + postlogd, since test hosts have no syslog daemon) and
//! greyspf's syslog lines caught on a datagram socket of our own, and SPF answered by a
//! DNS server on loopback that the instance runs in the test process. Dropping the
//! instance stops Postfix, kills every process that belongs to it (greyspf's keeper
//! included), stops the DNS server and removes the directory, also when the test panicked.
//!
//! With `Builder::daemon`, greyspf runs as `greyspf daemon` on a free loopback port
//! instead (started as root, serving as the spawn user), and main.cf's
//! `check_policy_service` names `inet:127.0.0.1:PORT` in place of the spawn service.
//!
//! The greyspf service entry of master.cf and the greyspf parameters of main.cf are not
//! written here: they are derived from the snippets shipped in `packaging/`, so the tests
//! run the configuration administrators copy (only the binary, the user and the
//! configuration file of the spawn entry are replaced).
//!
//! Requirements: the Postfix package (its binaries, and the files it keeps in its
//! meta_directory, e.g. postfix-files and dynamicmaps.cf; the instance reads nothing else
//! of the system's Postfix configuration), the `postfix` and `nobody` users, and root,
//! because only root can start a Postfix master. When these are missing the tests are
//! skipped with a message, unless `GREYSPF_E2E=required` (set by CI) turns a skip into
//! a failure.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::dns::{DnsServer, Zone};
use super::smtp::Session;

/// Environment variable: `required` makes a skip a failure (CI sets it).
pub const E2E_ENV: &str = "GREYSPF_E2E";
/// Environment variable: when set, the instance directory is kept for inspection (until
/// the next run, which removes directories of test processes that are gone).
pub const KEEP_ENV: &str = "GREYSPF_E2E_KEEP";

/// The user greyspf runs as under spawn(8). spawn refuses root, and the design requires
/// that greyspf work as a user that is neither root nor `postfix`.
pub const SPAWN_USER: &str = "nobody";
/// Postfix's own account and group; named explicitly in main.cf so the instance does not
/// depend on the defaults compiled into the package.
const MAIL_OWNER: &str = "postfix";
const SETGID_GROUP: &str = "postdrop";

/// The domain Postfix delivers locally (virtual mailbox domain); any local part works.
pub const MAIL_DOMAIN: &str = "example.com";
/// Postfix's myhostname: it appears in greetings and Received: headers.
pub const MTA_HOSTNAME: &str = "mx.example.net";
/// greyspf's `hostname`, fixed so tests can match the X-Greylist header exactly.
pub const GREYSPF_HOSTNAME: &str = "greyspf-test.example.net";

/// The test configuration's greylist delay: short, yet long enough that an immediate
/// retry is clearly early.
pub const GREYLIST_DELAY: Duration = Duration::from_secs(2);
/// The test configuration's keeper idle timeout: short so the "keeper exits when idle"
/// check does not make the suite slow.
pub const KEEPER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// The test configuration's SPF deadline per identity: short, since the DNS server is on
/// loopback, yet far above what an answer from it takes on a busy machine.
pub const SPF_TIMEOUT: Duration = Duration::from_secs(2);

/// The shipped snippets, relative to the package root.
const PACKAGED_MAIN_CF: &str = "packaging/main.cf";
const PACKAGED_MASTER_CF: &str = "packaging/master.cf";

/// Upper bounds for waits. They only bound a broken run; passing runs take a fraction.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the host provides, found once per test binary.
#[derive(Debug, Clone)]
pub struct Host {
    postfix: PathBuf,
    mail_owner: (u32, u32),
    spawn_user: (u32, u32),
}

/// Returns the host facts, or `None` after telling the user how to enable the tests.
/// Panics instead of skipping when `GREYSPF_E2E=required`.
pub fn host_or_skip() -> Option<Host> {
    static PROBE: OnceLock<Result<Host, String>> = OnceLock::new();
    static TOLD: AtomicBool = AtomicBool::new(false);
    match PROBE.get_or_init(probe_host) {
        Ok(host) => Some(host.clone()),
        Err(why) => {
            if std::env::var(E2E_ENV).as_deref() == Ok("required") {
                panic!("{E2E_ENV}=required, but the Postfix end-to-end tests cannot run: {why}");
            }
            if !TOLD.swap(true, Ordering::SeqCst) {
                // Written to the process's stderr directly rather than with eprintln!,
                // which the test harness captures and hides for tests that pass.
                let _ = writeln!(
                    io::stderr(),
                    "\nNOTE: Postfix end-to-end tests SKIPPED: {why}.\n      To run them, install \
                     Postfix (Debian: apt-get install postfix) and run the tests as root; \
                     set {E2E_ENV}=required to make this skip a failure.\n"
                );
            }
            None
        }
    }
}

fn probe_host() -> Result<Host, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("they must run as root (only root can start a Postfix instance)".into());
    }
    let postfix = find_postfix().ok_or("the `postfix` command is not installed")?;
    let mail_owner = lookup_user(MAIL_OWNER)
        .ok_or_else(|| format!("user `{MAIL_OWNER}` is missing (incomplete Postfix install)"))?;
    if lookup_group(SETGID_GROUP).is_none() {
        return Err(format!(
            "group `{SETGID_GROUP}` is missing (incomplete Postfix install)"
        ));
    }
    let spawn_user =
        lookup_user(SPAWN_USER).ok_or_else(|| format!("user `{SPAWN_USER}` is missing"))?;
    Ok(Host {
        postfix,
        mail_owner,
        spawn_user,
    })
}

/// Looks in PATH and then in the sbin directories, which root's PATH under a test runner
/// does not always contain.
fn find_postfix() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join("postfix"))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// (uid, gid) of a user, through the reentrant call because tests run in threads.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r fills it and points its strings into buf,
    // which outlives the call; we only read the two integer fields.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some((pwd.pw_uid, pwd.pw_gid))
    }
}

fn lookup_group(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in lookup_user.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some(grp.gr_gid)
    }
}

/// greyspf.conf contents: ordered `key = value` lines. Tests start from `for_tests()`
/// and add or replace keys, e.g. `.set("greylist_spf_key", "no")` to key every triplet
/// on the client network.
#[derive(Debug, Clone)]
pub struct GreyspfConfig {
    entries: Vec<(String, String)>,
}

impl GreyspfConfig {
    /// Short timers, a fixed hostname, and SPF on with greylisting keyed on the
    /// SPF-authenticated domain. state_directory, whitelist_clients,
    /// whitelist_recipients and syslog_socket are filled in by the instance with paths in
    /// its directory, and dns_server with its DNS server's address, unless set here.
    pub fn for_tests() -> GreyspfConfig {
        GreyspfConfig {
            entries: Vec::new(),
        }
        .set("hostname", GREYSPF_HOSTNAME)
        .set("greylist_delay", &format!("{}s", GREYLIST_DELAY.as_secs()))
        .set(
            "keeper_idle_timeout",
            &format!("{}s", KEEPER_IDLE_TIMEOUT.as_secs()),
        )
        .set("spf_enable", "yes")
        .set("spf_timeout", &format!("{}s", SPF_TIMEOUT.as_secs()))
        .set("greylist_spf_key", "yes")
    }

    /// Sets `key = value`, replacing an earlier value of the same key.
    pub fn set(mut self, key: &str, value: &str) -> GreyspfConfig {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set_default(self, key: &str, value: &str) -> GreyspfConfig {
        if self.get(key).is_some() {
            self
        } else {
            self.set(key, value)
        }
    }

    fn render(&self) -> String {
        let mut out = String::from("# greyspf configuration written by the end-to-end tests\n");
        for (k, v) in &self.entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out
    }
}

/// Configures an instance before it starts.
#[derive(Debug, Clone)]
pub struct Builder {
    greyspf: GreyspfConfig,
    whitelist_clients: Vec<String>,
    whitelist_recipients: Vec<String>,
    main_cf: Vec<(String, String)>,
    zone: Zone,
    binary: PathBuf,
    daemon: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            greyspf: GreyspfConfig::for_tests(),
            whitelist_clients: Vec::new(),
            whitelist_recipients: Vec::new(),
            main_cf: Vec::new(),
            zone: Zone::new(),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_greyspf")),
            daemon: false,
        }
    }
}

impl Builder {
    /// Sets one greyspf.conf key (see `GreyspfConfig::set`).
    pub fn greyspf(mut self, key: &str, value: &str) -> Builder {
        self.greyspf = self.greyspf.set(key, value);
        self
    }

    /// Replaces the whole greyspf configuration.
    pub fn greyspf_config(mut self, config: GreyspfConfig) -> Builder {
        self.greyspf = config;
        self
    }

    /// Adds a line to the whitelist_clients file (postgrey syntax).
    pub fn whitelist_client(mut self, entry: &str) -> Builder {
        self.whitelist_clients.push(entry.to_string());
        self
    }

    /// Adds a line to the whitelist_recipients file (postgrey syntax).
    pub fn whitelist_recipient(mut self, entry: &str) -> Builder {
        self.whitelist_recipients.push(entry.to_string());
        self
    }

    /// The records the instance's DNS server serves (empty by default: every SPF check
    /// then finds no record, result `none`).
    pub fn dns_zone(mut self, zone: Zone) -> Builder {
        self.zone = zone;
        self
    }

    /// Adds or overrides a main.cf parameter of the instance.
    pub fn postfix_param(mut self, name: &str, value: &str) -> Builder {
        self.main_cf.retain(|(k, _)| k != name);
        self.main_cf.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs greyspf as one daemon on a TCP port instead of through spawn(8).
    pub fn daemon(mut self) -> Builder {
        self.daemon = true;
        self
    }

    /// Creates the instance directory, writes the configuration and starts Postfix.
    /// Panics (after cleaning up) when Postfix does not come up.
    pub fn start(self, host: &Host) -> Instance {
        reap_stale_instances(host);
        let mut instance = Instance::at(make_root_dir(), host);
        // From here on a panic drops `instance`, which undoes whatever was done so far.
        let daemon = self.daemon;
        instance.prepare(host, self);
        if daemon {
            instance.start_daemon();
        }
        instance.launch();
        instance
    }
}

/// A running private Postfix instance. Dropping it tears everything down.
pub struct Instance {
    root: PathBuf,
    config_dir: PathBuf,
    queue_dir: PathBuf,
    bin_dir: PathBuf,
    maildir: PathBuf,
    maillog: PathBuf,
    greyspf_log: PathBuf,
    greyspf_config: GreyspfConfig,
    postfix: PathBuf,
    port: u16,
    master_pid: Option<i32>,
    log_collector: Option<LogCollector>,
    /// The greyspf service entry of master.cf, written with the other services once the
    /// port is known; empty in daemon mode.
    policy_service: String,
    /// In daemon mode: the daemon's port, and its process once started.
    daemon_port: Option<u16>,
    daemon: Option<std::process::Child>,
    greyspf_conf: PathBuf,
    /// Dropped after `Drop::drop` has ended every process of the instance (fields drop
    /// last), so greyspf never waits on a DNS server that is gone.
    dns: Option<DnsServer>,
}

/// A greyspf process that belongs to an instance.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub argv: Vec<String>,
}

impl Process {
    /// The store keeper runs as `greyspf ... keeper ...`; every other greyspf process of
    /// the instance is a policy server started by spawn(8).
    pub fn is_keeper(&self) -> bool {
        self.argv.iter().skip(1).any(|a| a == "keeper")
    }
}

impl Instance {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The instance that lives (or lived) in `root`, not yet started.
    fn at(root: PathBuf, host: &Host) -> Instance {
        Instance {
            config_dir: root.join("etc"),
            queue_dir: root.join("queue"),
            bin_dir: root.join("bin"),
            maildir: root.join("mail").join("Maildir"),
            maillog: root.join("maillog"),
            greyspf_log: root.join("greyspf.log"),
            greyspf_config: GreyspfConfig::for_tests(),
            root,
            postfix: host.postfix.clone(),
            port: 0,
            master_pid: None,
            log_collector: None,
            policy_service: String::new(),
            daemon_port: None,
            daemon: None,
            greyspf_conf: PathBuf::new(),
            dns: None,
        }
    }

    /// The address smtpd listens on.
    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Opens an SMTP session and checks the greeting.
    pub fn connect(&self) -> Session {
        let session = Session::connect(self.smtp_addr())
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.smtp_addr()));
        assert_eq!(session.banner.code, 220, "greeting: {}", session.banner);
        session
    }

    /// The DNS server greyspf asks for SPF records.
    pub fn dns(&self) -> &DnsServer {
        self.dns
            .as_ref()
            .expect("the DNS server runs from the start of the instance")
    }

    /// The effective greyspf configuration, paths included.
    pub fn greyspf_config(&self) -> &GreyspfConfig {
        &self.greyspf_config
    }

    /// Postfix's log so far.
    pub fn maillog(&self) -> String {
        fs::read(&self.maillog)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// greyspf's syslog lines so far, one datagram per line.
    pub fn greyspf_log(&self) -> String {
        fs::read(&self.greyspf_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until greyspf has logged `count` lines containing `needle` and returns
    /// them; the log arrives over a socket, a moment after the reply it belongs to.
    pub fn wait_greyspf_log(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let found: Vec<String> = self
                .greyspf_log()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect();
            if found.len() >= count {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} of {count} greyspf log lines with {needle:?} after \
                     {DELIVERY_TIMEOUT:?}:\n{}",
                    found.len(),
                    tail(&self.greyspf_log(), 40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test when the logs show trouble between smtpd and greyspf: a policy
    /// server that died, hung or answered garbage makes smtpd log `problem talking to
    /// server`; a crash of any Postfix daemon logs `fatal:` or `panic:`.
    pub fn assert_logs_clean(&self) {
        let maillog = self.maillog();
        let bad: Vec<&str> = maillog
            .lines()
            .filter(|l| {
                l.contains("problem talking to server")
                    || l.contains(" fatal: ")
                    || l.contains(" panic: ")
                    || l.contains("policy") && l.contains("warning:")
            })
            .collect();
        assert!(
            bad.is_empty(),
            "the Postfix log shows policy or daemon trouble:\n{}",
            bad.join("\n")
        );
        let greyspf_log = self.greyspf_log();
        let panics: Vec<&str> = greyspf_log
            .lines()
            .filter(|l| l.contains("panic"))
            .collect();
        assert!(
            panics.is_empty(),
            "greyspf logged a panic:\n{}",
            panics.join("\n")
        );
    }

    /// The live (not zombie) greyspf processes of this instance: those running the
    /// instance's own copy of the binary, which tells them apart from the processes of
    /// any other instance or test.
    pub fn greyspf_processes(&self) -> Vec<Process> {
        let mut found = Vec::new();
        for pid in all_pids() {
            let Some(exe) = exe_of(pid) else { continue };
            if !exe.starts_with(&self.bin_dir) {
                continue;
            }
            let Some((state, ppid)) = stat_of(pid) else {
                continue;
            };
            if state == 'Z' || state == 'X' {
                continue;
            }
            found.push(Process {
                pid,
                ppid,
                argv: argv_of(pid),
            });
        }
        found
    }

    /// Waits until `pred` holds for the greyspf processes, returning the last snapshot
    /// and whether it held.
    pub fn wait_processes(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Process]) -> bool,
    ) -> (Vec<Process>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let procs = self.greyspf_processes();
            if pred(&procs) {
                return (procs, true);
            }
            if Instant::now() >= deadline {
                return (procs, false);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `copies` delivered messages carry `Message-ID: <message_id>` (one
    /// per recipient: virtual(8) writes a copy for each) and returns all copies found.
    pub fn wait_for_delivery(&self, message_id: &str, copies: usize) -> Vec<Delivered> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let wanted = format!("<{message_id}>");
        loop {
            let found: Vec<Delivered> = self
                .delivered()
                .into_iter()
                .filter(|m| {
                    m.header_values("Message-ID")
                        .iter()
                        .any(|v| v.trim() == wanted)
                })
                .collect();
            if found.len() >= copies {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} of {copies} copies of {wanted} delivered after {DELIVERY_TIMEOUT:?}; \
                     Postfix log:\n{}",
                    found.len(),
                    tail(&self.maillog(), 40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every message delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        let Ok(entries) = fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            // A file in new/ is complete: virtual(8) writes into tmp/ and renames.
            if let Ok(bytes) = fs::read(entry.path()) {
                out.push(Delivered::parse(
                    entry.path(),
                    &String::from_utf8_lossy(&bytes),
                ));
            }
        }
        out
    }

    /// Stops Postfix the documented way (`postfix stop`: the master terminates its
    /// children, smtpd's policy connections close, spawned greyspf processes see EOF)
    /// and waits for the master to be gone. greyspf's own processes are left alone.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(pid) = self.master_pid else {
            return Ok(());
        };
        let result = run_postfix(&self.postfix, &self.config_dir, "stop");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.is_ours(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if self.is_ours(pid) {
            return Err(format!(
                "the Postfix master (pid {pid}) survived `postfix stop`"
            ));
        }
        self.master_pid = None;
        result.map(|_| ())
    }

    /// Writes all configuration and prepares every directory with the owner each
    /// process needs: root for the config and queue, mail_owner for data, the spawn
    /// user for greyspf's state directory and the delivered mail.
    fn prepare(&mut self, host: &Host, builder: Builder) {
        let (spawn_uid, spawn_gid) = host.spawn_user;
        let (owner_uid, owner_gid) = host.mail_owner;
        let greyspf_dir = self.root.join("greyspf");
        let state_dir = greyspf_dir.join("state");
        let log_dir = self.root.join("log");
        let mail_base = self.root.join("mail");
        let data_dir = self.root.join("data");

        for dir in [
            &self.config_dir,
            &self.queue_dir,
            &self.bin_dir,
            &greyspf_dir,
            &log_dir,
        ] {
            make_dir(dir, 0o755, None);
        }
        make_dir(&data_dir, 0o700, Some((owner_uid, owner_gid)));
        make_dir(&state_dir, 0o700, Some((spawn_uid, spawn_gid)));
        make_dir(&mail_base, 0o700, Some((spawn_uid, spawn_gid)));

        // The spawn user must be able to execute the binary wherever the build put it,
        // and a per-instance path lets tests count exactly this instance's processes
        // (the keeper re-executes the same file). A hard link is free; copy otherwise.
        let binary = self.bin_dir.join("greyspf");
        let linkable = fs::metadata(&builder.binary)
            .map(|m| m.permissions().mode() & 0o005 == 0o005)
            .unwrap_or(false);
        if !(linkable && fs::hard_link(&builder.binary, &binary).is_ok()) {
            fs::copy(&builder.binary, &binary)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", builder.binary.display()));
            set_mode(&binary, 0o755);
        }

        let whitelist_clients = greyspf_dir.join("whitelist_clients");
        let whitelist_recipients = greyspf_dir.join("whitelist_recipients");
        write_file(
            &whitelist_clients,
            &lines(&builder.whitelist_clients),
            0o644,
        );
        write_file(
            &whitelist_recipients,
            &lines(&builder.whitelist_recipients),
            0o644,
        );

        let syslog_socket = log_dir.join("syslog.sock");
        self.log_collector = Some(LogCollector::start(&syslog_socket, &self.greyspf_log));
        let dns = DnsServer::start(builder.zone.clone());
        let dns_addr = dns.addr().to_string();
        self.dns = Some(dns);

        let mut greyspf = builder.greyspf.clone();
        let daemon_port = builder.daemon.then(free_port);
        if let Some(port) = daemon_port {
            greyspf = greyspf
                .set("listen", &format!("inet:127.0.0.1:{port}"))
                .set("daemon_user", SPAWN_USER)
                .set("listen_unix_group", "");
        }
        self.greyspf_config = greyspf
            .set_default("dns_server", &dns_addr)
            .set_default("state_directory", &path_str(&state_dir))
            .set_default("whitelist_clients", &path_str(&whitelist_clients))
            .set_default("whitelist_recipients", &path_str(&whitelist_recipients))
            .set_default("syslog_socket", &path_str(&syslog_socket));
        let greyspf_conf = greyspf_dir.join("greyspf.conf");
        write_file(&greyspf_conf, &self.greyspf_config.render(), 0o644);

        let packaged = Snippets::read();
        self.greyspf_conf = greyspf_conf.clone();
        let packaged_endpoint = format!("unix:private/{}", packaged.service[0]);
        let daemon_endpoint = daemon_port.map(|p| format!("inet:127.0.0.1:{p}"));
        self.daemon_port = daemon_port;
        if daemon_port.is_none() {
            self.policy_service = packaged.master_cf_entry(&binary, &greyspf_conf);
        }

        let root = path_str(&self.root);
        let mut main_cf = vec![
            // Current defaults without compatibility warnings in the log.
            ("compatibility_level", "3.6".to_string()),
            ("mail_owner", MAIL_OWNER.to_string()),
            ("setgid_group", SETGID_GROUP.to_string()),
            ("queue_directory", path_str(&self.queue_dir)),
            ("data_directory", path_str(&data_dir)),
            ("myhostname", MTA_HOSTNAME.to_string()),
            ("mydomain", "example.net".to_string()),
            ("myorigin", "$myhostname".to_string()),
            // Only 127.0.0.1, so no other host can talk to this instance.
            ("inet_interfaces", "127.0.0.1".to_string()),
            // IPv6 support is what lets XCLIENT set an IPv6 client address.
            ("inet_protocols", "all".to_string()),
            // No client is trusted by Postfix: every RCPT reaches the policy service.
            ("mynetworks", String::new()),
            // Nothing leaves this instance: local and relay destinations are disabled
            // and any other transport answers with an error (a bounce, never a
            // connection to another host).
            ("mydestination", String::new()),
            ("relayhost", String::new()),
            ("default_transport", "error".to_string()),
            ("relay_transport", "error".to_string()),
            ("local_transport", "error".to_string()),
            ("alias_maps", String::new()),
            ("alias_database", String::new()),
            // Accepted mail lands as one file per recipient in a Maildir we can read.
            ("virtual_mailbox_domains", MAIL_DOMAIN.to_string()),
            ("virtual_mailbox_base", path_str(&mail_base)),
            ("virtual_mailbox_maps", "static:Maildir/".to_string()),
            ("virtual_uid_maps", format!("static:{spawn_uid}")),
            ("virtual_gid_maps", format!("static:{spawn_gid}")),
            // No syslog daemon is assumed: postlogd writes the log file.
            ("maillog_file", path_str(&self.maillog)),
            ("maillog_file_prefixes", root.clone()),
            // Tests impersonate other clients (addresses, names, IPv6) with XCLIENT.
            ("smtpd_authorized_xclient_hosts", "127.0.0.1".to_string()),
            // Relay control is left to the packaged smtpd_recipient_restrictions, which
            // reject unauthorised destinations before asking greyspf.
            ("smtpd_relay_restrictions", String::new()),
            // Ten parallel messages must not be slowed down by flow control.
            ("in_flow_delay", "0s".to_string()),
            ("biff", "no".to_string()),
        ];
        // The packaged greyspf parameters (restrictions, the spawn time limit), then what
        // the test asked for: a later entry replaces an earlier one of the same name.
        for (k, v) in packaged.main_cf.iter().chain(&builder.main_cf) {
            main_cf.retain(|(name, _)| name != k);
            // Daemon mode: the same restrictions, asking the daemon's TCP port.
            let v = match &daemon_endpoint {
                Some(e) => v.replace(&packaged_endpoint, e),
                None => v.clone(),
            };
            main_cf.push((k.as_str(), v));
        }
        let main_cf: String = main_cf
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        write_file(&self.config_dir.join("main.cf"), &main_cf, 0o644);
        // master.cf is written by launch(), which picks the port.
    }

    /// Starts `greyspf daemon` (as root: it binds, then serves as the spawn user) on the
    /// port prepare() chose, and waits until it listens.
    fn start_daemon(&mut self) {
        let Some(port) = self.daemon_port else {
            return;
        };
        let binary = self.bin_dir.join("greyspf");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&self.greyspf_conf)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.daemon = Some(child);
        self.wait_greyspf_log(&format!("daemon listening on inet:127.0.0.1:{port}"), 1);
    }

    /// The daemon's process, in daemon mode.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// Picks a free port, writes master.cf, starts Postfix and waits for the greeting.
    /// Another process may grab the port between our probe and the master's bind; that
    /// is retried with another port.
    fn launch(&mut self) {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            self.port = free_port();
            if self.daemon_port == Some(self.port) {
                continue;
            }
            let master_cf = format!(
                "# Private instance for greyspf's end-to-end tests. No chroot: the paths\n\
                 # in main.cf are absolute.\n\
                 127.0.0.1:{port} inet n - n - - smtpd\n\
                 pickup    unix  n - n 60 1 pickup\n\
                 cleanup   unix  n - n - 0 cleanup\n\
                 qmgr      unix  n - n 300 1 qmgr\n\
                 rewrite   unix  - - n - - trivial-rewrite\n\
                 bounce    unix  - - n - 0 bounce\n\
                 defer     unix  - - n - 0 bounce\n\
                 trace     unix  - - n - 0 bounce\n\
                 verify    unix  - - n - 1 verify\n\
                 flush     unix  n - n 1000? 0 flush\n\
                 proxymap  unix  - - n - - proxymap\n\
                 showq     unix  n - n - - showq\n\
                 error     unix  - - n - - error\n\
                 retry     unix  - - n - - error\n\
                 discard   unix  - - n - - discard\n\
                 virtual   unix  - n n - - virtual\n\
                 anvil     unix  - - n - 1 anvil\n\
                 scache    unix  - - n - 1 scache\n\
                 postlog   unix-dgram n - n - 1 postlogd\n\
                 # greyspf, from the packaged snippet.\n\
                 {policy}",
                port = self.port,
                policy = self.policy_service,
            );
            write_file(&self.config_dir.join("master.cf"), &master_cf, 0o644);
            match run_postfix(&self.postfix, &self.config_dir, "start") {
                Ok(_) => {
                    self.master_pid = read_master_pid(&self.queue_dir);
                    if self.master_pid.is_none() {
                        panic!(
                            "Postfix started but left no master.pid:\n{}",
                            tail(&self.maillog(), 20)
                        );
                    }
                    self.wait_ready();
                    return;
                }
                Err(e) => {
                    last_error = format!("{e}\nPostfix log:\n{}", tail(&self.maillog(), 20));
                    if !last_error.contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("cannot start the private Postfix instance: {last_error}");
    }

    /// `postfix start` returns once the master has initialised; the first connection is
    /// still retried briefly, since smtpd processes are started on demand.
    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let err = match Session::connect(self.smtp_addr()) {
                Ok(s) if s.banner.code == 220 => {
                    let _ = s.quit();
                    return;
                }
                Ok(s) => format!("unexpected greeting {}", s.banner),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "no SMTP greeting on {}: {err}\n{}",
                    self.smtp_addr(),
                    tail(&self.maillog(), 20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every process that belongs to this instance: whatever runs a file from its
    /// directory (greyspf and its keeper) and every Postfix daemon, which all carry the
    /// instance's MAIL_CONFIG in their environment.
    fn own_processes(&self) -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&pid| self.is_ours(pid))
            .collect()
    }

    /// Whether `pid` is a live process of this instance. Checked before every signal,
    /// so that a pid reused by an unrelated process is never touched.
    fn is_ours(&self, pid: i32) -> bool {
        let mut mail_config = b"MAIL_CONFIG=".to_vec();
        mail_config.extend_from_slice(self.config_dir.as_os_str().as_bytes());
        is_alive(pid)
            && (exe_of(pid).is_some_and(|exe| exe.starts_with(&self.root))
                || fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| {
                        env.split(|&b| b == 0)
                            .any(|var| var == mail_config.as_slice())
                    })
                    .unwrap_or(false))
    }
}

impl Drop for Instance {
    /// Never panics: a panic here while unwinding from a failed test would abort the
    /// whole test binary and hide the real failure.
    fn drop(&mut self) {
        // The orderly way first, so greyspf sees EOF as in production.
        let stop_result = self.stop();
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Then nothing of this instance may survive: a master that ignored the stop,
        // the keeper on its idle timer, policy servers, stuck daemons.
        for _ in 0..20 {
            let pids = self.own_processes();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions; the pid was just
                // seen to belong to this instance.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Some(collector) = self.log_collector.take() {
            collector.stop();
        }
        let keep = std::env::var_os(KEEP_ENV).is_some();
        if thread::panicking() {
            // eprintln! output is captured and shown with the failed test's report.
            eprintln!(
                "--- private Postfix instance in {} ---",
                self.root.display()
            );
            if let Err(e) = stop_result {
                eprintln!("stop: {e}");
            }
            eprintln!("--- Postfix log (tail) ---\n{}", tail(&self.maillog(), 60));
            eprintln!(
                "--- greyspf log (tail) ---\n{}",
                tail(&self.greyspf_log(), 60)
            );
        }
        if keep {
            eprintln!("{KEEP_ENV} is set: keeping {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// The greyspf snippets of `packaging/`, as the instance uses them.
pub struct Snippets {
    /// Every parameter of the main.cf snippet, in order.
    pub main_cf: Vec<(String, String)>,
    /// The spawn service entry of the master.cf snippet, split into words.
    service: Vec<String>,
}

impl Snippets {
    /// Reads both snippets; panics with the reason when they do not fit together, since
    /// an administrator pasting them would get a broken setup too.
    pub fn read() -> Snippets {
        let read = |rel: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
            fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read the shipped {rel}: {e}"))
        };
        let main_cf = parse_main_cf(&read(PACKAGED_MAIN_CF));
        let service = parse_master_cf(&read(PACKAGED_MASTER_CF))
            .into_iter()
            .find(|words| words.get(7).map(String::as_str) == Some("spawn"))
            .unwrap_or_else(|| panic!("{PACKAGED_MASTER_CF} has no spawn service entry"));
        let endpoint = format!("unix:private/{}", service[0]);

        // greyspf holds X-Greylist back for the next request of the same message when the
        // first recipient's reply carries the SPF header; for a message with one
        // recipient that is the DATA-stage request, so both stages must ask greyspf.
        for stage in ["smtpd_recipient_restrictions", "smtpd_data_restrictions"] {
            let list = main_cf
                .iter()
                .find(|(k, _)| k == stage)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{PACKAGED_MAIN_CF} does not set {stage}"));
            let policy = policy_restriction(list).unwrap_or_else(|| {
                panic!("{PACKAGED_MAIN_CF}: no check_policy_service in {stage}")
            });
            assert!(
                policy.contains(&endpoint),
                "{PACKAGED_MAIN_CF}: {stage} asks {policy:?}, but {PACKAGED_MASTER_CF} \
                 defines the service {endpoint}"
            );
        }
        Snippets { main_cf, service }
    }

    /// The value of a main.cf parameter of the snippet.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.main_cf
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The service entry with this instance's binary, configuration file and spawn
    /// user; every other word is kept as shipped.
    pub fn master_cf_entry(&self, binary: &Path, config: &Path) -> String {
        let (fields, args) = self.service.split_at(8.min(self.service.len()));
        let mut out_args: Vec<String> = Vec::new();
        let mut command: Option<Vec<String>> = None;
        for arg in args {
            if let Some(cmd) = command.as_mut() {
                cmd.push(arg.clone());
            } else if arg.starts_with("user=") {
                out_args.push(format!("user={SPAWN_USER}"));
            } else if arg.starts_with("argv=") {
                // Everything after argv= is the command line of greyspf.
                command = Some(vec![format!("argv={}", path_str(binary))]);
            } else {
                out_args.push(arg.clone());
            }
        }
        let mut command = command
            .unwrap_or_else(|| panic!("{PACKAGED_MASTER_CF}: the greyspf entry has no argv="));
        let config = path_str(config);
        match command.iter().position(|a| a == "-c") {
            Some(i) if i + 1 < command.len() => command[i + 1] = config,
            _ => {
                command.insert(1, config);
                command.insert(1, "-c".to_string());
            }
        }
        out_args.extend(command);
        format!("{}\n  {}\n", fields.join(" "), out_args.join(" "))
    }
}

/// The logical lines of a main.cf or master.cf: comment and blank lines dropped, lines
/// that start with white space joined to the line they continue.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match out.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(trimmed);
            }
            _ => out.push(trimmed.to_string()),
        }
    }
    out
}

/// `name = value` parameters of a main.cf, in order.
fn parse_main_cf(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .iter()
        .map(|line| {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a main.cf parameter: {line:?}"));
            (name.trim().to_string(), value.trim().to_string())
        })
        .collect()
}

/// The entries of a master.cf, each split into words.
fn parse_master_cf(text: &str) -> Vec<Vec<String>> {
    logical_lines(text)
        .iter()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The `check_policy_service ...` element of a restriction list, with its `{ ... }`
/// options when it has them.
fn policy_restriction(list: &str) -> Option<String> {
    const NAME: &str = "check_policy_service";
    let start = list.find(NAME)?;
    let rest = &list[start + NAME.len()..];
    let arg = rest.trim_start();
    let arg = if arg.starts_with('{') {
        &arg[..=arg.find('}')?]
    } else {
        arg.split([',', ' ', '\t']).next()?
    };
    Some(format!("{NAME} {arg}"))
}

/// A message as virtual(8) delivered it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub path: PathBuf,
    /// Header fields in order, names as written, values unfolded (line breaks removed,
    /// the folding white space kept), leading space after the colon removed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Delivered {
    pub fn parse(path: PathBuf, text: &str) -> Delivered {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut lines = text.split('\n');
        for raw in lines.by_ref() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push_str(line);
                }
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            headers.push((name.to_string(), value.trim_start().to_string()));
        }
        let body = lines.collect::<Vec<_>>().join("\n");
        Delivered {
            path,
            headers,
            body,
        }
    }

    /// The values of every header field with this name (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The recipient this copy was delivered to (virtual(8) adds Delivered-To).
    pub fn delivered_to(&self) -> &str {
        self.header_values("Delivered-To")
            .first()
            .copied()
            .unwrap_or("")
    }
}

/// Receives greyspf's syslog datagrams and appends them to a file, so the log can be
/// shown when a test fails. greyspf runs as the spawn user, hence a world-writable
/// socket in a directory only we can write to.
struct LogCollector {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogCollector {
    fn start(socket: &Path, file: &Path) -> LogCollector {
        let stop = Arc::new(AtomicBool::new(false));
        let sock = UnixDatagram::bind(socket)
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", socket.display()));
        set_mode(socket, 0o666);
        // The short timeout lets the thread notice `stop` promptly.
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let flag = Arc::clone(&stop);
        let file = file.to_path_buf();
        let thread = thread::spawn(move || {
            let mut out = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .ok();
            let mut buf = vec![0u8; 64 * 1024];
            while !flag.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf)
                    && let Some(out) = out.as_mut()
                {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let _ = writeln!(out, "{}", line.trim_end());
                }
            }
        });
        LogCollector {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Prefix of instance directories; the test process's pid follows, so that leftovers of
/// dead runs can be told apart from instances of runs still going.
const ROOT_PREFIX: &str = "greyspf-e2e-";

/// Tears down instances whose test process died before their guards ran (interrupted
/// or killed runs): the Postfix master and the keeper are daemons and would keep
/// running, holding ports and disk space. Runs once per test binary.
fn reap_stale_instances(host: &Host) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|n| n.strip_prefix(ROOT_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            if owner == std::process::id() as i32 || is_alive(owner) {
                continue;
            }
            let mut stale = Instance::at(entry.path(), host);
            stale.master_pid = read_master_pid(&stale.queue_dir).filter(|&pid| stale.is_ours(pid));
            // Dropping it stops Postfix, kills the rest and removes the directory.
            drop(stale);
        }
    });
}

/// A fresh directory under the system temp dir. Every process of the instance must be
/// able to reach into it (the spawn user executes the binary and writes mail there).
fn make_root_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::temp_dir();
    for _ in 0..1000 {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("{ROOT_PREFIX}{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                set_mode(&dir, 0o755);
                check_searchable(&dir);
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
    panic!("cannot find a free directory name under {}", base.display());
}

/// Fails early with a clear message when an ancestor of the instance directory is not
/// searchable by other users (e.g. TMPDIR inside a private home directory): Postfix and
/// greyspf would fail later in obscure ways.
fn check_searchable(dir: &Path) {
    for ancestor in dir.ancestors().skip(1) {
        if let Ok(meta) = fs::metadata(ancestor) {
            assert!(
                meta.permissions().mode() & 0o001 != 0,
                "{} is not searchable by other users; point TMPDIR elsewhere",
                ancestor.display()
            );
        }
    }
}

fn make_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    set_mode(dir, mode);
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.display()));
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn lines(entries: &[String]) -> String {
    entries.iter().map(|e| format!("{e}\n")).collect()
}

fn path_str(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_string()
}

/// A port that was free a moment ago (the kernel's choice for an ephemeral bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Runs `postfix -c CONFIG_DIR COMMAND`; Ok(output) on success, Err(output) otherwise.
fn run_postfix(postfix: &Path, config_dir: &Path, command: &str) -> Result<String, String> {
    let out = Command::new(postfix)
        .arg("-c")
        .arg(config_dir)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", postfix.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`postfix {command}` failed ({}): {text}",
            out.status
        ))
    }
}

fn read_master_pid(queue_dir: &Path) -> Option<i32> {
    fs::read_to_string(queue_dir.join("pid").join("master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// The executable of a process; None for zombies and processes that are gone.
fn exe_of(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// (state, ppid) from /proc/PID/stat. The command name may contain anything, so the
/// fields are taken after its closing parenthesis.
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn argv_of(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| OsStr::from_bytes(a).to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Running and not a zombie. Orphans are reaped by init, which may take a moment; a
/// zombie holds no resources and runs nothing, so it counts as gone.
fn is_alive(pid: i32) -> bool {
    matches!(stat_of(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// The last `n` lines of a log, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
