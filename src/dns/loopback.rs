//! Whether a nameserver's UDP sockets may serve more than one query: who, on this system,
//! can send datagrams from the nameserver's address and port; and the binding that keeps
//! such a socket to datagrams that came through the loopback interface.
//!
//! A connected UDP socket receives only datagrams from the address and port it is connected
//! to. A fresh socket per query (a source port drawn for it, RFC 5452) is there against
//! forgers who can send from that address; where no one can but the nameserver itself and
//! processes allowed to bind privileged ports (root, or CAP_NET_BIND_SERVICE, container root
//! in the same network namespace included: they could answer in its place anyway), a kept
//! socket is as safe, and its ID, random case and question are still checked. That holds
//! for a loopback address at a port below `net.ipv4.ip_unprivileged_port_start` (per
//! network namespace, IPv6 included), for datagrams that came through the loopback
//! interface: a host that routes 127/8 from the wire (`route_localnet`, which some
//! container network set-ups turn on) would take forged ones on other interfaces, so a kept
//! socket is bound to the loopback interface (`SO_BINDTOIFINDEX`, one system call when it
//! is kept) rather than every interface's setting read (a directory of /proc and a file per
//! interface: some 40 µs before a spawned instance's first reply). Whatever cannot be read
//! or set counts as the unsafe answer.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Where the first port an unprivileged process may bind is set.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// The loopback interface's index, the same in every network namespace.
const LOOPBACK_IFINDEX: libc::c_int = 1;

/// The first port an unprivileged process may bind, as the system says; 0 (nothing is
/// kept) when it cannot be read. One read into a small buffer: `read_to_string` would add a
/// stat and a second read.
pub fn unprivileged_port_start() -> u16 {
    let mut buffer = [0u8; 16];
    let Ok(length) =
        std::fs::File::open(UNPRIVILEGED_PORT_START).and_then(|mut file| file.read(&mut buffer))
    else {
        return 0;
    };
    std::str::from_utf8(&buffer[..length])
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a socket connected to `server` may serve more than one query where ports below
/// `unprivileged_port_start` are privileged (once bound to the loopback interface).
pub fn keeps_sockets(server: SocketAddr, unprivileged_port_start: u16) -> bool {
    // An IPv4-mapped ::ffff:127.0.0.1 is not taken for loopback: nothing is kept for it.
    server.ip().is_loopback() && server.port() < unprivileged_port_start
}

/// Binds `socket` to the loopback interface, so that it receives only datagrams that came
/// through it. Unprivileged since Linux 5.7 for a socket not bound to an interface yet.
pub fn bind_to_loopback(socket: &UdpSocket) -> std::io::Result<()> {
    let index = LOOPBACK_IFINDEX;
    // SAFETY: the option value is a c_int that lives across the call, its size given.
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            (&raw const index).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn sockets_are_kept_only_where_no_one_else_can_answer() {
        assert!(keeps_sockets(at("127.0.0.1:53"), 1024));
        assert!(keeps_sockets(at("127.0.0.53:53"), 1024));
        assert!(keeps_sockets(at("[::1]:53"), 1024));
        // A port any process may bind, or a system where any process may bind any port.
        assert!(!keeps_sockets(at("127.0.0.1:5353"), 1024));
        assert!(!keeps_sockets(at("127.0.0.1:53"), 53));
        assert!(!keeps_sockets(at("[::1]:53"), 0));
        // Off the host, a forger need not be on it.
        assert!(!keeps_sockets(at("192.0.2.53:53"), 1024));
        assert!(!keeps_sockets(at("[2001:db8::53]:53"), 1024));
        assert!(!keeps_sockets(at("0.0.0.0:53"), 1024));
        assert!(!keeps_sockets(at("[::ffff:127.0.0.1]:53"), 1024));
    }

    /// On this machine the file is there and read as the kernel wrote it.
    #[test]
    fn the_port_start_is_read_from_the_system() {
        let text = std::fs::read_to_string(UNPRIVILEGED_PORT_START).unwrap();
        assert_eq!(
            unprivileged_port_start(),
            text.trim().parse::<u16>().unwrap()
        );
    }

    /// A bound socket names the loopback interface as its device, and still talks to a
    /// loopback peer.
    #[test]
    fn a_socket_bound_to_loopback_says_so_and_works() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(peer.local_addr().unwrap()).unwrap();
        bind_to_loopback(&socket).unwrap();
        let mut name = [0u8; 16];
        let mut length = name.len() as libc::socklen_t;
        // SAFETY: the buffer and its length are valid for writes for the call.
        let status = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_mut_ptr().cast(),
                &mut length,
            )
        };
        assert_eq!(status, 0);
        let name = std::ffi::CStr::from_bytes_until_nul(&name).unwrap();
        assert_eq!(name.to_str().unwrap(), "lo");
        socket.send(b"q").unwrap();
        let mut buffer = [0u8; 4];
        let (length, from) = peer.recv_from(&mut buffer).unwrap();
        assert_eq!((length, from), (1, socket.local_addr().unwrap()));
        peer.send_to(b"a", from).unwrap();
        assert_eq!(socket.recv(&mut buffer).unwrap(), 1);
    }
}
