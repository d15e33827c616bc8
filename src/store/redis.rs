//! The Redis/Valkey store engine: every instance, on every host, talks to one Redis over its
//! own connection; each decision is one server-side script (greylist.lua), atomic in Redis.
//! It answers the admin commands in the keeper's reply format, so `admin` formats both.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use crate::greylist::decide::{Entry, Timers, Verdict};
use crate::greylist::{ClientStanding, GreyQuery, Greylister, StoreUnavailable};
use crate::net::Network;
use crate::store::StoreError;
use crate::store::db::{COUNTERS, Filter, Row, instance_counter};
pub use crate::store::redis_url::{Host, RedisAddr, RedisUrl};
use crate::store::secret::{KeyedHash, hex};
use crate::store::{resolve, tls};

/// The decision script; Redis caches it by its SHA-1 (EVALSHA), EVAL sends it when not.
const SCRIPT: &str = include_str!("greylist.lua");

/// Counts held back before they travel on their own.
const COUNT_BATCH: u64 = 64;
/// The first pause after a failed connection; it doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Keys fetched per SCAN step and per pipelined read in `list`, `delete`, `purge`, `stats`.
const SCAN_BATCH: usize = 500;

/// What the Redis engine needs; the composition root builds it from the configuration.
#[derive(Clone)]
pub struct RedisSettings {
    pub url: RedisUrl,
    pub password: Option<String>,
    pub key_prefix: String,
    /// Connect plus command deadline of one request.
    pub timeout: Duration,
    /// The CA certificates that verify a `rediss://` server; None: the system's bundle.
    pub tls_ca_file: Option<PathBuf>,
    /// The DNS retransmission interval, when the URL names a host.
    pub dns_retransmit: Duration,
    /// The keyed hash of privacy mode, made from `privacy_secret_file`.
    pub privacy_secret: Option<KeyedHash>,
    /// `greylist_max_age`, for `purge`.
    pub max_age_ms: u64,
}

/// Never shows the password or the secret.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.to_string())
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("privacy", &self.privacy_secret.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis {url}: cannot connect: {message}")]
    Connect { url: String, message: String },
    #[error("redis {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("redis {url}: {message}")]
    Io { url: String, message: String },
    #[error("redis {url}: cannot find the host: {message}")]
    Resolve { url: String, message: String },
    #[error("redis {url}: TLS: {message}")]
    Tls { url: String, message: String },
    #[error("redis {url}: authentication refused: {message}")]
    Auth { url: String, message: String },
    #[error("redis {url}: {message}")]
    Server { url: String, message: String },
    #[error("redis {url}: unexpected reply: {message}")]
    Protocol { url: String, message: String },
    #[error(
        "redis {url}: the keys in this Redis were written with {found}, this host uses \
         {ours}: copy privacy_secret_file from a host that works (and set \
         greylist_privacy alike everywhere); refusing to decide"
    )]
    Keying {
        url: String,
        found: String,
        ours: String,
    },
    #[error("redis {url}: unavailable after a failure, next attempt in {0:?}", .wait)]
    Backoff { url: String, wait: Duration },
    #[error("{0}")]
    Usage(String),
}

/// A file that holds a secret: readable by its owner (and group) only.
fn read_private(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "{what} {}: readable or writable by others; chmod o-rwx it",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The password of `redis_password_file`: the first line, without its line end.
pub fn read_password(path: &Path) -> Result<String, String> {
    let bytes = read_private(path, "redis_password_file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("redis_password_file {}: not UTF-8", path.display()))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(format!("redis_password_file {}: empty", path.display()));
    }
    Ok(line)
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Boxed: a TLS session is much larger than a socket.
    Tls(Box<tls::TlsStream>),
}

/// Which way the next socket call goes: only its timeout is set, one system call per
/// step of a request, not two.
#[derive(Clone, Copy)]
enum Way {
    Send,
    Receive,
}

impl Stream {
    fn set_timeout(&self, way: Way, t: Duration) -> std::io::Result<()> {
        match (self, way) {
            (Stream::Tcp(s), Way::Send) => s.set_write_timeout(Some(t)),
            (Stream::Tcp(s), Way::Receive) => s.set_read_timeout(Some(t)),
            (Stream::Unix(s), Way::Send) => s.set_write_timeout(Some(t)),
            (Stream::Unix(s), Way::Receive) => s.set_read_timeout(Some(t)),
            // TLS may read while it writes and write while it reads (alerts, key updates).
            (Stream::Tls(s), _) => {
                s.sock.set_read_timeout(Some(t))?;
                s.sock.set_write_timeout(Some(t))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    /// Sockets send at once; rustls holds the records until flushed.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// One connection: commands out, RESP replies parsed by the redis crate.
struct Conn {
    /// Replies are read through the buffer, commands written past it (one request at a
    /// time, so nothing is buffered when a command goes out).
    io: BufReader<Stream>,
    parser: redis::Parser,
}

/// What went wrong while the connection was in use. The caller turns it into a
/// `RedisError` naming the server.
enum Fault {
    Timeout,
    Io(String),
    /// The TLS handshake failed (other than by the deadline).
    Tls(String),
    /// No TLS answer by the deadline: often a plain port, which waits for a line end.
    TlsTimeout,
}

fn server_error(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_string(),
    }
}

impl Conn {
    /// Connects (and runs the TLS handshake with `tls`) to one of `ips` before
    /// `deadline`; `host` is the name the certificate must carry.
    fn open_tcp(
        ips: &[IpAddr],
        port: u16,
        host: &Host,
        tls: Option<&Arc<rustls::ClientConfig>>,
        deadline: Instant,
    ) -> Result<Conn, Fault> {
        let s = connect_any(ips, port, deadline)?;
        // Small requests, one at a time: no Nagle delay.
        s.set_nodelay(true).map_err(io_fault)?;
        let stream = match tls {
            None => Stream::Tcp(s),
            Some(config) => {
                let name = match host {
                    Host::Ip(ip) => ip.to_string(),
                    Host::Name(n) => n.clone(),
                };
                let name = tls::server_name(&name).map_err(Fault::Tls)?;
                let t =
                    tls::handshake(Arc::clone(config), name, s, deadline).map_err(|e| match e {
                        tls::HandshakeError::Timeout => Fault::TlsTimeout,
                        tls::HandshakeError::Failed(m) => Fault::Tls(m),
                    })?;
                Stream::Tls(Box::new(t))
            }
        };
        Ok(Conn::new(stream))
    }

    fn new(stream: Stream) -> Conn {
        Conn {
            io: BufReader::new(stream),
            parser: redis::Parser::new(),
        }
    }

    /// Sends the commands in one write and reads one reply each, all before `deadline`.
    fn run(&mut self, cmds: &[redis::Cmd], deadline: Instant) -> Result<Vec<Value>, Fault> {
        let mut out = Vec::new();
        for c in cmds {
            c.write_packed_command(&mut out);
        }
        let io = io_fault;
        let w = self.io.get_mut();
        w.set_timeout(Way::Send, remaining(deadline)).map_err(io)?;
        w.write_all(&out).and_then(|()| w.flush()).map_err(io)?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            self.io
                .get_ref()
                .set_timeout(Way::Receive, remaining(deadline))
                .map_err(io)?;
            match self.parser.parse_value(&mut self.io) {
                Ok(v) => replies.push(v),
                Err(e) if e.is_timeout() => return Err(Fault::Timeout),
                Err(e) if e.is_unrecoverable_error() || e.is_io_error() => {
                    return Err(Fault::Io(format!("connection lost ({e})")));
                }
                Err(e) => return Err(Fault::Io(e.to_string())),
            }
        }
        Ok(replies)
    }
}

fn io_fault(e: std::io::Error) -> Fault {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Fault::Timeout,
        _ => Fault::Io(e.to_string()),
    }
}

/// A TCP connection to the first of `ips` that accepts one before `deadline`; the error
/// of the last when none does.
fn connect_any(ips: &[IpAddr], port: u16, deadline: Instant) -> Result<TcpStream, Fault> {
    let mut last = Fault::Io("no address".into());
    for ip in ips {
        match TcpStream::connect_timeout(&SocketAddr::new(*ip, port), remaining(deadline)) {
            Ok(s) => return Ok(s),
            Err(e) => last = io_fault(e),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last)
}

/// The time left before `deadline`, never zero (a zero socket timeout means none).
pub(crate) fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// The store on Redis, for one instance or one admin command.
pub struct RedisStore {
    s: RedisSettings,
    script: redis::Script,
    conn: Option<Conn>,
    /// After a failure, no new connection before this instant; the pause doubles.
    retry_after: Option<Instant>,
    backoff: Duration,
    /// The store whitelist as last loaded, with its version.
    whitelist: Option<(String, Vec<Network>)>,
    /// Counts not yet handed to Redis; they travel with the next decision.
    pending: BTreeMap<String, u64>,
    /// The TLS client configuration of `rediss://`, once made.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The keying check value: which secret (or none) the keys in this Redis are made with.
fn keying(secret: Option<&KeyedHash>) -> String {
    match secret {
        None => "plain".into(),
        Some(k) => format!(
            "hmac-sha256:{}",
            hex(&k.digest(b"greyspf keying check")[..8])
        ),
    }
}

impl RedisStore {
    pub fn new(settings: RedisSettings) -> RedisStore {
        RedisStore {
            s: settings,
            script: redis::Script::new(SCRIPT),
            conn: None,
            retry_after: None,
            backoff: MIN_BACKOFF,
            whitelist: None,
            pending: BTreeMap::new(),
            tls: None,
        }
    }

    fn url(&self) -> String {
        self.s.url.to_string()
    }

    /// The TLS client of a `rediss://` URL, made on first use (so rustls stays idle in
    /// every other configuration) and kept; None for plain TCP and unix sockets.
    fn tls_config(&mut self) -> Result<Option<Arc<rustls::ClientConfig>>, RedisError> {
        if !self.s.url.tls() {
            return Ok(None);
        }
        if self.tls.is_none() {
            let config = tls::client_config(self.s.tls_ca_file.as_deref()).map_err(|message| {
                RedisError::Tls {
                    url: self.url(),
                    message,
                }
            })?;
            self.tls = Some(config);
        }
        Ok(self.tls.clone())
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}{rest}", self.s.key_prefix)
    }

    /// A key part as stored: the value itself, or its keyed hash in privacy mode (the same
    /// hash the sled store uses).
    pub fn key_part(&self, s: &str) -> String {
        match &self.s.privacy_secret {
            None => s.to_string(),
            Some(k) => k.key_part(s),
        }
    }

    fn triplet_key(&self, client: &str, sender: &str, recipient: &str) -> String {
        let parts = [
            self.key_part(client),
            self.key_part(sender),
            self.key_part(recipient),
        ];
        self.key("t:", &parts.join("\0"))
    }

    fn fault(&self, f: Fault) -> RedisError {
        let url = self.url();
        match f {
            Fault::Timeout => RedisError::Timeout {
                url,
                timeout: self.s.timeout,
            },
            Fault::Io(message) => RedisError::Io { url, message },
            Fault::Tls(message) => RedisError::Tls { url, message },
            Fault::TlsTimeout => RedisError::Tls {
                message: format!(
                    "no answer to the handshake within {:?} (is this the server's TLS \
                     port? a plain Redis port answers nothing)",
                    self.s.timeout
                ),
                url,
            },
        }
    }

    /// The connection itself (the host's name looked up first, then TLS if asked), before
    /// `deadline`.
    fn open(&mut self, deadline: Instant) -> Result<Conn, RedisError> {
        let url = self.url();
        let tls = self.tls_config()?;
        let opened = match &self.s.url.addr {
            RedisAddr::Unix(p) => UnixStream::connect(p)
                .map(|u| Conn::new(Stream::Unix(u)))
                .map_err(io_fault),
            RedisAddr::Tcp { host, port, .. } => {
                let ips = match host {
                    Host::Ip(ip) => vec![*ip],
                    Host::Name(name) => resolve::resolve(name, self.s.dns_retransmit, deadline)
                        .map_err(|message| RedisError::Resolve {
                            url: url.clone(),
                            message,
                        })?,
                };
                Conn::open_tcp(&ips, *port, host, tls.as_ref(), deadline)
            }
        };
        opened.map_err(|f| match f {
            Fault::Io(message) => RedisError::Connect { url, message },
            f => self.fault(f),
        })
    }

    /// Connects, authenticates, selects the database and checks the keying, before
    /// `deadline`.
    fn connect(&mut self, deadline: Instant) -> Result<Conn, RedisError> {
        let url = self.url();
        let mut c = self.open(deadline)?;
        let mut hello = Vec::new();
        if let Some(p) = &self.s.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(u) = &self.s.url.username {
                auth.arg(u);
            }
            hello.push(auth.arg(p).clone());
        }
        if self.s.url.db != 0 {
            hello.push(redis::cmd("SELECT").arg(self.s.url.db).clone());
        }
        let ours = keying(self.s.privacy_secret.as_ref());
        let check = self.key("keying", "");
        hello.push(redis::cmd("SET").arg(&check).arg(&ours).arg("NX").clone());
        hello.push(redis::cmd("GET").arg(&check).clone());
        let replies = c.run(&hello, deadline).map_err(|f| match f {
            Fault::Io(m) if m.contains("connection lost") => RedisError::Io {
                url: url.clone(),
                message: format!(
                    "{m}: the server closed the connection at once (does it require TLS? \
                     then use rediss://)"
                ),
            },
            f => self.fault(f),
        })?;
        for v in &replies {
            if let Value::ServerError(e) = v {
                let message = server_error(e);
                return Err(
                    if matches!(e.code(), "NOAUTH" | "WRONGPASS" | "NOPERM")
                        || message.contains("AUTH")
                    {
                        RedisError::Auth { url, message }
                    } else {
                        RedisError::Server { url, message }
                    },
                );
            }
        }
        let found = replies.last().and_then(text).unwrap_or_default();
        if found != ours {
            return Err(RedisError::Keying { url, found, ours });
        }
        Ok(c)
    }

    /// Runs commands on the connection (made first if needed), all within one
    /// `redis_timeout`. A failure drops the connection and starts the back-off.
    fn run(&mut self, cmds: &[redis::Cmd]) -> Result<Vec<Value>, RedisError> {
        let deadline = Instant::now() + self.s.timeout;
        if let Some(mut conn) = self.conn.take() {
            match conn.run(cmds, deadline) {
                Ok(v) => {
                    self.conn = Some(conn);
                    return Ok(v);
                }
                // Redis closed a connection that sat idle (its `timeout`) or restarted:
                // one new connection, within the same deadline.
                Err(Fault::Io(_)) => {}
                Err(f) => {
                    self.failed();
                    return Err(self.fault(f));
                }
            }
        } else if let Some(t) = self.retry_after {
            let now = Instant::now();
            if now < t {
                return Err(RedisError::Backoff {
                    url: self.url(),
                    wait: t - now,
                });
            }
        }
        let result = self
            .connect(deadline)
            .and_then(|mut c| match c.run(cmds, deadline) {
                Ok(v) => Ok((c, v)),
                Err(f) => Err(self.fault(f)),
            });
        match result {
            Ok((c, v)) => {
                self.conn = Some(c);
                self.retry_after = None;
                self.backoff = MIN_BACKOFF;
                Ok(v)
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    fn failed(&mut self) {
        self.retry_after = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        // A new connection re-reads the whitelist: it may have changed meanwhile.
        self.whitelist = None;
    }

    /// One command whose error reply becomes an error.
    fn one(&mut self, cmd: redis::Cmd) -> Result<Value, RedisError> {
        let v = self.run(std::slice::from_ref(&cmd))?.pop();
        match v {
            Some(Value::ServerError(e)) => Err(RedisError::Server {
                url: self.url(),
                message: server_error(&e),
            }),
            Some(v) => Ok(v),
            None => Err(RedisError::Protocol {
                url: self.url(),
                message: "no reply".into(),
            }),
        }
    }

    /// Connects and checks authentication and keying now (for `--check-config`).
    pub fn check(&mut self) -> Result<String, RedisError> {
        let v = self.one(redis::cmd("INFO").arg("server").clone())?;
        let info = text(&v).unwrap_or_default();
        let version = info
            .lines()
            .find_map(|l| {
                l.strip_prefix("valkey_version:")
                    .map(|v| format!("valkey {v}"))
                    .or_else(|| {
                        l.strip_prefix("redis_version:")
                            .map(|v| format!("redis {v}"))
                    })
            })
            .unwrap_or_else(|| "unknown version".into());
        Ok(format!("{} answered ({version})", self.url()))
    }

    /// Runs the commands in one MULTI/EXEC transaction; the replies of EXEC, none when
    /// Redis refused the transaction.
    fn transaction(&mut self, cmds: &[redis::Cmd]) -> Result<Vec<Value>, RedisError> {
        let mut all = Vec::with_capacity(cmds.len() + 2);
        all.push(redis::cmd("MULTI"));
        all.extend_from_slice(cmds);
        all.push(redis::cmd("EXEC"));
        let mut replies = self.run(&all)?;
        Ok(items(replies.pop().unwrap_or(Value::Nil)))
    }

    fn load_whitelist(&mut self) -> Result<(), RedisError> {
        let exec = self.transaction(&[
            redis::cmd("GET")
                .arg(self.key("whitelist:version", ""))
                .clone(),
            redis::cmd("SMEMBERS")
                .arg(self.key("whitelist", ""))
                .clone(),
        ])?;
        let bad = |m: &str| RedisError::Protocol {
            url: self.url(),
            message: m.into(),
        };
        let [version, members] =
            <[Value; 2]>::try_from(exec).map_err(|_| bad("whitelist transaction failed"))?;
        let version = text(&version).unwrap_or_else(|| "0".into());
        let nets = items(members)
            .iter()
            .filter_map(|m| text(m)?.parse::<Network>().ok())
            .collect();
        self.whitelist = Some((version, nets));
        Ok(())
    }

    fn listed(&self, address: &str) -> bool {
        let Ok(ip) = address.parse::<IpAddr>() else {
            return false;
        };
        self.whitelist
            .as_ref()
            .is_some_and(|(_, nets)| nets.iter().any(|n| n.contains(ip)))
    }

    /// The decision at `now` (None: the Redis server's clock, which every host shares).
    pub fn decide_at(
        &mut self,
        q: &GreyQuery<'_>,
        now: Option<u64>,
    ) -> Result<Verdict, RedisError> {
        let mut reloaded = false;
        loop {
            if self.whitelist.is_none() {
                self.load_whitelist()?;
            }
            let version = self
                .whitelist
                .as_ref()
                .map(|(v, _)| v.clone())
                .unwrap_or_default();
            let t = &q.timers;
            let keys = [
                self.triplet_key(q.client_key, q.sender, q.recipient),
                self.key("a:", &self.key_part(q.client_address)),
                self.key("counters", ""),
                self.key("whitelist:version", ""),
            ];
            let mut args = vec![
                now.map(|n| n.to_string()).unwrap_or_default(),
                t.delay_ms.to_string(),
                t.retry_window_ms.to_string(),
                t.max_age_ms.to_string(),
                t.awl_clients.to_string(),
                t.awl_interval_ms.to_string(),
                version,
                u8::from(self.listed(q.client_address)).to_string(),
            ];
            for (k, v) in &self.pending {
                args.push(k.clone());
                args.push(v.to_string());
            }
            let reply = self.eval(&keys, &args)?;
            let pair: Vec<String> = items(reply).iter().filter_map(text).collect();
            match pair.as_slice() {
                [r, _] if r == "reload" && !reloaded => {
                    self.whitelist = None;
                    reloaded = true;
                }
                [r, v] => {
                    self.pending.clear();
                    return self.verdict(r, v);
                }
                _ => {
                    return Err(RedisError::Protocol {
                        url: self.url(),
                        message: format!("script answered {pair:?}"),
                    });
                }
            }
        }
    }

    /// EVALSHA, and EVAL when Redis does not have the script yet (NOSCRIPT: first use,
    /// a restart, SCRIPT FLUSH), which costs one more round trip, once.
    fn eval(&mut self, keys: &[String], args: &[String]) -> Result<Value, RedisError> {
        let call = |cmd: &str, body: &str| {
            redis::cmd(cmd)
                .arg(body)
                .arg(keys.len())
                .arg(keys)
                .arg(args)
                .clone()
        };
        let v = self.one(call("EVALSHA", self.script.get_hash()));
        match v {
            Err(RedisError::Server { message, .. }) if message.starts_with("NOSCRIPT") => {
                self.one(call("EVAL", SCRIPT))
            }
            other => other,
        }
    }

    fn verdict(&self, reason: &str, value: &str) -> Result<Verdict, RedisError> {
        Verdict::from_reason(reason, value.parse().unwrap_or(0)).ok_or_else(|| {
            RedisError::Protocol {
                url: self.url(),
                message: format!("unknown verdict {reason:?}"),
            }
        })
    }

    /// Hands the held-back counts to Redis. Best effort: counting never costs mail.
    fn send_counts(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let key = self.key("counters", "");
        let cmds: Vec<redis::Cmd> = self
            .pending
            .iter()
            .map(|(k, v)| redis::cmd("HINCRBY").arg(&key).arg(k).arg(*v).clone())
            .collect();
        if self.run(&cmds).is_ok() {
            self.pending.clear();
        }
    }

    fn count_pending(&mut self, name: &str) {
        *self.pending.entry(name.to_string()).or_insert(0) += 1;
    }
}

impl Greylister for RedisStore {
    fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreUnavailable> {
        self.decide_at(q, None).map_err(|e| {
            self.count_pending("store_failures");
            StoreUnavailable(e.to_string())
        })
    }

    fn count(&mut self, name: &str) {
        if instance_counter(name) {
            self.count_pending(name);
        }
        if self.pending.values().sum::<u64>() >= COUNT_BATCH {
            self.send_counts();
        }
    }

    fn finish(&mut self) {
        if self.conn.is_some() || self.retry_after.is_none() {
            self.send_counts();
        }
    }

    fn client_standing(
        &mut self,
        address: &str,
        t: &Timers,
    ) -> Result<ClientStanding, StoreUnavailable> {
        self.standing(address, t)
            .map_err(|e| StoreUnavailable(e.to_string()))
    }
}

impl RedisStore {
    /// The postscreen callout's read-only look at a client: the store whitelist as it is
    /// now, then the auto-whitelist entry, whose key expires when the entry does.
    fn standing(&mut self, address: &str, t: &Timers) -> Result<ClientStanding, RedisError> {
        let awl = self.key("a:", &self.key_part(address));
        let cmds = [
            redis::cmd("SMEMBERS")
                .arg(self.key("whitelist", ""))
                .clone(),
            redis::cmd("HGET").arg(&awl).arg("c").clone(),
            redis::cmd("PTTL").arg(&awl).clone(),
        ];
        let replies = self.run(&cmds)?;
        let [members, count, ttl] =
            <[Value; 3]>::try_from(replies).map_err(|_| RedisError::Protocol {
                url: self.url(),
                message: "short reply".into(),
            })?;
        let ip = address.parse::<IpAddr>().ok();
        let listed = items(members)
            .iter()
            .filter_map(|m| text(m)?.parse::<Network>().ok())
            .any(|n| ip.is_some_and(|ip| n.contains(ip)));
        if listed {
            return Ok(ClientStanding::Whitelisted);
        }
        let count: u64 = text(&count).and_then(|c| c.parse().ok()).unwrap_or(0);
        let ttl: i64 = text(&ttl).and_then(|c| c.parse().ok()).unwrap_or(-2);
        Ok(match u64::try_from(ttl) {
            Ok(ms) if t.awl_clients > 0 && count >= u64::from(t.awl_clients) => {
                ClientStanding::AutoWhitelisted {
                    remaining_ms: ms.min(t.max_age_ms),
                }
            }
            _ => ClientStanding::Unknown,
        })
    }
}

/// The admin commands, in the keeper's request and reply format.
impl RedisStore {
    pub fn call(&mut self, fields: &[&str]) -> Result<Vec<String>, StoreError> {
        let ok = |mut v: Vec<String>| {
            v.insert(0, "OK".into());
            v
        };
        let r = match fields {
            ["STATS"] => self.stats().map(ok),
            ["LIST", f @ ..] => self
                .rows(&filter(f)?)
                .map(|rows| ok(rows.into_iter().flat_map(|(_, r)| r.fields()).collect())),
            ["DELETE", f @ ..] => self.delete(&filter(f)?).map(|n| ok(vec![n.to_string()])),
            ["PURGE"] => self.purge().map(|n| ok(vec![n.to_string()])),
            ["WLLIST"] => self.whitelist_list().map(ok),
            [cmd @ ("WLADD" | "WLDEL"), net] => {
                let net: Network = net.parse().map_err(StoreError::Protocol)?;
                self.whitelist_change(*cmd == "WLADD", &net)
                    .map(|changed| ok(vec![u8::from(changed).to_string()]))
            }
            other => {
                return Err(StoreError::Protocol(format!(
                    "the Redis store has no command {other:?}"
                )));
            }
        };
        r.map_err(|e| StoreError::Db(e.to_string()))
    }

    fn stats(&mut self) -> Result<Vec<String>, RedisError> {
        let v = self.one(redis::cmd("HGETALL").arg(self.key("counters", "")).clone())?;
        let mut counters: BTreeMap<String, String> = BTreeMap::new();
        let flat: Vec<String> = items(v).iter().filter_map(text).collect();
        for kv in flat.chunks(2) {
            if let [k, v] = kv {
                counters.insert(k.clone(), v.clone());
            }
        }
        let mut out = Vec::new();
        for k in COUNTERS {
            out.push(k.to_string());
            out.push(counters.remove(*k).unwrap_or_else(|| "0".into()));
        }
        for (k, v) in counters {
            out.push(k);
            out.push(v);
        }
        let triplets = self.scan(&self.key("t:", ""), &mut |_| {})?;
        let awl = self.scan(&self.key("a:", ""), &mut |_| {})?;
        let wl = self.one(redis::cmd("SCARD").arg(self.key("whitelist", "")).clone())?;
        out.extend([
            "triplets".into(),
            triplets.to_string(),
            "auto_whitelisted_clients".into(),
            awl.to_string(),
            "store_whitelist_entries".into(),
            int(&wl).unwrap_or(0).to_string(),
        ]);
        Ok(out)
    }

    /// Calls `each` with every key under `prefix` (SCAN, so Redis serves others meanwhile);
    /// returns how many there were.
    fn scan(&mut self, prefix: &str, each: &mut dyn FnMut(Vec<u8>)) -> Result<u64, RedisError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor = "0".to_string();
        let mut n = 0;
        loop {
            let v = self.one(
                redis::cmd("SCAN")
                    .arg(&cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .clone(),
            )?;
            let mut parts = items(v).into_iter();
            cursor = parts.next().as_ref().and_then(text).unwrap_or_default();
            for k in parts.next().map(items).unwrap_or_default() {
                if let Value::BulkString(b) = k {
                    n += 1;
                    each(b);
                }
            }
            if cursor == "0" || cursor.is_empty() {
                return Ok(n);
            }
        }
    }

    /// Every triplet the filter selects, with its key.
    fn rows(&mut self, f: &Filter) -> Result<Vec<(Vec<u8>, Row)>, RedisError> {
        let prefix = self.key("t:", "");
        let mut keys = Vec::new();
        self.scan(&prefix, &mut |k| keys.push(k))?;
        let want = |s: &str| (!s.is_empty()).then(|| self.key_part(s));
        let (client, sender, recipient) = (want(&f.client), want(&f.sender), want(&f.recipient));
        let mut rows = Vec::new();
        for chunk in keys.chunks(SCAN_BATCH) {
            let cmds: Vec<redis::Cmd> = chunk
                .iter()
                .map(|k| {
                    redis::cmd("HMGET")
                        .arg(k)
                        .arg("f")
                        .arg("l")
                        .arg("p")
                        .clone()
                })
                .collect();
            let replies = self.run(&cmds)?;
            for (k, v) in chunk.iter().zip(replies) {
                let vals: Vec<u64> = items(v)
                    .iter()
                    .filter_map(|x| int(x).map(|n| n as u64))
                    .collect();
                let [first, last, passed] = vals[..] else {
                    continue;
                };
                let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let mut parts = text.splitn(3, '\0');
                let (Some(c), Some(s), Some(r)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let row = Row {
                    client: c.to_string(),
                    sender: s.to_string(),
                    recipient: r.to_string(),
                    entry: Entry {
                        first,
                        last,
                        passed: passed != 0,
                    },
                };
                if f.matches(
                    &row,
                    client.as_deref(),
                    sender.as_deref(),
                    recipient.as_deref(),
                ) {
                    rows.push((k.clone(), row));
                }
            }
        }
        Ok(rows)
    }

    fn delete(&mut self, f: &Filter) -> Result<u64, RedisError> {
        let keys: Vec<Vec<u8>> = self.rows(f)?.into_iter().map(|(k, _)| k).collect();
        let mut n = 0;
        for chunk in keys.chunks(SCAN_BATCH) {
            let v = self.one(redis::cmd("DEL").arg(chunk).clone())?;
            n += int(&v).unwrap_or(0) as u64;
        }
        Ok(n)
    }

    /// Redis removes entries by their TTL (max age after the last sighting). `purge`
    /// removes what the current `greylist_max_age` says is expired but still has a longer
    /// TTL (the maximum age was lowered), and counts the triplets it removes.
    fn purge(&mut self) -> Result<u64, RedisError> {
        let now = self.server_time()?;
        let max_age = self.s.max_age_ms;
        let mut never = 0;
        for (kind, field) in [("t:", "l"), ("a:", "ls")] {
            let mut keys = Vec::new();
            self.scan(&self.key(kind, ""), &mut |k| keys.push(k))?;
            for chunk in keys.chunks(SCAN_BATCH) {
                let cmds: Vec<redis::Cmd> = chunk
                    .iter()
                    .map(|k| redis::cmd("HMGET").arg(k).arg(field).arg("p").clone())
                    .collect();
                let replies = self.run(&cmds)?;
                let mut expired = Vec::new();
                for (k, v) in chunk.iter().zip(replies) {
                    let vals = items(v);
                    let last = vals.first().and_then(int).unwrap_or(0) as u64;
                    if now.saturating_sub(last) > max_age {
                        let passed = vals.get(1).and_then(int) == Some(1);
                        if kind == "t:" {
                            let name = if passed {
                                "expired_passed"
                            } else {
                                never += 1;
                                "expired_never_passed"
                            };
                            self.count_pending(name);
                        }
                        expired.push(k.clone());
                    }
                }
                if !expired.is_empty() {
                    self.one(redis::cmd("DEL").arg(expired).clone())?;
                }
            }
        }
        self.send_counts();
        Ok(never)
    }

    /// The Redis server's clock in ms, the one the decisions use.
    fn server_time(&mut self) -> Result<u64, RedisError> {
        let v = self.one(redis::cmd("TIME"))?;
        let t: Vec<i64> = items(v).iter().filter_map(int).collect();
        match t[..] {
            [s, us] => Ok((s * 1000 + us / 1000) as u64),
            _ => Err(RedisError::Protocol {
                url: self.url(),
                message: "TIME".into(),
            }),
        }
    }

    fn whitelist_list(&mut self) -> Result<Vec<String>, RedisError> {
        let v = self.one(
            redis::cmd("SMEMBERS")
                .arg(self.key("whitelist", ""))
                .clone(),
        )?;
        let mut nets: Vec<String> = items(v).iter().filter_map(text).collect();
        nets.sort();
        Ok(nets)
    }

    /// Adds or removes a network and bumps the version, in one transaction: every
    /// instance reloads its copy at its next decision.
    fn whitelist_change(&mut self, add: bool, net: &Network) -> Result<bool, RedisError> {
        let exec = self.transaction(&[
            redis::cmd(if add { "SADD" } else { "SREM" })
                .arg(self.key("whitelist", ""))
                .arg(net.to_string())
                .clone(),
            redis::cmd("INCR")
                .arg(self.key("whitelist:version", ""))
                .clone(),
        ])?;
        Ok(exec.first().and_then(int) == Some(1))
    }
}

/// Escapes the glob characters of SCAN's MATCH, so a key prefix is taken literally.
fn glob_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

fn filter(f: &[&str]) -> Result<Filter, StoreError> {
    Filter::from_fields(f).map_err(StoreError::Protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keying_names_the_secret_without_revealing_it() {
        assert_eq!(keying(None), "plain");
        let secret = |b| KeyedHash::new(&[b; 32]).unwrap();
        let k = keying(Some(&secret(7)));
        assert!(k.starts_with("hmac-sha256:") && k.len() == 12 + 16);
        assert_ne!(k, keying(Some(&secret(8))));
    }

    /// decide_request, which the script is checked against, decides as the sled keeper
    /// does: the same sequence of sightings through both, verdicts and counters compared.
    #[test]
    fn decide_request_is_the_keepers_decision() {
        use crate::greylist::decide::{AwlEntry, Timers, decide_request};
        let t = Timers {
            delay_ms: 300_000,
            retry_window_ms: 2 * 86_400_000,
            max_age_ms: 35 * 86_400_000,
            awl_clients: 2,
            awl_interval_ms: 3_600_000,
        };
        let sled = sled::Config::new().temporary(true).open().unwrap();
        let db = crate::store::db::Db::new(sled, None).unwrap();
        let (mut trip, mut awl): (BTreeMap<&str, Entry>, Option<AwlEntry>) =
            (BTreeMap::new(), None);
        let mut counters: BTreeMap<&str, u64> = BTreeMap::new();
        let h = 3_600_000;
        // (sender, time): new, early, delayed, known, a second triplet passing after the
        // hour (auto-whitelist reached), then the auto-whitelist, then expiry.
        let seq = [
            ("a", 0),
            ("a", 100_000),
            ("a", 300_000),
            ("a", 400_000),
            ("b", 500_000),
            ("b", 900_000 + h),
            ("c", 1_000_000 + h),
            ("c", 2 * 86_400_000),
            ("a", 40 * 86_400_000),
            ("d", 40 * 86_400_000 + 1),
            ("d", 43 * 86_400_000),
        ];
        for (sender, now) in seq {
            let got = db
                .grey("192.0.2.0/24", sender, "r", "192.0.2.1", &t, now)
                .unwrap();
            let d = decide_request(trip.get(sender).copied(), awl, now, &t);
            assert_eq!(got, d.verdict, "{sender} at {now}");
            if let Some(e) = d.triplet {
                trip.insert(sender, e);
            }
            awl = d.awl.or(awl);
            for c in std::iter::once("requests").chain(d.counters) {
                *counters.entry(c).or_default() += 1;
            }
        }
        let stats: BTreeMap<String, u64> = db.stats().into_iter().collect();
        for k in COUNTERS {
            assert_eq!(stats[*k], counters.get(k).copied().unwrap_or(0), "{k}");
        }
        assert!(counters["awl_hits"] > 0 && counters["awl_added"] > 0);
    }

    #[test]
    fn glob_escaping() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
