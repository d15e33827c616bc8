//! The decision pipeline for one request (DESIGN §3): skips, whitelists, greylisting and
//! the single reply. Pure over its inputs: the store, the clock and the whitelists are
//! passed in, so every path is testable without I/O.

use std::net::IpAddr;

use crate::config::Config;
use crate::greylist::decide::{Timers, Verdict};
use crate::greylist::key::{normalize_recipient, normalize_sender};
use crate::greylist::whitelist::Whitelists;
use crate::net;
use crate::protocol::Request;
use crate::spf::{SpfOutcome, SpfResult};
use crate::store::client::{GreyQuery, Greylister};

/// What one instance remembers about the message it is serving (one `instance` value).
#[derive(Debug, Default)]
pub struct MessageState {
    instance: String,
    xgreylist_sent: bool,
    spf: Option<SpfEval>,
    /// A header that was due while the reply carried another one; it goes out with the
    /// next recipient or the DATA request of the same message.
    pending_header: Option<String>,
}

impl MessageState {
    /// Resets the memory when a new message starts; an empty instance is never shared.
    fn enter(&mut self, instance: &str) {
        if instance.is_empty() || instance != self.instance {
            self.instance.clear();
            self.instance.push_str(instance);
            self.xgreylist_sent = false;
            self.spf = None;
            self.pending_header = None;
        }
    }
}

/// SPF as the pipeline needs it; the real checker does DNS, tests pass a table.
pub trait Spf {
    fn helo(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome>;
    fn mail_from(&self, ip: IpAddr, helo: &str, sender: &str) -> SpfOutcome;
    /// The null sender's HELO identity: like `helo`, but `none` for a HELO it skips.
    fn null_sender(&self, ip: IpAddr, helo: &str) -> Option<SpfOutcome>;
}

/// The HELO result of a request, if HELO checks are on: for the null sender it is the
/// message's only identity, so it always has a result (RFC 7208 §2.4, §4.3).
pub fn spf_helo(spf: &dyn Spf, cfg: &Config, req: &Request, ip: IpAddr) -> Option<SpfOutcome> {
    if !cfg.spf_helo_check {
        None
    } else if req.sender.is_empty() {
        spf.null_sender(ip, &req.helo_name)
    } else {
        spf.helo(ip, &req.helo_name)
    }
}

/// The SPF evaluation of one message, made once and reused for its other recipients.
#[derive(Debug)]
struct SpfEval {
    helo: Option<SpfOutcome>,
    mail_from: Option<SpfOutcome>,
    /// A reject or defer reply, the same for every recipient of the message.
    verdict: Option<(String, &'static str)>,
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

    fn log_fields(&self, fields: &mut Vec<(&'static str, String)>) {
        if let Some(h) = &self.helo {
            fields.push(("spf_helo", h.result.to_string()));
        }
        if let Some(m) = &self.mail_from {
            fields.push(("spf_mail_from", m.result.to_string()));
        }
    }
}

fn spf_text(template: &str, o: &SpfOutcome, ip: IpAddr) -> String {
    template
        .replace("%d", &o.domain)
        .replace("%i", &ip.to_string())
        .replace("%r", o.result.as_str())
        .replace("%s", &o.identity.to_string())
}

fn evaluate_spf(
    req: &Request,
    cfg: &Config,
    spf: &dyn Spf,
    ip: IpAddr,
    store: &mut dyn Greylister,
) -> SpfEval {
    let helo = spf_helo(spf, cfg, req, ip);
    let mail_from =
        (!req.sender.is_empty()).then(|| spf.mail_from(ip, &req.helo_name, &req.sender));
    let mut verdict = None;
    for o in helo.iter().chain(mail_from.iter()) {
        store.count(&format!(
            "spf_{}_{}",
            if o.identity == crate::spf::Identity::Helo {
                "helo"
            } else {
                "mail_from"
            },
            o.result
        ));
        if verdict.is_some() {
            continue;
        }
        if cfg.spf_reject_results.contains(&o.result) {
            let text = match &o.explanation {
                Some(e) => e.clone(),
                None => spf_text(&cfg.spf_reject_text, o, ip),
            };
            verdict = Some((format!("550 5.7.23 {text}"), "reject"));
        } else if cfg.spf_defer_results.contains(&o.result) {
            verdict = Some((
                format!("451 4.7.24 {}", spf_text(&cfg.spf_defer_text, o, ip)),
                "defer",
            ));
        }
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
        .filter(|h| !h.is_empty())
        .map(|h| format!("PREPEND {h}"));
    SpfEval {
        helo,
        mail_from,
        verdict,
        header,
    }
}

/// The outcome: the reply for Postfix and the log line (None for quiet skips).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: String,
    pub log: Option<String>,
    /// Set when the store could not be reached; the caller rate-limits that warning.
    pub store_error: Option<String>,
}

impl Decision {
    fn quiet(action: &str) -> Self {
        Decision {
            action: action.to_string(),
            log: None,
            store_error: None,
        }
    }
}

/// The timers of the configuration, in the keeper's units.
pub fn timers(cfg: &Config) -> Timers {
    Timers {
        delay_ms: cfg.greylist_delay.as_millis() as u64,
        retry_window_ms: cfg.greylist_retry_window.as_millis() as u64,
        max_age_ms: cfg.greylist_max_age.as_millis() as u64,
        awl_clients: cfg.greylist_auto_whitelist_clients,
        awl_interval_ms: cfg.greylist_auto_whitelist_interval.as_millis() as u64,
    }
}

/// `Sun, 22 Nov 2026 02:43:33 +0000` for a time in milliseconds since the epoch.
pub fn rfc2822(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        day,
        MON[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The greylist reply text with `%r` (recipient domain) and `%s` (seconds left) filled in.
fn greylist_reply(cfg: &Config, recipient: &str, remaining_ms: u64) -> String {
    let domain = recipient.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let secs = remaining_ms.div_ceil(1000).to_string();
    let text = cfg.greylist_text.replace("%r", domain).replace("%s", &secs);
    format!("{} {}", cfg.greylist_action, text)
}

/// Appends `key=value` pairs postgrey-style (`, ` separated); values are logged as sent.
fn log_line(fields: &[(&str, &str)]) -> String {
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

/// Decides one request.
pub fn decide(
    req: &Request,
    cfg: &Config,
    whitelists: &Whitelists,
    store: &mut dyn Greylister,
    spf: Option<&dyn Spf>,
    msg: &mut MessageState,
    now_ms: u64,
) -> Decision {
    if !cfg
        .protocol_states
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&req.protocol_state))
    {
        // A header held back at RCPT goes out with the message's DATA request, when
        // Postfix asks then too (smtpd_data_restrictions).
        if req.protocol_state.eq_ignore_ascii_case("DATA")
            && !req.instance.is_empty()
            && req.instance == msg.instance
            && let Some(h) = msg.pending_header.take()
        {
            return Decision::quiet(&h);
        }
        return Decision::quiet("DUNNO");
    }
    msg.enter(&req.instance);
    let ip: Option<IpAddr> = req.client_address.parse().ok();
    if ip.is_some_and(|ip| cfg.trusted_networks.iter().any(|n| n.contains(ip))) {
        return Decision::quiet("DUNNO");
    }
    if !req.sasl_username.is_empty() {
        return Decision::quiet("DUNNO");
    }
    let base = |action: &str, reason: &str| -> Vec<(&'static str, String)> {
        vec![
            ("action", action.to_string()),
            ("reason", reason.to_string()),
        ]
    };
    let mut fields: Vec<(&'static str, String)>;
    let mut store_error = None;
    // The reply, and a greylisting header due with it (X-Greylist).
    let mut action: String;
    let mut due_header: Option<String> = None;

    if let (Some(spf), Some(ip)) = (spf, ip)
        && cfg.spf_enable
        && !cfg.spf_skip_networks.iter().any(|n| n.contains(ip))
        && msg.spf.is_none()
    {
        msg.spf = Some(evaluate_spf(req, cfg, spf, ip, store));
    }
    // Taken out for this request and put back below, so it is borrowed, not copied.
    let mut spf_eval = msg.spf.take();
    if let Some((reply, kind)) = spf_eval.as_ref().and_then(|e| e.verdict.as_ref()) {
        fields = base(kind, "spf");
        action = reply.clone();
    } else if !cfg.greylist_enable {
        fields = base("pass", "greylisting-off");
        action = "DUNNO".into();
    } else if let Some(ip) = ip {
        if whitelists.recipient_listed(&req.recipient) {
            fields = base("pass", "recipient-whitelist");
            store.count("whitelist_recipient_hits");
            action = "DUNNO".into();
        } else if whitelists.client_listed(Some(ip), &req.client_name) {
            fields = base("pass", "client-whitelist");
            store.count("whitelist_client_hits");
            action = "DUNNO".into();
        } else {
            let spf_domain = spf_eval
                .as_ref()
                .and_then(|e| e.authenticated_domain())
                .filter(|_| cfg.greylist_spf_key);
            let client_key = match spf_domain {
                Some(d) => format!("spf:{d}"),
                None => net::client_network(ip, cfg.greylist_ipv4_prefix, cfg.greylist_ipv6_prefix),
            };
            let sender = normalize_sender(&req.sender);
            let recipient = normalize_recipient(&req.recipient);
            let address = net::unmap(ip).to_string();
            let q = GreyQuery {
                client_key: &client_key,
                sender: &sender,
                recipient: &recipient,
                client_address: &address,
                timers: timers(cfg),
            };
            match store.greylist(&q) {
                Ok(v) => {
                    fields = base(if v.passes() { "pass" } else { "greylist" }, v.reason());
                    if spf_domain.is_some() {
                        fields.push(("client_key", client_key.clone()));
                    }
                    action = match v {
                        Verdict::New { remaining_ms } | Verdict::EarlyRetry { remaining_ms } => {
                            fields.push(("remaining", remaining_ms.div_ceil(1000).to_string()));
                            greylist_reply(cfg, &req.recipient, remaining_ms)
                        }
                        Verdict::Delayed { waited_ms } => {
                            let secs = waited_ms / 1000;
                            fields.push(("delay", secs.to_string()));
                            if cfg.greylist_header && !msg.xgreylist_sent {
                                msg.xgreylist_sent = true;
                                due_header = Some(format!(
                                    "PREPEND X-Greylist: delayed {secs} seconds by greyspf-{} at {}; {}",
                                    crate::VERSION,
                                    cfg.hostname,
                                    rfc2822(now_ms)
                                ));
                            }
                            "DUNNO".into()
                        }
                        Verdict::Known | Verdict::ClientAwl | Verdict::Whitelisted => {
                            "DUNNO".into()
                        }
                    };
                }
                Err(e) => {
                    fields = base("store-failure", "store-unavailable");
                    store_error = Some(e.to_string());
                    action = cfg.store_failure_action.clone();
                }
            }
        }
    } else {
        fields = base("pass", "no-client-address");
        action = "DUNNO".into();
    }

    // One header per reply: the SPF header first, then X-Greylist, then anything held
    // back from an earlier recipient; what does not fit waits for the next request.
    if action == "DUNNO" {
        let spf_header = spf_eval.as_mut().and_then(|e| e.header.take());
        let mut queue = spf_header
            .into_iter()
            .chain(msg.pending_header.take())
            .chain(due_header);
        if let Some(first) = queue.next() {
            action = first;
        }
        msg.pending_header = queue.next();
    }

    if let Some(e) = &spf_eval {
        e.log_fields(&mut fields);
    }
    msg.spf = spf_eval;
    for (k, v) in [
        ("client_name", &req.client_name),
        ("client_address", &req.client_address),
        ("sender", &req.sender),
        ("recipient", &req.recipient),
    ] {
        fields.push((k, v.clone()));
    }
    if !req.queue_id.is_empty() {
        fields.push(("queue_id", req.queue_id.clone()));
    }
    let action = if cfg.dry_run {
        fields.push(("dry_run", "yes".into()));
        "DUNNO".to_string()
    } else {
        action
    };
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Decision {
        action,
        log: Some(log_line(&pairs)),
        store_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
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
        fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreError> {
            if self.fail {
                return Err(StoreError::Timeout(std::time::Duration::from_secs(2)));
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

    fn cfg(extra: &[&str]) -> Config {
        let mut o = vec![
            "hostname=mx.example.net",
            "whitelist_clients=",
            "whitelist_recipients=",
        ];
        o.extend_from_slice(extra);
        Config::defaults_with(&o).unwrap()
    }

    #[test]
    fn greylists_then_passes_with_one_header_per_message() {
        let c = cfg(&[]);
        let wl = Whitelists::new(vec![], vec![]);
        let mut st = MemStore {
            now: 1_000_000,
            ..MemStore::default()
        };
        let mut m = MessageState::default();
        let r1 = req("192.0.2.10", "a@example.org", "x@example.com", "i1");
        let r2 = req("192.0.2.10", "a@example.org", "y@example.com", "i1");
        let now = st.now;
        let d = decide(&r1, &c, &wl, &mut st, None, &mut m, now);
        assert_eq!(
            d.action,
            "DEFER_IF_PERMIT Greylisted, please try again later"
        );
        assert_eq!(
            d.log.unwrap(),
            "action=greylist, reason=new, remaining=300, client_name=unknown, client_address=192.0.2.10, sender=a@example.org, recipient=x@example.com"
        );
        decide(&r2, &c, &wl, &mut st, None, &mut m, now);
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
        let d = decide(&r1, &c, &wl, &mut st, None, &mut m, now);
        assert_eq!(
            d.action,
            format!(
                "PREPEND X-Greylist: delayed 300 seconds by greyspf-{} at mx.example.net; Thu, 01 Jan 1970 00:21:40 +0000",
                crate::VERSION
            )
        );
        assert_eq!(
            decide(&r2, &c, &wl, &mut st, None, &mut m, now).action,
            "DUNNO"
        );
        assert_eq!(st.queries[0], "192.0.2.0/24|a@example.org|x@example.com");
    }

    #[test]
    fn skips_and_whitelists_and_failures() {
        let c = cfg(&["store_failure_action=DEFER_IF_PERMIT store down"]);
        let wl = Whitelists::new(vec![], vec![]);
        let mut st = MemStore {
            fail: true,
            ..MemStore::default()
        };
        let mut m = MessageState::default();
        let mut r = req("127.0.0.1", "a@b", "c@d", "i");
        assert_eq!(
            decide(&r, &c, &wl, &mut st, None, &mut m, 0),
            Decision::quiet("DUNNO")
        );
        r.client_address = "192.0.2.1".into();
        r.sasl_username = "bob".into();
        assert_eq!(
            decide(&r, &c, &wl, &mut st, None, &mut m, 0),
            Decision::quiet("DUNNO")
        );
        r.sasl_username.clear();
        r.protocol_state = "DATA".into();
        assert_eq!(
            decide(&r, &c, &wl, &mut st, None, &mut m, 0),
            Decision::quiet("DUNNO")
        );
        r.protocol_state = "RCPT".into();
        let d = decide(&r, &c, &wl, &mut st, None, &mut m, 0);
        assert_eq!(d.action, "DEFER_IF_PERMIT store down");
        assert_eq!(
            d.store_error.as_deref(),
            Some("keeper did not answer within 2s")
        );
        let dry = cfg(&["dry_run=yes"]);
        st.fail = false;
        let d = decide(&r, &dry, &wl, &mut st, None, &mut m, 0);
        assert_eq!(d.action, "DUNNO");
        assert!(
            d.log
                .unwrap()
                .starts_with("action=greylist, reason=new, remaining=300,")
        );
    }

    #[test]
    fn header_date() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc2822(1_795_315_413_000),
            "Sun, 22 Nov 2026 02:43:33 +0000"
        );
        assert_eq!(rfc2822(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
