//! The decision pipeline for one request (DESIGN §3): skips, SPF, whitelists, greylisting
//! and the single reply. Pure over its inputs: the store, the clock, the whitelists and SPF
//! are passed in, so every path is testable without I/O.

use std::fmt;
use std::net::IpAddr;

use crate::date::rfc2822;
use crate::greylist::decide::{Timers, Verdict};
use crate::greylist::key::{normalize_recipient, normalize_sender};
use crate::greylist::whitelist::Whitelists;
use crate::greylist::{GreyQuery, Greylister};
use crate::net::{self, Network};
use crate::protocol::Request;
use crate::score::{self, KnownRdns, Level, Score, ScoreSettings, Scored, Subject, Weight};
use crate::spf::{Identity, Spf, SpfOutcome, SpfResult};

/// What the pipeline needs of the configuration; the composition root builds it.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub protocol_states: Vec<String>,
    pub trusted_networks: Vec<Network>,
    pub dry_run: bool,
    pub hostname: String,
    pub spf_enable: bool,
    pub spf_helo_check: bool,
    pub spf_skip_networks: Vec<Network>,
    pub spf_reject_results: Vec<SpfResult>,
    pub spf_defer_results: Vec<SpfResult>,
    pub spf_reject_text: String,
    pub spf_defer_text: String,
    pub greylist_enable: bool,
    pub greylist_spf_key: bool,
    pub greylist_ipv4_prefix: u8,
    pub greylist_ipv6_prefix: u8,
    pub greylist_action: String,
    pub greylist_text: String,
    pub greylist_header: bool,
    pub timers: Timers,
    pub store_failure_action: Action,
    /// None when reputation scoring is off.
    pub score: Option<ScoreSettings>,
    pub score_reject_action: String,
    pub score_reject_text: String,
    pub score_header: bool,
}

/// The reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No opinion: Postfix goes on with its other restrictions.
    Dunno,
    /// `PREPEND` of one header line.
    Prepend(String),
    /// Any other access(5) reply, as text: a reject, a deferral, a greylisting reply.
    Reply(String),
}

impl Action {
    /// An action from configuration text; `DUNNO` in any case is `Dunno`.
    pub fn parse(text: &str) -> Action {
        if text.trim().eq_ignore_ascii_case("DUNNO") {
            Action::Dunno
        } else {
            Action::Reply(text.to_string())
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Dunno => f.write_str("DUNNO"),
            Action::Prepend(h) => write!(f, "PREPEND {h}"),
            Action::Reply(r) => f.write_str(r),
        }
    }
}

/// What one instance remembers about the message it is serving (one `instance` value).
#[derive(Debug, Default)]
pub struct MessageState {
    instance: String,
    xgreylist_sent: bool,
    spf: Option<SpfEval>,
    /// The message's reputation score, made once and reused for its other recipients.
    score: Option<Scored>,
    score_header_sent: bool,
    /// Headers that were due while the reply carried another one; they go out with the
    /// next recipients or the DATA request of the same message, one per reply.
    pending_headers: Vec<String>,
}

impl MessageState {
    /// Resets the memory when a new message starts; an empty instance is never shared.
    fn enter(&mut self, instance: &str) {
        if instance.is_empty() || instance != self.instance {
            self.instance.clear();
            self.instance.push_str(instance);
            self.xgreylist_sent = false;
            self.spf = None;
            self.score = None;
            self.score_header_sent = false;
            self.pending_headers.clear();
        }
    }
}

/// The SPF evaluation of one message, made once and reused for its other recipients.
#[derive(Debug)]
struct SpfEval {
    helo: Option<SpfOutcome>,
    mail_from: Option<SpfOutcome>,
    /// A reject or defer reply, the same for every recipient of the message.
    verdict: Option<(Action, &'static str)>,
    /// The header for this message (HELO's only for the null sender), if not sent yet.
    header: Option<String>,
}

impl SpfEval {
    /// The SPF-authenticated domain, which keys greylisting instead of the client network.
    fn authenticated_domain(&self) -> Option<&str> {
        self.mail_from
            .as_ref()
            .filter(|o| o.result == SpfResult::Pass)
            .map(|o| o.domain.as_str())
    }

    /// The result that speaks for the message: MAIL FROM's, or HELO's for the null sender.
    fn message_result(&self) -> Option<SpfResult> {
        self.mail_from
            .as_ref()
            .or(self.helo.as_ref())
            .map(|o| o.result)
    }

    fn log_fields(&self, fields: &mut Vec<(&'static str, String)>) {
        if let Some(h) = &self.helo {
            fields.push(("spf_helo", h.result.to_string()));
        }
        if let Some(m) = &self.mail_from {
            fields.push(("spf_mail_from", m.result.to_string()));
        }
    }
}

/// The outcome: the reply for Postfix and the log line (None for quiet skips).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub log: Option<String>,
    /// Set when the store could not be reached; the caller rate-limits that warning.
    pub store_error: Option<String>,
}

impl Decision {
    fn quiet(action: Action) -> Self {
        Decision {
            action,
            log: None,
            store_error: None,
        }
    }
}

/// A decision in the making: the reply, its log fields, and what goes with it.
struct Verdicted {
    action: Action,
    fields: Vec<(&'static str, String)>,
    store_error: Option<String>,
    /// An X-Greylist header due with this reply, if it has room for one.
    due_header: Option<String>,
}

impl Verdicted {
    fn new(action: Action, kind: &str, reason: &str) -> Self {
        Verdicted {
            action,
            fields: vec![("action", kind.to_string()), ("reason", reason.to_string())],
            store_error: None,
            due_header: None,
        }
    }
}

/// Everything a decision reads or updates besides the request and the settings.
pub struct Context<'a> {
    pub whitelists: &'a Whitelists,
    pub store: &'a mut dyn Greylister,
    pub spf: Option<&'a dyn Spf>,
    /// The DNS facts of reputation scoring; None when scoring is off.
    pub score: Option<&'a dyn Score>,
    pub now_ms: u64,
}

/// Decides one request: the pipeline of DESIGN §3.
pub fn decide(
    req: &Request,
    s: &PolicySettings,
    cx: &mut Context<'_>,
    msg: &mut MessageState,
) -> Decision {
    if !s
        .protocol_states
        .iter()
        .any(|st| st.eq_ignore_ascii_case(&req.protocol_state))
    {
        return Decision::quiet(other_state(req, msg));
    }
    msg.enter(&req.instance);
    let ip: Option<IpAddr> = req.client_address.parse().ok();
    if skipped(req, s, ip) {
        return Decision::quiet(Action::Dunno);
    }
    let mut spf_eval = spf_step(req, s, cx, ip, msg);
    let spf_verdict = spf_eval.as_ref().and_then(|e| e.verdict.clone());
    // An SPF reject or defer stands whatever the score: no lookups for it.
    let scored = match spf_verdict {
        None => score_step(req, s, cx, ip, spf_eval.as_ref(), msg),
        Some(_) => None,
    };
    let mut out = match spf_verdict {
        Some((reply, kind)) => Verdicted::new(reply, kind, "spf"),
        None => match scored
            .as_ref()
            .and_then(|sc| score_verdict(req, s, cx, ip, sc))
        {
            Some(v) => v,
            None => greylist_step(req, s, cx, ip, spf_eval.as_ref(), msg),
        },
    };
    let score_header = scored.as_ref().and_then(|sc| score_header(s, sc, msg));
    attach_header(&mut out, spf_eval.as_mut(), score_header, msg);
    if let Some(e) = &spf_eval {
        e.log_fields(&mut out.fields);
    }
    if let Some(sc) = &scored {
        out.fields.extend(sc.log_fields());
    }
    msg.spf = spf_eval;
    msg.score = scored;
    finish(req, s, out)
}

/// A request in a state we do not check. A header held back at RCPT goes out with the
/// message's DATA request, when Postfix asks then too (smtpd_data_restrictions).
fn other_state(req: &Request, msg: &mut MessageState) -> Action {
    if req.protocol_state.eq_ignore_ascii_case("DATA")
        && !req.instance.is_empty()
        && req.instance == msg.instance
        && !msg.pending_headers.is_empty()
    {
        return Action::Prepend(msg.pending_headers.remove(0));
    }
    Action::Dunno
}

/// Clients that are not checked at all: trusted networks and SASL-authenticated senders.
fn skipped(req: &Request, s: &PolicySettings, ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|ip| s.trusted_networks.iter().any(|n| n.contains(ip)))
        || !req.sasl_username.is_empty()
}

/// The message's SPF evaluation, made on its first checked request. It is taken out of
/// the message state for this request and put back by `decide`, so it is never copied.
fn spf_step(
    req: &Request,
    s: &PolicySettings,
    cx: &mut Context<'_>,
    ip: Option<IpAddr>,
    msg: &mut MessageState,
) -> Option<SpfEval> {
    if let (Some(spf), Some(ip)) = (cx.spf, ip)
        && s.spf_enable
        && !s.spf_skip_networks.iter().any(|n| n.contains(ip))
        && msg.spf.is_none()
    {
        msg.spf = Some(evaluate_spf(req, s, spf, ip, cx.store));
    }
    msg.spf.take()
}

fn spf_text(template: &str, o: &SpfOutcome, ip: IpAddr) -> String {
    template
        .replace("%d", &o.domain)
        .replace("%i", &ip.to_string())
        .replace("%r", o.result.as_str())
        .replace("%s", &o.identity.to_string())
}

/// The reject or defer reply an SPF result calls for, if any.
fn spf_verdict(s: &PolicySettings, o: &SpfOutcome, ip: IpAddr) -> Option<(Action, &'static str)> {
    if s.spf_reject_results.contains(&o.result) {
        let text = match &o.explanation {
            Some(e) => e.clone(),
            None => spf_text(&s.spf_reject_text, o, ip),
        };
        Some((Action::Reply(format!("550 5.7.23 {text}")), "reject"))
    } else if s.spf_defer_results.contains(&o.result) {
        let text = spf_text(&s.spf_defer_text, o, ip);
        Some((Action::Reply(format!("451 4.7.24 {text}")), "defer"))
    } else {
        None
    }
}

/// The HELO and MAIL FROM results of a request. HELO only if HELO checks are on: for the
/// null sender it is the message's only identity, so it always has a result (RFC 7208
/// §2.4, §4.3). With a sender, both are checked at once.
pub fn spf_identities(
    spf: &dyn Spf,
    helo_check: bool,
    req: &Request,
    ip: IpAddr,
) -> (Option<SpfOutcome>, Option<SpfOutcome>) {
    if req.sender.is_empty() {
        let helo = helo_check
            .then(|| spf.null_sender(ip, &req.helo_name))
            .flatten();
        return (helo, None);
    }
    let (helo, mail_from) = spf.message(ip, &req.helo_name, &req.sender, helo_check);
    (helo, Some(mail_from))
}

fn evaluate_spf(
    req: &Request,
    s: &PolicySettings,
    spf: &dyn Spf,
    ip: IpAddr,
    store: &mut dyn Greylister,
) -> SpfEval {
    let (helo, mail_from) = spf_identities(spf, s.spf_helo_check, req, ip);
    let mut verdict = None;
    for o in helo.iter().chain(mail_from.iter()) {
        let identity = match o.identity {
            Identity::Helo => "helo",
            Identity::MailFrom => "mail_from",
        };
        store.count(&format!("spf_{identity}_{}", o.result));
        verdict = verdict.or_else(|| spf_verdict(s, o, ip));
    }
    // Never attach a HELO result to a message with a sender: the header speaks for the
    // identity that the message's sender is.
    let header_source = if req.sender.is_empty() {
        helo.as_ref()
    } else {
        mail_from.as_ref()
    };
    let header = header_source
        .map(|o| o.header.clone())
        .filter(|h| !h.is_empty());
    SpfEval {
        helo,
        mail_from,
        verdict,
        header,
    }
}

/// The message's reputation score, made on its first checked request from the DNS facts
/// and the SPF result already known; taken out of the message state like SPF's.
fn score_step(
    req: &Request,
    s: &PolicySettings,
    cx: &mut Context<'_>,
    ip: Option<IpAddr>,
    spf: Option<&SpfEval>,
    msg: &mut MessageState,
) -> Option<Scored> {
    // A whitelisted client is let through anyway: its address is not sent to the lists.
    if let (Some(settings), Some(score), Some(ip)) = (&s.score, cx.score, ip)
        && msg.score.is_none()
        && !cx.whitelists.client_listed(Some(ip), &req.client_name)
    {
        let subject = score_subject(req, ip, spf.and_then(SpfEval::message_result));
        let facts = score.facts(&subject);
        let scored = score::evaluate(settings, &subject, &facts);
        cx.store.count(&format!("score_{}", scored.level.as_str()));
        msg.score = Some(scored);
    }
    msg.score.take()
}

/// What a request gives the scoring to judge, with the message's SPF result.
pub fn score_subject(req: &Request, ip: IpAddr, spf: Option<SpfResult>) -> Subject<'_> {
    Subject {
        ip,
        helo: &req.helo_name,
        sender_domain: req.sender.rsplit_once('@').map(|(_, d)| d),
        server_address: req.server_address.parse().ok(),
        spf,
        rdns: KnownRdns::from_postfix(&req.client_name, &req.reverse_client_name),
    }
}

/// What the score decides by itself: no greylisting below the greylisting threshold, the
/// configured reply at or above the reject threshold (except for whitelisted clients and
/// recipients, which greylisting then lets through); None to greylist as usual.
fn score_verdict(
    req: &Request,
    s: &PolicySettings,
    cx: &mut Context<'_>,
    ip: Option<IpAddr>,
    sc: &Scored,
) -> Option<Verdicted> {
    match sc.level {
        Level::Greylist => None,
        Level::Pass => Some(Verdicted::new(Action::Dunno, "pass", "score")),
        Level::Reject
            if cx.whitelists.recipient_listed(&req.recipient)
                || cx.whitelists.client_listed(ip, &req.client_name) =>
        {
            None
        }
        Level::Reject => {
            let text = s
                .score_reject_text
                .replace("%s", &Weight(sc.total).to_string())
                .replace("%h", &sc.hit_list())
                .replace("%i", &req.client_address);
            let action = s.score_reject_action.trim();
            let kind =
                if action.starts_with('4') || action.to_ascii_uppercase().starts_with("DEFER") {
                    "defer"
                } else {
                    "reject"
                };
            Some(Verdicted::new(
                Action::Reply(format!("{action} {text}")),
                kind,
                "score",
            ))
        }
    }
}

/// The score header, once per message, when configured.
fn score_header(s: &PolicySettings, sc: &Scored, msg: &mut MessageState) -> Option<String> {
    if !s.score_header || msg.score_header_sent {
        return None;
    }
    msg.score_header_sent = true;
    let hits = sc.hit_list();
    let hits = if hits.is_empty() { "none".into() } else { hits };
    Some(format!(
        "X-Greyspf-Score: {} ({}) hits={hits}; greyspf-{} at {}",
        Weight(sc.total),
        sc.level.as_str(),
        crate::VERSION,
        s.hostname
    ))
}

/// Greylisting, with the whitelists first.
fn greylist_step(
    req: &Request,
    s: &PolicySettings,
    cx: &mut Context<'_>,
    ip: Option<IpAddr>,
    spf: Option<&SpfEval>,
    msg: &mut MessageState,
) -> Verdicted {
    if !s.greylist_enable {
        return Verdicted::new(Action::Dunno, "pass", "greylisting-off");
    }
    let Some(ip) = ip else {
        return Verdicted::new(Action::Dunno, "pass", "no-client-address");
    };
    if cx.whitelists.recipient_listed(&req.recipient) {
        cx.store.count("whitelist_recipient_hits");
        return Verdicted::new(Action::Dunno, "pass", "recipient-whitelist");
    }
    if cx.whitelists.client_listed(Some(ip), &req.client_name) {
        cx.store.count("whitelist_client_hits");
        return Verdicted::new(Action::Dunno, "pass", "client-whitelist");
    }
    let spf_domain = spf
        .and_then(|e| e.authenticated_domain())
        .filter(|_| s.greylist_spf_key);
    let client_key = match spf_domain {
        Some(d) => format!("spf:{d}"),
        None => net::client_network(ip, s.greylist_ipv4_prefix, s.greylist_ipv6_prefix),
    };
    let sender = normalize_sender(&req.sender);
    let recipient = normalize_recipient(&req.recipient);
    let address = ip.to_canonical().to_string();
    let q = GreyQuery {
        client_key: &client_key,
        sender: &sender,
        recipient: &recipient,
        client_address: &address,
        timers: s.timers,
    };
    match cx.store.greylist(&q) {
        Ok(v) => {
            let mut out = greylist_verdict(req, s, v, cx.now_ms, msg);
            if spf_domain.is_some() {
                out.fields.insert(2, ("client_key", client_key));
            }
            out
        }
        Err(e) => {
            let mut out = Verdicted::new(
                s.store_failure_action.clone(),
                "store-failure",
                "store-unavailable",
            );
            out.store_error = Some(e.to_string());
            out
        }
    }
}

/// The reply and log fields for the store's verdict on a triplet.
fn greylist_verdict(
    req: &Request,
    s: &PolicySettings,
    v: Verdict,
    now_ms: u64,
    msg: &mut MessageState,
) -> Verdicted {
    let kind = if v.passes() { "pass" } else { "greylist" };
    match v {
        Verdict::New { remaining_ms } | Verdict::EarlyRetry { remaining_ms } => {
            let mut out = Verdicted::new(
                greylist_reply(s, &req.recipient, remaining_ms),
                kind,
                v.reason(),
            );
            out.fields
                .push(("remaining", remaining_ms.div_ceil(1000).to_string()));
            out
        }
        Verdict::Delayed { waited_ms } => {
            let secs = waited_ms / 1000;
            let mut out = Verdicted::new(Action::Dunno, kind, v.reason());
            out.fields.push(("delay", secs.to_string()));
            if s.greylist_header && !msg.xgreylist_sent {
                msg.xgreylist_sent = true;
                out.due_header = Some(format!(
                    "X-Greylist: delayed {secs} seconds by greyspf-{} at {}; {}",
                    crate::VERSION,
                    s.hostname,
                    rfc2822(now_ms)
                ));
            }
            out
        }
        Verdict::Known | Verdict::ClientAwl | Verdict::Whitelisted => {
            Verdicted::new(Action::Dunno, kind, v.reason())
        }
    }
}

/// The greylist reply text with `%r` (recipient domain) and `%s` (seconds left) filled in.
fn greylist_reply(s: &PolicySettings, recipient: &str, remaining_ms: u64) -> Action {
    let domain = recipient.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let secs = remaining_ms.div_ceil(1000).to_string();
    let text = s.greylist_text.replace("%r", domain).replace("%s", &secs);
    Action::Reply(format!("{} {}", s.greylist_action, text))
}

/// One header per reply: the SPF header first, then anything held back from an earlier
/// recipient, then X-Greylist and the score header; what does not fit waits for the next
/// request. A reply that is not DUNNO carries none, and the score header waits then.
fn attach_header(
    out: &mut Verdicted,
    spf: Option<&mut SpfEval>,
    score_header: Option<String>,
    msg: &mut MessageState,
) {
    if out.action != Action::Dunno {
        msg.pending_headers.extend(score_header);
        return;
    }
    let spf_header = spf.and_then(|e| e.header.take());
    let mut queue: Vec<String> = spf_header
        .into_iter()
        .chain(std::mem::take(&mut msg.pending_headers))
        .chain(out.due_header.take())
        .chain(score_header)
        .collect();
    if !queue.is_empty() {
        out.action = Action::Prepend(queue.remove(0));
    }
    msg.pending_headers = queue;
}

/// The request's own log fields, dry-run, and the log line.
fn finish(req: &Request, s: &PolicySettings, mut out: Verdicted) -> Decision {
    for (k, v) in [
        ("client_name", &req.client_name),
        ("client_address", &req.client_address),
        ("sender", &req.sender),
        ("recipient", &req.recipient),
    ] {
        out.fields.push((k, v.clone()));
    }
    if !req.queue_id.is_empty() {
        out.fields.push(("queue_id", req.queue_id.clone()));
    }
    let action = if s.dry_run {
        out.fields.push(("dry_run", "yes".into()));
        Action::Dunno
    } else {
        out.action
    };
    Decision {
        action,
        log: Some(log_line(&out.fields)),
        store_error: out.store_error,
    }
}

/// `key=value` pairs postgrey-style (`, ` separated); values are logged as sent.
fn log_line(fields: &[(&'static str, String)]) -> String {
    let mut s = String::with_capacity(160);
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::greylist::StoreUnavailable;
    use std::collections::HashMap;

    /// The keeper's decision, in memory, with a clock the test moves.
    #[derive(Default)]
    struct MemStore {
        triplets: HashMap<String, crate::greylist::decide::Entry>,
        now: u64,
        fail: bool,
        queries: Vec<String>,
    }

    impl Greylister for MemStore {
        fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreUnavailable> {
            if self.fail {
                return Err(StoreUnavailable("keeper did not answer within 2s".into()));
            }
            let key = format!("{}|{}|{}", q.client_key, q.sender, q.recipient);
            self.queries.push(key.clone());
            let (e, v) = crate::greylist::decide::decide_triplet(
                self.triplets.get(&key).copied(),
                self.now,
                &q.timers,
            );
            self.triplets.insert(key, e);
            Ok(v)
        }
    }

    fn req(client: &str, sender: &str, rcpt: &str, instance: &str) -> Request {
        Request {
            request: "smtpd_access_policy".into(),
            protocol_state: "RCPT".into(),
            client_address: client.into(),
            client_name: "unknown".into(),
            sender: sender.into(),
            recipient: rcpt.into(),
            instance: instance.into(),
            ..Request::default()
        }
    }

    /// The settings of a default configuration with `hostname = mx.example.net`.
    fn settings() -> PolicySettings {
        PolicySettings {
            protocol_states: vec!["RCPT".into()],
            trusted_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            dry_run: false,
            hostname: "mx.example.net".into(),
            spf_enable: true,
            spf_helo_check: true,
            spf_skip_networks: vec![],
            spf_reject_results: vec![SpfResult::Fail],
            spf_defer_results: vec![],
            spf_reject_text: "SPF check failed".into(),
            spf_defer_text: "SPF check for %d could not be completed".into(),
            greylist_enable: true,
            greylist_spf_key: true,
            greylist_ipv4_prefix: 24,
            greylist_ipv6_prefix: 64,
            greylist_action: "DEFER_IF_PERMIT".into(),
            greylist_text: "Greylisted, please try again later".into(),
            greylist_header: true,
            timers: Timers {
                delay_ms: 300_000,
                retry_window_ms: 2 * 86_400_000,
                max_age_ms: 35 * 86_400_000,
                awl_clients: 5,
                awl_interval_ms: 3_600_000,
            },
            store_failure_action: Action::Dunno,
            score: None,
            score_reject_action: "550 5.7.1".into(),
            score_reject_text: "Rejected (score %s: %h)".into(),
            score_header: false,
        }
    }

    fn run(
        r: &Request,
        s: &PolicySettings,
        wl: &Whitelists,
        st: &mut MemStore,
        m: &mut MessageState,
        now_ms: u64,
    ) -> Decision {
        let mut cx = Context {
            whitelists: wl,
            store: st,
            spf: None,
            score: None,
            now_ms,
        };
        decide(r, s, &mut cx, m)
    }

    #[test]
    fn greylists_then_passes_with_one_header_per_message() {
        let c = settings();
        let wl = Whitelists::new(vec![], vec![]);
        let mut st = MemStore {
            now: 1_000_000,
            ..MemStore::default()
        };
        let mut m = MessageState::default();
        let r1 = req("192.0.2.10", "a@example.org", "x@example.com", "i1");
        let r2 = req("192.0.2.10", "a@example.org", "y@example.com", "i1");
        let now = st.now;
        let d = run(&r1, &c, &wl, &mut st, &mut m, now);
        assert_eq!(
            d.action.to_string(),
            "DEFER_IF_PERMIT Greylisted, please try again later"
        );
        assert_eq!(
            d.log.unwrap(),
            "action=greylist, reason=new, remaining=300, client_name=unknown, client_address=192.0.2.10, sender=a@example.org, recipient=x@example.com"
        );
        run(&r2, &c, &wl, &mut st, &mut m, now);
        st.now += 300_000;
        let now = st.now;
        let (r1, r2) = (
            Request {
                instance: "i2".into(),
                ..r1
            },
            Request {
                instance: "i2".into(),
                ..r2
            },
        );
        let d = run(&r1, &c, &wl, &mut st, &mut m, now);
        assert_eq!(
            d.action.to_string(),
            format!(
                "PREPEND X-Greylist: delayed 300 seconds by greyspf-{} at mx.example.net; Thu, 01 Jan 1970 00:21:40 +0000",
                crate::VERSION
            )
        );
        assert_eq!(
            run(&r2, &c, &wl, &mut st, &mut m, now).action,
            Action::Dunno
        );
        assert_eq!(st.queries[0], "192.0.2.0/24|a@example.org|x@example.com");
    }

    #[test]
    fn skips_and_whitelists_and_failures() {
        let c = PolicySettings {
            store_failure_action: Action::Reply("DEFER_IF_PERMIT store down".into()),
            ..settings()
        };
        let wl = Whitelists::new(vec![], vec![]);
        let mut st = MemStore {
            fail: true,
            ..MemStore::default()
        };
        let mut m = MessageState::default();
        let mut r = req("127.0.0.1", "a@b", "c@d", "i");
        assert_eq!(
            run(&r, &c, &wl, &mut st, &mut m, 0),
            Decision::quiet(Action::Dunno)
        );
        r.client_address = "192.0.2.1".into();
        r.sasl_username = "bob".into();
        assert_eq!(
            run(&r, &c, &wl, &mut st, &mut m, 0),
            Decision::quiet(Action::Dunno)
        );
        r.sasl_username.clear();
        r.protocol_state = "DATA".into();
        assert_eq!(
            run(&r, &c, &wl, &mut st, &mut m, 0),
            Decision::quiet(Action::Dunno)
        );
        r.protocol_state = "RCPT".into();
        let d = run(&r, &c, &wl, &mut st, &mut m, 0);
        assert_eq!(d.action.to_string(), "DEFER_IF_PERMIT store down");
        assert_eq!(
            d.store_error.as_deref(),
            Some("keeper did not answer within 2s")
        );
        let dry = PolicySettings {
            dry_run: true,
            ..settings()
        };
        st.fail = false;
        let d = run(&r, &dry, &wl, &mut st, &mut m, 0);
        assert_eq!(d.action, Action::Dunno);
        assert!(
            d.log
                .unwrap()
                .starts_with("action=greylist, reason=new, remaining=300,")
        );
    }

    /// Facts from a table, counting how often they are asked for.
    struct TableScore {
        facts: score::Facts,
        asked: std::cell::Cell<u32>,
    }

    impl Score for TableScore {
        fn facts(&self, _: &Subject<'_>) -> score::Facts {
            self.asked.set(self.asked.get() + 1);
            self.facts.clone()
        }
    }

    fn scoring() -> PolicySettings {
        let mut p = settings();
        p.score = Some(ScoreSettings {
            dnsbl: score::parse_zones("bl.example=4.5 bl2.example=3.5").unwrap(),
            rhsbl: vec![],
            weights: score::Weights::for_tests(),
            dynamic_patterns: vec![],
            greylist_threshold: 2.0,
            reject_threshold: 8.0,
            timeout: std::time::Duration::from_secs(5),
            hostname: "mx.example.net".into(),
        });
        p
    }

    fn table(listed: &[&str], ptr: bool) -> TableScore {
        let listing = |zone: &str| {
            if listed.contains(&zone) {
                score::Listing::Listed(vec!["127.0.0.2".parse().unwrap()])
            } else {
                score::Listing::NotListed
            }
        };
        let names = if ptr {
            vec![("mail.example.org".to_string(), true)]
        } else {
            vec![]
        };
        TableScore {
            facts: score::Facts {
                dnsbl: vec![
                    ("bl.example".into(), listing("bl.example")),
                    ("bl2.example".into(), listing("bl2.example")),
                ],
                ptr: score::Probe::Answer(names),
                ..score::Facts::none()
            },
            asked: std::cell::Cell::new(0),
        }
    }

    fn scored_run(
        r: &Request,
        s: &PolicySettings,
        wl: &Whitelists,
        sc: &TableScore,
        st: &mut MemStore,
        m: &mut MessageState,
    ) -> Decision {
        let mut cx = Context {
            whitelists: wl,
            store: st,
            spf: None,
            score: Some(sc),
            now_ms: 0,
        };
        decide(r, s, &mut cx, m)
    }

    #[test]
    fn the_score_chooses_pass_greylist_or_reject_once_per_message() {
        let s = scoring();
        let wl = Whitelists::new(vec![], vec![]);
        let mut st = MemStore::default();
        let mut m = MessageState::default();
        let mut r = req("192.0.2.10", "a@example.org", "x@example.com", "i1");
        r.helo_name = "mail.example.org".into();

        let clean = table(&[], true);
        let d = scored_run(&r, &s, &wl, &clean, &mut st, &mut m);
        assert_eq!(d.action, Action::Dunno);
        assert!(
            d.log
                .unwrap()
                .starts_with("action=pass, reason=score, score=0,")
        );
        assert!(st.queries.is_empty());

        let one = table(&["bl.example"], false);
        r.instance = "i2".into();
        for rcpt in ["x@example.com", "y@example.com"] {
            r.recipient = rcpt.into();
            let d = scored_run(&r, &s, &wl, &one, &mut st, &mut m);
            assert_eq!(
                d.action.to_string(),
                "DEFER_IF_PERMIT Greylisted, please try again later"
            );
            assert!(
                d.log
                    .unwrap()
                    .contains(", score=7, score_hits=dnsbl:bl.example(4.5) no_ptr(2.5), ")
            );
        }
        assert_eq!(one.asked.get(), 1, "the score is made once per message");

        let two = table(&["bl.example", "bl2.example"], false);
        r.instance = "i3".into();
        let d = scored_run(&r, &s, &wl, &two, &mut st, &mut m);
        assert_eq!(
            d.action.to_string(),
            "550 5.7.1 Rejected (score 10.5: dnsbl:bl.example(4.5) dnsbl:bl2.example(3.5) no_ptr(2.5))"
        );
        assert!(
            d.log
                .unwrap()
                .starts_with("action=reject, reason=score, score=10.5,")
        );
    }

    #[test]
    fn whitelisted_recipients_are_greylisted_not_rejected_and_headers_wait() {
        let mut s = scoring();
        s.score_header = true;
        let dir = std::env::temp_dir().join(format!("greyspf-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rcpt");
        std::fs::write(&file, "postmaster@\n").unwrap();
        let clients = dir.join("clients");
        std::fs::write(&clients, "198.51.100.0/24\n").unwrap();
        let mut wl = Whitelists::new(vec![clients], vec![file]);
        wl.refresh();
        let mut st = MemStore::default();
        let mut m = MessageState::default();
        let two = table(&["bl.example", "bl2.example"], false);
        let mut r = req(
            "192.0.2.10",
            "a@example.org",
            "postmaster@example.com",
            "i1",
        );
        r.helo_name = "mail.example.org".into();
        let d = scored_run(&r, &s, &wl, &two, &mut st, &mut m);
        assert!(
            d.action
                .to_string()
                .starts_with("PREPEND X-Greyspf-Score: 10.5 (reject) hits="),
            "{d:?}"
        );
        // A whitelisted client is not scored: its address goes to no list.
        let r = req("198.51.100.7", "a@example.org", "x@example.com", "i9");
        let d = scored_run(&r, &s, &wl, &two, &mut st, &mut m);
        assert_eq!(d.action, Action::Dunno);
        assert_eq!(two.asked.get(), 1);
        let _ = std::fs::remove_dir_all(&dir);
        // Greylisted: the header waits for a reply that can carry it.
        let mut m = MessageState::default();
        let one = table(&["bl.example"], false);
        let mut r = req("192.0.2.10", "a@example.org", "x@example.com", "i2");
        r.helo_name = "mail.example.org".into();
        let d = scored_run(&r, &s, &wl, &one, &mut st, &mut m);
        assert_eq!(
            d.action.to_string(),
            "DEFER_IF_PERMIT Greylisted, please try again later"
        );
        let data = Request {
            protocol_state: "DATA".into(),
            ..r.clone()
        };
        let d = scored_run(&data, &s, &wl, &one, &mut st, &mut m);
        assert_eq!(
            d.action.to_string(),
            format!(
                "PREPEND X-Greyspf-Score: 7 (greylist) hits=dnsbl:bl.example(4.5) no_ptr(2.5); greyspf-{} at mx.example.net",
                crate::VERSION
            )
        );
    }
}
