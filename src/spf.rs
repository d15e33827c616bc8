//! SPF adapter: one DNS runtime and resolver per process, the HELO and MAIL FROM checks
//! under a hard deadline, and the Received-SPF / Authentication-Results header of a result.
//!
//! mail-auth supplies the resolver (hickory, reached through
//! [`MessageAuthenticator::resolver`]) and the header builders; queries go out first over
//! the lighter UDP path of `udp`, which hands truncated answers to that resolver (TCP).
//! The RFC 7208 evaluation is greyspf's own (`eval`, over the strict parser in `record`): mail-auth 0.13's check_host()
//! accepts records that RFC 7208 makes a permerror and lets `ip6:` ranges and AAAA answers
//! match IPv4 clients, and its public API gives no way to correct that from outside. The
//! module docs of `eval` and `record` list the readings chosen where the RFC leaves room.

mod cache;
mod eval;
#[doc(hidden)]
pub mod fuzzing;
mod record;
mod udp;

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::op::Message;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::{AuthenticationResults, MessageAuthenticator, ReceivedSpf, SpfOutput};

use cache::{AnswerCache, Weight};
use eval::{Answer, Dns, Request};

/// The results of RFC 7208 §2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpfResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl SpfResult {
    /// The lower-case name used in headers, logs and configuration lists.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }

    fn to_mail_auth(self) -> mail_auth::SpfResult {
        match self {
            SpfResult::Pass => mail_auth::SpfResult::Pass,
            SpfResult::Fail => mail_auth::SpfResult::Fail,
            SpfResult::SoftFail => mail_auth::SpfResult::SoftFail,
            SpfResult::Neutral => mail_auth::SpfResult::Neutral,
            SpfResult::None => mail_auth::SpfResult::None,
            SpfResult::TempError => mail_auth::SpfResult::TempError,
            SpfResult::PermError => mail_auth::SpfResult::PermError,
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpfResult {
    type Err = SpfError;

    /// Accepts the names of [`SpfResult::as_str`] in any case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [
            SpfResult::Pass,
            SpfResult::Fail,
            SpfResult::SoftFail,
            SpfResult::Neutral,
            SpfResult::None,
            SpfResult::TempError,
            SpfResult::PermError,
        ]
        .into_iter()
        .find(|result| result.as_str().eq_ignore_ascii_case(value))
        .ok_or_else(|| SpfError::UnknownResult(value.to_string()))
    }
}

/// The identity checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    Helo,
    MailFrom,
}

impl fmt::Display for Identity {
    /// The `identity=` values of Received-SPF: `helo`, `mailfrom`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Identity::Helo => "helo",
            Identity::MailFrom => "mailfrom",
        })
    }
}

/// Which trace header a result is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// RFC 7208 §9.1.
    ReceivedSpf,
    /// RFC 8601, with `authserv_id` as the authentication service.
    AuthenticationResults,
    /// No header: [`SpfOutcome::header`] is empty.
    None,
}

impl FromStr for HeaderKind {
    type Err = SpfError;

    /// `received-spf`, `authentication-results` or `none`, in any case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "received-spf" => Ok(HeaderKind::ReceivedSpf),
            "authentication-results" => Ok(HeaderKind::AuthenticationResults),
            "none" => Ok(HeaderKind::None),
            _ => Err(SpfError::UnknownHeader(value.to_string())),
        }
    }
}

/// The result of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOutcome {
    pub identity: Identity,
    pub result: SpfResult,
    /// The domain checked: the HELO name or the domain of the sender, lower case.
    pub domain: String,
    /// The domain's `exp=` explanation, on fail only; printable ASCII, at most 512 bytes.
    pub explanation: Option<String>,
    /// Why the result is a permerror or temperror (for logs and `greyspf check`, never
    /// for the client).
    pub reason: Option<String>,
    /// The trace header on one line, without the line end, e.g.
    /// `Received-SPF: pass (...) receiver=...;`; empty with [`HeaderKind::None`].
    pub header: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfSettings {
    /// One nameserver to ask instead of the system resolver configuration.
    pub dns_server: Option<SocketAddr>,
    /// How long the first copy of a DNS query waits for its answer before it is sent
    /// again; each next copy waits twice as long, until the deadline of the identity.
    pub dns_retransmit: Duration,
    /// Deadline for the whole evaluation of one identity; passing it is a temperror.
    pub timeout: Duration,
    pub header: HeaderKind,
    /// Authentication service name of Authentication-Results.
    pub authserv_id: String,
    /// This host's name: `receiver=` of Received-SPF and the `%{r}` macro.
    pub hostname: String,
}

/// SPF as the decision pipeline needs it: the real checker does DNS, tests pass a table.
pub trait Spf {
    /// The HELO identity; None when there is nothing to check.
    fn helo(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome>;
    /// The MAIL FROM identity.
    fn mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome;
    /// The null sender's HELO identity: like `helo`, but `none` for a HELO it skips.
    fn null_sender(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome>;
}

/// Errors of setting the checker up, and of parsing configuration values of this module.
#[derive(Debug, thiserror::Error)]
pub enum SpfError {
    #[error("cannot start the DNS runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot read the system resolver configuration: {0}")]
    SystemResolver(String),
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    #[error(
        "unknown SPF result \"{0}\" (expected pass, fail, softfail, neutral, none, temperror or permerror)"
    )]
    UnknownResult(String),
    #[error("unknown SPF header \"{0}\" (expected received-spf, authentication-results or none)")]
    UnknownHeader(String),
}

/// Checks SPF identities; built once per process and reused for every request.
pub struct SpfChecker {
    runtime: tokio::runtime::Runtime,
    authenticator: MessageAuthenticator,
    udp: udp::UdpTransport,
    caches: RefCell<Caches>,
    settings: SpfSettings,
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

impl fmt::Debug for SpfChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpfChecker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SpfChecker {
    pub fn new(settings: SpfSettings) -> Result<Self, SpfError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SpfError::Runtime)?;
        let (config, mut options) = match settings.dns_server {
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
            None => read_system_conf().map_err(|e| SpfError::SystemResolver(e.to_string()))?,
        };
        tune_resolver(&mut options, settings.timeout);
        let udp = udp::UdpTransport::new(&config, settings.dns_retransmit);
        // The resolver registers with the runtime it is created in.
        let authenticator = {
            let _context = runtime.enter();
            MessageAuthenticator::new(config, options)
                .map_err(|e| SpfError::Resolver(e.to_string()))?
        };
        Ok(SpfChecker {
            runtime,
            authenticator,
            udp,
            caches: RefCell::new(Caches::new()),
            settings,
        })
    }

    /// HELO identity; returns None when helo is empty or not a domain name (skip).
    pub fn check_helo(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        let domain = checkable_domain(helo)?;
        let ip = ip.to_canonical();
        let sender = format!("postmaster@{domain}");
        let request = Request {
            ip,
            sender: &sender,
            local_part: "postmaster",
            sender_domain: &domain,
            helo,
            receiver: &self.settings.hostname,
        };
        let verdict = self.evaluate(&request, &domain);
        Some(self.outcome(Identity::Helo, ip, helo, "", domain, verdict))
    }

    /// The null sender: `postmaster@<HELO>` (RFC 7208 §2.4), reported as the HELO identity.
    /// A HELO that is not a multi-label domain name (a bare name, an address literal,
    /// nothing) gives `none` without a lookup (§4.3), so the message still has a result.
    pub fn check_null_sender(&self, ip: IpAddr, helo: &str) -> SpfOutcome {
        self.check_helo(ip, helo).unwrap_or_else(|| {
            let ip = ip.to_canonical();
            let domain = helo.to_ascii_lowercase();
            self.outcome(Identity::Helo, ip, helo, "", domain, none_verdict())
        })
    }

    /// MAIL FROM identity; sender non-empty (the null sender is [`Self::check_null_sender`]).
    pub fn check_mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome {
        let ip = ip.to_canonical();
        // RFC 7208 §4.3: an empty local part is "postmaster", and so is a missing one: a
        // sender without "@" (`MAIL FROM:<example.com>`) is the domain, checked as
        // postmaster@example.com, as pyspf and Mail::SPF do.
        let (local_part, raw_domain) = sender.rsplit_once('@').unwrap_or(("", sender));
        let local_part = if local_part.is_empty() {
            "postmaster"
        } else {
            local_part
        };
        let Some(domain) = checkable_domain(raw_domain) else {
            // A malformed domain is "none" without any lookup (RFC 7208 §4.3).
            let domain = raw_domain.to_ascii_lowercase();
            return self.outcome(Identity::MailFrom, ip, helo, sender, domain, none_verdict());
        };
        let full_sender = format!("{local_part}@{domain}");
        let request = Request {
            ip,
            sender: &full_sender,
            local_part,
            sender_domain: &domain,
            helo,
            receiver: &self.settings.hostname,
        };
        let verdict = self.evaluate(&request, &domain);
        self.outcome(Identity::MailFrom, ip, helo, sender, domain, verdict)
    }

    fn evaluate(&self, request: &Request<'_>, domain: &str) -> eval::Verdict {
        let timeout = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let resolver = Resolver {
            dns: self.authenticator.resolver(),
            udp: &self.udp,
            caches: &self.caches,
            deadline,
        };
        self.runtime.block_on(async {
            // A query gives up at the deadline by itself; this bounds the rest (the
            // resolver's TCP path), and the query's own failure is seen first.
            tokio::time::timeout_at(deadline, eval::check_host(&resolver, request, domain))
                .await
                .unwrap_or_else(|_| eval::Verdict {
                    result: SpfResult::TempError,
                    explanation: None,
                    reason: Some(format!("no result within {} ms", timeout.as_millis())),
                })
        })
    }

    fn outcome(
        &self,
        identity: Identity,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        domain: String,
        verdict: eval::Verdict,
    ) -> SpfOutcome {
        let mut output = SpfOutput::new(domain.clone()).with_result(verdict.result.to_mail_auth());
        if let Some(explanation) = &verdict.explanation {
            output = output.with_explanation(explanation.clone());
        }
        let header = match self.settings.header {
            HeaderKind::None => String::new(),
            HeaderKind::ReceivedSpf => one_line(
                &ReceivedSpf::new(&output, ip, helo, sender, &self.settings.hostname).to_header(),
            ),
            HeaderKind::AuthenticationResults => {
                let results = AuthenticationResults::new(&self.settings.authserv_id);
                let results = match identity {
                    Identity::Helo => results.with_spf_ehlo_result(&output, ip, helo),
                    Identity::MailFrom => {
                        results.with_spf_mailfrom_result(&output, ip, sender, helo)
                    }
                };
                one_line(&results.to_header())
            }
        };
        SpfOutcome {
            identity,
            result: verdict.result,
            domain,
            explanation: verdict.explanation,
            reason: verdict.reason,
            header,
        }
    }
}

/// The result of an identity with no domain to check (RFC 7208 §4.3).
fn none_verdict() -> eval::Verdict {
    eval::Verdict {
        result: SpfResult::None,
        explanation: None,
        reason: None,
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
    // Answers are cached by the checker, compactly (src/spf/cache.rs): the resolver's own
    // cache keeps whole messages, and its default of 8192 answers grew an instance past
    // 10 MB.
    options.cache_size = 0;
}

/// The domain of an identity as RFC 7208 §4.3 wants it checked: without a trailing dot, at
/// least two labels of 1 to 63 letters, digits, hyphens or underscores, at most 253
/// characters, and a top label that is not all digits (that would be an address).
fn checkable_domain(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let valid = name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && labels
            .last()
            .is_some_and(|top| !top.bytes().all(|b| b.is_ascii_digit()));
    valid.then(|| name.to_ascii_lowercase())
}

/// Unfolds a header (CRLF + white space become one space), drops the final line end, and
/// replaces any other control character, so the text is safe inside a policy reply line.
fn one_line(header: &str) -> String {
    let mut line = String::with_capacity(header.len());
    let mut chars = header.trim_end_matches(['\r', '\n']).chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars
                .next_if(|c| matches!(c, '\r' | '\n' | ' ' | '\t'))
                .is_some()
            {}
            line.push(' ');
        } else if c.is_control() {
            line.push(' ');
        } else {
            line.push(c);
        }
    }
    line
}

/// The process resolver and the answer caches, as seen by the evaluation of one identity.
struct Resolver<'a> {
    dns: &'a TokioResolver,
    udp: &'a udp::UdpTransport,
    caches: &'a RefCell<Caches>,
    /// The identity's deadline: queries are sent again until then, not after.
    deadline: tokio::time::Instant,
}

impl Resolver<'_> {
    /// A cached answer when there is a valid one, otherwise a query whose answer is kept
    /// for its TTL (a void answer for the SOA's negative TTL; without one, not at all).
    async fn lookup<T: Clone + Weight>(
        &self,
        name: &str,
        record_type: RecordType,
        cache: fn(&mut Caches) -> &mut AnswerCache<T>,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        if let Some(answer) = cache(&mut self.caches.borrow_mut()).get(name, Instant::now()) {
            return answer;
        }
        let (answer, until) = self.query(name, record_type, extract).await;
        if let Some(until) = until {
            cache(&mut self.caches.borrow_mut()).put(name, &answer, until, Instant::now());
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
        if self.udp.usable() {
            match self.udp.query(&query, record_type, self.deadline).await {
                udp::Reply::Answer(message) => return from_message(&query, &message, extract),
                udp::Reply::Failed(error) => return (Answer::Failed(error), None),
                // Too big for a datagram: the resolver asks again and falls back to TCP.
                udp::Reply::Truncated => {}
            }
        }
        match self.dns.lookup(query.clone(), record_type).await {
            Ok(lookup) => (
                found_or_void(&query, lookup.answers(), extract),
                Some(lookup.valid_until()),
            ),
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => (
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

impl Dns for Resolver<'_> {
    async fn txt(&self, name: &str) -> Answer<Vec<u8>> {
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

    async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
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

    async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
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

    async fn mx(&self, name: &str) -> Answer<String> {
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

    async fn ptr(&self, ip: IpAddr) -> Answer<String> {
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
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(ip) => {
            let mut name = String::with_capacity(72);
            for byte in ip.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

/// Builds the checker on first use: requests that never reach SPF (other states, trusted
/// clients) do not pay for the runtime and resolver. A checker that cannot be built is
/// reported once and SPF is skipped, so mail keeps flowing.
pub struct LazySpf {
    settings: SpfSettings,
    checker: std::cell::OnceCell<Option<SpfChecker>>,
}

impl LazySpf {
    pub fn new(settings: SpfSettings) -> Self {
        LazySpf {
            settings,
            checker: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> Option<&SpfChecker> {
        self.checker
            .get_or_init(|| match SpfChecker::new(self.settings.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    crate::logging::error(&format!("SPF checks disabled: {e}"));
                    None
                }
            })
            .as_ref()
    }

    /// The checker, or None when it could not be built.
    pub fn checker(&self) -> Option<&dyn Spf> {
        self.get().map(|c| c as &dyn Spf)
    }
}

impl Spf for SpfChecker {
    fn helo(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        self.check_helo(ip, helo)
    }

    fn mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome {
        self.check_mail_from(ip, helo, sender)
    }

    fn null_sender(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        Some(self.check_null_sender(ip, helo))
    }
}

impl Spf for LazySpf {
    fn helo(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        self.get().and_then(|c| c.check_helo(ip, helo))
    }

    fn null_sender(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        self.get().map(|c| c.check_null_sender(ip, helo))
    }

    fn mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome {
        match self.get() {
            Some(c) => c.check_mail_from(ip, helo, sender),
            None => SpfOutcome {
                identity: Identity::MailFrom,
                result: SpfResult::TempError,
                domain: sender
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default(),
                explanation: None,
                reason: Some("SPF checker unavailable".into()),
                header: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names() {
        for name in [
            "pass",
            "fail",
            "softfail",
            "neutral",
            "none",
            "temperror",
            "permerror",
        ] {
            let result: SpfResult = name.parse().unwrap();
            assert_eq!(result.to_string(), name);
            assert_eq!(name.to_uppercase().parse::<SpfResult>().unwrap(), result);
        }
        assert!("hardfail".parse::<SpfResult>().is_err());
        assert_eq!(
            "Received-SPF".parse::<HeaderKind>().unwrap(),
            HeaderKind::ReceivedSpf
        );
        assert_eq!(
            "authentication-results".parse::<HeaderKind>().unwrap(),
            HeaderKind::AuthenticationResults
        );
        assert_eq!("none".parse::<HeaderKind>().unwrap(), HeaderKind::None);
        assert!("x-spf".parse::<HeaderKind>().is_err());
        assert_eq!(Identity::MailFrom.to_string(), "mailfrom");
    }

    #[test]
    fn identity_domains() {
        assert_eq!(
            checkable_domain("Mail.Example.COM."),
            Some("mail.example.com".into())
        );
        assert_eq!(
            checkable_domain("a_b.example.com"),
            Some("a_b.example.com".into())
        );
        for bad in [
            "",
            ".",
            "localhost",
            "A2345678",
            "[192.0.2.1]",
            "192.0.2.1",
            "A...example.com",
            "foo bar.example.com",
            "ex\u{e4}mple.com",
        ] {
            assert_eq!(checkable_domain(bad), None, "{bad:?}");
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert_eq!(checkable_domain(&long), None);
        let ok = format!("{}.example.com", "a".repeat(63));
        assert!(checkable_domain(&ok).is_some());
    }

    #[test]
    fn headers_become_one_safe_line() {
        assert_eq!(
            one_line("Received-SPF: pass (x)\r\n\treceiver=h; helo=a;\r\n"),
            "Received-SPF: pass (x) receiver=h; helo=a;"
        );
        assert_eq!(one_line("A: b;\r\n\t c\r\n \td\r\n"), "A: b; c d");
        assert_eq!(one_line("A: b\nc\0d"), "A: b c d");
    }

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
