//! The one DNS client of greyspf: UDP queries from a fresh socket each, or a kept one on a
//! loopback nameserver's privileged port (`udp`), mail-auth's
//! hickory resolver for what UDP cannot finish (TCP after truncation), and a compact
//! per-process answer cache (`cache`). SPF, and anything else that asks the DNS, goes
//! through a `Lookup` bounded by its caller's deadline; the lookups of one `Lookup` that ask
//! the same question share one query and its answer (`memo`).
//!
//! Answers are tied to their question: only records owned by the name asked, or by the end
//! of its CNAME chain, are taken.

mod answer;
mod cache;
mod loopback;
mod memo;
mod udp;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::Poll;
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::net::{DnsError as ResolveError, NetError};
use mail_auth::hickory_resolver::proto::op::Message;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use mail_auth::hickory_resolver::system_conf::read_system_conf;

pub use answer::Answer;
use cache::{AnswerCache, Weight};
use memo::Memo;

/// How to reach the DNS.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// One nameserver to ask instead of the system resolver configuration.
    pub server: Option<SocketAddr>,
    /// The wait before a query without an answer is sent again (doubling each time).
    pub retransmit: Duration,
    /// The longest a caller's deadline is (the resolver's per-try timeout follows it).
    pub deadline: Duration,
}

/// Errors of setting the client up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot start the DNS runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the system resolver configuration: {0}")]
    SystemResolver(String),
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// The process's DNS client: built once, used for every lookup.
pub struct DnsClient {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
    udp: udp::UdpTransport,
    caches: RefCell<Caches>,
}

impl DnsClient {
    pub fn new(settings: &DnsSettings) -> Result<DnsClient, DnsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DnsError::Runtime)?;
        let (config, mut options) = match settings.server {
            Some(server) => {
                let mut nameserver = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut nameserver.connections {
                    connection.port = server.port();
                }
                (
                    ResolverConfig::from_name_servers(vec![nameserver]),
                    ResolverOpts::default(),
                )
            }
            None => read_system_conf().map_err(|e| DnsError::SystemResolver(e.to_string()))?,
        };
        tune_resolver(&mut options, settings.deadline);
        let udp = udp::UdpTransport::new(&config, settings.retransmit);
        // The resolver registers with the runtime it is created in.
        let resolver = {
            let _context = runtime.enter();
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| DnsError::Resolver(e.to_string()))?
        };
        Ok(DnsClient {
            runtime,
            resolver,
            udp,
            caches: RefCell::new(Caches::new()),
        })
    }

    /// Runs `work` (which asks through `lookup`) to its end on this client's runtime.
    pub fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// Lookups that give up at `deadline`.
    pub fn lookup(&self, deadline: tokio::time::Instant) -> Lookup<'_> {
        Lookup {
            client: self,
            deadline,
            memo: Memo::new(),
        }
    }
}

/// The process's one client, built on first use and shared by SPF and scoring, so that they
/// share its runtime, sockets and answer cache. Requests that never ask the DNS (other
/// states, trusted clients) do not pay for it.
pub struct SharedDns {
    settings: DnsSettings,
    client: std::cell::OnceCell<Result<std::rc::Rc<DnsClient>, String>>,
}

impl SharedDns {
    pub fn new(settings: DnsSettings) -> SharedDns {
        SharedDns {
            settings,
            client: std::cell::OnceCell::new(),
        }
    }

    /// The client, or why it could not be built (the same reason every time).
    pub fn get(&self) -> Result<std::rc::Rc<DnsClient>, String> {
        self.client
            .get_or_init(|| {
                DnsClient::new(&self.settings)
                    .map(std::rc::Rc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// The answer caches of one instance, by record type. The budgets add up to 640 kB: about
/// two thousand SPF records, enough for the HELO names and sender domains that come back
/// within their TTL in the life of an smtpd process, with an instance under 5 MB.
struct Caches {
    txt: AnswerCache<Vec<u8>>,
    a: AnswerCache<Ipv4Addr>,
    aaaa: AnswerCache<Ipv6Addr>,
    mx: AnswerCache<String>,
    ptr: AnswerCache<String>,
}

impl Caches {
    fn new() -> Caches {
        Caches {
            txt: AnswerCache::new(512 << 10),
            a: AnswerCache::new(32 << 10),
            aaaa: AnswerCache::new(32 << 10),
            mx: AnswerCache::new(32 << 10),
            ptr: AnswerCache::new(32 << 10),
        }
    }
}

/// Per-query timeout and retries so that one dead nameserver costs at most half the
/// deadline: each lookup is tried twice for a quarter of it, within 100 ms and 5 s.
fn tune_resolver(options: &mut ResolverOpts, deadline: Duration) {
    options.timeout = (deadline / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    // `attempts` counts retries after the first try.
    options.attempts = 1;
    // The question must come back in the random case it was sent in (RFC 5452 §9.1),
    // as on the UDP path.
    options.case_randomization = true;
    // SPF is about what the domain publishes in the DNS, never about local host files.
    options.use_hosts_file = ResolveHosts::Never;
    // Answers are cached by the client, compactly (src/dns/cache.rs): the resolver's own
    // cache keeps whole messages, and its default of 8192 answers grew an instance past
    // 10 MB.
    options.cache_size = 0;
}

/// The client as one evaluation sees it: every query it makes ends by `deadline`, and each
/// question is asked once.
pub struct Lookup<'a> {
    client: &'a DnsClient,
    /// The evaluation's deadline: queries are sent again until then, not after.
    deadline: tokio::time::Instant,
    /// The evaluation's answers so far, and its questions in flight.
    memo: Memo,
}

impl Lookup<'_> {
    /// The answer this evaluation already has or is waiting for; else a cached answer when
    /// there is a valid one, otherwise a query whose answer is kept for its TTL (a void
    /// answer for the SOA's negative TTL; without one, not at all).
    async fn lookup<T: Clone + Weight + 'static>(
        &self,
        name: &str,
        record_type: RecordType,
        cache: fn(&mut Caches) -> &mut AnswerCache<T>,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        let ask = || self.cached_or_asked(name, record_type, cache, extract);
        self.memo.answer(u16::from(record_type), name, ask).await
    }

    async fn cached_or_asked<T: Clone + Weight>(
        &self,
        name: &str,
        record_type: RecordType,
        cache: fn(&mut Caches) -> &mut AnswerCache<T>,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        if let Some(answer) = cache(&mut self.client.caches.borrow_mut()).get(name, Instant::now())
        {
            return answer;
        }
        let (answer, until) = self.query(name, record_type, extract).await;
        if let Some(until) = until {
            cache(&mut self.client.caches.borrow_mut()).put(name, &answer, until, Instant::now());
        }
        answer
    }

    async fn query<T>(
        &self,
        name: &str,
        record_type: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> (Answer<T>, Option<Instant>) {
        // Raw labels: a name built by a macro may hold characters a host name may not.
        let Ok(query) = Name::from_labels(name.split('.').map(str::as_bytes)) else {
            return (Answer::Void, None);
        };
        if self.client.udp.usable() {
            match self
                .client
                .udp
                .query(&query, record_type, self.deadline)
                .await
            {
                udp::Reply::Answer(message) => return from_message(&query, &message, extract),
                udp::Reply::Failed(error) => return (Answer::Failed(error), None),
                // Too big for a datagram: the resolver asks again and falls back to TCP.
                udp::Reply::Truncated => {}
            }
        }
        match self
            .client
            .resolver
            .lookup(query.clone(), record_type)
            .await
        {
            Ok(lookup) => (
                found_or_void(&query, lookup.answers(), extract),
                Some(lookup.valid_until()),
            ),
            Err(NetError::Dns(ResolveError::NoRecordsFound(none))) => (
                Answer::Void,
                none.negative_ttl
                    .map(|ttl| Instant::now() + Duration::from_secs(u64::from(ttl))),
            ),
            Err(error) if error.is_no_records_found() => (Answer::Void, None),
            Err(error) => (Answer::Failed(error.to_string()), None),
        }
    }
}

/// The records of the wanted type owned by `name` or, when `name` is an alias, by the end of
/// its CNAME chain: Found, or Void when there is none. Records of any other owner are not
/// the answer to the question, whatever their type: a server or forger that slips them in
/// is ignored.
fn found_or_void<T>(
    name: &Name,
    records: &[Record],
    extract: impl Fn(&RData) -> Option<T>,
) -> Answer<T> {
    let owner = chain_end(name, records);
    let found: Vec<T> = records
        .iter()
        .filter(|record| record.name == *owner)
        .filter_map(|record| extract(&record.data))
        .collect();
    if found.is_empty() {
        Answer::Void
    } else {
        Answer::Found(found)
    }
}

/// The name the CNAME chain of `records` leads to from `name` (`name` itself without one).
/// Names compare without regard to case; a loop ends after as many steps as there are
/// records.
fn chain_end<'a>(name: &'a Name, records: &'a [Record]) -> &'a Name {
    let mut owner = name;
    for _ in 0..records.len() {
        let next = records.iter().find_map(|record| match &record.data {
            RData::CNAME(target) if record.name == *owner => Some(&target.0),
            _ => None,
        });
        match next {
            Some(target) => owner = target,
            None => break,
        }
    }
    owner
}

/// The answer in a response (NOERROR or NXDOMAIN) and until when it may be kept: the
/// smallest TTL of the answer section, or for a void answer the negative TTL of the SOA in
/// the authority section (RFC 2308 §5; none without an SOA), as the resolver reckons them.
fn from_message<T>(
    name: &Name,
    message: &Message,
    extract: impl Fn(&RData) -> Option<T>,
) -> (Answer<T>, Option<Instant>) {
    let answer = found_or_void(name, &message.answers, extract);
    let ttl = match answer {
        Answer::Void => message
            .authorities
            .iter()
            .find_map(|record| match &record.data {
                RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
                _ => None,
            }),
        _ => message.answers.iter().map(|record| record.ttl).min(),
    };
    let until = ttl.map(|ttl| Instant::now() + Duration::from_secs(u64::from(ttl)));
    (answer, until)
}

impl Lookup<'_> {
    /// Each TXT record as the concatenation of its character-strings.
    pub async fn txt(&self, name: &str) -> Answer<Vec<u8>> {
        self.lookup(
            name,
            RecordType::TXT,
            |c| &mut c.txt,
            |data| match data {
                RData::TXT(txt) => Some(txt.txt_data.iter().flatten().copied().collect()),
                _ => None,
            },
        )
        .await
    }

    pub async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
        self.lookup(
            name,
            RecordType::A,
            |c| &mut c.a,
            |data| match data {
                RData::A(a) => Some(a.0),
                _ => None,
            },
        )
        .await
    }

    pub async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
        self.lookup(
            name,
            RecordType::AAAA,
            |c| &mut c.aaaa,
            |data| match data {
                RData::AAAA(aaaa) => Some(aaaa.0),
                _ => None,
            },
        )
        .await
    }

    /// Exchange names; a null MX (".") is returned as an empty name.
    pub async fn mx(&self, name: &str) -> Answer<String> {
        self.lookup(
            name,
            RecordType::MX,
            |c| &mut c.mx,
            |data| match data {
                RData::MX(mx) => Some(host_name(&mx.exchange)),
                _ => None,
            },
        )
        .await
    }

    pub async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        self.lookup(
            &reverse_name(ip),
            RecordType::PTR,
            |c| &mut c.ptr,
            |data| match data {
                RData::PTR(ptr) => Some(host_name(&ptr.0)),
                _ => None,
            },
        )
        .await
    }
}

/// A name from an answer, lower case, without the trailing dot ("" for the root). Labels are
/// taken as raw bytes: the text forms of hickory escape characters that SPF treats literally.
fn host_name(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    labels.join(".")
}

/// The in-addr.arpa or ip6.arpa name of an address, without the trailing dot.
fn reverse_name(ip: IpAddr) -> String {
    let zone = if ip.is_ipv4() {
        "in-addr.arpa"
    } else {
        "ip6.arpa"
    };
    reversed_under(ip, zone)
}

/// An address as DNS names it under `zone` (the reverse zones, DNS lists): its octets
/// (IPv4) or nibbles (IPv6) in reverse order, without the trailing dot.
pub fn reversed_under(ip: IpAddr, zone: &str) -> String {
    let mut name = String::with_capacity(64 + zone.len());
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            let _ = write!(name, "{d}.{c}.{b}.{a}.");
        }
        IpAddr::V6(ip) => {
            for byte in ip.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
            }
        }
    }
    name.push_str(zone);
    name
}

/// Runs two futures at once on the current task and returns both outputs.
pub async fn join2<A, B>(
    a: impl std::future::Future<Output = A>,
    b: impl std::future::Future<Output = B>,
) -> (A, B) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut done_a, mut done_b) = (None, None);
    std::future::poll_fn(|cx| {
        if done_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            done_a = Some(v);
        }
        if done_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            done_b = Some(v);
        }
        match (done_a.take(), done_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (done_a, done_b) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

/// A lookup in flight, of any shape.
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Runs all futures at once on the current task and returns their outputs in order.
pub async fn join_all<T>(mut futures: Vec<Boxed<'_, T>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.1".parse().unwrap()),
            "1.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::cb01".parse().unwrap()),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn only_the_end_of_the_cname_chain_answers() {
        use mail_auth::hickory_resolver::proto::rr::rdata::{A, CNAME};
        let name = |text: &str| Name::from_labels(text.split('.').map(str::as_bytes)).unwrap();
        let cname = |from: &str, to: &str| {
            Record::from_rdata(name(from), 60, RData::CNAME(CNAME(name(to))))
        };
        let a = |owner: &str, last: u8| {
            Record::from_rdata(name(owner), 60, RData::A(A::new(192, 0, 2, last)))
        };
        let extract = |data: &RData| match data {
            RData::A(a) => Some(a.0.octets()[3]),
            _ => None,
        };
        let records = [
            a("other.example", 1),
            cname("Alias.Example", "mid.example"),
            a("mid.example", 2),
            cname("MID.example", "end.example"),
            a("END.example", 3),
        ];
        let answer = found_or_void(&name("alias.example"), &records, extract);
        assert_eq!(answer, Answer::Found(vec![3]));
        let direct = found_or_void(&name("other.example"), &records, extract);
        assert_eq!(direct, Answer::Found(vec![1]));
        // A loop ends; its names own no A record here.
        let looped = [
            cname("x.example", "y.example"),
            cname("y.example", "x.example"),
        ];
        assert_eq!(
            found_or_void(&name("x.example"), &looped, extract),
            Answer::Void
        );
    }

    #[test]
    fn resolver_deadline_split() {
        let mut options = ResolverOpts::default();
        tune_resolver(&mut options, Duration::from_secs(10));
        assert_eq!(
            (options.timeout, options.attempts),
            (Duration::from_millis(2500), 1)
        );
        tune_resolver(&mut options, Duration::from_millis(200));
        assert_eq!(options.timeout, Duration::from_millis(100));
        tune_resolver(&mut options, Duration::from_secs(60));
        assert_eq!(options.timeout, Duration::from_secs(5));
    }
}
