//! The administrator's commands: stats, list, delete, purge and the store whitelist. All
//! go through the keeper (started if needed), so they are safe while instances serve.

use std::fmt::Write as _;

use crate::greylist::key::{normalize_recipient, normalize_sender};
use crate::net::{self, Network};
use crate::store::StoreError;
use crate::store::client::{ClientSettings, KeeperClient};
#[cfg(feature = "redis")]
use crate::store::redis::{RedisSettings, RedisStore};

/// A store that answers the keeper's admin requests: the keeper itself, or Redis.
trait AdminStore {
    fn call(&mut self, fields: &[&str]) -> Result<Vec<String>, StoreError>;
}

impl AdminStore for KeeperClient {
    fn call(&mut self, fields: &[&str]) -> Result<Vec<String>, StoreError> {
        KeeperClient::call(self, fields)
    }
}

#[cfg(feature = "redis")]
impl AdminStore for RedisStore {
    fn call(&mut self, fields: &[&str]) -> Result<Vec<String>, StoreError> {
        RedisStore::call(self, fields)
    }
}

/// Where the greylist lives.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    Keeper(ClientSettings),
    #[cfg(feature = "redis")]
    Redis(RedisSettings),
}

fn store(settings: &AdminSettings) -> Box<dyn AdminStore> {
    match &settings.store {
        StoreChoice::Keeper(c) => Box::new(KeeperClient::new(c)),
        #[cfg(feature = "redis")]
        StoreChoice::Redis(r) => Box::new(RedisStore::new(r.clone())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("keeper: {0}")]
    Keeper(String),
    #[error("{0}")]
    Usage(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// What the commands need: how to reach the keeper, and how greylisting forms its keys.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub store: StoreChoice,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub privacy: bool,
}

/// Which entries `list` and `delete` select, as the administrator typed them.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub client: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub state: Option<String>,
    pub pattern: Option<String>,
}

fn expect_ok(reply: Vec<String>) -> Result<Vec<String>, AdminError> {
    match reply.split_first() {
        Some((ok, rest)) if ok == "OK" => Ok(rest.to_vec()),
        Some((e, rest)) if e == "ERR" => Err(AdminError::Keeper(rest.join(" "))),
        _ => Err(AdminError::Keeper(format!("unexpected reply {reply:?}"))),
    }
}

/// JSON string literal (RFC 8259 escaping).
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub fn stats(settings: &AdminSettings, json: bool) -> Result<String, AdminError> {
    let mut k = store(settings);
    let rest = expect_ok(k.call(&["STATS"])?)?;
    let pairs: Vec<(&str, &str)> = rest
        .chunks(2)
        .filter_map(|c| Some((c.first()?.as_str(), c.get(1)?.as_str())))
        .collect();
    let mut out = String::new();
    if json {
        out.push('{');
        for (i, (name, v)) in pairs.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(out, "{sep}{}:{v}", json_str(name));
        }
        out.push_str("}\n");
    } else {
        let w = pairs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, v) in pairs {
            let _ = writeln!(out, "{name:<w$}  {v:>12}");
        }
    }
    Ok(out)
}

/// Turns the administrator's selection into the keeper's filter fields: a client address
/// becomes its greylisting network, senders and recipients are normalised as greylisting
/// does, so what is typed matches what is stored.
fn filter_fields(settings: &AdminSettings, s: &Selection) -> Vec<String> {
    let client = s
        .client
        .as_deref()
        .map(|c| match c.parse::<std::net::IpAddr>() {
            Ok(ip) => net::client_network(ip, settings.ipv4_prefix, settings.ipv6_prefix),
            Err(_) => c.to_string(),
        });
    vec![
        client.unwrap_or_default(),
        s.sender
            .as_deref()
            .map(normalize_sender)
            .unwrap_or_default(),
        s.recipient
            .as_deref()
            .map(normalize_recipient)
            .unwrap_or_default(),
        s.state.clone().unwrap_or_default(),
        s.pattern.clone().unwrap_or_default(),
    ]
}

fn with_cmd<'a>(cmd: &'a str, fields: &'a [String]) -> Vec<&'a str> {
    std::iter::once(cmd)
        .chain(fields.iter().map(String::as_str))
        .collect()
}

fn time(ms: &str) -> String {
    ms.parse::<u64>()
        .map(crate::date::rfc2822)
        .unwrap_or_else(|_| ms.to_string())
}

pub fn list(settings: &AdminSettings, s: &Selection, json: bool) -> Result<String, AdminError> {
    if settings.privacy && s.pattern.is_some() {
        return Err(AdminError::Usage(
            "--pattern cannot match hashed keys (greylist_privacy = yes)".into(),
        ));
    }
    let mut k = store(settings);
    let fields = filter_fields(settings, s);
    let rest = expect_ok(k.call(&with_cmd("LIST", &fields))?)?;
    let mut out = String::new();
    if json {
        out.push('[');
    }
    for (i, row) in rest.chunks(6).enumerate() {
        let [client, sender, recipient, first, last, passed] = row else {
            continue;
        };
        let state = if passed == "1" {
            "passed"
        } else {
            "greylisted"
        };
        if json {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"client\":{},\"sender\":{},\"recipient\":{},\"first_seen\":{},\"last_seen\":{},\"state\":\"{state}\"}}",
                json_str(client),
                json_str(sender),
                json_str(recipient),
                first.parse::<u64>().unwrap_or(0) / 1000,
                last.parse::<u64>().unwrap_or(0) / 1000
            );
        } else {
            let _ = writeln!(
                out,
                "{client} {sender} {recipient} state={state} first_seen=\"{}\" last_seen=\"{}\"",
                time(first),
                time(last)
            );
        }
    }
    if json {
        out.push_str("]\n");
    }
    Ok(out)
}

pub fn delete(settings: &AdminSettings, s: &Selection, all: bool) -> Result<String, AdminError> {
    let empty =
        s.client.is_none() && s.sender.is_none() && s.recipient.is_none() && s.pattern.is_none();
    if empty && !all {
        return Err(AdminError::Usage(
            "delete needs --client, --sender, --recipient, --pattern or --all".into(),
        ));
    }
    if settings.privacy && s.pattern.is_some() {
        return Err(AdminError::Usage(
            "--pattern cannot match hashed keys (greylist_privacy = yes)".into(),
        ));
    }
    let mut k = store(settings);
    let fields = filter_fields(settings, s);
    let rest = expect_ok(k.call(&with_cmd("DELETE", &fields))?)?;
    Ok(format!(
        "deleted {} entries\n",
        rest.first().map(String::as_str).unwrap_or("0")
    ))
}

pub fn purge(settings: &AdminSettings) -> Result<String, AdminError> {
    let mut k = store(settings);
    let rest = expect_ok(k.call(&["PURGE"])?)?;
    Ok(format!(
        "purged; {} entries expired without ever passing\n",
        rest.first().map(String::as_str).unwrap_or("0")
    ))
}

pub fn whitelist(
    settings: &AdminSettings,
    cmd: &str,
    network: Option<&str>,
) -> Result<String, AdminError> {
    let mut k = store(settings);
    match (cmd, network) {
        ("list", _) => {
            let rest = expect_ok(k.call(&["WLLIST"])?)?;
            Ok(rest.iter().map(|n| format!("{n}\n")).collect())
        }
        (cmd, Some(n)) => {
            let net: Network = n.parse().map_err(AdminError::Usage)?;
            let (wire, yes, no) = if cmd == "add" {
                ("WLADD", "added", "already present")
            } else {
                ("WLDEL", "removed", "not present")
            };
            let rest = expect_ok(k.call(&[wire, &net.to_string()])?)?;
            Ok(format!(
                "{net}: {}\n",
                if rest.first().map(String::as_str) == Some("1") {
                    yes
                } else {
                    no
                }
            ))
        }
        _ => Err(AdminError::Usage(
            "whitelist add and remove need an address or network".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\u{1}é"), "\"a\\\"b\\\\c\\u0001é\"");
    }
}
