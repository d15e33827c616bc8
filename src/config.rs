//! Configuration: the main.cf-style file, `-o` overrides, validation into a typed `Config`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::{self, Network};
use crate::spf::{HeaderKind, SpfResult};

/// The default configuration file; a missing default file means all defaults.
pub const DEFAULT_CONFIG: &str = "/etc/greyspf/greyspf.conf";

/// Every key with its default, in the order `--check-config` prints them. An empty default
/// for `hostname`, `spf_authserv_id` and `spf_skip_networks` means "derived" (see `Config`).
pub const KEYS: &[(&str, &str)] = &[
    ("state_directory", "/var/lib/greyspf"),
    ("dry_run", "no"),
    ("hostname", ""),
    ("trusted_networks", "127.0.0.0/8, ::1/128"),
    ("protocol_states", "RCPT"),
    ("greylist_enable", "yes"),
    ("greylist_delay", "300s"),
    ("greylist_retry_window", "2d"),
    ("greylist_max_age", "35d"),
    ("greylist_ipv4_prefix", "24"),
    ("greylist_ipv6_prefix", "64"),
    ("greylist_auto_whitelist_clients", "5"),
    ("greylist_auto_whitelist_interval", "1h"),
    ("greylist_action", "DEFER_IF_PERMIT"),
    ("greylist_text", "Greylisted, please try again later"),
    ("greylist_header", "yes"),
    ("greylist_spf_key", "yes"),
    ("greylist_privacy", "no"),
    ("whitelist_clients", "/etc/greyspf/whitelist_clients"),
    ("whitelist_recipients", "/etc/greyspf/whitelist_recipients"),
    ("spf_enable", "yes"),
    ("spf_helo_check", "yes"),
    ("spf_reject_results", "fail"),
    ("spf_defer_results", ""),
    (
        "spf_reject_text",
        "SPF check failed: %d does not designate %i as permitted sender",
    ),
    (
        "spf_defer_text",
        "SPF check for %d could not be completed, please try again later",
    ),
    ("spf_header", "received-spf"),
    ("spf_authserv_id", ""),
    ("spf_timeout", "10s"),
    ("dns_server", ""),
    ("dns_retransmit", "400ms"),
    ("spf_skip_networks", ""),
    ("keeper_idle_timeout", "10m"),
    ("store_failure_action", "DUNNO"),
    ("store_timeout", "2s"),
    ("store_flush_interval", "1s"),
    ("syslog_facility", "mail"),
    ("syslog_socket", "/dev/log"),
];

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

/// The validated configuration. Derived defaults are already filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_directory: PathBuf,
    pub dry_run: bool,
    pub hostname: String,
    pub trusted_networks: Vec<Network>,
    pub protocol_states: Vec<String>,
    pub greylist_enable: bool,
    pub greylist_delay: Duration,
    pub greylist_retry_window: Duration,
    pub greylist_max_age: Duration,
    pub greylist_ipv4_prefix: u8,
    pub greylist_ipv6_prefix: u8,
    pub greylist_auto_whitelist_clients: u32,
    pub greylist_auto_whitelist_interval: Duration,
    pub greylist_action: String,
    pub greylist_text: String,
    pub greylist_header: bool,
    pub greylist_spf_key: bool,
    pub greylist_privacy: bool,
    pub whitelist_clients: Vec<PathBuf>,
    pub whitelist_recipients: Vec<PathBuf>,
    pub spf_enable: bool,
    pub spf_helo_check: bool,
    pub spf_reject_results: Vec<SpfResult>,
    pub spf_defer_results: Vec<SpfResult>,
    pub spf_reject_text: String,
    pub spf_defer_text: String,
    pub spf_header: HeaderKind,
    pub spf_authserv_id: String,
    pub spf_timeout: Duration,
    pub dns_server: Option<std::net::SocketAddr>,
    pub dns_retransmit: Duration,
    pub spf_skip_networks: Vec<Network>,
    pub keeper_idle_timeout: Duration,
    pub store_failure_action: String,
    pub store_timeout: Duration,
    pub store_flush_interval: Duration,
    pub syslog_facility: syslog::Facility,
    pub syslog_socket: PathBuf,
    /// The effective `key = value` pairs, in `KEYS` order, for `--check-config`.
    pub effective: Vec<(&'static str, String)>,
    pub sources: Sources,
}

struct Raw {
    values: HashMap<&'static str, (String, String)>,
}

impl Raw {
    fn get(&self, key: &str) -> (&str, &str) {
        match self.values.get(key) {
            Some((v, origin)) => (v.as_str(), origin.as_str()),
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
        let mut raw = Raw {
            values: KEYS
                .iter()
                .map(|(k, d)| (*k, (d.to_string(), "default".to_string())))
                .collect(),
        };
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
            let origin = format!("-o {o}");
            let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::Invalid {
                origin: origin.clone(),
                message: "expected name=value".into(),
            })?;
            set(&mut raw, k.trim(), v.trim(), &origin)?;
        }
        let mut c = build(&raw)?;
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

    /// The configuration as `--check-config` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.effective {
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(v);
            out.push('\n');
        }
        out
    }
}

fn set(raw: &mut Raw, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
    let Some((k, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            message: format!("unknown parameter {key:?}"),
        });
    };
    raw.values
        .insert(k, (value.to_string(), origin.to_string()));
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

fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
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

fn build(raw: &Raw) -> Result<Config, ConfigError> {
    let dur = |k: &str| -> Result<Duration, ConfigError> {
        let (v, o) = raw.get(k);
        parse_duration(v).map_err(|m| invalid(o, k, m))
    };
    let boolean = |k: &str| -> Result<bool, ConfigError> {
        let (v, o) = raw.get(k);
        parse_bool(v).map_err(|m| invalid(o, k, m))
    };
    let text = |k: &str| -> String { raw.get(k).0.to_string() };
    let prefix = |k: &str, max: u8| -> Result<u8, ConfigError> {
        let (v, o) = raw.get(k);
        match v.parse::<u8>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(invalid(o, k, format!("expected a prefix length 0..={max}"))),
        }
    };
    let networks = |k: &str| -> Result<Vec<Network>, ConfigError> {
        let (v, o) = raw.get(k);
        net::parse_list(v).map_err(|m| invalid(o, k, m))
    };
    let action = |k: &str| -> Result<String, ConfigError> {
        let (v, o) = raw.get(k);
        validate_action(v).map_err(|m| invalid(o, k, m))?;
        Ok(v.to_string())
    };
    let results = |k: &str| -> Result<Vec<SpfResult>, ConfigError> {
        let (v, o) = raw.get(k);
        split_list(v)
            .iter()
            .map(|r| r.parse::<SpfResult>().map_err(|e| invalid(o, k, e)))
            .collect()
    };
    let paths = |k: &str| -> Vec<PathBuf> {
        split_list(raw.get(k).0)
            .into_iter()
            .map(PathBuf::from)
            .collect()
    };

    let hostname = match text("hostname") {
        h if h.is_empty() => system_hostname(),
        h => h,
    };
    let trusted_networks = networks("trusted_networks")?;
    let spf_skip_networks = if raw.get("spf_skip_networks").0.is_empty() {
        trusted_networks.clone()
    } else {
        networks("spf_skip_networks")?
    };
    let spf_authserv_id = match text("spf_authserv_id") {
        a if a.is_empty() => hostname.clone(),
        a => a,
    };
    let spf_header = {
        let (v, o) = raw.get("spf_header");
        v.parse::<HeaderKind>()
            .map_err(|e| invalid(o, "spf_header", e))?
    };
    let dns_server = {
        let (v, o) = raw.get("dns_server");
        if v.is_empty() {
            None
        } else {
            Some(parse_server(v).map_err(|m| invalid(o, "dns_server", m))?)
        }
    };
    let syslog_facility = {
        let (v, o) = raw.get("syslog_facility");
        v.to_ascii_lowercase()
            .parse::<syslog::Facility>()
            .map_err(|_| invalid(o, "syslog_facility", format!("unknown facility {v:?}")))?
    };
    let awl = {
        let (v, o) = raw.get("greylist_auto_whitelist_clients");
        v.parse::<u32>().map_err(|_| {
            invalid(
                o,
                "greylist_auto_whitelist_clients",
                "expected a whole number",
            )
        })?
    };
    let protocol_states: Vec<String> = split_list(raw.get("protocol_states").0)
        .iter()
        .map(|s| s.to_ascii_uppercase())
        .collect();
    let state_directory = {
        let (v, o) = raw.get("state_directory");
        if !v.starts_with('/') {
            return Err(invalid(o, "state_directory", "must be an absolute path"));
        }
        PathBuf::from(v)
    };
    let greylist_text = text("greylist_text");
    if greylist_text.is_empty() {
        let (_, o) = raw.get("greylist_text");
        return Err(invalid(o, "greylist_text", "must not be empty"));
    }
    let greylist_action = text("greylist_action");
    // The greylist reply is action + text: check the combination, which is what smtpd sees.
    validate_action(&format!("{greylist_action} {greylist_text}"))
        .map_err(|m| invalid(raw.get("greylist_action").1, "greylist_action", m))?;
    let store_flush_interval = dur("store_flush_interval")?;
    if store_flush_interval.is_zero() {
        return Err(invalid(
            raw.get("store_flush_interval").1,
            "store_flush_interval",
            "must be above zero",
        ));
    }

    let mut c = Config {
        state_directory,
        dry_run: boolean("dry_run")?,
        hostname: hostname.clone(),
        trusted_networks,
        protocol_states,
        greylist_enable: boolean("greylist_enable")?,
        greylist_delay: dur("greylist_delay")?,
        greylist_retry_window: dur("greylist_retry_window")?,
        greylist_max_age: dur("greylist_max_age")?,
        greylist_ipv4_prefix: prefix("greylist_ipv4_prefix", 32)?,
        greylist_ipv6_prefix: prefix("greylist_ipv6_prefix", 128)?,
        greylist_auto_whitelist_clients: awl,
        greylist_auto_whitelist_interval: dur("greylist_auto_whitelist_interval")?,
        greylist_action,
        greylist_text,
        greylist_header: boolean("greylist_header")?,
        greylist_spf_key: boolean("greylist_spf_key")?,
        greylist_privacy: boolean("greylist_privacy")?,
        whitelist_clients: paths("whitelist_clients"),
        whitelist_recipients: paths("whitelist_recipients"),
        spf_enable: boolean("spf_enable")?,
        spf_helo_check: boolean("spf_helo_check")?,
        spf_reject_results: results("spf_reject_results")?,
        spf_defer_results: results("spf_defer_results")?,
        spf_reject_text: text("spf_reject_text"),
        spf_defer_text: text("spf_defer_text"),
        spf_header,
        spf_authserv_id: spf_authserv_id.clone(),
        spf_timeout: dur("spf_timeout")?,
        dns_server,
        dns_retransmit: match dur("dns_retransmit")? {
            zero if zero.is_zero() => {
                let origin = raw.get("dns_retransmit").1;
                return Err(invalid(origin, "dns_retransmit", "must be above zero"));
            }
            interval => interval,
        },
        spf_skip_networks,
        keeper_idle_timeout: dur("keeper_idle_timeout")?,
        store_failure_action: action("store_failure_action")?,
        store_timeout: dur("store_timeout")?,
        store_flush_interval,
        syslog_facility,
        syslog_socket: PathBuf::from(text("syslog_socket")),
        effective: Vec::new(),
        sources: Sources::default(),
    };
    c.effective = KEYS
        .iter()
        .map(|(k, _)| {
            let v = match *k {
                "hostname" => hostname.clone(),
                "spf_authserv_id" => spf_authserv_id.clone(),
                "spf_skip_networks" => c
                    .spf_skip_networks
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => raw.get(k).0.to_string(),
            };
            (*k, v)
        })
        .collect();
    Ok(c)
}

fn parse_server(v: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(sa) = v.parse::<std::net::SocketAddr>() {
        return Ok(sa);
    }
    let ip: std::net::IpAddr = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("expected ADDRESS or ADDRESS:PORT, got {v:?}"))?;
    Ok(std::net::SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, overrides: &[&str]) -> Result<Config, ConfigError> {
        let mut raw = Raw {
            values: KEYS
                .iter()
                .map(|(k, d)| (*k, (d.to_string(), "default".to_string())))
                .collect(),
        };
        parse_file(text, "test.conf", &mut raw)?;
        for o in overrides {
            let (k, v) = o.split_once('=').unwrap();
            set(&mut raw, k, v, &format!("-o {o}"))?;
        }
        build(&raw)
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
        assert_eq!(c.effective.len(), KEYS.len());
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
