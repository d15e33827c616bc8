//! Configuration: the main.cf-style file, `-o` overrides, validation into a typed `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::{self, Network};
use crate::score::{self, ListZone};
use crate::server::daemon::Endpoint;
use crate::spf::{HeaderKind, SpfResult};
use crate::store::redis_url::RedisUrl;

/// The store engine of `store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEngine {
    Sled,
    #[cfg(feature = "redis")]
    Redis,
}

impl std::str::FromStr for StoreEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreEngine, String> {
        match s.to_ascii_lowercase().as_str() {
            "sled" => Ok(StoreEngine::Sled),
            #[cfg(feature = "redis")]
            "redis" | "valkey" => Ok(StoreEngine::Redis),
            #[cfg(not(feature = "redis"))]
            "redis" | "valkey" => Err("this greyspf was built without Redis support \
                                        (cargo feature \"redis\")"
                .into()),
            _ => Err(format!("expected sled or redis, got {s:?}")),
        }
    }
}

/// The default configuration file; a missing default file means all defaults.
pub const DEFAULT_CONFIG: &str = "/etc/greyspf/greyspf.conf";

/// One configuration key as the documentation and `--check-config` show it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// The kind of value, in the words of greyspf.conf(5): time, boolean, list, ...
    pub kind: &'static str,
    /// The default as written in a file; empty for the keys whose default is derived
    /// from another key or the system (see `derive`).
    pub default: &'static str,
    pub summary: &'static str,
}

/// Defines every key once: its field in `Config`, its entry in `KEYS` (in the order
/// `--check-config` prints them) and the parser that turns its text into the field.
macro_rules! keys {
    ($( $name:ident : $ty:ty = $default:literal, $kind:literal, $parse:expr, $summary:literal; )*) => {
        /// The validated configuration. Derived defaults are already filled in.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( #[doc = $summary] pub $name: $ty, )*
            /// The text of each key as given, in `KEYS` order (`None`: the default), for
            /// `--check-config`, which renders it only when asked.
            given: Vec<Option<String>>,
            pub sources: Sources,
        }

        pub const KEYS: &[Key] = &[
            $( Key {
                name: stringify!($name),
                kind: $kind,
                default: $default,
                summary: $summary,
            }, )*
        ];

        fn parse_keys(raw: &Raw) -> Result<Config, ConfigError> {
            // The fields and KEYS come from the same list in the same order, so the texts
            // never run out; the fallback only keeps this free of a panic path.
            let mut texts = (0..KEYS.len()).map(|i| raw.at(i));
            Ok(Config {
                $( $name: {
                    let (v, o) = texts.next().unwrap_or(("", "default"));
                    $parse(v).map_err(|m| invalid(o, stringify!($name), m))?
                }, )*
                given: Vec::new(),
                sources: Sources::default(),
            })
        }
    };
}

keys! {
    state_directory: PathBuf = "/var/lib/greyspf", "path", absolute_path,
        "Where the store, the keeper socket and the privacy secret live.";
    dry_run: bool = "no", "boolean", parse_bool,
        "Decide and log, but answer DUNNO instead of greylisting.";
    hostname: String = "", "text", host_name,
        "The name in X-Greylist and the default authserv-id; empty: the system host name.";
    trusted_networks: Vec<Network> = "127.0.0.0/8, ::1/128", "networks", net::parse_list,
        "Clients that are never checked.";
    protocol_states: Vec<String> = "RCPT", "list", upper_list,
        "The protocol states in which requests are checked.";
    greylist_enable: bool = "yes", "boolean", parse_bool,
        "Greylisting on or off.";
    greylist_delay: Duration = "300s", "time", parse_duration,
        "How long a new triplet is deferred.";
    greylist_retry_window: Duration = "2d", "time", parse_duration,
        "How long after the first attempt a retry still counts.";
    greylist_max_age: Duration = "35d", "time", parse_duration,
        "How long a triplet or auto-whitelist entry lives after it was last seen.";
    greylist_ipv4_prefix: u8 = "24", "0 to 32", |v| prefix(v, 32),
        "The IPv4 network length of a triplet's client part.";
    greylist_ipv6_prefix: u8 = "64", "0 to 128", |v| prefix(v, 128),
        "The IPv6 network length of a triplet's client part.";
    greylist_auto_whitelist_clients: u32 = "5", "number", whole_number,
        "Passes after which a client address skips greylisting (0: off).";
    greylist_auto_whitelist_interval: Duration = "1h", "time", parse_duration,
        "Passes of one client closer together than this count once.";
    greylist_action: String = "DEFER_IF_PERMIT", "action", text,
        "The reply to a greylisted request, before greylist_text (checked with it).";
    greylist_text: String = "Greylisted, please try again later", "text", non_empty,
        "The text of the greylisting reply.";
    greylist_header: bool = "yes", "boolean", parse_bool,
        "Add X-Greylist to a message that was delayed.";
    greylist_spf_key: bool = "yes", "boolean", parse_bool,
        "Key triplets on the SPF-authenticated domain when MAIL FROM passes.";
    greylist_privacy: bool = "no", "boolean", parse_bool,
        "Store triplets as keyed hashes.";
    whitelist_clients: Vec<PathBuf> = "/etc/greyspf/whitelist_clients", "list of files", paths,
        "Client whitelist files (postgrey syntax).";
    whitelist_recipients: Vec<PathBuf> = "/etc/greyspf/whitelist_recipients", "list of files",
        paths,
        "Recipient whitelist files (postgrey syntax).";
    spf_enable: bool = "yes", "boolean", parse_bool,
        "SPF checks on or off.";
    spf_helo_check: bool = "yes", "boolean", parse_bool,
        "Check the HELO identity too.";
    spf_reject_results: Vec<SpfResult> = "fail", "list", spf_results,
        "SPF results that reject the mail.";
    spf_defer_results: Vec<SpfResult> = "", "list", spf_results,
        "SPF results that defer the mail.";
    spf_reject_text: String = "SPF check failed: %d does not designate %i as permitted sender",
        "text", text, "The reject text when the domain gives no explanation.";
    spf_defer_text: String = "SPF check for %d could not be completed, please try again later",
        "text", text, "The text of an SPF deferral.";
    spf_header: HeaderKind = "received-spf", "keyword", |v: &str| v.parse::<HeaderKind>(),
        "The header that carries the SPF result.";
    spf_authserv_id: String = "", "text", text,
        "The authserv-id of Authentication-Results; empty: hostname.";
    spf_timeout: Duration = "10s", "time", parse_duration,
        "Time limit of the check of one identity.";
    dns_server: Option<SocketAddr> = "", "address", optional_server,
        "The DNS server for SPF and scoring lookups; empty: the system's.";
    dns_retransmit: Duration = "400ms", "time", positive_duration,
        "How long a DNS query waits before it is sent again (doubling each time).";
    spf_skip_networks: Vec<Network> = "", "networks", net::parse_list,
        "Clients whose SPF is not checked; empty: trusted_networks.";
    score_enable: bool = "no", "boolean", parse_bool,
        "Reputation scoring decides who is greylisted, and rejects the worst.";
    score_dnsbl: Vec<ListZone> = "zen.spamhaus.org=127.0.0.2:4.5,127.0.0.3:4.5,127.0.0.4:4.5,127.0.0.9:4.5,127.0.0.10:2.5,127.0.0.11:2.5 bl.spamcop.net=3.5 list.dnswl.org=-5",
        "zone list", score::parse_zones,
        "DNS lists of client addresses and their weights (negative: allow lists).";
    score_rhsbl: Vec<ListZone> = "dbl.spamhaus.org=3.5", "zone list", score::parse_zones,
        "DNS lists of domains, for the sender domain and the HELO name.";
    score_no_ptr: f64 = "2.5", "weight", score::parse_weight,
        "The client address has no PTR record.";
    score_ptr_unconfirmed: f64 = "1.5", "weight", score::parse_weight,
        "No PTR name of the client resolves back to its address.";
    score_ptr_dynamic: f64 = "2.5", "weight", score::parse_weight,
        "A PTR name looks like a dynamic address pool's.";
    score_dynamic_patterns: Vec<String> =
        "(^|[.-])(dyn|dynamic|dsl|adsl|vdsl|xdsl|pool|cable|dhcp|dial|dialup|ppp|pppoe|broadband|cust|customer|cpe)([0-9.-]|$)",
        "patterns", pattern_list,
        "Regular expressions of dynamic-looking host names.";
    score_helo_literal: f64 = "2.5", "weight", score::parse_weight,
        "The HELO is an address or address literal.";
    score_helo_not_fqdn: f64 = "1.5", "weight", score::parse_weight,
        "The HELO is not a fully qualified domain name.";
    score_helo_unresolvable: f64 = "1.5", "weight", score::parse_weight,
        "The HELO name has no address.";
    score_helo_is_client: f64 = "-1.5", "weight", score::parse_weight,
        "The HELO name resolves to the client address.";
    score_helo_ours: f64 = "4", "weight", score::parse_weight,
        "The HELO claims this host's name or address.";
    score_sender_unroutable: f64 = "2.5", "weight", score::parse_weight,
        "The sender domain has no MX and no A record.";
    score_spf_pass: f64 = "-1.5", "weight", score::parse_weight,
        "SPF pass for the message.";
    score_spf_fail: f64 = "3", "weight", score::parse_weight,
        "SPF fail for the message (when it does not reject).";
    score_spf_softfail: f64 = "1.5", "weight", score::parse_weight,
        "SPF softfail for the message.";
    score_greylist_threshold: f64 = "2", "number", score::parse_weight,
        "Totals from here up are greylisted; below, the message is not.";
    score_reject_threshold: f64 = "8", "number", score::parse_weight,
        "Totals from here up are rejected.";
    score_reject_action: String = "550 5.7.1", "action", text,
        "The reply to a message at or above the reject threshold, before its text.";
    score_reject_text: String = "Rejected for poor reputation of %i (score %s: %h)", "text",
        non_empty, "The text of the score reply; %s score, %h hits, %i client address.";
    score_timeout: Duration = "5s", "time", positive_duration,
        "One deadline for all DNS lookups of one evaluation.";
    score_header: bool = "no", "boolean", parse_bool,
        "Add X-Greyspf-Score with the score and hits to messages that are not rejected.";
    store: StoreEngine = "sled", "keyword", |v: &str| v.parse::<StoreEngine>(),
        "The store engine: sled (embedded, one host) or redis (shared by several hosts).";
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0", "URL", |v: &str| v.parse::<RedisUrl>(),
        "Where Redis or Valkey listens (store = redis): redis://HOST[:PORT][/DB], rediss:// (TLS) or unix:///PATH.";
    redis_tls_ca_file: Option<PathBuf> = "", "path", optional_path,
        "The CA certificates that verify a rediss:// server; empty: the system's CA bundle.";
    redis_password_file: Option<PathBuf> = "", "path", optional_path,
        "A file holding the Redis password (store = redis); empty: no AUTH.";
    redis_key_prefix: String = "greyspf:", "text", text,
        "The prefix of every Redis key greyspf writes.";
    redis_timeout: Duration = "1s", "time", positive_duration,
        "Connect plus command deadline of one request to Redis.";
    privacy_secret_file: PathBuf = "", "path", optional_secret_path,
        "The keyed-hash secret of greylist_privacy; empty: privacy.secret in state_directory.";
    keeper_idle_timeout: Duration = "10m", "time", parse_duration,
        "How long the keeper waits without clients before it exits.";
    store_failure_action: String = "DUNNO", "action", action,
        "The reply when the store cannot answer in time.";
    store_timeout: Duration = "2s", "time", parse_duration,
        "How long a request waits for the store.";
    store_flush_interval: Duration = "1s", "time", positive_duration,
        "How often the keeper writes the store to disk.";
    listen: Vec<Endpoint> = "inet:127.0.0.1:10023", "list of endpoints", endpoints,
        "Where greyspf daemon serves the SMTPD policy protocol: inet:ADDRESS:PORT or unix:PATH.";
    postscreen_listen: Vec<Endpoint> = "", "list of endpoints", endpoints,
        "Where greyspf daemon serves the postscreen policy callout; empty: nowhere.";
    allowed_clients: Vec<Network> = "127.0.0.0/8, ::1/128", "networks", net::parse_list,
        "Addresses allowed to connect to the daemon's TCP listeners.";
    max_connections: u32 = "256", "number", positive_number,
        "Connections the daemon serves at once; more wait in the listen backlog.";
    connection_idle_timeout: Duration = "1000s", "time", positive_duration,
        "How long a daemon connection may stay silent before it is closed.";
    listen_unix_mode: u32 = "0660", "octal mode", octal_mode,
        "The permissions of the daemon's unix sockets.";
    listen_unix_group: String = "postfix", "group", text,
        "The group of the daemon's unix sockets; empty: the daemon's own.";
    daemon_user: String = "greyspf", "user", non_empty,
        "The user a daemon started as root serves as, after binding its sockets.";
    postscreen_max_ttl: Duration = "1d", "time", positive_duration,
        "The longest ttl of a postscreen pass; whitelisted clients get this ttl.";
    postscreen_enforce_threshold: f64 = "8", "number", score::parse_weight,
        "With score_enable, postscreen clients scoring this or more get action=enforce.";
    postscreen_drop_threshold: Option<f64> = "", "number", optional_weight,
        "With score_enable, postscreen clients scoring this or more get action=drop; empty: never.";
    postscreen_pass_ttl: Duration = "1h", "time", positive_duration,
        "The ttl of a postscreen pass for a client on an allow list of score_dnsbl.";
    syslog_facility: syslog::Facility = "mail", "name", facility,
        "The syslog facility.";
    syslog_socket: PathBuf = "/dev/log", "path", |v: &str| Ok::<_, String>(PathBuf::from(v)),
        "The syslog socket.";
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Where the configuration comes from; kept so the keeper can be started with the same.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub overrides: Vec<String>,
}

/// The text of each key as given and where it was given, by position in `KEYS`; `None`
/// for a key left at its default. A vector, not a map: a spawned instance loads the
/// configuration before its first reply, and a map of every key with its default text
/// cost more than all the parsing (about 100,000 instructions a start, measured).
struct Raw {
    given: Vec<Option<(String, String)>>,
}

impl Raw {
    fn new() -> Raw {
        Raw {
            given: vec![None; KEYS.len()],
        }
    }

    /// The text and origin of the key at `i` in `KEYS`.
    fn at(&self, i: usize) -> (&str, &str) {
        match self.given.get(i) {
            Some(Some((v, origin))) => (v.as_str(), origin.as_str()),
            Some(None) => (KEYS[i].default, "default"),
            None => ("", "default"),
        }
    }

    fn get(&self, key: &str) -> (&str, &str) {
        match KEYS.iter().position(|k| k.name == key) {
            Some(i) => self.at(i),
            None => ("", "default"),
        }
    }
}

fn invalid(origin: &str, key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        message: format!("{key}: {message}"),
    }
}

impl Config {
    /// Loads the file (or the default one when present) and applies the overrides.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut raw = Raw::new();
        let (path, required) = match &sources.file {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&text, &path.display().to_string(), &mut raw)?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        for o in &sources.overrides {
            let origin = override_origin(o);
            let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::Invalid {
                origin: origin.clone(),
                message: "expected name=value".into(),
            })?;
            set(&mut raw, k.trim(), v.trim(), &origin)?;
        }
        let mut c = build(raw)?;
        c.sources = sources.clone();
        Ok(c)
    }

    /// A configuration with every default, for tests and `check` without a file.
    pub fn defaults_with(overrides: &[&str]) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            file: Some(PathBuf::from("/dev/null")),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The configuration as `--check-config` prints it: every key in `KEYS` order, with
    /// the text as given or the derived value.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, k) in KEYS.iter().enumerate() {
            out.push_str(k.name);
            out.push_str(" = ");
            out.push_str(&self.effective_value(i, k));
            out.push('\n');
        }
        out
    }

    fn effective_value(&self, i: usize, key: &Key) -> String {
        match key.name {
            "hostname" => self.hostname.clone(),
            "spf_authserv_id" => self.spf_authserv_id.clone(),
            "privacy_secret_file" => self.privacy_secret_file.display().to_string(),
            "spf_skip_networks" => self
                .spf_skip_networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            _ => match self.given.get(i) {
                Some(Some(text)) => text.clone(),
                _ => key.default.to_string(),
            },
        }
    }
}

/// Where an override came from, for error messages: the override itself, except a URL
/// with user information, which may hold a password and must not reach a log.
fn override_origin(o: &str) -> String {
    match o.split_once('=') {
        Some((k, v)) if k.trim() == "redis_url" && v.contains('@') => {
            format!("-o {}=(hidden)", k.trim())
        }
        _ => format!("-o {o}"),
    }
}

fn set(raw: &mut Raw, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
    let Some(i) = KEYS.iter().position(|k| k.name == key) else {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            message: format!("unknown parameter {key:?}"),
        });
    };
    raw.given[i] = Some((value.to_string(), origin.to_string()));
    Ok(())
}

/// main.cf syntax: `name = value`, `#` comments on their own line, and lines that start
/// with white space continue the previous one.
fn parse_file(text: &str, name: &str, raw: &mut Raw) -> Result<(), ConfigError> {
    let mut current: Option<(usize, String)> = None;
    let flush = |cur: Option<(usize, String)>, raw: &mut Raw| -> Result<(), ConfigError> {
        if let Some((line, logical)) = cur {
            let origin = format!("{name}:{line}");
            let (k, v) = logical
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid {
                    origin: origin.clone(),
                    message: format!("missing '=' in {:?}", logical.trim()),
                })?;
            set(raw, k.trim(), v.trim(), &origin)?;
        }
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match current.as_mut() {
                Some((_, logical)) => {
                    logical.push(' ');
                    logical.push_str(trimmed);
                }
                None => {
                    return Err(ConfigError::Invalid {
                        origin: format!("{name}:{}", i + 1),
                        message: "continuation line without a parameter before it".into(),
                    });
                }
            }
            continue;
        }
        flush(current.take(), raw)?;
        current = Some((i + 1, trimmed.to_string()));
    }
    flush(current, raw)
}

/// Postfix time syntax: a number with an optional unit ms, s, m, h, d or w (seconds if
/// none).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("bad time value {s:?}"));
    }
    let n: u64 = num.parse().map_err(|_| format!("bad time value {s:?}"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(format!("bad time unit in {s:?} (use ms, s, m, h, d or w)")),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("time value too large: {s:?}"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(format!("expected yes or no, got {s:?}")),
    }
}

/// Checks that an action is one access(5) knows, so a typo never reaches smtpd (which
/// would answer 451 for it, or accept the mail on an empty action).
pub fn validate_action(action: &str) -> Result<(), String> {
    let action = action.trim();
    let word = action.split_whitespace().next().unwrap_or("");
    let upper = word.to_ascii_uppercase();
    let with_text = action.len() > word.len();
    match upper.as_str() {
        "" => Err("empty action".into()),
        "OK" | "DUNNO" | "HOLD" | "DISCARD" | "REJECT" | "DEFER" | "INFO" | "WARN" => Ok(()),
        "DEFER_IF_PERMIT" | "DEFER_IF_REJECT" | "PREPEND" | "REDIRECT" | "BCC" | "FILTER" => {
            if with_text {
                Ok(())
            } else {
                Err(format!("{upper} needs text after it"))
            }
        }
        w if w.len() == 3
            && (w.starts_with('4') || w.starts_with('5'))
            && w.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => Err(format!("unknown action {word:?}")),
    }
}

fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // unless truncated, which the search for NUL below handles.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "localhost".into(),
    }
}

fn build(raw: Raw) -> Result<Config, ConfigError> {
    let mut c = parse_keys(&raw)?;
    derive(&mut c, &raw);
    check_together(&c, &raw)?;
    c.given = raw.given.into_iter().map(|g| g.map(|(v, _)| v)).collect();
    Ok(c)
}

/// Fills in the defaults that come from another key when a key is left empty.
fn derive(c: &mut Config, raw: &Raw) {
    if c.privacy_secret_file.as_os_str().is_empty() {
        c.privacy_secret_file = c.state_directory.join("privacy.secret");
    }
    if c.spf_authserv_id.is_empty() {
        c.spf_authserv_id = c.hostname.clone();
    }
    if raw.get("spf_skip_networks").0.trim().is_empty() {
        c.spf_skip_networks = c.trusted_networks.clone();
    }
}

/// Checks that involve more than one key.
fn check_together(c: &Config, raw: &Raw) -> Result<(), ConfigError> {
    // The greylist reply is action + text: check the combination, which is what smtpd sees.
    validate_action(&format!("{} {}", c.greylist_action, c.greylist_text))
        .map_err(|m| invalid(raw.get("greylist_action").1, "greylist_action", m))?;
    validate_action(&format!(
        "{} {}",
        c.score_reject_action, c.score_reject_text
    ))
    .map_err(|m| invalid(raw.get("score_reject_action").1, "score_reject_action", m))?;
    // Checked only when scoring is on, and for syntax only: each pattern is compiled when
    // it is first used (score::Pattern), and every one by --check-config.
    if c.score_enable {
        score::parse_patterns(&c.score_dynamic_patterns.join(" ")).map_err(|m| {
            invalid(
                raw.get("score_dynamic_patterns").1,
                "score_dynamic_patterns",
                m,
            )
        })?;
    }
    if c.postscreen_drop_threshold
        .is_some_and(|d| d <= c.postscreen_enforce_threshold)
    {
        return Err(invalid(
            raw.get("postscreen_drop_threshold").1,
            "postscreen_drop_threshold",
            "must be above postscreen_enforce_threshold",
        ));
    }
    if c.score_reject_threshold <= c.score_greylist_threshold {
        return Err(invalid(
            raw.get("score_reject_threshold").1,
            "score_reject_threshold",
            "must be above score_greylist_threshold",
        ));
    }
    Ok(())
}

/// A number, or nothing (empty) for a threshold that is off.
fn optional_weight(v: &str) -> Result<Option<f64>, String> {
    if v.trim().is_empty() {
        Ok(None)
    } else {
        score::parse_weight(v).map(Some)
    }
}

fn absolute_path(v: &str) -> Result<PathBuf, String> {
    if v.starts_with('/') {
        Ok(PathBuf::from(v))
    } else {
        Err("must be an absolute path".into())
    }
}

fn host_name(v: &str) -> Result<String, String> {
    Ok(if v.is_empty() {
        system_hostname()
    } else {
        v.to_string()
    })
}

fn upper_list(v: &str) -> Result<Vec<String>, String> {
    Ok(net::split_list(v).map(|s| s.to_ascii_uppercase()).collect())
}

fn prefix(v: &str, max: u8) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("expected a prefix length 0..={max}")),
    }
}

fn positive_number(v: &str) -> Result<u32, String> {
    match whole_number(v)? {
        0 => Err("must be above zero".into()),
        n => Ok(n),
    }
}

fn octal_mode(v: &str) -> Result<u32, String> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("expected an octal mode such as 0660, got {v:?}")),
    }
}

fn endpoints(v: &str) -> Result<Vec<Endpoint>, String> {
    net::split_list(v).map(|e| e.parse::<Endpoint>()).collect()
}

fn whole_number(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| "expected a whole number".to_string())
}

fn action(v: &str) -> Result<String, String> {
    validate_action(v)?;
    Ok(v.to_string())
}

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

fn optional_path(v: &str) -> Result<Option<PathBuf>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        absolute_path(v).map(Some)
    }
}

/// Empty is allowed here: `derive` puts the state directory's file in its place.
fn optional_secret_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Ok(PathBuf::new())
    } else {
        absolute_path(v)
    }
}

fn pattern_list(v: &str) -> Result<Vec<String>, String> {
    Ok(v.split_whitespace().map(str::to_string).collect())
}

fn paths(v: &str) -> Result<Vec<PathBuf>, String> {
    Ok(net::split_list(v).map(PathBuf::from).collect())
}

fn spf_results(v: &str) -> Result<Vec<SpfResult>, String> {
    net::split_list(v)
        .map(|r| r.parse::<SpfResult>().map_err(|e| e.to_string()))
        .collect()
}

fn positive_duration(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err("must be above zero".into()),
        d => Ok(d),
    }
}

fn optional_server(v: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        parse_server(v).map(Some)
    }
}

fn facility(v: &str) -> Result<syslog::Facility, String> {
    v.to_ascii_lowercase()
        .parse::<syslog::Facility>()
        .map_err(|_| format!("unknown facility {v:?}"))
}

fn parse_server(v: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = v.parse::<std::net::SocketAddr>() {
        return Ok(sa);
    }
    let ip: std::net::IpAddr = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("expected ADDRESS or ADDRESS:PORT, got {v:?}"))?;
    Ok(SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, overrides: &[&str]) -> Result<Config, ConfigError> {
        let mut raw = Raw::new();
        parse_file(text, "test.conf", &mut raw)?;
        for o in overrides {
            let (k, v) = o.split_once('=').unwrap();
            set(&mut raw, k, v, &format!("-o {o}"))?;
        }
        build(raw)
    }

    #[test]
    fn the_store_engine_is_refused_clearly_when_not_built_in() {
        assert_eq!(
            load_text("store = sled\n", &[]).unwrap().store,
            StoreEngine::Sled
        );
        let redis = load_text("store = valkey\n", &[]);
        #[cfg(feature = "redis")]
        assert_eq!(redis.unwrap().store, StoreEngine::Redis);
        #[cfg(not(feature = "redis"))]
        assert!(
            redis
                .unwrap_err()
                .to_string()
                .contains("built without Redis support"),
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(604800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5").is_err());
    }

    #[test]
    fn file_syntax_with_continuations_and_comments() {
        let c = load_text(
            "# comment\ngreylist_delay = 10m\ntrusted_networks = 127.0.0.0/8,\n    10.0.0.0/8\n\n  # indented comment\ngreylist_text = Go away\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.greylist_delay, Duration::from_secs(600));
        assert_eq!(c.trusted_networks.len(), 2);
        assert_eq!(c.greylist_text, "Go away");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = load_text("greylist_delay = 10m\nbogus = 1\n", &[]).unwrap_err();
        assert_eq!(e.to_string(), "test.conf:2: unknown parameter \"bogus\"");
        let e = load_text("\ngreylist_delay = 10q\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:2: greylist_delay: bad time unit in \"10q\" (use ms, s, m, h, d or w)"
        );
        let e = load_text("greylist_action = MAYBE\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: greylist_action: unknown action \"MAYBE\""
        );
        let e = load_text("", &["greylist_ipv4_prefix=33"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-o greylist_ipv4_prefix=33: greylist_ipv4_prefix: expected a prefix length 0..=32"
        );
        let e = load_text("no equals sign\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: missing '=' in \"no equals sign\""
        );
    }

    #[test]
    fn overrides_win_and_derived_defaults() {
        let c = load_text(
            "greylist_delay = 10m\nhostname = mx.example.net\n",
            &["greylist_delay=2s"],
        )
        .unwrap();
        assert_eq!(c.greylist_delay, Duration::from_secs(2));
        assert_eq!(c.spf_authserv_id, "mx.example.net");
        assert_eq!(c.spf_skip_networks, c.trusted_networks);
        assert!(c.render().contains("spf_authserv_id = mx.example.net\n"));
        assert_eq!(c.render().lines().count(), KEYS.len());
        assert!(c.render().contains("greylist_delay = 2s\n"));
        assert!(
            c.render()
                .contains("greylist_text = Greylisted, please try again later\n")
        );
    }

    #[test]
    fn score_keys_are_checked() {
        // A bad pattern matters only when scoring is on.
        assert!(load_text("score_dynamic_patterns = (\n", &[]).is_ok());
        let e = load_text("score_enable = yes\nscore_dynamic_patterns = (\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("test.conf:2: score_dynamic_patterns: bad pattern \"(\""),
            "{e}"
        );
        let e = load_text("score_reject_threshold = 2\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: score_reject_threshold: must be above score_greylist_threshold"
        );
        let e = load_text("score_dnsbl = zen.example\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: score_dnsbl: expected zone=weight, got \"zen.example\""
        );
        let e = load_text("", &["score_reject_action=MAYBE"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-o score_reject_action=MAYBE: score_reject_action: unknown action \"MAYBE\""
        );
        let c = load_text("score_no_ptr = 0\nscore_helo_is_client = -2.25\n", &[]).unwrap();
        assert_eq!((c.score_no_ptr, c.score_helo_is_client), (0.0, -2.25));
    }

    /// The default is matched by plain code (score::patterns) only while it is this text.
    #[test]
    fn the_default_dynamic_pattern_is_the_one_matched_without_regex() {
        let c = load_text("score_enable = yes\n", &[]).unwrap();
        assert_eq!(c.score_dynamic_patterns, [score::DEFAULT_DYNAMIC_PATTERN]);
    }

    #[test]
    fn postscreen_thresholds() {
        let c = load_text("", &[]).unwrap();
        assert_eq!(c.postscreen_enforce_threshold, c.score_reject_threshold);
        assert_eq!(c.postscreen_drop_threshold, None);
        assert_eq!(c.postscreen_pass_ttl, Duration::from_secs(3600));
        let c = load_text(
            "postscreen_drop_threshold = 12.5
",
            &[],
        )
        .unwrap();
        assert_eq!(c.postscreen_drop_threshold, Some(12.5));
        let e = load_text(
            "postscreen_drop_threshold = 8
",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: postscreen_drop_threshold: must be above postscreen_enforce_threshold"
        );
        let e = load_text(
            "postscreen_drop_threshold = high
",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.conf:1: postscreen_drop_threshold: expected a number, got \"high\""
        );
    }

    #[test]
    fn actions() {
        assert!(validate_action("DUNNO").is_ok());
        assert!(validate_action("defer_if_permit Greylisted").is_ok());
        assert!(validate_action("DEFER_IF_PERMIT").is_err());
        assert!(validate_action("450 4.7.1 Try later").is_ok());
        assert!(validate_action("").is_err());
        assert!(validate_action("650 no").is_err());
    }
}
