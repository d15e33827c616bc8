//! The UDP fast path of SPF lookups: one query, one datagram, over a socket kept per
//! nameserver; everything it cannot finish (a truncated answer, no UDP nameserver) goes
//! to mail-auth's resolver.
//!
//! Why: through the resolver every query built and dropped a socket (socket, bind, two
//! epoll registrations, close) and a stack of futures, about 27 µs of CPU a query on the
//! benchmark machine, two thirds of an SPF instance's time. Here a query is one send and
//! one receive on a connected socket, and the messages are still built and read by
//! hickory-proto.
//!
//! What a stub resolver must check is checked: the answer comes from the nameserver's
//! address and port (the socket is connected, so the kernel drops anything else), it is a
//! response, its ID is the query's (random, 16 bits) and its question is the query's
//! (name, case-insensitively, type and class). A datagram that fails a check is dropped and
//! the wait goes on until the try's deadline. Because a kept socket keeps its source port,
//! each socket is replaced after [`QUERIES_PER_SOCKET`] queries and after any error, so
//! that its port changes as well as the ID.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{ProtocolConfig, ResolverConfig};
use mail_auth::hickory_resolver::proto::op::{
    Edns, Message, MessageType, OpCode, Query, ResponseCode,
};
use mail_auth::hickory_resolver::proto::rr::{DNSClass, Name, RecordType};
use tokio::net::UdpSocket;

/// Queries sent from one socket (one source port) before it is replaced.
pub const QUERIES_PER_SOCKET: u32 = 64;

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
    /// No usable answer from any nameserver within the tries.
    Failed(String),
}

/// A socket with the number of queries it has sent.
struct Kept {
    socket: UdpSocket,
    sent: u32,
}

/// The nameservers' UDP addresses and a kept socket for each.
pub struct UdpTransport {
    servers: Vec<SocketAddr>,
    /// How long one try waits for its answer.
    timeout: Duration,
    /// Rounds over all nameservers.
    rounds: usize,
    sockets: RefCell<Vec<Option<Kept>>>,
    /// Where answers are received: as large as a datagram can be, so that an answer bigger
    /// than the size offered (a server may ignore it) is read whole rather than cut.
    buffer: RefCell<Vec<u8>>,
}

impl UdpTransport {
    /// The UDP nameservers of `config`, in order. `attempts` counts retries after the first
    /// round, as the resolver's option of that name does.
    pub fn new(config: &ResolverConfig, timeout: Duration, attempts: usize) -> UdpTransport {
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
        UdpTransport {
            sockets: RefCell::new(servers.iter().map(|_| None).collect()),
            servers,
            timeout,
            rounds: attempts + 1,
            buffer: RefCell::new(Vec::new()),
        }
    }

    /// True when there is a nameserver to ask over UDP.
    pub fn usable(&self) -> bool {
        !self.servers.is_empty()
    }

    /// Asks each nameserver in turn, for `rounds` rounds, until one gives an answer.
    pub async fn query(&self, name: &Name, record_type: RecordType) -> Reply {
        let mut last_error = String::from("no nameserver to ask");
        for _ in 0..self.rounds {
            for index in 0..self.servers.len() {
                match self.try_one(index, name, record_type).await {
                    Ok(reply) => return reply,
                    Err(error) => last_error = error,
                }
            }
        }
        Reply::Failed(last_error)
    }

    /// One query to one nameserver. Err: try the next one.
    async fn try_one(
        &self,
        index: usize,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Reply, String> {
        let server = self.servers[index];
        // Taken out while in use: the slot is never borrowed across an await.
        let kept = self.sockets.borrow_mut()[index].take();
        let mut kept = match kept {
            Some(kept) if kept.sent < QUERIES_PER_SOCKET => kept,
            _ => Kept {
                socket: open(server)
                    .map_err(|e| format!("cannot open a UDP socket to {server}: {e}"))?,
                sent: 0,
            },
        };
        let query = build_query(name, record_type);
        let id = query.metadata.id;
        let bytes = query
            .to_vec()
            .map_err(|e| format!("cannot encode the query for {name}: {e}"))?;
        kept.sent += 1;
        if let Err(e) = kept.socket.send(&bytes).await {
            // The socket is dropped: the next query opens another.
            return Err(format!("sending to {server}: {e}"));
        }
        // Taken out while in use, like the socket; allocated once, on the first query.
        let mut buffer = std::mem::take(&mut *self.buffer.borrow_mut());
        if buffer.is_empty() {
            // calloc: pages the answers never reach stay untouched and out of the RSS.
            buffer = vec![0; MAX_DATAGRAM];
        }
        let reply = self
            .receive(server, &mut kept, &mut buffer, id, name, record_type)
            .await;
        *self.buffer.borrow_mut() = buffer;
        if reply.is_ok() {
            self.sockets.borrow_mut()[index] = Some(kept);
        }
        reply
    }

    /// Waits for the answer to query `id`, dropping datagrams that are not it.
    async fn receive(
        &self,
        server: SocketAddr,
        kept: &mut Kept,
        buffer: &mut [u8],
        id: u16,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Reply, String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let received = match tokio::time::timeout_at(deadline, kept.socket.recv(buffer)).await {
                Err(_) => {
                    // An answer may still arrive late on this socket and would be taken
                    // for the next query's, were it not for the ID: start afresh.
                    return Err(format!("no answer from {server} within {:?}", self.timeout));
                }
                Ok(Err(e)) => return Err(format!("receiving from {server}: {e}")),
                Ok(Ok(length)) => &buffer[..length],
            };
            let Ok(response) = Message::from_vec(received) else {
                continue;
            };
            if !answers(&response, id, name, record_type) {
                continue;
            }
            if response.metadata.truncation {
                return Ok(Reply::Truncated);
            }
            return match response.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => Ok(Reply::Answer(response)),
                code => Err(format!("{server} answered {code}")),
            };
        }
    }
}

/// A non-blocking UDP socket connected to `server`, from an ephemeral port the system
/// picks at random.
fn open(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
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

/// Whether `response` is the answer to the query with `id` for `name` and `record_type`.
pub fn answers(response: &Message, id: u16, name: &Name, record_type: RecordType) -> bool {
    response.metadata.id == id
        && response.metadata.message_type == MessageType::Response
        && response.metadata.op_code == OpCode::Query
        && matches!(response.queries.as_slice(), [question]
            if question.name() == name
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
        assert!(answers(&good, id, &name("EXAMPLE.org"), RecordType::A));
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
        let transport = UdpTransport::new(&config, Duration::from_secs(1), 1);
        assert_eq!(
            transport.servers,
            vec![
                "192.0.2.53:5353".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(transport.rounds, 2);
        assert!(transport.usable());
    }
}
