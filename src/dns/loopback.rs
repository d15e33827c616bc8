//! Whether a nameserver's UDP sockets may serve more than one query: who, on this system,
//! can send datagrams from the nameserver's address and port.
//!
//! A connected UDP socket receives only datagrams from the address and port it is connected
//! to. A fresh socket per query (a source port drawn for it, RFC 5452) is there against
//! forgers who can send from that address; where no one can but the nameserver itself and
//! processes allowed to bind privileged ports (root, or CAP_NET_BIND_SERVICE, container root
//! in the same network namespace included: they could answer in its place anyway), a kept
//! socket is as safe, and its ID, random case and question are still checked. That holds
//! for a loopback address, which nothing off the host can send from, at a port below
//! `net.ipv4.ip_unprivileged_port_start` (per network namespace, IPv6 included), unless an
//! interface takes IPv4 127/8 packets from the wire (`route_localnet`, which some container
//! network set-ups turn on): then nothing is kept for IPv4. Whatever cannot be read counts
//! as the unsafe answer.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Where the first port an unprivileged process may bind is set.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Where each interface's `route_localnet` is (and `all`, `default`).
const IPV4_CONF: &str = "/proc/sys/net/ipv4/conf";

/// What the system says about who can send from a loopback address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loopback {
    /// The first port an unprivileged process may bind.
    pub unprivileged_port_start: u16,
    /// Some interface takes IPv4 packets from and to 127/8 off the wire.
    pub ipv4_routed: bool,
}

impl Loopback {
    /// The answer that keeps nothing.
    pub const EXPOSED: Loopback = Loopback {
        unprivileged_port_start: 0,
        ipv4_routed: true,
    };

    /// As the system says now.
    pub fn read() -> Loopback {
        Loopback {
            unprivileged_port_start: read_number(Path::new(UNPRIVILEGED_PORT_START))
                .and_then(|start| u16::try_from(start).ok())
                .unwrap_or(0),
            ipv4_routed: !every_route_localnet_off(),
        }
    }
}

/// Whether every interface's `route_localnet` (and `all`'s, `default`'s) reads 0; false when
/// one cannot be read.
fn every_route_localnet_off() -> bool {
    let Ok(entries) = std::fs::read_dir(IPV4_CONF) else {
        return false;
    };
    entries.into_iter().all(|entry| {
        entry.is_ok_and(|entry| read_number(&entry.path().join("route_localnet")) == Some(0))
    })
}

/// The number a sysctl file holds, read with one read into a small buffer: this runs
/// before a spawned instance's first reply, where `read_to_string` would add a stat and a
/// second read to each file (5 system calls a file instead of 3).
fn read_number(path: &Path) -> Option<u32> {
    let mut buffer = [0u8; 16];
    let length = std::fs::File::open(path).ok()?.read(&mut buffer).ok()?;
    std::str::from_utf8(&buffer[..length])
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a socket connected to `server` may serve more than one query on a system where
/// `loopback` holds.
pub fn keeps_sockets(server: SocketAddr, loopback: Loopback) -> bool {
    let reachable_only_here = match server.ip() {
        IpAddr::V4(ip) => ip.is_loopback() && !loopback.ipv4_routed,
        // The kernel drops ::1 from the wire whatever the settings.
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    reachable_only_here && server.port() < loopback.unprivileged_port_start
}

#[cfg(test)]
mod tests {
    use super::*;

    const USUAL: Loopback = Loopback {
        unprivileged_port_start: 1024,
        ipv4_routed: false,
    };

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn sockets_are_kept_only_where_no_one_else_can_answer() {
        assert!(keeps_sockets(at("127.0.0.1:53"), USUAL));
        assert!(keeps_sockets(at("127.0.0.53:53"), USUAL));
        assert!(keeps_sockets(at("[::1]:53"), USUAL));
        // A port any process may bind, or a system where any process may bind any port.
        assert!(!keeps_sockets(at("127.0.0.1:5353"), USUAL));
        let low = |start| Loopback {
            unprivileged_port_start: start,
            ..USUAL
        };
        assert!(!keeps_sockets(at("127.0.0.1:53"), low(53)));
        assert!(!keeps_sockets(at("[::1]:53"), low(0)));
        // Off the host, a forger need not be on it.
        assert!(!keeps_sockets(at("192.0.2.53:53"), USUAL));
        assert!(!keeps_sockets(at("[2001:db8::53]:53"), USUAL));
        assert!(!keeps_sockets(at("0.0.0.0:53"), USUAL));
        assert!(!keeps_sockets(at("[::ffff:127.0.0.1]:53"), USUAL));
        // 127/8 routed from the wire: IPv4 loopback is reachable from the link, ::1 is not.
        let routed = Loopback {
            ipv4_routed: true,
            ..USUAL
        };
        assert!(!keeps_sockets(at("127.0.0.1:53"), routed));
        assert!(keeps_sockets(at("[::1]:53"), routed));
        // Nothing read: nothing kept.
        for server in ["127.0.0.1:53", "[::1]:53"] {
            assert!(!keeps_sockets(at(server), Loopback::EXPOSED));
        }
    }

    /// On this machine the files are there and read as the kernel wrote them.
    #[test]
    fn the_settings_are_read_from_the_system() {
        let read = Loopback::read();
        let start: u16 = std::fs::read_to_string(UNPRIVILEGED_PORT_START)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(read.unprivileged_port_start, start);
        let all = std::fs::read_to_string(format!("{IPV4_CONF}/all/route_localnet")).unwrap();
        if all.trim() != "0" {
            assert!(read.ipv4_routed);
        }
    }
}
