//! A tiny authoritative DNS server on 127.0.0.1 for tests: serves a zone given in code over
//! UDP, logs every query it receives, and can be dead (never answers), or slow or failing for
//! chosen names ([`Rr::Timeout`], [`Rr::ServFail`]). Standard library only.
//!
//! Answers carry TTL 0 so that no resolver cache hides a query from the log, unless the zone
//! sets a TTL ([`Zone::ttl`]) and an SOA for negative answers ([`Zone::negative_ttl`]),
//! as tests of caching do. Names match
//! without regard to case; a name with no records but with records below it answers
//! NODATA, any other unknown name NXDOMAIN. CNAME chains inside the zone are followed.
//! An answer too big for the client's UDP size is sent truncated (TC), and the same port
//! serves TCP, where answers are never truncated ([`DnsServer::tcp_queries`] counts them).
//!
//! Misbehaviours a client must survive can be switched on: records of another owner slipped
//! into an answer ([`Zone::foreign`]), the first copy of each UDP query lost
//! ([`Zone::drop_first`]), the question echoed lower-cased ([`Zone::lowercase_question`]).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_MX: u16 = 15;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;

const RCODE_FORMERR: u16 = 1;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;

/// How often the server thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(20);

/// One resource record of the zone, or a behaviour of its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr {
    /// One TXT record made of these character-strings (each at most 255 bytes).
    Txt(Vec<Vec<u8>>),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(u16, String),
    Ptr(String),
    Cname(String),
    /// Queries for this name are never answered, except those for a type the name has
    /// records of (so a name can answer TXT and time out on everything else).
    Timeout,
    /// Queries for this name are answered SERVFAIL.
    ServFail,
    /// A record owned by another name, put into the answers of this name's queries as an
    /// off-path attacker or a broken server might: a client must not use it.
    Foreign(String, Box<Rr>),
}

impl Rr {
    fn rtype(&self) -> Option<u16> {
        match self {
            Rr::Txt(_) => Some(TYPE_TXT),
            Rr::A(_) => Some(TYPE_A),
            Rr::Aaaa(_) => Some(TYPE_AAAA),
            Rr::Mx(..) => Some(TYPE_MX),
            Rr::Ptr(_) => Some(TYPE_PTR),
            Rr::Cname(_) => Some(TYPE_CNAME),
            Rr::Timeout | Rr::ServFail => None,
            Rr::Foreign(_, rr) => rr.rtype(),
        }
    }
}

/// The records served, built with chained calls:
/// `Zone::new().txt("example.com", "v=spf1 -all").a("mail.example.com", "192.0.2.1")`.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    records: Vec<(String, Rr)>,
    ttl: u32,
    /// When set, NXDOMAIN and NODATA answers carry an SOA whose TTL and minimum are this.
    negative_ttl: Option<u32>,
    /// When set, UDP answers are sent whole whatever size the client offered.
    ignore_udp_size: bool,
    /// When set, the first UDP copy of each query (by name in any case, and type) is logged
    /// and not answered.
    drop_first: bool,
    /// When set, the question is echoed lower-cased whatever case the query used.
    lowercase_question: bool,
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// The TTL of every record served (0 unless set).
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.ttl = seconds;
        self
    }

    /// Negative answers carry an SOA (owner `example`) with this TTL and minimum, as a real
    /// authoritative server's do, so that resolvers may cache them (RFC 2308).
    pub fn negative_ttl(mut self, seconds: u32) -> Self {
        self.negative_ttl = Some(seconds);
        self
    }

    /// Behaves like a server that ignores the client's EDNS size: UDP answers are never
    /// truncated, however big.
    pub fn ignore_udp_size(mut self) -> Self {
        self.ignore_udp_size = true;
        self
    }

    /// Behaves like a path that loses the first copy of each query: the query is logged
    /// and not answered; the next copy of the same name and type (in any case, from any
    /// port, with any ID) is answered.
    pub fn drop_first(mut self) -> Self {
        self.drop_first = true;
        self
    }

    /// Echoes the question lower-cased, as a server that ignores the case of the query
    /// (or a forger who guessed the name but not its 0x20 case) would.
    pub fn lowercase_question(mut self) -> Self {
        self.lowercase_question = true;
        self
    }

    /// Answers for `name` also carry a TXT record with `text` owned by `owner`.
    pub fn foreign_txt(self, name: &str, owner: &str, text: &str) -> Self {
        let strings = text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect();
        self.foreign(name, owner, Rr::Txt(strings))
    }

    /// Answers for `name` of the type of `rr` also carry `rr` as owned by `owner`.
    pub fn foreign(self, name: &str, owner: &str, rr: Rr) -> Self {
        self.add(name, Rr::Foreign(normalize(owner), Box::new(rr)))
    }

    pub fn add(mut self, name: &str, rr: Rr) -> Self {
        self.records.push((normalize(name), rr));
        self
    }

    /// One TXT record; text longer than 255 bytes is cut into several character-strings.
    pub fn txt(self, name: &str, text: &str) -> Self {
        let strings = if text.is_empty() {
            vec![Vec::new()]
        } else {
            text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
        };
        self.add(name, Rr::Txt(strings))
    }

    /// One TXT record from explicit character-strings (raw bytes, for odd test data).
    pub fn txt_strings(self, name: &str, strings: &[&[u8]]) -> Self {
        let strings = strings.iter().map(|s| s.to_vec()).collect();
        self.add(name, Rr::Txt(strings))
    }

    pub fn a(self, name: &str, address: &str) -> Self {
        let address = address.parse().expect("test zone: bad IPv4 address");
        self.add(name, Rr::A(address))
    }

    pub fn aaaa(self, name: &str, address: &str) -> Self {
        let address = address.parse().expect("test zone: bad IPv6 address");
        self.add(name, Rr::Aaaa(address))
    }

    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        self.add(name, Rr::Mx(preference, exchange.to_string()))
    }

    /// A PTR record for an address (the in-addr.arpa or ip6.arpa name is built here).
    pub fn ptr(self, address: &str, host: &str) -> Self {
        let address: IpAddr = address.parse().expect("test zone: bad address");
        self.add(&reverse_name(address), Rr::Ptr(host.to_string()))
    }

    pub fn cname(self, name: &str, target: &str) -> Self {
        self.add(name, Rr::Cname(target.to_string()))
    }

    pub fn timeout(self, name: &str) -> Self {
        self.add(name, Rr::Timeout)
    }

    pub fn servfail(self, name: &str) -> Self {
        self.add(name, Rr::ServFail)
    }

    fn at(&self, name: &str) -> Vec<&Rr> {
        self.records
            .iter()
            .filter(|(owner, _)| owner == name)
            .map(|(_, rr)| rr)
            .collect()
    }

    /// True when the name owns records or has records below it (an empty non-terminal).
    fn exists(&self, name: &str) -> bool {
        let suffix = format!(".{name}");
        self.records
            .iter()
            .any(|(owner, _)| owner == name || owner.ends_with(&suffix))
    }
}

/// One query as received: the name (lower case, no trailing dot) and the type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    /// The name in the case it was sent (RFC 5452 §9.1, "0x20" case).
    pub raw_name: String,
    pub qtype: u16,
    /// The client's source port.
    pub port: u16,
}

impl Query {
    /// `"TXT example.com"`, for readable assertions.
    pub fn describe(&self) -> String {
        let kind = match self.qtype {
            TYPE_A => "A".to_string(),
            TYPE_CNAME => "CNAME".to_string(),
            TYPE_PTR => "PTR".to_string(),
            TYPE_MX => "MX".to_string(),
            TYPE_TXT => "TXT".to_string(),
            TYPE_AAAA => "AAAA".to_string(),
            TYPE_ANY => "ANY".to_string(),
            other => format!("TYPE{other}"),
        };
        format!("{kind} {}", self.name)
    }
}

struct Shared {
    zone: Mutex<Zone>,
    answering: bool,
    log: Mutex<Vec<Query>>,
    tcp_queries: AtomicUsize,
    stop: AtomicBool,
}

/// The running server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` on a free UDP port of 127.0.0.1.
    pub fn start(zone: Zone) -> Self {
        Self::spawn(zone, true)
    }

    /// A nameserver that receives and logs queries but never answers.
    pub fn dead() -> Self {
        Self::spawn(Zone::new(), false)
    }

    /// Serves `zone` on UDP and TCP at `addr` (port 53 of a loopback address needs root);
    /// the error when it cannot be bound.
    #[allow(dead_code)]
    pub fn start_at(addr: SocketAddr, zone: Zone) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        let listener = TcpListener::bind(addr)?;
        Ok(Self::serve_on(zone, true, socket, listener))
    }

    fn spawn(zone: Zone, answering: bool) -> Self {
        let (socket, listener) = bind_udp_and_tcp();
        Self::serve_on(zone, answering, socket, listener)
    }

    fn serve_on(zone: Zone, answering: bool, socket: UdpSocket, listener: TcpListener) -> Self {
        socket
            .set_read_timeout(Some(POLL))
            .expect("test DNS: set read timeout");
        let addr = socket.local_addr().expect("test DNS: local address");
        listener
            .set_nonblocking(true)
            .expect("test DNS: non-blocking listener");
        let shared = Arc::new(Shared {
            zone: Mutex::new(zone),
            answering,
            log: Mutex::new(Vec::new()),
            tcp_queries: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let tcp_shared = Arc::clone(&shared);
        let tcp_thread = std::thread::Builder::new()
            .name("test-dns-tcp".into())
            .spawn(move || serve_tcp(&listener, &tcp_shared))
            .expect("test DNS: spawn");
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || serve(&socket, &thread_shared))
            .expect("test DNS: spawn");
        DnsServer {
            addr,
            shared,
            threads: vec![thread, tcp_thread],
        }
    }

    /// Where to send queries: 127.0.0.1 and the port chosen at start.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of queries received so far (retries included).
    pub fn queries(&self) -> usize {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Number of queries received over TCP so far (they are in the log too).
    pub fn tcp_queries(&self) -> usize {
        self.shared.tcp_queries.load(Ordering::Relaxed)
    }

    /// Every query received so far, in order.
    pub fn query_log(&self) -> Vec<Query> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The query log as `"TYPE name"` strings.
    pub fn described_queries(&self) -> Vec<String> {
        self.query_log().iter().map(Query::describe).collect()
    }

    /// The queries from the `skip`-th on, described and sorted: for lookups made at once,
    /// whose order is not fixed.
    pub fn sorted_queries(&self, skip: usize) -> Vec<String> {
        let mut asked = self.described_queries().split_off(skip);
        asked.sort();
        asked
    }

    /// Serves another zone from now on.
    pub fn replace_zone(&self, zone: Zone) {
        *self
            .shared
            .zone
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = zone;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Logs the query; with `drop_first`, true when it is the first of its name and type.
    fn record(&self, query: &ParsedQuery, port: u16) -> bool {
        let drop_first = self.drops_first();
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        // Only then is the log searched: a long test would otherwise pay for its length.
        let first = drop_first
            && !log
                .iter()
                .any(|q| q.name == query.name && q.qtype == query.qtype);
        log.push(Query {
            name: query.name.clone(),
            raw_name: query.raw_name.clone(),
            qtype: query.qtype,
            port,
        });
        first
    }

    fn drops_first(&self) -> bool {
        self.zone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drop_first
    }

    fn respond(&self, query: &ParsedQuery) -> Option<Vec<u8>> {
        let zone = self.zone.lock().unwrap_or_else(PoisonError::into_inner);
        respond(query, &zone)
    }
}

fn serve(socket: &UdpSocket, shared: &Shared) {
    let mut buffer = [0u8; 4096];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let packet = &buffer[..len];
        let parsed = parse_query(packet);
        let first = parsed
            .as_ref()
            .is_some_and(|query| shared.record(query, peer.port()));
        if !shared.answering || first {
            continue;
        }
        let response = match &parsed {
            Some(query) => shared.respond(query),
            None => format_error(packet),
        };
        if let Some(response) = response {
            let _ = socket.send_to(&response, peer);
        }
    }
}

/// TCP: one connection at a time, each message with its two-byte length (RFC 1035
/// §4.2.2), answered in full.
fn serve_tcp(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((mut stream, peer)) = listener.accept() else {
            std::thread::sleep(POLL);
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        loop {
            let mut length = [0u8; 2];
            if stream.read_exact(&mut length).is_err() {
                break;
            }
            let mut packet = vec![0u8; usize::from(u16::from_be_bytes(length))];
            if stream.read_exact(&mut packet).is_err() {
                break;
            }
            let Some(mut query) = parse_query(&packet) else {
                break;
            };
            shared.tcp_queries.fetch_add(1, Ordering::Relaxed);
            shared.record(&query, peer.port());
            if !shared.answering {
                continue;
            }
            query.udp_size = usize::from(u16::MAX);
            let Some(response) = shared.respond(&query) else {
                continue;
            };
            let mut framed = (response.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&response);
            if stream.write_all(&framed).is_err() {
                break;
            }
        }
    }
}

struct ParsedQuery {
    id: u16,
    flags: u16,
    /// The question section as received, echoed in the answer.
    question: Vec<u8>,
    name: String,
    raw_name: String,
    qtype: u16,
    udp_size: usize,
}

fn parse_query(packet: &[u8]) -> Option<ParsedQuery> {
    let word = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]))
    };
    let id = word(0)?;
    let flags = word(2)?;
    if flags & 0x8000 != 0 || word(4)? != 1 {
        return None;
    }
    let additional = word(10)?;
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = word(at)?;
    at += 4;
    let question = packet.get(12..at)?.to_vec();
    // An EDNS OPT record (root owner) in the additional section gives the UDP size.
    let mut udp_size = 512;
    if additional > 0 && packet.get(at) == Some(&0) && word(at + 1) == Some(TYPE_OPT) {
        udp_size = usize::from(word(at + 3)?).max(512);
    }
    let raw_name = labels.join(".");
    Some(ParsedQuery {
        id,
        flags,
        question,
        name: raw_name.to_ascii_lowercase(),
        raw_name,
        qtype,
        udp_size,
    })
}

/// FORMERR for a packet with a readable header and an unreadable question.
fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    let header = packet.get(..4)?;
    let mut response = header.to_vec();
    response[2] = 0x80 | (header[2] & 0x79);
    response[3] = 0x80 | RCODE_FORMERR as u8;
    response.extend_from_slice(&[0; 8]);
    Some(response)
}

fn respond(query: &ParsedQuery, zone: &Zone) -> Option<Vec<u8>> {
    let mut owner = query.name.clone();
    let mut answers: Vec<(String, Rr)> = Vec::new();
    let mut rcode = 0;
    let mut hops = 0;
    loop {
        let records = zone.at(&owner);
        if records.contains(&&Rr::ServFail) || hops > 8 {
            answers.clear();
            rcode = RCODE_SERVFAIL;
            break;
        }
        let cname = records.iter().find_map(|rr| match rr {
            Rr::Cname(target) => Some(normalize(target)),
            _ => None,
        });
        if let Some(target) = cname
            && query.qtype != TYPE_CNAME
        {
            answers.push((owner.clone(), Rr::Cname(target.clone())));
            owner = target;
            hops += 1;
            continue;
        }
        let matching: Vec<&Rr> = records
            .iter()
            .copied()
            .filter(|rr| {
                rr.rtype()
                    .is_some_and(|rtype| query.qtype == TYPE_ANY || rtype == query.qtype)
            })
            .collect();
        if matching.is_empty() && records.contains(&&Rr::Timeout) {
            return None;
        }
        if records.is_empty() && answers.is_empty() && !zone.exists(&owner) {
            rcode = RCODE_NXDOMAIN;
        }
        answers.extend(matching.into_iter().map(|rr| match rr {
            Rr::Foreign(other, rr) => (other.clone(), (**rr).clone()),
            rr => (owner.clone(), rr.clone()),
        }));
        break;
    }

    let mut response = Vec::with_capacity(512);
    response.extend_from_slice(&query.id.to_be_bytes());
    // QR, the query's opcode and RD, AA, RA.
    let flags = 0x8000 | (query.flags & 0x7900) | 0x0400 | 0x0080 | rcode;
    response.extend_from_slice(&flags.to_be_bytes());
    response.extend_from_slice(&1u16.to_be_bytes());
    response.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    let soa = zone
        .negative_ttl
        .filter(|_| rcode != RCODE_SERVFAIL && answers.is_empty());
    response.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
    response.extend_from_slice(&[0, 0]);
    let mut question = query.question.clone();
    if zone.lowercase_question {
        // The name only: the type and class after it are numbers.
        let name_end = question.len() - 4;
        question[..name_end].make_ascii_lowercase();
    }
    response.extend_from_slice(&question);
    for (name, rr) in &answers {
        let Some(rtype) = rr.rtype() else { continue };
        if *name == query.name {
            // Compression pointer to the question name at offset 12.
            response.extend_from_slice(&[0xC0, 0x0C]);
        } else {
            encode_name(name, &mut response);
        }
        response.extend_from_slice(&rtype.to_be_bytes());
        response.extend_from_slice(&1u16.to_be_bytes());
        response.extend_from_slice(&zone.ttl.to_be_bytes());
        let mut data = Vec::new();
        match rr {
            Rr::Txt(strings) => {
                for string in strings {
                    data.push(string.len() as u8);
                    data.extend_from_slice(string);
                }
            }
            Rr::A(address) => data.extend_from_slice(&address.octets()),
            Rr::Aaaa(address) => data.extend_from_slice(&address.octets()),
            Rr::Mx(preference, exchange) => {
                data.extend_from_slice(&preference.to_be_bytes());
                encode_name(&normalize(exchange), &mut data);
            }
            Rr::Ptr(target) | Rr::Cname(target) => encode_name(&normalize(target), &mut data),
            Rr::Timeout | Rr::ServFail | Rr::Foreign(..) => {}
        }
        response.extend_from_slice(&(data.len() as u16).to_be_bytes());
        response.extend_from_slice(&data);
    }
    if let Some(minimum) = soa {
        encode_name("example", &mut response);
        response.extend_from_slice(&TYPE_SOA.to_be_bytes());
        response.extend_from_slice(&1u16.to_be_bytes());
        response.extend_from_slice(&minimum.to_be_bytes());
        let mut data = Vec::new();
        encode_name("ns.example", &mut data);
        encode_name("hostmaster.example", &mut data);
        // Serial, refresh, retry, expire, minimum.
        for value in [1, 3600, 600, 604_800, minimum] {
            data.extend_from_slice(&u32::to_be_bytes(value));
        }
        response.extend_from_slice(&(data.len() as u16).to_be_bytes());
        response.extend_from_slice(&data);
    }
    if response.len() > query.udp_size && !zone.ignore_udp_size {
        // TC set, no answers: the client is expected to retry over TCP.
        response.truncate(12 + query.question.len());
        response[2] |= 0x02;
        response[6] = 0;
        response[7] = 0;
    }
    Some(response)
}

/// Uncompressed wire form; "" is the root.
fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|label| !label.is_empty()) {
        let bytes = label.as_bytes();
        assert!(bytes.len() <= 63, "test zone: label over 63 bytes: {label}");
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

fn reverse_name(address: IpAddr) -> String {
    match address {
        IpAddr::V4(address) => {
            let [a, b, c, d] = address.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(address) => {
            let mut name = String::new();
            for byte in address.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

/// A UDP socket on a free loopback port and a TCP listener on the same port. The system
/// picks the UDP port; that port may be taken for TCP, so another is tried then.
fn bind_udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("test DNS: bind");
        let addr = socket.local_addr().expect("test DNS: local address");
        if let Ok(listener) = TcpListener::bind(addr) {
            return (socket, listener);
        }
    }
    panic!("test DNS: no loopback port free for both UDP and TCP");
}
