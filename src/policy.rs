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
use crate::store::client::{GreyQuery, Greylister};

/// What one instance remembers about the message it is serving (one `instance` value).
#[derive(Debug, Default)]
pub struct MessageState {
    instance: String,
    header_sent: bool,
}

impl MessageState {
    /// Resets the memory when a new message starts; an empty instance is never shared.
    fn enter(&mut self, instance: &str) {
        if instance.is_empty() || instance != self.instance {
            self.instance.clear();
            self.instance.push_str(instance);
            self.header_sent = false;
        }
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
    msg: &mut MessageState,
    now_ms: u64,
) -> Decision {
    if !cfg
        .protocol_states
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&req.protocol_state))
    {
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
    let action: String;
    if !cfg.greylist_enable {
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
            let client_key =
                net::client_network(ip, cfg.greylist_ipv4_prefix, cfg.greylist_ipv6_prefix);
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
                    action = match v {
                        Verdict::New { remaining_ms } | Verdict::EarlyRetry { remaining_ms } => {
                            fields.push(("remaining", remaining_ms.div_ceil(1000).to_string()));
                            greylist_reply(cfg, &req.recipient, remaining_ms)
                        }
                        Verdict::Delayed { waited_ms } => {
                            let secs = waited_ms / 1000;
                            fields.push(("delay", secs.to_string()));
                            if cfg.greylist_header && !msg.header_sent {
                                msg.header_sent = true;
                                format!(
                                    "PREPEND X-Greylist: delayed {secs} seconds by greyspf-{} at {}; {}",
                                    crate::VERSION,
                                    cfg.hostname,
                                    rfc2822(now_ms)
                                )
                            } else {
                                "DUNNO".into()
                            }
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
        let d = decide(&r1, &c, &wl, &mut st, &mut m, now);
        assert_eq!(
            d.action,
            "DEFER_IF_PERMIT Greylisted, please try again later"
        );
        assert_eq!(
            d.log.unwrap(),
            "action=greylist, reason=new, remaining=300, client_name=unknown, client_address=192.0.2.10, sender=a@example.org, recipient=x@example.com"
        );
        decide(&r2, &c, &wl, &mut st, &mut m, now);
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
        let d = decide(&r1, &c, &wl, &mut st, &mut m, now);
        assert_eq!(
            d.action,
            format!(
                "PREPEND X-Greylist: delayed 300 seconds by greyspf-{} at mx.example.net; Thu, 01 Jan 1970 00:21:40 +0000",
                crate::VERSION
            )
        );
        assert_eq!(decide(&r2, &c, &wl, &mut st, &mut m, now).action, "DUNNO");
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
            decide(&r, &c, &wl, &mut st, &mut m, 0),
            Decision::quiet("DUNNO")
        );
        r.client_address = "192.0.2.1".into();
        r.sasl_username = "bob".into();
        assert_eq!(
            decide(&r, &c, &wl, &mut st, &mut m, 0),
            Decision::quiet("DUNNO")
        );
        r.sasl_username.clear();
        r.protocol_state = "DATA".into();
        assert_eq!(
            decide(&r, &c, &wl, &mut st, &mut m, 0),
            Decision::quiet("DUNNO")
        );
        r.protocol_state = "RCPT".into();
        let d = decide(&r, &c, &wl, &mut st, &mut m, 0);
        assert_eq!(d.action, "DEFER_IF_PERMIT store down");
        assert_eq!(
            d.store_error.as_deref(),
            Some("keeper did not answer within 2s")
        );
        let dry = cfg(&["dry_run=yes"]);
        st.fail = false;
        let d = decide(&r, &dry, &wl, &mut st, &mut m, 0);
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
