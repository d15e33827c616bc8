//! Finds the addresses of the Redis host named in `redis_url` without NSS: the hosts file
//! first, then the DNS through greyspf's own client with the system resolver
//! configuration, all before the connection's deadline.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::dns::{Answer, DnsClient, DnsSettings};

/// The hosts file, as the C library's "files" source reads it.
const HOSTS_FILE: &str = "/etc/hosts";

/// The addresses of `name` in hosts-file text, in file order: each line is an address and
/// its names (comments after `#`); names match without regard to case or a final dot.
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    let want = name.trim_end_matches('.');
    let mut found = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if fields.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(want))
            && !found.contains(&ip)
        {
            found.push(ip);
        }
    }
    found
}

/// The addresses of `name`: from `hosts` (the hosts file's text) when it names it, else
/// from `dns`, IPv4 first, all before `deadline`.
pub fn lookup(
    name: &str,
    hosts: &str,
    dns: &DnsClient,
    deadline: Instant,
) -> Result<Vec<IpAddr>, String> {
    let listed = hosts_lookup(hosts, name);
    if !listed.is_empty() {
        return Ok(listed);
    }
    let until = tokio::time::Instant::from_std(deadline);
    let lookup = dns.lookup(until);
    let v4 = dns.block_on(lookup.a(name));
    let v6 = if Instant::now() < deadline {
        dns.block_on(lookup.aaaa(name))
    } else {
        Answer::Void
    };
    let mut found = Vec::new();
    let mut failure = None;
    for (kind, answer) in [
        ("A", as_ips(v4, IpAddr::V4)),
        ("AAAA", as_ips(v6, IpAddr::V6)),
    ] {
        match answer {
            Ok(ips) => found.extend(ips),
            Err(e) => failure = Some(format!("{kind} lookup: {e}")),
        }
    }
    match (found.is_empty(), failure) {
        (false, _) => Ok(found),
        (true, Some(e)) => Err(format!("{name}: {e}")),
        (true, None) => Err(format!("{name}: no address in {HOSTS_FILE} or the DNS")),
    }
}

fn as_ips<T>(answer: Answer<T>, ip: fn(T) -> IpAddr) -> Result<Vec<IpAddr>, String> {
    match answer {
        Answer::Found(v) => Ok(v.into_iter().map(ip).collect()),
        Answer::Void => Ok(Vec::new()),
        Answer::Failed(e) => Err(e),
    }
}

/// The addresses of `name` with this host's hosts file and resolver configuration.
pub fn resolve(name: &str, retransmit: Duration, deadline: Instant) -> Result<Vec<IpAddr>, String> {
    let hosts = std::fs::read_to_string(HOSTS_FILE).unwrap_or_default();
    let listed = hosts_lookup(&hosts, name);
    if !listed.is_empty() {
        return Ok(listed);
    }
    let settings = DnsSettings {
        server: None,
        retransmit,
        deadline: deadline.saturating_duration_since(Instant::now()),
    };
    let dns = DnsClient::new(&settings).map_err(|e| format!("{name}: {e}"))?;
    lookup(name, &hosts, &dns, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_lines() {
        let hosts = "127.0.0.1\tlocalhost\n\
                     # 192.0.2.1 redis.example\n\
                     ::1 localhost ip6-localhost\n\
                     192.0.2.20  redis.example.  redis # the shared greylist\n\
                     not-an-ip redis.example\n\
                     2001:db8::20 Redis.Example\n\
                     192.0.2.20 redis.example\n\
                     192.0.2.21 redis.example.org\n";
        let ips = |s: &[&str]| {
            s.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        assert_eq!(
            hosts_lookup(hosts, "redis.example"),
            ips(&["192.0.2.20", "2001:db8::20"])
        );
        assert_eq!(
            hosts_lookup(hosts, "REDIS.example."),
            hosts_lookup(hosts, "redis.example")
        );
        assert_eq!(hosts_lookup(hosts, "redis"), ips(&["192.0.2.20"]));
        assert_eq!(hosts_lookup(hosts, "localhost"), ips(&["127.0.0.1", "::1"]));
        assert!(hosts_lookup(hosts, "example").is_empty());
        assert!(hosts_lookup("", "redis.example").is_empty());
    }
}
