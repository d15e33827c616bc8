//! Reputation scoring (DESIGN §11): the checks of one client and message, each a weight from
//! the configuration, summed into a total that chooses among no greylisting, greylisting and
//! rejection. Pure over the DNS facts, which `dns` gathers (or a test passes as a table).

pub mod dns;
pub mod patterns;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::spf::SpfResult;
pub use patterns::{DEFAULT_DYNAMIC_PATTERN, Pattern};

/// One DNS list zone and what its answers weigh.
#[derive(Debug, Clone, PartialEq)]
pub struct ListZone {
    pub zone: String,
    /// The weight of any listing answer, when `codes` is empty.
    pub weight: f64,
    /// Weights of particular answers (`zone=127.0.0.4:3,127.0.0.10:1.5`); other answers
    /// do not count.
    pub codes: Vec<(Ipv4Addr, f64)>,
}

impl ListZone {
    /// The weight of a listing with these answers: the weight of the answer that weighs
    /// most (by size), so a zone counts once however many codes it returns.
    fn weight_of(&self, answers: &[Ipv4Addr]) -> Option<f64> {
        if self.codes.is_empty() {
            return (!answers.is_empty()).then_some(self.weight);
        }
        self.codes
            .iter()
            .filter(|(code, _)| answers.contains(code))
            .map(|(_, w)| *w)
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
    }

    /// A zone whose every weight is 0 is off: it is not even asked.
    fn is_on(&self) -> bool {
        if self.codes.is_empty() {
            self.weight != 0.0
        } else {
            self.codes.iter().any(|(_, w)| *w != 0.0)
        }
    }
}

/// The weight of each check that is not a DNS list; 0 turns a check off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub no_ptr: f64,
    pub ptr_unconfirmed: f64,
    pub ptr_dynamic: f64,
    pub helo_literal: f64,
    pub helo_not_fqdn: f64,
    pub helo_unresolvable: f64,
    pub helo_is_client: f64,
    pub helo_ours: f64,
    pub sender_unroutable: f64,
    pub spf_pass: f64,
    pub spf_fail: f64,
    pub spf_softfail: f64,
}

#[cfg(test)]
impl Weights {
    /// The weights the unit tests score with: the shipped defaults of greyspf.conf(5).
    pub(crate) fn for_tests() -> Weights {
        Weights {
            no_ptr: 2.5,
            ptr_unconfirmed: 1.5,
            ptr_dynamic: 2.5,
            helo_literal: 2.5,
            helo_not_fqdn: 1.5,
            helo_unresolvable: 1.5,
            helo_is_client: -1.5,
            helo_ours: 4.0,
            sender_unroutable: 2.5,
            spf_pass: -1.5,
            spf_fail: 3.0,
            spf_softfail: 1.5,
        }
    }
}

/// What scoring needs of the configuration; the composition root builds it.
#[derive(Debug, Clone)]
pub struct ScoreSettings {
    pub dnsbl: Vec<ListZone>,
    pub rhsbl: Vec<ListZone>,
    pub weights: Weights,
    pub dynamic_patterns: Vec<Pattern>,
    pub greylist_threshold: f64,
    pub reject_threshold: f64,
    /// One deadline for all lookups of one evaluation.
    pub timeout: Duration,
    /// This host's name: a HELO that claims it is not the client's own.
    pub hostname: String,
}

impl ScoreSettings {
    /// The settings for scoring a client before any SMTP command (postscreen): the checks
    /// that need only the client address stay; HELO, sender and SPF checks are off, so that
    /// what is not known yet counts nothing.
    pub fn client_only(&self) -> ScoreSettings {
        let w = self.weights;
        ScoreSettings {
            rhsbl: Vec::new(),
            weights: Weights {
                helo_literal: 0.0,
                helo_not_fqdn: 0.0,
                helo_unresolvable: 0.0,
                helo_is_client: 0.0,
                helo_ours: 0.0,
                sender_unroutable: 0.0,
                spf_pass: 0.0,
                spf_fail: 0.0,
                spf_softfail: 0.0,
                ..w
            },
            ..self.clone()
        }
    }
}

/// What is scored: the client and the message, as the request gives them.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// The sender's domain; None for the null sender.
    pub sender_domain: Option<&'a str>,
    /// The address the client connected to, when Postfix sent it.
    pub server_address: Option<IpAddr>,
    /// The message's SPF result (MAIL FROM, or HELO for the null sender), reused as is.
    pub spf: Option<SpfResult>,
    /// What Postfix already found of the client's reverse DNS.
    pub rdns: KnownRdns<'a>,
}

/// The client's reverse DNS as Postfix reports it (`client_name`, `reverse_client_name`).
/// smtpd looks up the PTR and its forward confirmation before it asks the policy, so
/// taking its findings saves the scoring a PTR query and two address queries per name,
/// and one more round trip, as policyd-weight does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownRdns<'a> {
    /// Not reported, or "unknown" for both: no PTR, a lookup that failed and
    /// `smtpd_peername_lookup = no` all read the same, so greyspf looks up itself.
    Unknown,
    /// `client_name`: a PTR name that resolves back to the client.
    Confirmed(&'a str),
    /// `reverse_client_name` alone: a PTR name that does not resolve back to the client.
    Unconfirmed(&'a str),
}

impl<'a> KnownRdns<'a> {
    pub fn from_postfix(client_name: &'a str, reverse_client_name: &'a str) -> Self {
        let known = |n: &str| !n.is_empty() && !n.eq_ignore_ascii_case("unknown");
        if known(client_name) {
            KnownRdns::Confirmed(client_name)
        } else if known(reverse_client_name) {
            KnownRdns::Unconfirmed(reverse_client_name)
        } else {
            KnownRdns::Unknown
        }
    }

    /// The PTR facts Postfix found, if it found any.
    pub fn ptr(self) -> Option<Probe<Vec<(String, bool)>>> {
        let (name, confirmed) = match self {
            KnownRdns::Unknown => return None,
            KnownRdns::Confirmed(n) => (n, true),
            KnownRdns::Unconfirmed(n) => (n, false),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        Some(Probe::Answer(vec![(name, confirmed)]))
    }

    /// The HELO name's addresses where Postfix's findings give them: a HELO that is the
    /// client's confirmed name resolves to the client.
    pub fn helo_addresses(self, helo: &str, ip: IpAddr) -> Option<Probe<Vec<IpAddr>>> {
        let KnownRdns::Confirmed(name) = self else {
            return None;
        };
        let same = helo
            .trim_end_matches('.')
            .eq_ignore_ascii_case(name.trim_end_matches('.'));
        same.then(|| Probe::Answer(vec![ip]))
    }
}

/// The answer of one DNS list for one name.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    NotListed,
    /// The A records of the answer, error codes included.
    Listed(Vec<Ipv4Addr>),
    /// The lookup failed or ran out of time: counts 0.
    Failed(String),
    /// The list failed repeatedly and is not asked for a while: counts 0.
    Skipped,
}

/// A lookup's result as a check sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe<T> {
    /// Not asked: the checks that need it are off, or there is nothing to ask about.
    NotAsked,
    Answer(T),
    /// Failed or ran out of time: the checks that need it count 0.
    Failed(String),
}

/// Everything the DNS said about one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// One entry per zone of `dnsbl` that is on, in configuration order.
    pub dnsbl: Vec<(String, Listing)>,
    /// The sender domain in each zone of `rhsbl`, in configuration order.
    pub rhsbl_sender: Vec<(String, Listing)>,
    /// The HELO name in each zone of `rhsbl`.
    pub rhsbl_helo: Vec<(String, Listing)>,
    /// The PTR names of the client, each with whether it resolves back to the client.
    pub ptr: Probe<Vec<(String, bool)>>,
    /// The addresses of the HELO name.
    pub helo_addresses: Probe<Vec<IpAddr>>,
    /// Whether the sender domain has an MX (not a null MX) or an A record.
    pub sender_routable: Probe<bool>,
}

impl Facts {
    pub fn none() -> Facts {
        Facts {
            dnsbl: Vec::new(),
            rhsbl_sender: Vec::new(),
            rhsbl_helo: Vec::new(),
            ptr: Probe::NotAsked,
            helo_addresses: Probe::NotAsked,
            sender_routable: Probe::NotAsked,
        }
    }
}

/// One check as evaluated: its name, the weight it adds (0 when it did not hit) and what
/// it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub weight: f64,
    pub hit: bool,
    /// Its lookup failed, ran out of time or was skipped: it counts 0.
    pub failed: bool,
    pub detail: String,
}

/// The three outcomes of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Below the greylisting threshold: the message is not greylisted.
    Pass,
    Greylist,
    Reject,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Greylist => "greylist",
            Level::Reject => "reject",
        }
    }
}

/// The outcome of scoring one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub checks: Vec<Check>,
    pub total: f64,
    pub level: Level,
}

impl Scored {
    pub fn hits(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.hit)
    }

    /// The hits as `name(weight)`, space separated, for the log line and reject text.
    pub fn hit_list(&self) -> String {
        let hits: Vec<String> = self
            .hits()
            .map(|c| format!("{}({})", c.name, Weight(c.weight)))
            .collect();
        hits.join(" ")
    }

    /// Whether an allow list (a DNS list of negative weight) lists the client.
    pub fn allow_listed(&self) -> bool {
        self.hits()
            .any(|c| c.name.starts_with("dnsbl:") && c.weight < 0.0)
    }

    /// The log fields of a score, the same wherever it is logged: `score`, then
    /// `score_hits` and `score_failed` when there are any.
    pub fn log_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("score", Weight(self.total).to_string())];
        let hits = self.hit_list();
        if !hits.is_empty() {
            fields.push(("score_hits", hits));
        }
        let failed = self.failed_list();
        if !failed.is_empty() {
            fields.push(("score_failed", failed));
        }
        fields
    }

    /// The checks whose lookup failed or timed out (counted 0).
    pub fn failed_list(&self) -> String {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.failed)
            .map(|c| c.name.as_str())
            .collect();
        failed.join(" ")
    }
}

/// A weight or total as logged: at most two decimals, no trailing zeros, a sign when
/// negative (`4.5`, `-1.5`, `3`).
#[derive(Debug, Clone, Copy)]
pub struct Weight(pub f64);

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.2}", self.0);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        f.write_str(if text == "-0" { "0" } else { text })
    }
}

/// The DNS facts about a subject: the real checker asks the DNS, tests pass a table.
pub trait Score {
    fn facts(&self, subject: &Subject<'_>) -> Facts;
}

/// Answers that lists use to report an error rather than a listing: Spamhaus's
/// 127.255.255.0/24 (public or over-quota resolvers, typing errors), DNSWL's 127.0.0.255
/// and the DBL's 127.0.1.255. Anything outside 127.0.0.0/8 is no listing either.
pub fn is_error_code(a: Ipv4Addr) -> bool {
    let [x, y, z, w] = a.octets();
    x != 127 || (y == 255 && z == 255) || (y == 0 && z <= 1 && w == 255)
}

/// Scores a subject from its facts: every check, its weight, the total and the outcome.
pub fn evaluate(s: &ScoreSettings, subject: &Subject<'_>, facts: &Facts) -> Scored {
    let mut checks = Vec::new();
    list_checks(&mut checks, "dnsbl", &s.dnsbl, &facts.dnsbl);
    list_checks(&mut checks, "rhsbl_sender", &s.rhsbl, &facts.rhsbl_sender);
    list_checks(&mut checks, "rhsbl_helo", &s.rhsbl, &facts.rhsbl_helo);
    ptr_checks(&mut checks, s, subject.ip, &facts.ptr);
    helo_checks(&mut checks, s, subject, &facts.helo_addresses);
    sender_check(&mut checks, &s.weights, &facts.sender_routable);
    spf_check(&mut checks, &s.weights, subject.spf);
    let total = checks
        .iter()
        .filter(|c| c.hit)
        .map(|c| c.weight)
        .sum::<f64>();
    // Round so that sums like 0.1 + 0.2 compare with thresholds as written.
    let total = (total * 100.0).round() / 100.0;
    let level = if total >= s.reject_threshold {
        Level::Reject
    } else if total >= s.greylist_threshold {
        Level::Greylist
    } else {
        Level::Pass
    };
    Scored {
        checks,
        total,
        level,
    }
}

fn check(name: impl Into<String>, weight: f64, hit: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        weight,
        hit: hit && weight != 0.0,
        failed: false,
        detail: detail.into(),
    }
}

/// A check whose lookup gave no answer: it counts 0, and the log line names it.
fn failed(name: impl Into<String>, weight: f64, detail: impl Into<String>) -> Check {
    Check {
        failed: true,
        ..check(name, weight, false, detail)
    }
}

fn list_checks(
    out: &mut Vec<Check>,
    kind: &str,
    zones: &[ListZone],
    answers: &[(String, Listing)],
) {
    for (zone, listing) in answers {
        let Some(z) = zones.iter().find(|z| &z.zone == zone) else {
            continue;
        };
        let name = format!("{kind}:{zone}");
        out.push(match listing {
            Listing::NotListed => check(name, z.weight, false, "not listed"),
            Listing::Skipped => failed(name, z.weight, "skipped: failed repeatedly"),
            Listing::Failed(e) => failed(name, z.weight, format!("lookup failed: {e}")),
            Listing::Listed(codes) => {
                let (errors, real): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) =
                    codes.iter().partition(|a| is_error_code(**a));
                let shown: Vec<String> = codes.iter().map(|a| a.to_string()).collect();
                let shown = shown.join(",");
                match z.weight_of(&real) {
                    Some(w) => check(name, w, true, format!("listed {shown}")),
                    None if !errors.is_empty() => check(
                        name,
                        z.weight,
                        false,
                        format!("error answer {shown}, counted 0"),
                    ),
                    None => check(name, z.weight, false, format!("answer {shown} not weighed")),
                }
            }
        });
    }
}

fn ptr_checks(
    out: &mut Vec<Check>,
    s: &ScoreSettings,
    ip: IpAddr,
    ptr: &Probe<Vec<(String, bool)>>,
) {
    let w = &s.weights;
    let names = match ptr {
        Probe::NotAsked => return,
        Probe::Failed(e) => {
            let detail = format!("lookup failed: {e}");
            out.push(failed("no_ptr", w.no_ptr, detail.clone()));
            out.push(failed("ptr_unconfirmed", w.ptr_unconfirmed, detail.clone()));
            out.push(failed("ptr_dynamic", w.ptr_dynamic, detail));
            return;
        }
        Probe::Answer(names) => names,
    };
    let listed: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    let listed = listed.join(",");
    out.push(check(
        "no_ptr",
        w.no_ptr,
        names.is_empty(),
        if names.is_empty() {
            "no PTR".into()
        } else {
            listed.clone()
        },
    ));
    if names.is_empty() {
        return;
    }
    let confirmed = names.iter().any(|(_, ok)| *ok);
    let detail = if confirmed {
        "forward-confirmed"
    } else {
        "does not resolve back to the client"
    };
    out.push(check(
        "ptr_unconfirmed",
        w.ptr_unconfirmed,
        !confirmed,
        format!("{listed}: {detail}"),
    ));
    let dynamic = names
        .iter()
        .find(|(n, _)| looks_dynamic(n, ip, &s.dynamic_patterns));
    let detail = match dynamic {
        Some((n, _)) => format!("{n} looks dynamic"),
        None => format!("{listed} does not look dynamic"),
    };
    out.push(check(
        "ptr_dynamic",
        w.ptr_dynamic,
        dynamic.is_some(),
        detail,
    ));
}

/// A host name that looks like an address pool's: it matches a configured pattern, or it
/// holds the client's address, as three of its octets in a row (either order) or as hex.
pub fn looks_dynamic(name: &str, ip: IpAddr, patterns: &[Pattern]) -> bool {
    let name = name.to_ascii_lowercase();
    if patterns.iter().any(|p| p.is_match(&name)) {
        return true;
    }
    let IpAddr::V4(v4) = ip.to_canonical() else {
        return false;
    };
    let octets = v4.octets();
    let hex = format!("{:08x}", u32::from(v4));
    if name.contains(&hex) {
        return true;
    }
    let groups: Vec<u32> = name
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|g| g.parse().ok())
        .collect();
    let octets: Vec<u32> = octets.iter().map(|o| u32::from(*o)).collect();
    let reversed: Vec<u32> = octets.iter().rev().copied().collect();
    groups
        .windows(3)
        .any(|w| octets.windows(3).any(|o| o == w) || reversed.windows(3).any(|o| o == w))
}

/// A HELO that is an address, bracketed or bare.
fn helo_address(helo: &str) -> Option<IpAddr> {
    let inner = helo
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(helo);
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

/// A fully qualified host name: two or more labels of letters, digits and hyphens, a top
/// label that is not all digits.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && labels
            .last()
            .is_some_and(|top| !top.bytes().all(|b| b.is_ascii_digit()))
}

fn helo_checks(
    out: &mut Vec<Check>,
    s: &ScoreSettings,
    subject: &Subject<'_>,
    addrs: &Probe<Vec<IpAddr>>,
) {
    let w = &s.weights;
    let helo = subject.helo;
    let literal = helo_address(helo);
    out.push(check(
        "helo_literal",
        w.helo_literal,
        literal.is_some(),
        helo,
    ));
    let fqdn = is_fqdn(helo);
    out.push(check(
        "helo_not_fqdn",
        w.helo_not_fqdn,
        literal.is_none() && !fqdn,
        helo,
    ));
    let ours = helo.trim_end_matches('.').eq_ignore_ascii_case(&s.hostname)
        || literal.is_some_and(|a| {
            Some(a.to_canonical()) == subject.server_address.map(|s| s.to_canonical())
        });
    out.push(check("helo_ours", w.helo_ours, ours, helo));
    helo_dns_checks(out, w, subject.ip, addrs);
}

/// What the HELO name's addresses say: none at all, or the client's among them.
fn helo_dns_checks(out: &mut Vec<Check>, w: &Weights, ip: IpAddr, addrs: &Probe<Vec<IpAddr>>) {
    match addrs {
        Probe::NotAsked => {}
        Probe::Failed(e) => {
            let detail = format!("lookup failed: {e}");
            out.push(failed(
                "helo_unresolvable",
                w.helo_unresolvable,
                detail.clone(),
            ));
            out.push(failed("helo_is_client", w.helo_is_client, detail));
        }
        Probe::Answer(found) => {
            let shown: Vec<String> = found.iter().map(|a| a.to_string()).collect();
            let shown = if shown.is_empty() {
                "no address".to_string()
            } else {
                shown.join(",")
            };
            let unresolvable = found.is_empty();
            out.push(check(
                "helo_unresolvable",
                w.helo_unresolvable,
                unresolvable,
                shown.clone(),
            ));
            let client = found.iter().any(|a| a.to_canonical() == ip.to_canonical());
            out.push(check("helo_is_client", w.helo_is_client, client, shown));
        }
    }
}

fn sender_check(out: &mut Vec<Check>, w: &Weights, routable: &Probe<bool>) {
    match routable {
        Probe::NotAsked => {}
        Probe::Failed(e) => out.push(failed(
            "sender_unroutable",
            w.sender_unroutable,
            format!("lookup failed: {e}"),
        )),
        Probe::Answer(ok) => {
            let detail = if *ok {
                "MX or A found"
            } else {
                "no MX and no A"
            };
            out.push(check("sender_unroutable", w.sender_unroutable, !ok, detail));
        }
    }
}

fn spf_check(out: &mut Vec<Check>, w: &Weights, spf: Option<SpfResult>) {
    let Some(result) = spf else { return };
    let (name, weight) = match result {
        SpfResult::Pass => ("spf_pass", w.spf_pass),
        SpfResult::Fail => ("spf_fail", w.spf_fail),
        SpfResult::SoftFail => ("spf_softfail", w.spf_softfail),
        _ => return,
    };
    out.push(check(name, weight, true, result.as_str()));
}

/// Parses `score_dnsbl` / `score_rhsbl`: `zone=weight` entries separated by commas or
/// white space; a zone's weight may instead be a list of `code:weight` pairs, the first
/// after `=`, the others as further entries (`zen.example=127.0.0.4:3,127.0.0.10:1.5`).
pub fn parse_zones(text: &str) -> Result<Vec<ListZone>, String> {
    let mut zones: Vec<ListZone> = Vec::new();
    for item in crate::net::split_list(text) {
        match item.split_once('=') {
            Some((zone, value)) => {
                let zone = zone.trim().trim_end_matches('.').to_ascii_lowercase();
                if !is_fqdn(&zone) {
                    return Err(format!("{zone:?} is not a DNS zone name"));
                }
                let mut z = ListZone {
                    zone,
                    weight: 0.0,
                    codes: Vec::new(),
                };
                if value.contains(':') {
                    z.codes.push(parse_code(value)?);
                } else {
                    z.weight = parse_weight(value)?;
                }
                zones.push(z);
            }
            None => {
                let last = zones
                    .last_mut()
                    .filter(|z| !z.codes.is_empty())
                    .ok_or_else(|| format!("expected zone=weight, got {item:?}"))?;
                last.codes.push(parse_code(item)?);
            }
        }
    }
    Ok(zones)
}

fn parse_code(text: &str) -> Result<(Ipv4Addr, f64), String> {
    let (code, weight) = text
        .split_once(':')
        .ok_or_else(|| format!("expected ADDRESS:WEIGHT, got {text:?}"))?;
    let code: Ipv4Addr = code
        .parse()
        .map_err(|_| format!("{code:?} is not an IPv4 answer code"))?;
    Ok((code, parse_weight(weight)?))
}

/// A weight or threshold: a decimal number, negative for good signs.
pub fn parse_weight(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(w) if w.is_finite() => Ok(w),
        _ => Err(format!("expected a number, got {text:?}")),
    }
}

/// Parses `score_dynamic_patterns`: regular expressions separated by white space, matched
/// against lower-case host names. Their syntax is checked here; each is compiled when it is
/// first used (`Pattern`).
pub fn parse_patterns(text: &str) -> Result<Vec<Pattern>, String> {
    text.split_whitespace().map(Pattern::parse).collect()
}

/// The DNS list name for an address: the reversed octets (IPv4) or nibbles (IPv6) under
/// the zone; an IPv4-mapped IPv6 address is listed as the IPv4 address it is.
pub fn list_name(ip: IpAddr, zone: &str) -> String {
    crate::dns::reversed_under(ip.to_canonical(), zone)
}

#[cfg(test)]
mod tests;
