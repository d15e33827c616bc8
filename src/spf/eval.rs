//! RFC 7208 check_host(): evaluates strictly parsed records against DNS answers, with the
//! processing limits of §4.6.4 and the macro expansion of §7.
//!
//! DNS comes in through the [`Dns`] trait, so the evaluation is tested against in-memory
//! zones and runs in production on the resolver of mail-auth. Every record the evaluation
//! reaches (the checked domain, include and redirect targets, including targets built by
//! macros) is parsed in full before any of its terms is evaluated, so a syntax error anywhere
//! in such a record is a permerror (RFC 7208 §4.6).
//!
//! Readings chosen where the RFC leaves room (the public RFC 7208 test suite accepts them):
//! - a target name that cannot be a DNS name after expansion (empty or over-long label) is
//!   treated as a name that does not exist: `a`, `mx`, `ptr` and `exists` do not match, an
//!   `include` or `redirect` to it is a permerror;
//! - void lookups (RFC 7208 §4.6.4) are counted for the queries of `a`, `mx`, `ptr` and
//!   `exists` themselves (a `ptr` term counts one when the client's PTR query finds no name,
//!   as in pyspf and Mail::SPF), not for the address lookups of MX hosts or PTR names, which
//!   the domain owner does not control; `exp` and `%{p}` lookups are never counted;
//! - a DNS error while looking up the addresses of an MX host is a temperror, as for the
//!   MX lookup itself; for `ptr` and `%{p}` it only skips that name (RFC 7208 §5.5);
//! - `%{p}` does not count against the limit of 10 DNS-querying terms;
//! - `%{i}` of an IPv6 client is written with upper-case nibbles, as in the RFC's examples.
//!
//! Known gap: a zero-length TXT record beside the SPF record makes the resolver reject the
//! whole answer, so such a domain gives temperror instead of its result.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{
    self, Letter, MacroItem, MacroString, Mechanism, Qualifier, Record, Selection,
};
use super::types::SpfResult;
use crate::dns::Answer;

/// RFC 7208 §4.6.4: terms that cause DNS queries, per evaluation.
const MAX_DNS_TERMS: u32 = 10;
/// RFC 7208 §4.6.4: lookups answered with no records or NXDOMAIN, per evaluation.
const MAX_VOID_LOOKUPS: u32 = 2;
/// RFC 7208 §4.6.4: MX records per `mx` mechanism (more is a permerror) and PTR records
/// per `ptr` or `%{p}` (more are ignored).
const MAX_MX_RECORDS: usize = 10;
const MAX_PTR_RECORDS: usize = 10;
/// RFC 7208 §7.3: an expanded domain name is cut from the left to fit in 253 characters.
const MAX_NAME_LEN: usize = 253;
/// Explanations end up in an SMTP reply line; keep them to a sane length.
const MAX_EXPLANATION_LEN: usize = 512;

/// The DNS queries an SPF evaluation makes. Names are ASCII, without the trailing dot, with
/// labels of 1 to 63 bytes; returned host names are lower case without the trailing dot.
pub(crate) trait Dns {
    /// Each TXT record as the concatenation of its character-strings.
    async fn txt(&self, name: &str) -> Answer<Vec<u8>>;
    async fn a(&self, name: &str) -> Answer<Ipv4Addr>;
    async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr>;
    /// Exchange names; a null MX (".") is returned as an empty name.
    async fn mx(&self, name: &str) -> Answer<String>;
    async fn ptr(&self, ip: IpAddr) -> Answer<String>;
}

/// The identity being checked and the connection it came from.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    /// Client address, IPv4-mapped IPv6 already turned into IPv4.
    pub(crate) ip: IpAddr,
    /// `<sender>`: `local@domain`, with `postmaster` for an empty local part.
    pub(crate) sender: &'a str,
    pub(crate) local_part: &'a str,
    pub(crate) sender_domain: &'a str,
    /// The HELO/EHLO argument as the client sent it.
    pub(crate) helo: &'a str,
    /// `%{r}`: the host name of this receiver.
    pub(crate) receiver: &'a str,
}

/// What check_host() concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) result: SpfResult,
    /// The domain's `exp=` text, on fail only.
    pub(crate) explanation: Option<String>,
    /// Why the result is a permerror or temperror, for the logs.
    pub(crate) reason: Option<String>,
}

/// Runs check_host() for `domain`, which the caller has checked to be a valid domain name.
pub(crate) async fn check_host<D: Dns>(dns: &D, request: &Request<'_>, domain: &str) -> Verdict {
    let mut evaluation = Evaluation {
        dns,
        request,
        dns_terms: 0,
        void_lookups: 0,
        ptr_names: None,
        ptr_void: false,
        validated: HashMap::new(),
    };
    match evaluation.check(domain, true).await {
        Ok(outcome) => Verdict {
            result: outcome.result,
            explanation: outcome.explanation,
            reason: None,
        },
        Err(Stop::Temporary(reason)) => Verdict {
            result: SpfResult::TempError,
            explanation: None,
            reason: Some(reason),
        },
        Err(Stop::Permanent(reason)) => Verdict {
            result: SpfResult::PermError,
            explanation: None,
            reason: Some(reason),
        },
    }
}

/// Errors end the whole evaluation, through any depth of include and redirect.
enum Stop {
    Temporary(String),
    Permanent(String),
}

struct Outcome {
    /// Never TempError or PermError: those travel as [`Stop`].
    result: SpfResult,
    explanation: Option<String>,
}

struct Evaluation<'a, D> {
    dns: &'a D,
    request: &'a Request<'a>,
    dns_terms: u32,
    void_lookups: u32,
    /// PTR names of the client (at most 10), looked up once per evaluation.
    ptr_names: Option<Vec<String>>,
    /// Whether that PTR lookup was void (NXDOMAIN or no record).
    ptr_void: bool,
    /// Whether a PTR name resolves back to the client, looked up once per name.
    validated: HashMap<String, bool>,
}

impl<D: Dns> Evaluation<'_, D> {
    async fn check(&mut self, domain: &str, want_explanation: bool) -> Result<Outcome, Stop> {
        let Some(record) = self.fetch_record(domain).await? else {
            return Ok(Outcome {
                result: SpfResult::None,
                explanation: None,
            });
        };
        for directive in &record.directives {
            if self.matches(&directive.mechanism, domain).await? {
                let result = match directive.qualifier {
                    Qualifier::Pass => SpfResult::Pass,
                    Qualifier::Fail => SpfResult::Fail,
                    Qualifier::SoftFail => SpfResult::SoftFail,
                    Qualifier::Neutral => SpfResult::Neutral,
                };
                let explanation = if result == SpfResult::Fail && want_explanation {
                    self.explanation(&record, domain).await
                } else {
                    None
                };
                return Ok(Outcome {
                    result,
                    explanation,
                });
            }
        }
        if let Some(redirect) = &record.redirect {
            self.count_dns_term()?;
            let Some(target) = self.target_name(redirect, domain).await else {
                return Err(Stop::Permanent(format!(
                    "redirect= of {domain} is not a valid domain name"
                )));
            };
            // The target's own exp= applies, never the one of the redirecting record.
            let outcome = Box::pin(self.check(&target, want_explanation)).await?;
            if outcome.result == SpfResult::None {
                return Err(Stop::Permanent(format!(
                    "redirect target {target} has no SPF record"
                )));
            }
            return Ok(outcome);
        }
        Ok(Outcome {
            result: SpfResult::Neutral,
            explanation: None,
        })
    }

    /// The parsed SPF record of `domain`, `None` when it has none.
    async fn fetch_record(&mut self, domain: &str) -> Result<Option<Record>, Stop> {
        let records = match self.dns.txt(domain).await {
            Answer::Found(records) => records,
            Answer::Void => return Ok(None),
            Answer::Failed(error) => {
                return Err(Stop::Temporary(format!("TXT lookup of {domain}: {error}")));
            }
        };
        match record::select(&records) {
            Selection::None => Ok(None),
            Selection::Many => Err(Stop::Permanent(format!(
                "{domain} has more than one SPF record"
            ))),
            Selection::One(text) => record::parse(text)
                .map(Some)
                .map_err(|error| Stop::Permanent(format!("SPF record of {domain}: {error}"))),
        }
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, Stop> {
        let ip = self.request.ip;
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4 { network, prefix } => Ok(match ip {
                IpAddr::V4(ip) => in_network4(ip, *network, *prefix),
                IpAddr::V6(_) => false,
            }),
            Mechanism::Ip6 { network, prefix } => Ok(match ip {
                IpAddr::V6(ip) => in_network6(ip, *network, *prefix),
                IpAddr::V4(_) => false,
            }),
            Mechanism::Include(spec) => self.include_matches(spec, domain).await,
            Mechanism::A {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                self.count_dns_term()?;
                match self.optional_target(spec.as_ref(), domain).await {
                    Some(target) => self.address_match(&target, *cidr4, *cidr6, true).await,
                    None => Ok(false),
                }
            }
            Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => self.mx_matches(spec.as_ref(), domain, *cidr4, *cidr6).await,
            Mechanism::Ptr(spec) => self.ptr_matches(spec.as_ref(), domain).await,
            Mechanism::Exists(spec) => self.exists_matches(spec, domain).await,
        }
    }

    /// `include`: the included domain's check passes (RFC 7208 §5.2).
    async fn include_matches(&mut self, spec: &MacroString, domain: &str) -> Result<bool, Stop> {
        self.count_dns_term()?;
        let Some(target) = self.target_name(spec, domain).await else {
            return Err(Stop::Permanent(format!(
                "include of {domain} is not a valid domain name"
            )));
        };
        let outcome = Box::pin(self.check(&target, false)).await?;
        match outcome.result {
            SpfResult::Pass => Ok(true),
            SpfResult::None => Err(Stop::Permanent(format!(
                "included domain {target} has no SPF record"
            ))),
            _ => Ok(false),
        }
    }

    /// `mx`: an address of one of the domain's (at most ten) exchanges (RFC 7208 §5.4).
    async fn mx_matches(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
        cidr4: u8,
        cidr6: u8,
    ) -> Result<bool, Stop> {
        self.count_dns_term()?;
        let Some(target) = self.optional_target(spec, domain).await else {
            return Ok(false);
        };
        let exchanges = match self.dns.mx(&target).await {
            Answer::Found(exchanges) => exchanges,
            Answer::Void => {
                self.count_void()?;
                return Ok(false);
            }
            Answer::Failed(error) => {
                return Err(Stop::Temporary(format!("MX lookup of {target}: {error}")));
            }
        };
        if exchanges.len() > MAX_MX_RECORDS {
            return Err(Stop::Permanent(format!(
                "{target} has more than {MAX_MX_RECORDS} MX records"
            )));
        }
        for exchange in exchanges {
            // A null MX (RFC 7505) names no host.
            let Some(host) = normalize_name(&exchange) else {
                continue;
            };
            if self.address_match(&host, cidr4, cidr6, false).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `ptr`: a validated name of the client within the domain (RFC 7208 §5.5).
    async fn ptr_matches(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<bool, Stop> {
        self.count_dns_term()?;
        let Some(target) = self.optional_target(spec, domain).await else {
            return Ok(false);
        };
        let matched = self.ptr_match(&target.to_ascii_lowercase()).await;
        // Each `ptr` term whose PTR query is void counts, even when that answer was
        // already known from an earlier term.
        if self.ptr_void {
            self.count_void()?;
        }
        Ok(matched)
    }

    /// `exists`: the name has an A record, whatever the client's address family (§5.7).
    async fn exists_matches(&mut self, spec: &MacroString, domain: &str) -> Result<bool, Stop> {
        self.count_dns_term()?;
        let Some(target) = self.target_name(spec, domain).await else {
            return Ok(false);
        };
        match self.dns.a(&target).await {
            Answer::Found(_) => Ok(true),
            Answer::Void => {
                self.count_void()?;
                Ok(false)
            }
            Answer::Failed(error) => Err(Stop::Temporary(format!("A lookup of {target}: {error}"))),
        }
    }

    /// Whether `host` has an address of the client's family within the CIDR length. An
    /// IPv4 client is compared with A records only, an IPv6 client with AAAA only.
    async fn address_match(
        &mut self,
        host: &str,
        cidr4: u8,
        cidr6: u8,
        counts_as_void: bool,
    ) -> Result<bool, Stop> {
        // Ok(Some(matched)), Ok(None) for a void lookup, Err for a failed one.
        let answer = match self.request.ip {
            IpAddr::V4(ip) => match self.dns.a(host).await {
                Answer::Found(addresses) => {
                    Ok(Some(addresses.iter().any(|a| in_network4(ip, *a, cidr4))))
                }
                Answer::Void => Ok(None),
                Answer::Failed(error) => Err(error),
            },
            IpAddr::V6(ip) => match self.dns.aaaa(host).await {
                Answer::Found(addresses) => {
                    Ok(Some(addresses.iter().any(|a| in_network6(ip, *a, cidr6))))
                }
                Answer::Void => Ok(None),
                Answer::Failed(error) => Err(error),
            },
        };
        match answer {
            Ok(Some(matched)) => Ok(matched),
            Ok(None) => {
                if counts_as_void {
                    self.count_void()?;
                }
                Ok(false)
            }
            Err(error) => Err(Stop::Temporary(format!(
                "address lookup of {host}: {error}"
            ))),
        }
    }

    /// RFC 7208 §5.5: a PTR name of the client that equals `target` or is below it, and
    /// resolves back to the client.
    async fn ptr_match(&mut self, target: &str) -> bool {
        for name in self.client_ptr_names().await {
            if is_same_or_below(&name, target) && self.is_validated(&name).await {
                return true;
            }
        }
        false
    }

    /// `%{p}`: a validated PTR name, preferring one at or below `domain` (RFC 7208 §7.3).
    async fn validated_name(&mut self, domain: &str) -> String {
        let domain = domain.to_ascii_lowercase();
        let names = self.client_ptr_names().await;
        for name in names.iter().filter(|name| is_same_or_below(name, &domain)) {
            if self.is_validated(name).await {
                return name.clone();
            }
        }
        for name in &names {
            if self.is_validated(name).await {
                return name.clone();
            }
        }
        "unknown".to_string()
    }

    async fn client_ptr_names(&mut self) -> Vec<String> {
        if let Some(names) = &self.ptr_names {
            return names.clone();
        }
        // A failed PTR lookup only means no name matches (RFC 7208 §5.5).
        let names: Vec<String> = match self.dns.ptr(self.request.ip).await {
            Answer::Found(names) => names
                .iter()
                .filter_map(|name| normalize_name(name))
                .map(|name| name.to_ascii_lowercase())
                .take(MAX_PTR_RECORDS)
                .collect(),
            Answer::Void => {
                self.ptr_void = true;
                Vec::new()
            }
            Answer::Failed(_) => Vec::new(),
        };
        self.ptr_names = Some(names.clone());
        names
    }

    async fn is_validated(&mut self, name: &str) -> bool {
        if let Some(&known) = self.validated.get(name) {
            return known;
        }
        let valid = match self.request.ip {
            IpAddr::V4(ip) => matches!(self.dns.a(name).await,
                Answer::Found(addresses) if addresses.contains(&ip)),
            IpAddr::V6(ip) => matches!(self.dns.aaaa(name).await,
                Answer::Found(addresses) if addresses.contains(&ip)),
        };
        self.validated.insert(name.to_string(), valid);
        valid
    }

    /// The exp= text of a record that gave fail; any problem means no explanation (§6.2).
    async fn explanation(&mut self, record: &Record, domain: &str) -> Option<String> {
        let target = self.target_name(record.exp.as_ref()?, domain).await?;
        let Answer::Found(records) = self.dns.txt(&target).await else {
            return None;
        };
        let [text] = records.as_slice() else {
            return None;
        };
        let text = record::parse_explanation(text).ok()?;
        let expanded = self.expand(&text, domain).await;
        let mut explanation: String = expanded
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .collect();
        if explanation.len() > MAX_EXPLANATION_LEN {
            explanation.truncate(MAX_EXPLANATION_LEN);
        }
        Some(explanation)
    }

    /// The target of a mechanism with an optional domain-spec: the current domain by default.
    async fn optional_target(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Option<String> {
        match spec {
            Some(spec) => self.target_name(spec, domain).await,
            None => Some(domain.to_string()),
        }
    }

    /// Expands a domain-spec into a name to query; `None` if it cannot be a DNS name.
    async fn target_name(&mut self, spec: &MacroString, domain: &str) -> Option<String> {
        let expanded = self.expand(spec, domain).await;
        let mut name = expanded.strip_suffix('.').unwrap_or(&expanded);
        while name.len() > MAX_NAME_LEN {
            name = &name[name.find('.')? + 1..];
        }
        normalize_name(name)
    }

    async fn expand(&mut self, string: &MacroString, domain: &str) -> String {
        let validated = if string.uses(Letter::ValidatedName) {
            self.validated_name(domain).await
        } else {
            String::new()
        };
        let request = self.request;
        let mut out = String::new();
        for item in &string.items {
            match item {
                MacroItem::Literal(text) => out.push_str(text),
                MacroItem::Expand {
                    letter,
                    escape,
                    keep,
                    reverse,
                    delimiters,
                } => {
                    let value = match letter {
                        Letter::Sender => request.sender.to_string(),
                        Letter::LocalPart => request.local_part.to_string(),
                        Letter::SenderDomain => request.sender_domain.to_string(),
                        Letter::Domain => domain.to_string(),
                        Letter::Ip => dotted_ip(request.ip),
                        Letter::ValidatedName => validated.clone(),
                        Letter::IpVersion => match request.ip {
                            IpAddr::V4(_) => "in-addr".to_string(),
                            IpAddr::V6(_) => "ip6".to_string(),
                        },
                        Letter::Helo => request.helo.to_string(),
                        Letter::ClientIp => request.ip.to_string(),
                        Letter::Receiver => request.receiver.to_string(),
                        Letter::Timestamp => SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |elapsed| elapsed.as_secs())
                            .to_string(),
                    };
                    let value = transform(&value, *keep, *reverse, delimiters);
                    if *escape {
                        url_escape(&value, &mut out);
                    } else {
                        out.push_str(&value);
                    }
                }
            }
        }
        out
    }

    fn count_dns_term(&mut self) -> Result<(), Stop> {
        self.dns_terms += 1;
        if self.dns_terms > MAX_DNS_TERMS {
            return Err(Stop::Permanent(format!(
                "more than {MAX_DNS_TERMS} DNS-querying terms"
            )));
        }
        Ok(())
    }

    fn count_void(&mut self) -> Result<(), Stop> {
        self.void_lookups += 1;
        if self.void_lookups > MAX_VOID_LOOKUPS {
            return Err(Stop::Permanent(format!(
                "more than {MAX_VOID_LOOKUPS} void DNS lookups"
            )));
        }
        Ok(())
    }
}

/// A name usable in a query: no trailing dot, ASCII, labels of 1 to 63 bytes, at most 253
/// bytes. `None` for anything else, including the root (a null MX).
pub(crate) fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.is_ascii()
        && name.split('.').all(|label| (1..=63).contains(&label.len()));
    valid.then(|| name.to_string())
}

fn is_same_or_below(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn in_network4(ip: Ipv4Addr, network: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

fn in_network6(ip: Ipv6Addr, network: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

/// `%{i}`: dotted decimal for IPv4, dotted nibbles for IPv6 (RFC 7208 §7.3).
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => {
            let mut out = String::with_capacity(63);
            for byte in ip.octets() {
                for nibble in [byte >> 4, byte & 0x0f] {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    let _ = write!(out, "{nibble:X}");
                }
            }
            out
        }
    }
}

/// The transformers of RFC 7208 §7.3: split on the delimiters, reverse, keep the right-most
/// parts, join with dots.
fn transform(value: &str, keep: Option<u8>, reverse: bool, delimiters: &[u8]) -> String {
    if keep.is_none() && !reverse && delimiters.iter().all(|&d| d == b'.') {
        return value.to_string();
    }
    let is_delimiter = |c: char| {
        if delimiters.is_empty() {
            c == '.'
        } else {
            u8::try_from(c).is_ok_and(|byte| delimiters.contains(&byte))
        }
    };
    let mut parts: Vec<&str> = value.split(is_delimiter).collect();
    if reverse {
        parts.reverse();
    }
    if let Some(keep) = keep {
        let skip = parts.len().saturating_sub(usize::from(keep));
        parts.drain(..skip);
    }
    parts.join(".")
}

/// URL escaping for upper-case macro letters: everything but the unreserved characters.
fn url_escape(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory zone; names are compared without regard to case.
    #[derive(Default)]
    struct Zone {
        txt: HashMap<String, Answer<Vec<u8>>>,
        a: HashMap<String, Vec<Ipv4Addr>>,
        aaaa: HashMap<String, Vec<Ipv6Addr>>,
        mx: HashMap<String, Vec<String>>,
        ptr: HashMap<IpAddr, Vec<String>>,
        failing: Vec<String>,
        queries: RefCell<Vec<String>>,
    }

    impl Zone {
        fn txt(mut self, name: &str, records: &[&str]) -> Self {
            let records = records.iter().map(|r| r.as_bytes().to_vec()).collect();
            self.txt.insert(name.to_string(), Answer::Found(records));
            self
        }
        fn a(mut self, name: &str, addresses: &[&str]) -> Self {
            let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
            self.a.insert(name.to_string(), addresses);
            self
        }
        fn aaaa(mut self, name: &str, addresses: &[&str]) -> Self {
            let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
            self.aaaa.insert(name.to_string(), addresses);
            self
        }
        fn mx(mut self, name: &str, hosts: &[&str]) -> Self {
            self.mx.insert(
                name.to_string(),
                hosts.iter().map(|h| h.to_string()).collect(),
            );
            self
        }
        fn ptr(mut self, ip: &str, names: &[&str]) -> Self {
            let names = names.iter().map(|n| n.to_string()).collect();
            self.ptr.insert(ip.parse().unwrap(), names);
            self
        }
        fn failing(mut self, name: &str) -> Self {
            self.failing.push(name.to_string());
            self
        }
        fn answer<T: Clone>(
            &self,
            kind: &str,
            name: &str,
            map: &HashMap<String, Vec<T>>,
        ) -> Answer<T> {
            let name = name.to_ascii_lowercase();
            self.queries.borrow_mut().push(format!("{kind} {name}"));
            if self.failing.contains(&name) {
                return Answer::Failed("timed out".into());
            }
            match map.get(&name) {
                Some(found) if !found.is_empty() => Answer::Found(found.clone()),
                _ => Answer::Void,
            }
        }
    }

    impl Dns for Zone {
        async fn txt(&self, name: &str) -> Answer<Vec<u8>> {
            let key = name.to_ascii_lowercase();
            self.queries.borrow_mut().push(format!("TXT {key}"));
            if self.failing.contains(&key) {
                return Answer::Failed("timed out".into());
            }
            self.txt.get(&key).cloned().unwrap_or(Answer::Void)
        }
        async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
            self.answer("A", name, &self.a)
        }
        async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
            self.answer("AAAA", name, &self.aaaa)
        }
        async fn mx(&self, name: &str) -> Answer<String> {
            self.answer("MX", name, &self.mx)
        }
        async fn ptr(&self, ip: IpAddr) -> Answer<String> {
            self.queries.borrow_mut().push(format!("PTR {ip}"));
            match self.ptr.get(&ip) {
                Some(names) => Answer::Found(names.clone()),
                None => Answer::Void,
            }
        }
    }

    /// Runs a future that never waits on anything (the zone answers at once).
    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn check(zone: &Zone, ip: &str, sender: &str) -> Verdict {
        let (local, domain) = sender.rsplit_once('@').unwrap();
        let local = if local.is_empty() {
            "postmaster"
        } else {
            local
        };
        let full = format!("{local}@{domain}");
        let request = Request {
            ip: ip.parse::<IpAddr>().unwrap().to_canonical(),
            sender: &full,
            local_part: local,
            sender_domain: domain,
            helo: "mail.example.com",
            receiver: "mx.example.org",
        };
        run(check_host(zone, &request, domain))
    }

    fn result(zone: &Zone, ip: &str, sender: &str) -> SpfResult {
        check(zone, ip, sender).result
    }

    #[test]
    fn basic_results() {
        let zone = Zone::default()
            .txt(
                "example.com",
                &["v=spf1 ip4:192.0.2.0/24 ~ip4:198.51.100.1 ?ip4:203.0.113.1 -all"],
            )
            .txt("open.example.com", &["v=spf1 ip4:192.0.2.1"]);
        assert_eq!(result(&zone, "192.0.2.9", "a@example.com"), SpfResult::Pass);
        assert_eq!(
            result(&zone, "198.51.100.1", "a@example.com"),
            SpfResult::SoftFail
        );
        assert_eq!(
            result(&zone, "203.0.113.1", "a@example.com"),
            SpfResult::Neutral
        );
        assert_eq!(
            result(&zone, "203.0.113.2", "a@example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "203.0.113.2", "a@open.example.com"),
            SpfResult::Neutral
        );
        assert_eq!(
            result(&zone, "203.0.113.2", "a@nothing.example.com"),
            SpfResult::None
        );
    }

    #[test]
    fn ip_families_never_cross() {
        let zone = Zone::default()
            .txt("six.example.com", &["v=spf1 ip6:::0/0 -all"])
            .txt("mapped.example.com", &["v=spf1 ip6:::FFFF:1.2.3.4 -all"])
            .txt("a6.example.com", &["v=spf1 a//0 -all"])
            .aaaa("a6.example.com", &["2001:db8::1"])
            .txt("x.example.com", &["v=spf1 exists:six.example.org -all"])
            .aaaa("six.example.org", &["2001:db8::2"])
            .txt("four.example.com", &["v=spf1 ip4:0.0.0.0/0 -all"]);
        assert_eq!(
            result(&zone, "1.2.3.4", "a@six.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "::ffff:1.2.3.4", "a@six.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "1.2.3.4", "a@mapped.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "1.2.3.4", "a@a6.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "2001:db8::7", "a@a6.example.com"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&zone, "2001:db8::7", "a@x.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "2001:db8::7", "a@four.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            result(&zone, "::ffff:1.2.3.4", "a@four.example.com"),
            SpfResult::Pass
        );
    }

    #[test]
    fn includes_redirects_and_errors() {
        let zone = Zone::default()
            .txt("example.com", &["v=spf1 include:_spf.example.com -all"])
            .txt(
                "_spf.example.com",
                &["v=spf1 include:_spf2.example.com ~all"],
            )
            .txt("_spf2.example.com", &["v=spf1 ip4:192.0.2.1"])
            .txt(
                "redir.example.com",
                &["v=spf1 ip4:192.0.2.2 redirect=example.com"],
            )
            .txt(
                "bad.example.com",
                &["v=spf1 include:broken.example.com ip4:192.0.2.1 -all"],
            )
            .txt("broken.example.com", &["v=spf1 ip4:192.0.2.300 -all"])
            .txt("two.example.com", &["v=spf1 -all", "v=spf1 +all"])
            .txt(
                "none.example.com",
                &["v=spf1 include:nothing.example.com -all"],
            )
            .txt(
                "temp.example.com",
                &["v=spf1 include:dead.example.com -all"],
            )
            .failing("dead.example.com")
            .txt(
                "nored.example.com",
                &["v=spf1 redirect=nothing.example.com"],
            );
        assert_eq!(result(&zone, "192.0.2.1", "a@example.com"), SpfResult::Pass);
        // A softfail inside an include is just "no match".
        assert_eq!(result(&zone, "192.0.2.9", "a@example.com"), SpfResult::Fail);
        assert_eq!(
            result(&zone, "192.0.2.2", "a@redir.example.com"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@redir.example.com"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&zone, "192.0.2.9", "a@redir.example.com"),
            SpfResult::Fail
        );
        let verdict = check(&zone, "192.0.2.1", "a@bad.example.com");
        assert_eq!(verdict.result, SpfResult::PermError);
        assert_eq!(
            verdict.reason.as_deref(),
            Some("SPF record of broken.example.com: invalid address in \"ip4:192.0.2.300\"")
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@two.example.com"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@none.example.com"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@temp.example.com"),
            SpfResult::TempError
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@nored.example.com"),
            SpfResult::PermError
        );
    }

    #[test]
    fn limits() {
        let mut zone = Zone::default()
            .txt("loop.example.com", &["v=spf1 include:loop.example.com"])
            .txt(
                "voids.example.com",
                &["v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com ?all"],
            )
            .txt(
                "twovoids.example.com",
                &["v=spf1 a:n1.example.com mx:n2.example.com ?all"],
            )
            .txt("mx.example.com", &["v=spf1 mx -all"])
            .mx(
                "mx.example.com",
                &[
                    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11",
                ],
            );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@loop.example.com"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@voids.example.com"),
            SpfResult::PermError
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@twovoids.example.com"),
            SpfResult::Neutral
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "a@mx.example.com"),
            SpfResult::PermError
        );
        let ten = "v=spf1 a mx a mx a mx a mx a mx ip4:192.0.2.1 -all";
        zone = zone
            .txt("ten.example.com", &[ten])
            .a("ten.example.com", &["192.0.2.200"])
            .mx("ten.example.com", &["ten.example.com"]);
        assert_eq!(
            result(&zone, "192.0.2.1", "a@ten.example.com"),
            SpfResult::Pass
        );
        let eleven = "v=spf1 a mx a mx a mx a mx a mx a ip4:192.0.2.1 -all";
        zone = zone.txt("ten.example.com", &[eleven]);
        assert_eq!(
            result(&zone, "192.0.2.1", "a@ten.example.com"),
            SpfResult::PermError
        );
    }

    /// RFC 7208 §4.6.4: a `ptr` term whose PTR query finds nothing is a void lookup, like
    /// an `a` term whose name has no address; a PTR that answers is not.
    #[test]
    fn void_ptr_lookups_count() {
        let zone = Zone::default()
            .txt(
                "three.example.com",
                &["v=spf1 ptr a:n1.example.com a:n2.example.com ?all"],
            )
            .txt("two.example.com", &["v=spf1 ptr a:n1.example.com ?all"])
            .txt("again.example.com", &["v=spf1 ptr ptr ptr ?all"])
            .ptr("198.51.100.7", &["host.example.com"]);
        for (sender, want) in [
            ("a@three.example.com", SpfResult::PermError),
            ("a@two.example.com", SpfResult::Neutral),
            ("a@again.example.com", SpfResult::PermError),
        ] {
            assert_eq!(result(&zone, "192.0.2.1", sender), want, "{sender}");
        }
        let verdict = check(&zone, "192.0.2.1", "a@three.example.com");
        assert_eq!(
            verdict.reason.as_deref(),
            Some("more than 2 void DNS lookups")
        );
        // The client with a PTR name: only the two `a` terms are void.
        assert_eq!(
            result(&zone, "198.51.100.7", "a@three.example.com"),
            SpfResult::Neutral
        );
    }

    #[test]
    fn mx_and_ptr() {
        let zone = Zone::default()
            .txt("example.com", &["v=spf1 mx/24 ptr -all"])
            .mx("example.com", &["", "mx1.example.com"])
            .a("mx1.example.com", &["192.0.2.10"])
            .ptr("198.51.100.7", &["host.example.com", "Other.Example.COM."])
            .a("other.example.com", &["198.51.100.7"])
            .a("host.example.com", &["198.51.100.8"]);
        assert_eq!(
            result(&zone, "192.0.2.99", "a@example.com"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&zone, "198.51.100.7", "a@example.com"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&zone, "198.51.100.8", "a@example.com"),
            SpfResult::Fail
        );
    }

    #[test]
    fn explanations_and_macros() {
        let zone = Zone::default()
            .txt("example.com", &["v=spf1 -all exp=why.%{d}"])
            .txt("why.example.com", &["%{c} is not allowed to send for %{o} (%{L}, %{ir}.%{v}.arpa)"])
            .txt("redir.example.com", &["v=spf1 exp=nope.example.com redirect=example.com"])
            .txt("inc.example.com", &["v=spf1 include:example.com -all exp=inc-why.example.com"])
            .txt("inc-why.example.com", &["Correct!"])
            .txt("two.example.com", &["v=spf1 -all exp=twice.example.com"])
            .txt("twice.example.com", &["one", "two"])
            .txt("macro.example.com", &["v=spf1 exists:%{l2r+-}.user.%{d2} -all"])
            .a("bar.foo.user.example.com", &["127.0.0.2"])
            .txt("long.example.com", &["v=spf1 a:%{h}%{h}%{h}%{h}%{h}%{h}%{h}%{h}%{h}%{h}%{h}%{h}.long.example.com -all"]);
        let verdict = check(&zone, "192.0.2.1", "j&j@example.com");
        assert_eq!(verdict.result, SpfResult::Fail);
        assert_eq!(
            verdict.explanation.as_deref(),
            Some(
                "192.0.2.1 is not allowed to send for example.com (j%26j, 1.2.0.192.in-addr.arpa)"
            )
        );
        let verdict = check(&zone, "2001:db8::1", "x@redir.example.com");
        assert!(
            verdict
                .explanation
                .unwrap()
                .starts_with("2001:db8::1 is not allowed")
        );
        let verdict = check(&zone, "192.0.2.1", "x@inc.example.com");
        assert_eq!(verdict.explanation.as_deref(), Some("Correct!"));
        let verdict = check(&zone, "192.0.2.1", "x@two.example.com");
        assert_eq!(
            (verdict.result, verdict.explanation),
            (SpfResult::Fail, None)
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "foo-bar+zip@macro.example.com"),
            SpfResult::Pass
        );
        assert_eq!(
            result(&zone, "192.0.2.1", "foo-baz@macro.example.com"),
            SpfResult::Fail
        );
        // A label over 63 bytes after expansion means "no such name", not an error.
        assert_eq!(
            result(&zone, "192.0.2.1", "a@long.example.com"),
            SpfResult::Fail
        );
        assert_eq!(
            dotted_ip("2001:db8::cb01".parse().unwrap()),
            "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.C.B.0.1"
        );
        assert_eq!(
            transform("philip-gladstone-test", Some(2), true, b"-"),
            "gladstone.philip"
        );
        assert_eq!(transform("a.b.c", Some(200), false, b""), "a.b.c");
    }

    #[test]
    fn queries_only_what_is_reached() {
        let zone = Zone::default().txt(
            "example.com",
            &["v=spf1 ip4:192.0.2.1 include:other.example.com -all"],
        );
        assert_eq!(result(&zone, "192.0.2.1", "a@example.com"), SpfResult::Pass);
        assert_eq!(*zone.queries.borrow(), vec!["TXT example.com".to_string()]);
    }

    #[test]
    fn names() {
        assert_eq!(
            normalize_name("Example.com."),
            Some("Example.com".to_string())
        );
        assert_eq!(normalize_name(""), None);
        assert_eq!(normalize_name("."), None);
        assert_eq!(normalize_name("a..b"), None);
        assert_eq!(normalize_name(&format!("{}.com", "a".repeat(64))), None);
        assert!(is_same_or_below("mail.example.com", "example.com"));
        assert!(!is_same_or_below("mailexample.com", "example.com"));
        assert!(in_network4(
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(10, 0, 0, 0),
            8
        ));
        assert!(in_network4(
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(1, 1, 1, 1),
            0
        ));
        assert!(!in_network4(
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(10, 1, 2, 4),
            32
        ));
        assert!(in_network6(
            "2001:db8::1".parse().unwrap(),
            "::".parse().unwrap(),
            0
        ));
    }
}
