//! IP networks: parsing `addr/len` lists, membership, and the prefix a client is grouped by.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4 clients for every purpose here:
//! every address is taken through `IpAddr::to_canonical` before it is compared or keyed.

use std::net::IpAddr;
use std::str::FromStr;

/// A network in CIDR notation; a plain address is a host network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    len: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask_v4(u32::from(a), self.len) == mask_v4(u32::from(n), self.len)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                mask_v6(u128::from(a), self.len) == mask_v6(u128::from(n), self.len)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        // Postfix writes IPv6 networks as [addr]/len; accept both spellings.
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr = IpAddr::from_str(a)
            .map_err(|_| format!("bad network address {s:?}"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && l.len() <= 3 => l
                .parse::<u8>()
                .map_err(|_| format!("bad prefix length in {s:?}"))?,
            Some(_) => return Err(format!("bad prefix length in {s:?}")),
            None => max,
        };
        if len > max {
            return Err(format!("prefix length over {max} in {s:?}"));
        }
        Ok(Network { addr, len })
    }
}

fn mask_v4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask_v6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

/// The client part of a greylisting triplet: the network of `ip` with the given prefix
/// lengths, written as `addr/len`, or the bare address for a full-length prefix.
pub fn client_network(ip: IpAddr, v4_len: u8, v6_len: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let len = v4_len.min(32);
            let net = std::net::Ipv4Addr::from(mask_v4(u32::from(a), len));
            if len == 32 {
                net.to_string()
            } else {
                format!("{net}/{len}")
            }
        }
        IpAddr::V6(a) => {
            let len = v6_len.min(128);
            let net = std::net::Ipv6Addr::from(mask_v6(u128::from(a), len));
            if len == 128 {
                net.to_string()
            } else {
                format!("{net}/{len}")
            }
        }
    }
}

/// Splits a list whose items are separated by commas and/or white space, the way
/// Postfix reads list parameters.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
}

/// Parses a list of networks separated by commas and/or white space.
pub fn parse_list(s: &str) -> Result<Vec<Network>, String> {
    split_list(s).map(Network::from_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn groups_by_prefix() {
        assert_eq!(client_network(ip("192.0.2.77"), 24, 64), "192.0.2.0/24");
        assert_eq!(client_network(ip("192.0.2.77"), 32, 64), "192.0.2.77");
        assert_eq!(
            client_network(ip("::ffff:192.0.2.77"), 24, 64),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_network(ip("2001:db8:1:2:3:4:5:6"), 24, 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(client_network(ip("2001:db8::1"), 24, 128), "2001:db8::1");
    }

    #[test]
    fn membership_and_parsing() {
        let nets = parse_list("127.0.0.0/8, ::1/128 [2001:db8::]/32").unwrap();
        assert!(nets[0].contains(ip("127.1.2.3")));
        assert!(nets[0].contains(ip("::ffff:127.0.0.1")));
        assert!(!nets[0].contains(ip("128.0.0.1")));
        assert!(nets[1].contains(ip("::1")));
        assert!(nets[2].contains(ip("2001:db8:ffff::1")));
        assert!(!nets[2].contains(ip("2001:db9::1")));
        assert_eq!(nets[2].to_string(), "2001:db8::/32");
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("10.0.0.0/x".parse::<Network>().is_err());
        assert!("10.0.0.0/".parse::<Network>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Network>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
    }
}
