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

mod eval;
#[doc(hidden)]
pub mod fuzzing;
mod record;
mod types;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::{AuthenticationResults, ReceivedSpf, SpfOutput};

use crate::dns::{Answer, DnsClient, DnsSettings, Lookup, SharedDns, join2};
use eval::{Dns, Request};
pub use types::{HeaderKind, Identity, SpfError, SpfOutcome, SpfResult};

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
    /// The MAIL FROM identity.
    fn mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome;
    /// The null sender's HELO identity: like `helo`, but `none` for a HELO it skips.
    fn null_sender(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome>;
    /// The MAIL FROM identity of a message and, with `with_helo`, its HELO identity (None
    /// when the HELO is not a domain to check), both at once.
    fn message(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        with_helo: bool,
    ) -> (Option<SpfOutcome>, SpfOutcome);
}

/// Checks SPF identities; built once per process and reused for every request.
pub struct SpfChecker {
    dns: Rc<DnsClient>,
    settings: SpfSettings,
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
        let dns = DnsClient::new(&dns_settings(&settings))?;
        Ok(SpfChecker::with_dns(Rc::new(dns), settings))
    }

    /// A checker that asks through a client shared with the rest of the process.
    pub fn with_dns(dns: Rc<DnsClient>, settings: SpfSettings) -> Self {
        SpfChecker { dns, settings }
    }

    /// HELO identity; returns None when helo is empty or not a domain name (skip).
    pub fn check_helo(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        let target = Target::helo(helo)?;
        Some(self.check(ip.to_canonical(), helo, None, target).1)
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
        self.check_message(ip, helo, sender, false).1
    }

    /// The MAIL FROM identity of a message, and with `with_helo` its HELO identity, checked
    /// at once: the reply waits for the longer of the two checks, not for their sum, and a
    /// dead nameserver costs `timeout` once. They share one deadline and their answers.
    pub fn check_message(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        with_helo: bool,
    ) -> (Option<SpfOutcome>, SpfOutcome) {
        let ip = ip.to_canonical();
        let helo_target = with_helo.then(|| Target::helo(helo)).flatten();
        match Target::mail_from(sender) {
            Ok(target) => self.check(ip, helo, helo_target, target),
            // A malformed domain is "none" without any lookup (RFC 7208 §4.3).
            Err(domain) => {
                let verdict = none_verdict();
                let none = self.outcome(Identity::MailFrom, ip, helo, sender, domain, verdict);
                let helo_outcome = helo_target.map(|t| self.check(ip, helo, None, t).1);
                (helo_outcome, none)
            }
        }
    }

    /// Evaluates `main`, and `also` beside it, at once under one deadline.
    fn check(
        &self,
        ip: IpAddr,
        helo: &str,
        also: Option<Target>,
        main: Target,
    ) -> (Option<SpfOutcome>, SpfOutcome) {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let lookup = SpfDns(self.dns.lookup(deadline));
        let beside = async {
            match &also {
                Some(t) => Some(self.verdict(&lookup, deadline, ip, helo, t).await),
                None => None,
            }
        };
        let (also_verdict, main_verdict) = self.dns.block_on(join2(
            beside,
            self.verdict(&lookup, deadline, ip, helo, &main),
        ));
        let also = also
            .zip(also_verdict)
            .map(|(t, v)| self.target_outcome(ip, helo, t, v));
        (also, self.target_outcome(ip, helo, main, main_verdict))
    }

    fn target_outcome(&self, ip: IpAddr, helo: &str, t: Target, v: eval::Verdict) -> SpfOutcome {
        self.outcome(t.identity, ip, helo, t.header_sender, t.domain, v)
    }

    /// check_host() for one identity, a temperror at the deadline.
    async fn verdict(
        &self,
        lookup: &SpfDns<'_>,
        deadline: tokio::time::Instant,
        ip: IpAddr,
        helo: &str,
        t: &Target<'_>,
    ) -> eval::Verdict {
        let request = t.request(ip, helo, &self.settings.hostname);
        // A query gives up at the deadline by itself; this bounds the rest (the resolver's
        // TCP path), and the query's own failure is seen first.
        tokio::time::timeout_at(deadline, eval::check_host(lookup, &request, &t.domain))
            .await
            .unwrap_or_else(|_| eval::Verdict {
                result: SpfResult::TempError,
                explanation: None,
                reason: Some(format!(
                    "no result within {} ms",
                    self.settings.timeout.as_millis()
                )),
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

/// The DNS client settings of a checker that has a client of its own.
fn dns_settings(settings: &SpfSettings) -> DnsSettings {
    DnsSettings {
        server: settings.dns_server,
        retransmit: settings.dns_retransmit,
        deadline: settings.timeout,
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

/// An identity ready for check_host(): the sender it sees and the domain it checks.
struct Target<'a> {
    identity: Identity,
    /// The sender check_host() sees: `postmaster@HELO` for the HELO identity.
    spf_sender: String,
    local_part: &'a str,
    domain: String,
    /// The sender the header names: empty for the HELO identity.
    header_sender: &'a str,
}

impl<'a> Target<'a> {
    /// The HELO identity; None when the HELO is not a domain name to check.
    fn helo(helo: &str) -> Option<Target<'a>> {
        let domain = checkable_domain(helo)?;
        Some(Target {
            identity: Identity::Helo,
            spf_sender: format!("postmaster@{domain}"),
            local_part: "postmaster",
            domain,
            header_sender: "",
        })
    }

    /// The MAIL FROM identity; Err with the domain as given when it cannot be checked.
    fn mail_from(sender: &'a str) -> Result<Target<'a>, String> {
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
            return Err(raw_domain.to_ascii_lowercase());
        };
        Ok(Target {
            identity: Identity::MailFrom,
            spf_sender: format!("{local_part}@{domain}"),
            local_part,
            domain,
            header_sender: sender,
        })
    }

    fn request<'r>(&'r self, ip: IpAddr, helo: &'r str, receiver: &'r str) -> Request<'r> {
        Request {
            ip,
            sender: &self.spf_sender,
            local_part: self.local_part,
            sender_domain: &self.domain,
            helo,
            receiver,
        }
    }
}

/// The DNS client as the evaluation asks it.
struct SpfDns<'a>(Lookup<'a>);

impl Dns for SpfDns<'_> {
    async fn txt(&self, name: &str) -> Answer<Vec<u8>> {
        self.0.txt(name).await
    }

    async fn a(&self, name: &str) -> Answer<std::net::Ipv4Addr> {
        self.0.a(name).await
    }

    async fn aaaa(&self, name: &str) -> Answer<std::net::Ipv6Addr> {
        self.0.aaaa(name).await
    }

    async fn mx(&self, name: &str) -> Answer<String> {
        self.0.mx(name).await
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        self.0.ptr(ip).await
    }
}

/// Builds the checker on first use: requests that never reach SPF (other states, trusted
/// clients) do not pay for the runtime and resolver. A checker that cannot be built is
/// reported once and SPF is skipped, so mail keeps flowing.
pub struct LazySpf {
    settings: SpfSettings,
    dns: Rc<SharedDns>,
    checker: std::cell::OnceCell<Option<SpfChecker>>,
}

impl LazySpf {
    /// A checker with a DNS client of its own.
    pub fn new(settings: SpfSettings) -> Self {
        let dns = Rc::new(SharedDns::new(dns_settings(&settings)));
        LazySpf::shared(settings, dns)
    }

    /// A checker that asks through the process's shared DNS client.
    pub fn shared(settings: SpfSettings, dns: Rc<SharedDns>) -> Self {
        LazySpf {
            settings,
            dns,
            checker: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> Option<&SpfChecker> {
        self.checker
            .get_or_init(|| match self.dns.get() {
                Ok(dns) => Some(SpfChecker::with_dns(dns, self.settings.clone())),
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
    fn mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome {
        self.check_mail_from(ip, helo, sender)
    }

    fn null_sender(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome> {
        Some(self.check_null_sender(ip, helo))
    }

    fn message(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        with_helo: bool,
    ) -> (Option<SpfOutcome>, SpfOutcome) {
        self.check_message(ip, helo, sender, with_helo)
    }
}

impl Spf for LazySpf {
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

    fn message(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        with_helo: bool,
    ) -> (Option<SpfOutcome>, SpfOutcome) {
        match self.get() {
            Some(c) => c.check_message(ip, helo, sender, with_helo),
            None => (None, self.mail_from(ip, helo, sender)),
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
}
