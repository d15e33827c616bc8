//! The UDP fast path of SPF lookups: one query, one datagram from a socket of its own, sent
//! again after a short interval while no answer comes; everything it cannot finish (a
//! truncated answer, no UDP nameserver) goes to mail-auth's resolver.
//!
//! Why not the resolver: through it every query built and dropped a socket and a stack of
//! futures, about 27 µs of CPU a query on the benchmark machine, two thirds of an SPF
//! instance's time. Here a query costs a socket, one send and one receive, and the messages
//! are still built and read by hickory-proto.
//!
//! What a stub resolver must check against forged answers (RFC 5452) is checked: the answer
//! comes from the nameserver's address and port (each socket is connected, so the kernel
//! drops anything else), it is a response, its ID is the query's (random, 16 bits) and its
//! question is the query's: type, class and the name with the random case the query was
//! sent in ("0x20", compared case-sensitively), so that a forger must also guess a bit per
//! letter of the name. Each try goes out from a fresh socket, so that its source port is
//! one the system drew at random for it. A datagram that fails a check is dropped and the
//! wait goes on.
//!
//! One exception, where a fresh port protects nothing: a nameserver on a loopback address
//! at a privileged port, which only it (or a process allowed to bind such ports) can send
//! from (`loopback` says when that holds). There a socket whose query was answered is kept
//! for the next query, bound to the loopback interface, its ID, case and question still
//! checked: that saves the socket, connect and close of most queries (a fifth of greyspf's
//! CPU a request on the benchmark's scoring stream; little at start-up, where a first
//! request's queries are in flight together, each on a socket of its own). A socket that
//! brought an error, a timeout or no answer is never kept, so a kept one carries no query
//! of ours and no error of one.
//!
//! A fresh socket costs a few system calls (socket, connect, close; it is created
//! non-blocking and bound by the connect): several µs of CPU a query on a loaded benchmark
//! machine. So that it costs no more, the query is sent and its answer first looked for on
//! the plain socket; only when nothing has come yet is the socket handed to the runtime's
//! reactor to wait on (a socket registered only now would otherwise first wait for the
//! reactor to report it writable, then readable). A kept socket is taken off the reactor
//! again when it is kept, and is read the same way.
//!
//! Retransmission: a lost datagram must not cost seconds. The first copy waits
//! `retransmit`, each next one twice as long as the one before, taking the nameservers in
//! turn, until the deadline the caller gives (the identity's). Earlier tries keep listening:
//! a late answer to any of them is as good as the newest's.

use std::cell::{OnceCell, RefCell};
use std::future::poll_fn;
use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::Poll;
use std::time::Duration;

use mail_auth::hickory_resolver::config::{ProtocolConfig, ResolverConfig};
use mail_auth::hickory_resolver::proto::op::{
    Edns, Message, MessageType, OpCode, Query, ResponseCode,
};
use mail_auth::hickory_resolver::proto::rr::{DNSClass, Name, RecordType};
use tokio::io::ReadBuf;
use tokio::time::Instant;

use super::loopback::{bind_to_loopback, keeps_sockets, unprivileged_port_start};

/// The EDNS UDP payload size advertised (the DNS flag day 2020 value): large enough for
/// nearly every SPF record, small enough to avoid IP fragmentation.
const UDP_PAYLOAD: u16 = 1232;

/// The largest UDP payload there can be.
const MAX_DATAGRAM: usize = 65_535;

/// What one query over UDP gave.
#[derive(Debug)]
pub enum Reply {
    /// A response with RCODE NOERROR or NXDOMAIN.
    Answer(Message),
    /// The answer did not fit: ask again over TCP (the resolver does).
    Truncated,
    /// No usable answer from any nameserver before the deadline.
    Failed(String),
}

/// One copy of a query in flight: its socket, and what its answer must repeat.
struct Try {
    server: usize,
    socket: Socket,
    id: u16,
    /// The name as sent, in its random case.
    name: Name,
    /// The socket was a kept one (so already bound to the loopback interface).
    reused: bool,
}

/// A try's socket: read directly, and handed to the reactor only once there is a wait.
enum Socket {
    Plain(UdpSocket),
    Watched(tokio::net::UdpSocket),
}

impl Socket {
    /// The socket, registered with the reactor.
    fn watched(self) -> std::io::Result<Socket> {
        match self {
            Socket::Plain(socket) => tokio::net::UdpSocket::from_std(socket).map(Socket::Watched),
            watched => Ok(watched),
        }
    }
}

/// The nameservers' UDP addresses and the retransmission interval.
pub struct UdpTransport {
    servers: Vec<SocketAddr>,
    /// How long the first copy of a query waits for its answer before the next is sent.
    retransmit: Duration,
    /// Where answers are received: as large as a datagram can be, so that an answer bigger
    /// than the size offered (a server may ignore it) is read whole rather than cut. One per
    /// process, borrowed only while a datagram is read and copied out, never across an
    /// await: the queries of one evaluation are in flight together, and a buffer held by
    /// each would cost every one of them 64 kB to allocate. Never cleared: its length stays
    /// 0 and datagrams are written into its spare capacity, so that only the pages answers
    /// reach are ever touched (clearing it cost every instance 9 page faults, some 30 µs,
    /// before its first reply).
    buffer: RefCell<Vec<u8>>,
    /// Per nameserver: whether its sockets serve more than one query (`keeps_sockets`),
    /// decided on the first answer (a process that asks nothing reads no sysctl).
    keep: OnceCell<Vec<bool>>,
    /// Per nameserver: sockets whose query was answered, for the next queries.
    kept: RefCell<Vec<Vec<UdpSocket>>>,
}

/// The most sockets kept per nameserver: as many as the queries of one evaluation that are
/// in flight together, about.
const KEPT_PER_SERVER: usize = 16;

/// Where one query stands: the copies in flight, the nameservers that answered with an
/// error, and when the next copy is due.
struct Exchange {
    tries: Vec<Try>,
    /// Per nameserver: it answered with an error or refused the datagram.
    failed: Vec<bool>,
    /// Copies sent so far.
    sent: usize,
    /// The nameserver whose turn it is.
    turn: usize,
    next_send: Instant,
    interval: Duration,
    last_error: String,
}

impl Exchange {
    fn too_late(&self) -> Reply {
        Reply::Failed(format!(
            "no answer to {} queries within the deadline ({})",
            self.sent, self.last_error
        ))
    }

    /// Hands the tries' sockets to the reactor to wait on; a try whose socket cannot be
    /// registered is given up.
    fn watch_all(&mut self) {
        let tries = std::mem::take(&mut self.tries);
        for mut attempt in tries {
            match attempt.socket.watched() {
                Ok(socket) => {
                    attempt.socket = socket;
                    self.tries.push(attempt);
                }
                Err(e) => self.last_error = format!("cannot wait for an answer: {e}"),
            }
        }
    }
}

impl UdpTransport {
    /// The UDP nameservers of `config`, in order.
    pub fn new(config: &ResolverConfig, retransmit: Duration) -> UdpTransport {
        let servers: Vec<SocketAddr> = config
            .name_servers()
            .iter()
            .filter_map(|server| {
                server
                    .connections
                    .iter()
                    .find(|c| matches!(c.protocol, ProtocolConfig::Udp))
                    .map(|c| SocketAddr::new(server.ip, c.port))
            })
            .collect();
        let count = servers.len();
        UdpTransport {
            servers,
            // Zero would send a copy on every turn of the loop.
            retransmit: retransmit.max(Duration::from_millis(1)),
            buffer: RefCell::new(Vec::new()),
            keep: OnceCell::new(),
            kept: RefCell::new(std::iter::repeat_with(Vec::new).take(count).collect()),
        }
    }

    /// Whether nameserver `index`'s sockets are kept.
    fn keeps(&self, index: usize) -> bool {
        let keep = self.keep.get_or_init(|| {
            // The system is asked only where a nameserver is on loopback: no other is kept.
            let start = if self.servers.iter().any(|s| s.ip().is_loopback()) {
                unprivileged_port_start()
            } else {
                0
            };
            self.servers
                .iter()
                .map(|&server| keeps_sockets(server, start))
                .collect()
        });
        keep[index]
    }

    /// Keeps the socket of a try that was answered, where its nameserver's are kept.
    fn keep_socket(&self, attempt: Try) {
        if !self.keeps(attempt.server) {
            return;
        }
        let socket = match attempt.socket {
            Socket::Plain(socket) => socket,
            // Taken off the reactor again: a kept socket is read directly first, like a new one.
            Socket::Watched(socket) => match socket.into_std() {
                Ok(socket) => socket,
                Err(_) => return,
            },
        };
        let mut kept = self.kept.borrow_mut();
        // Bound once, when first kept (a kept socket is already bound: binding it again
        // would need a privilege); a socket the kernel will not bind is not kept.
        if kept[attempt.server].len() < KEPT_PER_SERVER
            && (attempt.reused || bind_to_loopback(&socket).is_ok())
        {
            kept[attempt.server].push(socket);
        }
    }

    /// True when there is a nameserver to ask over UDP.
    pub fn usable(&self) -> bool {
        !self.servers.is_empty()
    }

    /// Asks the nameservers for `name` until one answers or `deadline` passes.
    pub async fn query(&self, name: &Name, record_type: RecordType, deadline: Instant) -> Reply {
        let mut state = Exchange {
            tries: Vec::new(),
            failed: vec![false; self.servers.len()],
            sent: 0,
            turn: 0,
            next_send: Instant::now(),
            interval: self.retransmit,
            last_error: String::from("no nameserver to ask"),
        };
        loop {
            if state.failed.iter().all(|&failed| failed) {
                return Reply::Failed(state.last_error);
            }
            let now = Instant::now();
            // Checked here too: a stream of datagrams that fail the checks is read without
            // a wait, where the timeout below would never fire.
            if now >= deadline {
                return state.too_late();
            }
            if now >= state.next_send {
                self.send_next(&mut state, name, record_type);
                continue;
            }
            // What has come already is read without the reactor.
            if let Some((index, received)) = self.with_buffer(|b| read_any(&state.tries, b)) {
                if let Some(reply) = self.take(&mut state, index, received, record_type) {
                    return reply;
                }
                continue;
            }
            state.watch_all();
            let until = state.next_send.min(deadline);
            let Ok((index, received)) =
                tokio::time::timeout_at(until, self.receive_any(&state.tries)).await
            else {
                if until == deadline {
                    return state.too_late();
                }
                continue;
            };
            if let Some(reply) = self.take(&mut state, index, received, record_type) {
                return reply;
            }
        }
    }

    /// Runs `read` on the receive buffer's uninitialised room, allocated on first use.
    fn with_buffer<R>(&self, read: impl FnOnce(&mut [MaybeUninit<u8>]) -> R) -> R {
        let mut buffer = self.buffer.borrow_mut();
        if buffer.capacity() < MAX_DATAGRAM {
            buffer.reserve_exact(MAX_DATAGRAM);
        }
        read(buffer.spare_capacity_mut())
    }

    /// The first datagram (or receive error) the reactor reports on a watched socket of
    /// `tries`: the try's index and a copy of the datagram. Never ready without one.
    async fn receive_any(&self, tries: &[Try]) -> (usize, std::io::Result<Vec<u8>>) {
        poll_fn(|context| {
            self.with_buffer(|buffer| {
                for (index, attempt) in tries.iter().enumerate() {
                    let Socket::Watched(socket) = &attempt.socket else {
                        continue;
                    };
                    let mut read = ReadBuf::uninit(&mut *buffer);
                    match socket.poll_recv(context, &mut read) {
                        Poll::Ready(Ok(())) => {
                            return Poll::Ready((index, Ok(read.filled().to_vec())));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready((index, Err(e))),
                        Poll::Pending => {}
                    }
                }
                Poll::Pending
            })
        })
        .await
    }

    /// What a datagram (or a receive error) on try `index` means: the reply, or None to
    /// wait on.
    fn take(
        &self,
        state: &mut Exchange,
        index: usize,
        received: std::io::Result<Vec<u8>>,
        record_type: RecordType,
    ) -> Option<Reply> {
        let attempt = &state.tries[index];
        let server = self.servers[attempt.server];
        let error = match received {
            // Mostly an ICMP port unreachable, reported on the connected socket.
            Err(e) => format!("receiving from {server}: {e}"),
            Ok(datagram) => {
                let response = Message::from_vec(&datagram).ok()?;
                if !answers(&response, attempt.id, &attempt.name, record_type) {
                    return None;
                }
                let code = response.metadata.response_code;
                let reply = if response.metadata.truncation {
                    Reply::Truncated
                } else if matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
                    Reply::Answer(response)
                } else {
                    return self.give_up(state, index, format!("{server} answered {code}"));
                };
                self.keep_socket(state.tries.swap_remove(index));
                return Some(reply);
            }
        };
        self.give_up(state, index, error)
    }

    /// Try `index`'s nameserver will not do (`error`): the next is asked at once, if there
    /// is one. None: there is still something to wait for.
    fn give_up(&self, state: &mut Exchange, index: usize, error: String) -> Option<Reply> {
        let attempt = state.tries.swap_remove(index);
        state.failed[attempt.server] = true;
        state.last_error = error;
        state.next_send = Instant::now();
        None
    }

    /// Sends the next copy of the query, to the next nameserver that has not failed, and
    /// sets when the one after is due.
    fn send_next(&self, state: &mut Exchange, name: &Name, record_type: RecordType) {
        let count = self.servers.len();
        let Some(index) = (0..count)
            .map(|step| (state.turn + step) % count)
            .find(|&index| !state.failed[index])
        else {
            return;
        };
        state.turn = index + 1;
        let now = Instant::now();
        match self.send(index, name, record_type) {
            Ok(attempt) => {
                state.sent += 1;
                state.tries.push(attempt);
                state.next_send = now + state.interval;
                state.interval = state.interval.saturating_mul(2);
            }
            Err(error) => {
                // Unreachable now: the next nameserver is asked at once.
                state.failed[index] = true;
                state.last_error = error;
            }
        }
    }

    /// Sends one copy of the query for `name` to nameserver `index`, from a kept socket if
    /// there is one, else from a fresh one.
    fn send(&self, index: usize, name: &Name, record_type: RecordType) -> Result<Try, String> {
        let server = self.servers[index];
        let kept = self.kept.borrow_mut()[index].pop();
        // A kept socket that cannot send (an error left by a late datagram) is dropped for a
        // fresh one.
        if let Some(mut attempt) =
            kept.and_then(|socket| send_on(socket, server, index, name, record_type).ok())
        {
            attempt.reused = true;
            return Ok(attempt);
        }
        let socket =
            open(server).map_err(|e| format!("cannot open a UDP socket to {server}: {e}"))?;
        send_on(socket, server, index, name, record_type)
    }
}

/// Sends one copy of the query for `name`, in a random case, with a random ID, on `socket`,
/// connected to `server` (nameserver number `index`).
fn send_on(
    socket: UdpSocket,
    server: SocketAddr,
    index: usize,
    name: &Name,
    record_type: RecordType,
) -> Result<Try, String> {
    let mut name = name.clone();
    name.randomize_label_case();
    let query = build_query(&name, record_type);
    let id = query.metadata.id;
    let bytes = query
        .to_vec()
        .map_err(|e| format!("cannot encode the query for {name}: {e}"))?;
    // The socket's send buffer holds nothing else of ours: a datagram this small does not
    // wait.
    socket
        .send(&bytes)
        .map_err(|e| format!("sending to {server}: {e}"))?;
    Ok(Try {
        server: index,
        socket: Socket::Plain(socket),
        id,
        name,
        reused: false,
    })
}

/// The first datagram (or receive error) already there on a plain socket of `tries`, read
/// directly into `buffer`: the try's index and a copy of the datagram; None when nothing
/// has come.
fn read_any(
    tries: &[Try],
    buffer: &mut [MaybeUninit<u8>],
) -> Option<(usize, std::io::Result<Vec<u8>>)> {
    tries
        .iter()
        .enumerate()
        .find_map(|(index, attempt)| match &attempt.socket {
            Socket::Plain(socket) => match receive(socket, buffer) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                received => Some((index, received)),
            },
            Socket::Watched(_) => None,
        })
}

/// One datagram from `socket`, read into `buffer` without clearing it first (the standard
/// library's `recv` takes only initialised memory) and copied out.
fn receive(socket: &UdpSocket, buffer: &mut [MaybeUninit<u8>]) -> std::io::Result<Vec<u8>> {
    // SAFETY: recv writes at most `buffer.len()` bytes into the buffer, which is valid for
    // writes of that length, and returns how many it wrote or -1.
    let length = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            0,
        )
    };
    let length = usize::try_from(length).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: the first `length` bytes were written by recv just above.
    let datagram = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), length) };
    Ok(datagram.to_vec())
}

/// A non-blocking UDP socket connected to `server`, from an ephemeral port the system
/// picks at random. It is created non-blocking and bound by the connect itself, where the
/// port is drawn exactly as for a bind to port 0: two system calls fewer for every query.
fn open(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let family = match server {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let kind = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain arguments; the descriptor returned is owned at once below.
    let fd = unsafe { libc::socket(family, kind, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    socket.connect(server)?;
    Ok(socket)
}

/// A recursive query for `name`, with a random ID and EDNS.
pub fn build_query(name: &Name, record_type: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    message.set_edns(edns);
    message
}

/// Whether `response` is the answer to the query with `id` for `name` (as sent: its case
/// must come back unchanged) and `record_type`.
pub fn answers(response: &Message, id: u16, name: &Name, record_type: RecordType) -> bool {
    response.metadata.id == id
        && response.metadata.message_type == MessageType::Response
        && response.metadata.op_code == OpCode::Query
        && matches!(response.queries.as_slice(), [question]
            if question.name().eq_case(name)
                && question.query_type() == record_type
                && question.query_class() == DNSClass::IN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::hickory_resolver::proto::rr::rdata::A;
    use mail_auth::hickory_resolver::proto::rr::{RData, Record};

    fn name(text: &str) -> Name {
        Name::from_labels(text.split('.').map(str::as_bytes)).unwrap()
    }

    fn response_to(query: &Message) -> Message {
        let mut response = Message::response(query.metadata.id, OpCode::Query);
        response.add_queries(query.queries.clone());
        response.add_answer(Record::from_rdata(
            query.queries[0].name().clone(),
            300,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        response
    }

    #[test]
    fn a_response_must_match_id_type_and_question() {
        let query = build_query(&name("example.org"), RecordType::A);
        let id = query.metadata.id;
        let good = response_to(&query);
        assert!(answers(&good, id, &name("example.org"), RecordType::A));
        // The case the name was sent in must come back (0x20).
        assert!(!answers(&good, id, &name("EXAMPLE.org"), RecordType::A));
        assert!(!answers(
            &good,
            id.wrapping_add(1),
            &name("example.org"),
            RecordType::A
        ));
        assert!(!answers(&good, id, &name("example.net"), RecordType::A));
        assert!(!answers(&good, id, &name("example.org"), RecordType::TXT));
        // A query echoed back is not an answer.
        assert!(!answers(&query, id, &name("example.org"), RecordType::A));
        let mut two_questions = good.clone();
        two_questions.add_queries(query.queries.clone());
        assert!(!answers(
            &two_questions,
            id,
            &name("example.org"),
            RecordType::A
        ));
    }

    /// Each try's socket: connected, non-blocking, on a port of its own that the system
    /// drew (bound by the connect, not by a bind of ours).
    #[test]
    fn a_fresh_socket_is_connected_non_blocking_and_on_a_port_of_its_own() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let a = open(to).unwrap();
        let b = open(to).unwrap();
        for s in [&a, &b] {
            assert_eq!(s.peer_addr().unwrap(), to);
            assert_eq!(
                s.recv(&mut [0; 16]).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
        }
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        assert!(pa.port() != 0 && pa.port() != pb.port(), "{pa} {pb}");
        a.send(b"x").unwrap();
        let mut buf = [0; 4];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (1, pa));
    }

    #[test]
    fn queries_ask_for_recursion_with_edns() {
        let query = build_query(&name("example.org"), RecordType::TXT);
        let wire = query.to_vec().unwrap();
        let read = Message::from_vec(&wire).unwrap();
        assert!(read.metadata.recursion_desired);
        assert_eq!(read.max_payload(), UDP_PAYLOAD);
        assert_eq!(read.queries.len(), 1);
        assert_eq!(read.queries[0].query_type(), RecordType::TXT);
    }

    #[test]
    fn nameservers_are_taken_in_order_with_their_udp_ports() {
        use mail_auth::hickory_resolver::config::NameServerConfig;
        let mut first = NameServerConfig::udp_and_tcp("192.0.2.53".parse().unwrap());
        for connection in &mut first.connections {
            connection.port = 5353;
        }
        let second = NameServerConfig::udp_and_tcp("2001:db8::53".parse().unwrap());
        let config = ResolverConfig::from_name_servers(vec![first, second]);
        let transport = UdpTransport::new(&config, Duration::from_millis(400));
        assert_eq!(
            transport.servers,
            vec![
                "192.0.2.53:5353".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(transport.retransmit, Duration::from_millis(400));
        assert!(transport.usable());
    }

    /// A nameserver on loopback for these tests: it logs the queries it receives, and
    /// answers them with `rcode` (or not at all), the question echoed as received.
    struct Server {
        addr: SocketAddr,
        seen: Seen,
    }

    /// When each query came, its name and the port it came from.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, Name, u16)>>>;

    impl Server {
        fn start(rcode: Option<ResponseCode>) -> Server {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            Server::serve(socket, rcode, Duration::ZERO, 1)
        }

        /// Serves on `socket`: each answer sent `copies` times, after `delay`.
        fn serve(
            socket: std::net::UdpSocket,
            rcode: Option<ResponseCode>,
            delay: Duration,
            copies: usize,
        ) -> Server {
            socket
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let addr = socket.local_addr().unwrap();
            let seen = Seen::default();
            let log = std::sync::Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 512];
                while let Ok((length, peer)) = socket.recv_from(&mut buffer) {
                    let query = Message::from_vec(&buffer[..length]).unwrap();
                    let name = query.queries[0].name().clone();
                    let at = std::time::Instant::now();
                    log.lock().unwrap().push((at, name, peer.port()));
                    if let Some(rcode) = rcode {
                        let mut response = response_to(&query);
                        response.metadata.response_code = rcode;
                        std::thread::sleep(delay);
                        for _ in 0..copies {
                            socket.send_to(&response.to_vec().unwrap(), peer).unwrap();
                        }
                    }
                }
            });
            Server { addr, seen }
        }

        fn queries(&self) -> Vec<(std::time::Instant, Name, u16)> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn transport(servers: &[&Server], retransmit: Duration) -> UdpTransport {
        use mail_auth::hickory_resolver::config::NameServerConfig;
        let configs = servers
            .iter()
            .map(|server| {
                let mut config = NameServerConfig::udp_and_tcp(server.addr.ip());
                for connection in &mut config.connections {
                    connection.port = server.addr.port();
                }
                config
            })
            .collect();
        UdpTransport::new(&ResolverConfig::from_name_servers(configs), retransmit)
    }

    fn ask(transport: &UdpTransport, within: Duration) -> Reply {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let deadline = Instant::now() + within;
            transport
                .query(&name("example.org"), RecordType::A, deadline)
                .await
        })
    }

    #[test]
    fn a_query_is_sent_again_to_the_next_nameserver() {
        let silent = Server::start(None);
        let answering = Server::start(Some(ResponseCode::NoError));
        let transport = transport(&[&silent, &answering], Duration::from_millis(50));
        let reply = ask(&transport, Duration::from_secs(2));
        assert!(matches!(reply, Reply::Answer(_)), "{reply:?}");
        let (first, second) = (silent.queries(), answering.queries());
        assert_eq!((first.len(), second.len()), (1, 1));
        let waited = second[0].0 - first[0].0;
        assert!(
            waited >= Duration::from_millis(40) && waited < Duration::from_millis(500),
            "{waited:?}"
        );
    }

    #[test]
    fn an_error_answer_sends_the_query_to_the_next_nameserver_at_once() {
        let failing = Server::start(Some(ResponseCode::ServFail));
        let answering = Server::start(Some(ResponseCode::NXDomain));
        let transport = transport(&[&failing, &answering], Duration::from_secs(1));
        let started = std::time::Instant::now();
        let reply = ask(&transport, Duration::from_secs(2));
        assert!(matches!(reply, Reply::Answer(_)), "{reply:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!((failing.queries().len(), answering.queries().len()), (1, 1));
        // When every nameserver failed, the query fails at once.
        let transport = self::transport(&[&failing], Duration::from_secs(1));
        let started = std::time::Instant::now();
        let reply = ask(&transport, Duration::from_secs(2));
        assert!(
            matches!(&reply, Reply::Failed(e) if e.ends_with("answered Server Failure")),
            "{reply:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn copies_wait_twice_as_long_each_time_until_the_deadline() {
        let first = Server::start(None);
        let second = Server::start(None);
        let transport = transport(&[&first, &second], Duration::from_millis(50));
        let started = std::time::Instant::now();
        let reply = ask(&transport, Duration::from_millis(500));
        let elapsed = started.elapsed();
        assert!(
            matches!(&reply, Reply::Failed(e) if e.starts_with("no answer to 4 queries")),
            "{reply:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(800),
            "{elapsed:?}"
        );
        // Sent at 0, 50, 150 and 350 ms, in turn; each in a case of its own draw.
        let (a, b) = (first.queries(), second.queries());
        assert_eq!((a.len(), b.len()), (2, 2));
        let gaps = [b[0].0 - a[0].0, a[1].0 - b[0].0, b[1].0 - a[1].0];
        // Seen at the server, whose thread may take a few ms to get to a datagram.
        for (gap, want) in gaps.iter().zip([50, 100, 200]) {
            let want = Duration::from_millis(want);
            assert!(
                *gap + Duration::from_millis(10) >= want
                    && *gap < want + Duration::from_millis(100),
                "{gaps:?}"
            );
        }
        for (_, sent, _) in a.iter().chain(&b) {
            assert_eq!(sent, &name("example.org"));
        }
    }

    /// The source ports of `count` queries one after the other to `server`, with sockets
    /// kept or not, each answered (or failed, for an error code); and how many sockets are
    /// kept after them.
    fn queries_in_turn(server: &Server, keep: bool, count: usize) -> (Vec<u16>, usize) {
        let transport = transport(&[server], Duration::from_secs(1));
        transport.keep.set(vec![keep]).unwrap();
        for _ in 0..count {
            let reply = ask(&transport, Duration::from_secs(2));
            assert!(
                matches!(reply, Reply::Answer(_) | Reply::Failed(_)),
                "{reply:?}"
            );
        }
        let ports = server.queries().iter().map(|q| q.2).collect();
        let kept = transport.kept.borrow()[0].len();
        (ports, kept)
    }

    /// Where sockets are kept, queries one after the other go out from one port; where they
    /// are not, each from a port of its own.
    #[test]
    fn a_kept_socket_serves_the_next_query() {
        let answering = || Server::start(Some(ResponseCode::NoError));
        let (ports, kept) = queries_in_turn(&answering(), true, 5);
        assert_eq!((ports.len(), kept), (5, 1));
        assert!(ports.iter().all(|&port| port == ports[0]), "{ports:?}");
        let (ports, kept) = queries_in_turn(&answering(), false, 5);
        let distinct: std::collections::BTreeSet<&u16> = ports.iter().collect();
        assert_eq!((distinct.len(), kept), (5, 0), "{ports:?}");
    }

    /// An answer that comes after a wait (read through the reactor, each query on a runtime
    /// of its own) and one that comes twice (the copy left on the kept socket, an answer to
    /// the query before): the socket is kept all the same, and the stale copy is dropped by
    /// the next query, which takes its own answer.
    #[test]
    fn late_and_duplicate_answers_leave_the_kept_socket_usable() {
        for (delay, copies) in [(Duration::from_millis(30), 1), (Duration::ZERO, 2)] {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let server = Server::serve(socket, Some(ResponseCode::NoError), delay, copies);
            let transport = transport(&[&server], Duration::from_secs(1));
            transport.keep.set(vec![true]).unwrap();
            for _ in 0..4 {
                let reply = ask(&transport, Duration::from_secs(2));
                assert!(matches!(reply, Reply::Answer(_)), "{reply:?}");
            }
            let ports: Vec<u16> = server.queries().iter().map(|q| q.2).collect();
            assert_eq!(ports.len(), 4);
            assert!(ports.iter().all(|&port| port == ports[0]), "{ports:?}");
            assert_eq!(transport.kept.borrow()[0].len(), 1);
        }
    }

    /// A nameserver that answers with an error gives its socket up.
    #[test]
    fn a_socket_that_brought_an_error_is_not_kept() {
        let failing = Server::start(Some(ResponseCode::ServFail));
        let (ports, kept) = queries_in_turn(&failing, true, 2);
        assert_eq!((ports.len(), kept), (2, 0));
    }

    /// A kept socket with an error waiting on it (the port unreachable of a datagram sent
    /// while no one listened) fails its send: the query goes out from a fresh socket and is
    /// answered, and the broken socket is not kept again.
    #[test]
    fn a_kept_socket_that_cannot_send_is_replaced() {
        let placeholder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = placeholder.local_addr().unwrap();
        let broken = open(addr).unwrap();
        let broken_port = broken.local_addr().unwrap().port();
        drop(placeholder);
        broken.send(b"x").unwrap();
        let server = Server::serve(
            std::net::UdpSocket::bind(addr).unwrap(),
            Some(ResponseCode::NoError),
            Duration::ZERO,
            1,
        );
        let transport = transport(&[&server], Duration::from_secs(1));
        transport.keep.set(vec![true]).unwrap();
        transport.kept.borrow_mut()[0].push(broken);
        let reply = ask(&transport, Duration::from_secs(2));
        assert!(matches!(reply, Reply::Answer(_)), "{reply:?}");
        let ports: Vec<u16> = server.queries().iter().map(|q| q.2).collect();
        assert_eq!(ports.len(), 1);
        assert_ne!(ports[0], broken_port);
        let kept = transport.kept.borrow();
        assert_eq!(kept[0].len(), 1);
        assert_eq!(kept[0][0].local_addr().unwrap().port(), ports[0]);
    }

    /// At most KEPT_PER_SERVER sockets are kept; the rest are closed.
    #[test]
    fn kept_sockets_are_capped() {
        let server = Server::start(None);
        let transport = transport(&[&server], Duration::from_secs(1));
        transport.keep.set(vec![true]).unwrap();
        for _ in 0..KEPT_PER_SERVER + 4 {
            transport.keep_socket(Try {
                server: 0,
                socket: Socket::Plain(open(server.addr).unwrap()),
                id: 0,
                name: name("example.org"),
                reused: false,
            });
        }
        assert_eq!(transport.kept.borrow()[0].len(), KEPT_PER_SERVER);
    }
}
