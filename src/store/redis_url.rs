//! `redis_url`: where Redis or Valkey listens, parsed and shown without a password; built
//! with or without the Redis engine, so the configuration reads the same either way.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Where Redis listens, as `redis_url` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    /// TCP, in TLS for `rediss://`.
    Tcp {
        host: Host,
        port: u16,
        tls: bool,
    },
    Unix(PathBuf),
}

/// The host of a TCP URL: an address, or a name looked up at each connection (so a
/// Redis that moved is found again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A parsed `redis_url`. It never holds a password (those come from a file only), so it
/// can be shown anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: RedisAddr,
    pub db: u32,
    /// The ACL user (Redis 6+), if any; the password goes with it.
    pub username: Option<String>,
}

impl RedisUrl {
    /// Whether the connection is TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        matches!(self.addr, RedisAddr::Tcp { tls: true, .. })
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.addr {
            RedisAddr::Tcp { host, port, tls } => {
                let scheme = if *tls { "rediss" } else { "redis" };
                let user = self
                    .username
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                write!(f, "{scheme}://{user}{host}:{port}/{}", self.db)
            }
            RedisAddr::Unix(p) => write!(f, "unix://{}?db={}", p.display(), self.db),
        }
    }
}

/// Parse errors never quote the URL: it might carry a password.
impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<RedisUrl, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("unix://") {
            return parse_unix(rest);
        }
        let (rest, tls) = match (s.strip_prefix("redis://"), s.strip_prefix("rediss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => {
                return Err(
                    "expected redis://HOST[:PORT][/DB], rediss://... (TLS) or unix:///PATH".into(),
                );
            }
        };
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (a, parse_db(d)?),
            None => (rest, 0),
        };
        let (user, host) = match authority.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => {
                return Err(
                    "a password in redis_url would be readable by anyone who can read \
                            the configuration; put it in redis_password_file"
                        .into(),
                );
            }
            Some((u, h)) => ((!u.is_empty()).then(|| u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = parse_host(host)?;
        Ok(RedisUrl {
            addr: RedisAddr::Tcp { host, port, tls },
            db,
            username: user,
        })
    }
}

fn parse_unix(rest: &str) -> Result<RedisUrl, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err("unix:// needs an absolute socket path (unix:///path)".into());
    }
    let db = match query.strip_prefix("db=") {
        Some(n) => parse_db(n)?,
        None if query.is_empty() => 0,
        None => return Err("unix:// accepts only ?db=N after the path".into()),
    };
    Ok(RedisUrl {
        addr: RedisAddr::Unix(PathBuf::from(path)),
        db,
        username: None,
    })
}

fn parse_db(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| "the database after the address must be a number".to_string())
}

/// An IP address or a host name, with an optional port.
fn parse_host(h: &str) -> Result<(Host, u16), String> {
    if let Ok(sa) = h.parse::<SocketAddr>() {
        return Ok((Host::Ip(sa.ip()), sa.port()));
    }
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((Host::Ip(ip), 6379));
    }
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (
            n,
            p.parse()
                .map_err(|_| "the port after the Redis host must be a number".to_string())?,
        ),
        None => (h, 6379),
    };
    if !is_host_name(name) {
        return Err(
            "the Redis host must be an IP address or a host name, optionally with :PORT".into(),
        );
    }
    Ok((
        Host::Name(name.trim_end_matches('.').to_ascii_lowercase()),
        port,
    ))
}

/// Letters, digits and hyphens in dot-separated labels of 1 to 63 characters, not all
/// digits at the end (that would be a mistyped address).
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253
        && labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: RedisUrl = "redis://127.0.0.1:6380/2".parse().unwrap();
        assert_eq!(u.to_string(), "redis://127.0.0.1:6380/2");
        let u: RedisUrl = "redis://greyspf@[::1]".parse().unwrap();
        assert_eq!(u.to_string(), "redis://greyspf@[::1]:6379/0");
        let u: RedisUrl = "unix:///run/redis/redis.sock?db=3".parse().unwrap();
        assert_eq!(u.to_string(), "unix:///run/redis/redis.sock?db=3");
        let u: RedisUrl = "rediss://greyspf@192.0.2.1:6380/1".parse().unwrap();
        assert_eq!(u.to_string(), "rediss://greyspf@192.0.2.1:6380/1");
        assert!(u.tls());
        assert!(!"redis://[::1]".parse::<RedisUrl>().unwrap().tls());
        let u: RedisUrl = "rediss://Redis.Example.:6380/1".parse().unwrap();
        assert_eq!(u.to_string(), "rediss://redis.example:6380/1");
        assert_eq!(
            u.addr,
            RedisAddr::Tcp {
                host: Host::Name("redis.example".into()),
                port: 6380,
                tls: true
            }
        );
        let u: RedisUrl = "redis://redis/0".parse().unwrap();
        assert_eq!(u.to_string(), "redis://redis:6379/0");
        for bad in [
            "redis://user:hunter2@127.0.0.1/0",
            "redis://:hunter2@127.0.0.1",
            "rediss://:hunter2@127.0.0.1",
            "redis://redis..example/0",
            "redis://-redis.example/0",
            "redis://redis.example:63a9/0",
            "redis://192.0.2/0",
            "http://127.0.0.1",
            "unix://relative",
        ] {
            let e = bad.parse::<RedisUrl>().unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(
            "redis://:hunter2@127.0.0.1"
                .parse::<RedisUrl>()
                .unwrap_err()
                .contains("redis_password_file")
        );
    }
}
