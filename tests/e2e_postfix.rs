//! End-to-end tests: real SMTP sessions to a private Postfix instance that runs the
//! freshly built greyspf through spawn(8), exactly as a mail server would.
//!
//! Each test starts its own instance (see `support::postfix`), so tests can run in
//! parallel and count processes without seeing each other's. Clients are impersonated
//! with XCLIENT, which Postfix allows from 127.0.0.1 in the test configuration. SPF is
//! on: each instance's DNS server serves `zone()`, and greylisting is keyed on the
//! SPF-authenticated sender domain.
//!
//! Postfix asks greyspf at RCPT and at DATA, as the packaged main.cf snippet sets up: the
//! first accepted recipient's reply carries the SPF header, and X-Greylist follows with
//! the next request of the same message (another recipient, or the DATA stage).
//!
//! The SMTP tests need root and an installed Postfix; without them they print how to
//! enable them and pass, unless `GREYSPF_E2E=required` (set by CI) makes that a failure.

mod support;

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::dns::Zone;
use support::postfix::{
    self, Builder, Delivered, GREYLIST_DELAY, GREYSPF_HOSTNAME, Instance, KEEPER_IDLE_TIMEOUT,
    MTA_HOSTNAME, Process, SPAWN_USER, Snippets,
};
use support::redis_server::Redis;
use support::smtp::{self, Reply, Session};

/// When a retry is sent: past the greylist delay by a margin that covers a store that
/// keeps whole seconds, and a busy machine.
const RETRY_AFTER: Duration = GREYLIST_DELAY.saturating_add(Duration::from_millis(1300));

const MAIL_OK: &str = "250 2.1.0 Ok";
const RCPT_OK: &str = "250 2.1.5 Ok";
const RSET_OK: &str = "250 2.0.0 Ok";
const BYE: &str = "221 2.0.0 Bye";

/// The SPF records of the test senders. HELO names are never in it (result `none`), so
/// a message's SPF verdict and header come from its sender; domains not listed have no
/// record either.
fn zone() -> Zone {
    Zone::new()
        // The sender domain of most tests: every IPv4 client address they use passes.
        .txt(
            "sender.example",
            "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all",
        )
        .txt("fail.example", "v=spf1 -all")
        // A provider that sends from two unrelated networks.
        .txt(
            "pool.example",
            "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all",
        )
}

/// An instance whose greyspf checks SPF against `zone()`.
fn instance() -> Builder {
    Instance::builder().dns_zone(zone())
}

/// What smtpd answers when greyspf replies `DEFER_IF_PERMIT Greylisted, please try
/// again later` (the default greylist_text) and no other restriction rejects.
fn greylisted(rcpt: &str) -> String {
    format!("450 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, please try again later")
}

/// Unwraps the I/O result of an SMTP command and compares the whole reply text.
#[track_caller]
fn assert_reply(reply: io::Result<Reply>, expected: &str) -> Reply {
    let reply = reply.unwrap_or_else(|e| panic!("SMTP I/O error, expected {expected:?}: {e}"));
    assert_eq!(reply.to_string(), expected);
    reply
}

/// DATA was accepted and the message queued.
#[track_caller]
fn assert_queued(reply: io::Result<Reply>) {
    let reply = reply.unwrap_or_else(|e| panic!("SMTP I/O error after DATA: {e}"));
    assert_eq!(reply.code, 250, "reply to the end of DATA: {reply}");
    assert!(
        reply.last_text().starts_with("2.0.0 Ok: queued as "),
        "reply to the end of DATA: {reply}"
    );
}

/// A session that smtpd (and so greyspf) sees as coming from `addr` (e.g. `192.0.2.1`
/// or `IPV6:2001:db8::1`) with the verified host name `name` (`[UNAVAILABLE]` for
/// none), after EHLO `helo`.
fn session_as(pf: &Instance, addr: &str, name: &str, helo: &str) -> Session {
    let mut s = pf.connect();
    assert_eq!(s.ehlo(helo).expect("EHLO").code, 250);
    assert_reply(
        s.xclient(&format!("NAME={name} REVERSE_NAME={name} ADDR={addr}")),
        &format!("220 {MTA_HOSTNAME} ESMTP Postfix"),
    );
    assert_eq!(s.ehlo(helo).expect("EHLO after XCLIENT").code, 250);
    s
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        thread::sleep(deadline - now);
    }
}

fn message_id(test: &str, n: usize) -> String {
    format!("{test}.{n}@e2e.greyspf.test")
}

/// Checks the one X-Greylist header greyspf adds on the first pass after a delay:
/// `delayed N seconds by greyspf-VERSION at HOST; DATE`. N must be at least the
/// configured delay and at most the time the test really waited (rounded up).
#[track_caller]
fn assert_one_x_greylist(m: &Delivered, waited: Duration) {
    let values = m.header_values("X-Greylist");
    assert_eq!(
        values.len(),
        1,
        "X-Greylist headers of the copy for {}: {:#?}",
        m.delivered_to(),
        m.headers
    );
    let value = values[0];
    let rest = value
        .strip_prefix("delayed ")
        .unwrap_or_else(|| panic!("X-Greylist does not start with `delayed `: {value:?}"));
    let (seconds, rest) = rest
        .split_once(' ')
        .unwrap_or_else(|| panic!("bad X-Greylist: {value:?}"));
    let seconds: u64 = seconds
        .parse()
        .unwrap_or_else(|_| panic!("bad delay in X-Greylist: {value:?}"));
    assert!(
        seconds >= GREYLIST_DELAY.as_secs() && seconds <= waited.as_secs() + 1,
        "X-Greylist delay {seconds} s, expected {}..={} s: {value:?}",
        GREYLIST_DELAY.as_secs(),
        waited.as_secs() + 1
    );
    let middle = format!(
        "seconds by greyspf-{} at {GREYSPF_HOSTNAME}; ",
        env!("CARGO_PKG_VERSION")
    );
    let date = rest
        .strip_prefix(middle.as_str())
        .unwrap_or_else(|| panic!("X-Greylist should continue with {middle:?}: {value:?}"));
    // An RFC 5322 date ends with a numeric zone, e.g. `Sun, 22 Nov 2026 02:49:01 +0000`.
    let zone = date.rsplit(' ').next().unwrap_or("");
    assert!(
        date.contains(':')
            && zone.len() == 5
            && zone.starts_with(['+', '-'])
            && zone[1..].bytes().all(|b| b.is_ascii_digit()),
        "X-Greylist date is not an RFC 5322 date: {value:?}"
    );
}

/// The value of the Received-SPF header greyspf prepends for a sender's result (HELO
/// results are not shown for a non-null sender). `addr` is the client address as
/// greyspf gets it, without XCLIENT's `IPV6:` prefix.
fn received_spf(result: &str, comment: &str, addr: &str, sender: &str, helo: &str) -> String {
    format!(
        "{result} ({GREYSPF_HOSTNAME}: {comment}) receiver={GREYSPF_HOSTNAME}; \
         client-ip={addr}; envelope-from=\"{sender}\"; helo={helo};"
    )
}

fn spf_pass(addr: &str, sender: &str, helo: &str) -> String {
    let comment = format!("domain of {sender} designates {addr} as permitted sender");
    received_spf("pass", &comment, addr, sender, helo)
}

fn spf_none(addr: &str, sender: &str, helo: &str) -> String {
    let comment = format!("no SPF records found for {sender}");
    received_spf("none", &comment, addr, sender, helo)
}

/// The copy carries exactly one Received-SPF header, with this value.
#[track_caller]
fn assert_one_received_spf(m: &Delivered, expected: &str) {
    let values = m.header_values("Received-SPF");
    assert_eq!(
        values,
        [expected],
        "Received-SPF headers of the copy for {}: {:#?}",
        m.delivered_to(),
        m.headers
    );
}

#[track_caller]
fn assert_no_received_spf(m: &Delivered) {
    let values = m.header_values("Received-SPF");
    assert!(
        values.is_empty(),
        "unexpected Received-SPF in the copy for {}: {values:?}",
        m.delivered_to()
    );
}

#[track_caller]
fn assert_no_x_greylist(m: &Delivered) {
    let values = m.header_values("X-Greylist");
    assert!(
        values.is_empty(),
        "unexpected X-Greylist in the copy for {}: {values:?}",
        m.delivered_to()
    );
}

fn count(procs: &[Process]) -> (usize, usize) {
    let keepers = procs.iter().filter(|p| p.is_keeper()).count();
    (procs.len() - keepers, keepers)
}

/// Needs neither root nor Postfix, so it also runs where the end-to-end tests are
/// skipped: the shipped snippets must ask greyspf only after relay control, at RCPT and
/// at DATA, through the service the master.cf snippet defines.
#[test]
fn packaged_snippets_ask_greyspf_after_relay_control_at_rcpt_and_data() {
    let snippets = Snippets::read();
    let rcpt = snippets
        .param("smtpd_recipient_restrictions")
        .expect("smtpd_recipient_restrictions");
    let unauth = rcpt.find("reject_unauth_destination");
    let policy = rcpt.find("check_policy_service");
    assert!(
        unauth.is_some() && policy.is_some() && unauth < policy,
        "check_policy_service must follow reject_unauth_destination: {rcpt:?}"
    );
    let data = snippets
        .param("smtpd_data_restrictions")
        .expect("smtpd_data_restrictions");
    assert!(
        data.contains("check_policy_service") && data.contains("unix:private/greyspf"),
        "{data:?}"
    );
    let entry = snippets.master_cf_entry(Path::new("/opt/t/greyspf"), Path::new("/opt/t/g.conf"));
    let (fields, args) = entry.split_once('\n').expect("two lines");
    assert_eq!(
        fields.split_whitespace().collect::<Vec<_>>(),
        ["greyspf", "unix", "-", "n", "n", "-", "0", "spawn"],
        "{entry:?}"
    );
    assert!(
        args.contains(&format!("user={SPAWN_USER} "))
            && args.contains("argv=/opt/t/greyspf -c /opt/t/g.conf"),
        "{entry:?}"
    );
}

#[test]
fn first_attempt_greylisted_retry_after_delay_accepted_with_both_headers() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance().start(&host);
    let (addr, name, helo) = ("192.0.2.10", "mail.sender.example", "mail.sender.example");
    let (sender, rcpt) = ("alice@sender.example", "bob@example.com");

    let t0 = Instant::now();
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    // An immediate retry is still early.
    assert_reply(s.rset(), RSET_OK);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);

    sleep_until(t0 + RETRY_AFTER);
    let id = message_id("basic", 1);
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "after the delay")));
    let waited = t0.elapsed();
    assert_reply(s.quit(), BYE);

    // One recipient: the RCPT reply carries Received-SPF, the DATA-stage reply the
    // X-Greylist that was held back.
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].delivered_to(), rcpt);
    assert_one_x_greylist(&copies[0], waited);
    assert_one_received_spf(&copies[0], &spf_pass(addr, sender, helo));

    // The triplet has passed: the next message is accepted at once, and carries no
    // X-Greylist since it was not delayed; SPF is checked and recorded for every message.
    let id = message_id("basic", 2);
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "already passed")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);
    assert_one_received_spf(&copies[0], &spf_pass(addr, sender, helo));

    pf.assert_logs_clean();
}

#[test]
fn daemon_mode_first_attempt_greylisted_retry_after_delay_accepted_with_both_headers() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    // smtpd asks `greyspf daemon` over TCP (check_policy_service inet:127.0.0.1:PORT).
    let pf = instance().daemon().start(&host);
    let (addr, name, helo) = ("192.0.2.20", "mail.sender.example", "mail.sender.example");
    let (sender, rcpt) = ("dora@sender.example", "bob@example.com");

    let t0 = Instant::now();
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);

    sleep_until(t0 + RETRY_AFTER);
    let id = message_id("daemon", 1);
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "through the daemon")));
    let waited = t0.elapsed();
    assert_reply(s.quit(), BYE);

    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_one_x_greylist(&copies[0], waited);
    assert_one_received_spf(&copies[0], &spf_pass(addr, sender, helo));

    // One greyspf process, the daemon, serving as the unprivileged user: no spawn
    // instance, no keeper process.
    let procs = pf.greyspf_processes();
    let daemon = pf.daemon_pid().expect("daemon mode") as i32;
    assert_eq!(
        procs.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [daemon],
        "{procs:?}"
    );
    pf.assert_logs_clean();
}

#[test]
fn two_recipients_greylisted_then_accepted_with_the_headers_once_per_message() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance().start(&host);
    let (addr, name, helo) = ("192.0.2.20", "out.sender.example", "out.sender.example");
    let sender = "carol@sender.example";
    let rcpts = ["dave@example.com", "erin@example.com"];

    let t0 = Instant::now();
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    for rcpt in rcpts {
        assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    }
    assert_reply(s.data("unused"), "554 5.5.1 Error: no valid recipients");
    assert_reply(s.quit(), BYE);

    sleep_until(t0 + RETRY_AFTER);
    let id = message_id("two-rcpts", 1);
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    for rcpt in rcpts {
        assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    }
    assert_queued(s.data(&smtp::message(sender, &rcpts, &id, "two recipients")));
    let waited = t0.elapsed();
    assert_reply(s.quit(), BYE);

    // virtual(8) writes one copy per recipient of the one queued message; each copy
    // shows the message's headers, so each must have exactly one X-Greylist and one
    // Received-SPF (sent with the first and the second recipient's replies).
    let copies = pf.wait_for_delivery(&id, 2);
    let delivered_to: BTreeSet<&str> = copies.iter().map(|m| m.delivered_to()).collect();
    assert_eq!(delivered_to, rcpts.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(copies.len(), 2);
    for copy in &copies {
        assert_one_x_greylist(copy, waited);
        assert_one_received_spf(copy, &spf_pass(addr, sender, helo));
    }

    pf.assert_logs_clean();
}

#[test]
fn whitelisted_clients_trusted_networks_and_postmaster_accepted_at_once() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance()
        .whitelist_client("# test whitelist")
        .whitelist_client("trusted.example")
        .whitelist_client("198.51.100.0/24")
        .whitelist_recipient("postmaster@")
        .start(&host);

    // Whitelisting skips greylisting, not SPF: every accepted message from a client
    // outside trusted_networks carries Received-SPF.

    // By the verified client name: a subdomain of a whitelisted domain.
    let id = message_id("whitelist", 1);
    let (sender, rcpt) = ("frank@trusted.example", "gail@example.com");
    let (addr, helo) = ("203.0.113.50", "relay.trusted.example");
    let mut s = session_as(&pf, addr, "relay.trusted.example", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "whitelisted by name")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);
    assert_one_received_spf(&copies[0], &spf_none(addr, sender, helo));

    // By address, within a whitelisted network, with no host name.
    let id = message_id("whitelist", 2);
    let (sender, rcpt) = ("hank@sender.example", "iris@example.com");
    let (addr, helo) = ("198.51.100.25", "unnamed.sender.example");
    let mut s = session_as(&pf, addr, "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(
        sender,
        &[rcpt],
        &id,
        "whitelisted by address",
    )));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);
    assert_one_received_spf(&copies[0], &spf_pass(addr, sender, helo));

    // postmaster@ is accepted at once from an unknown client, while another recipient
    // of the same message is greylisted: the exemption is per recipient.
    let id = message_id("whitelist", 3);
    let (sender, postmaster, other) = (
        "jane@elsewhere.example",
        "postmaster@example.com",
        "kurt@example.com",
    );
    let (addr, helo) = ("203.0.113.60", "unknown.elsewhere.example");
    let mut s = session_as(&pf, addr, "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(postmaster), RCPT_OK);
    assert_reply(s.rcpt_to(other), &greylisted(other));
    assert_queued(s.data(&smtp::message(
        sender,
        &[postmaster],
        &id,
        "to the postmaster",
    )));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].delivered_to(), postmaster);
    assert_no_x_greylist(&copies[0]);
    assert_one_received_spf(&copies[0], &spf_none(addr, sender, helo));

    // A client on loopback (no XCLIENT) is in the default trusted_networks, which
    // greyspf passes before any check: no header at all.
    let id = message_id("whitelist", 4);
    let (sender, rcpt) = ("lena@sender.example", "mark@example.com");
    let mut s = pf.connect();
    assert_eq!(s.ehlo("localhost").expect("EHLO").code, 250);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "from loopback")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);
    assert_no_received_spf(&copies[0]);

    pf.assert_logs_clean();
}

#[test]
fn ipv6_clients_greylisted_by_64_network() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance().start(&host);
    // A sender domain without SPF record: no SPF pass, so the client network keys the
    // triplet (an SPF pass would key it on the domain, whatever the network).
    let (sender, rcpt) = ("nina@nospf.example", "otto@example.com");
    let helo = "v6.nospf.example";

    let t0 = Instant::now();
    let mut s = session_as(&pf, "IPV6:2001:db8::1", "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);

    sleep_until(t0 + RETRY_AFTER);
    // Another address of the same /64 retries: the same triplet, so it passes.
    let id = message_id("ipv6", 1);
    let mut s = session_as(&pf, "IPV6:2001:db8::2", "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "same /64")));
    let waited = t0.elapsed();
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_one_x_greylist(&copies[0], waited);
    assert_one_received_spf(&copies[0], &spf_none("2001:db8::2", sender, helo));

    // An address in the next /64 is a new client network: greylisted again.
    let mut s = session_as(&pf, "IPV6:2001:db8:0:1::1", "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);

    pf.assert_logs_clean();
}

/// A gate the worker threads wait at until the main thread opens it; bounded, so a
/// failing main thread cannot leave workers hanging.
struct Gate(Mutex<bool>, Condvar);

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate(Mutex::new(false), Condvar::new()))
    }
    fn open(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.1.notify_all();
    }
    fn wait(&self) {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .1
            .wait_timeout_while(guard, Duration::from_secs(60), |open| !*open);
    }
}

#[test]
fn ten_parallel_sessions_all_answered_and_sharing_one_keeper() {
    const SESSIONS: usize = 10;
    const PARALLEL_HELO: &str = "parallel.sender.example";
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance().start(&host);
    let names = [
        "anna", "bert", "cleo", "dirk", "emma", "finn", "gina", "hugo", "ines", "jack",
    ];
    let addr = |i: usize| format!("203.0.113.{}", 100 + i);
    let sender = |i: usize| format!("{}@sender.example", names[i]);
    let rcpt = |i: usize| format!("{}@example.com", names[i]);

    // Phase 1: ten sessions reach RCPT at the same time; each is greylisted and stays
    // open (so its smtpd keeps its greyspf process) until the processes are counted.
    let t0 = Instant::now();
    let gate = Gate::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut snapshot = (Vec::new(), false);
    thread::scope(|scope| {
        for i in 0..SESSIONS {
            let (pf, gate, ready_tx) = (&pf, Arc::clone(&gate), ready_tx.clone());
            let (addr, sender, rcpt) = (addr(i), sender(i), rcpt(i));
            scope.spawn(move || {
                let mut s = session_as(pf, &addr, "[UNAVAILABLE]", PARALLEL_HELO);
                assert_reply(s.mail_from(&sender), MAIL_OK);
                assert_reply(s.rcpt_to(&rcpt), &greylisted(&rcpt));
                let _ = ready_tx.send(i);
                // Dropped at once, so that the main thread learns of a worker that
                // failed before getting here without waiting for its timeout.
                drop(ready_tx);
                gate.wait();
                assert_reply(s.quit(), BYE);
            });
        }
        drop(ready_tx);
        let all_ready =
            (0..SESSIONS).all(|_| ready_rx.recv_timeout(Duration::from_secs(60)).is_ok());
        if all_ready {
            // A keeper that lost the start race may still be on its way out: allow a
            // moment for the count to settle.
            snapshot = pf.wait_processes(Duration::from_secs(3), |p| count(p) == (SESSIONS, 1));
        }
        gate.open();
    });
    let (procs, settled) = snapshot;
    assert!(
        settled,
        "expected one greyspf policy process per open session ({SESSIONS}) and one keeper, \
         found (policy, keepers) = {:?}: {procs:#?}",
        count(&procs)
    );

    // Phase 2: all ten retry at once after the delay and are accepted.
    sleep_until(t0 + RETRY_AFTER);
    thread::scope(|scope| {
        for i in 0..SESSIONS {
            let pf = &pf;
            let (addr, sender, rcpt) = (addr(i), sender(i), rcpt(i));
            scope.spawn(move || {
                let mut s = session_as(pf, &addr, "[UNAVAILABLE]", PARALLEL_HELO);
                assert_reply(s.mail_from(&sender), MAIL_OK);
                assert_reply(s.rcpt_to(&rcpt), RCPT_OK);
                let id = message_id("parallel", i);
                assert_queued(s.data(&smtp::message(&sender, &[&rcpt], &id, "parallel")));
                assert_reply(s.quit(), BYE);
            });
        }
    });
    let waited = t0.elapsed();
    for i in 0..SESSIONS {
        let copies = pf.wait_for_delivery(&message_id("parallel", i), 1);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].delivered_to(), rcpt(i));
        assert_one_x_greylist(&copies[0], waited);
        assert_one_received_spf(&copies[0], &spf_pass(&addr(i), &sender(i), PARALLEL_HELO));
    }
    let (_, keepers) = count(&pf.greyspf_processes());
    assert!(keepers <= 1, "{keepers} keepers running");

    pf.assert_logs_clean();
}

#[test]
fn stopping_postfix_leaves_only_the_keeper_which_exits_when_idle() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let mut pf = instance().start(&host);
    let (sender, rcpt) = ("pete@sender.example", "quinn@example.com");

    let mut s = session_as(&pf, "192.0.2.30", "[UNAVAILABLE]", "stop.sender.example");
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);
    // smtpd keeps its policy connection after the session, so the policy process and
    // the keeper it started are both alive now.
    let (procs, ok) = pf.wait_processes(Duration::from_secs(5), |p| count(p) == (1, 1));
    assert!(
        ok,
        "expected one policy process and one keeper, found {:?}: {procs:#?}",
        count(&procs)
    );

    pf.stop().unwrap_or_else(|e| panic!("postfix stop: {e}"));
    let stopped = Instant::now();

    // smtpd is gone, so every policy process must see EOF and exit.
    let (procs, ok) = pf.wait_processes(Duration::from_secs(10), |p| {
        p.iter().all(Process::is_keeper)
    });
    assert!(
        ok,
        "greyspf policy processes survived `postfix stop`: {procs:#?}"
    );
    assert!(count(&procs).1 <= 1, "more than one keeper: {procs:#?}");

    // The keeper serves nobody now and exits after its idle timeout.
    let limit = KEEPER_IDLE_TIMEOUT + Duration::from_secs(10);
    let (procs, ok) = pf.wait_processes(limit, |p| p.is_empty());
    assert!(
        ok,
        "the keeper still runs {:?} after `postfix stop` (keeper_idle_timeout = {KEEPER_IDLE_TIMEOUT:?}): {procs:#?}",
        stopped.elapsed()
    );

    pf.assert_logs_clean();
}

#[test]
fn spf_fail_sender_rejected_at_rcpt() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance().start(&host);
    let (addr, helo) = ("203.0.113.77", "relay.fail.example");
    let sender = "mallory@fail.example";
    let rcpts = ["ruth@example.com", "sam@example.com"];
    // smtpd wraps the text of greyspf's `550 5.7.23 ...` reply like that of any access
    // restriction that rejects a recipient.
    let rejected = |rcpt: &str| {
        format!(
            "550 5.7.23 <{rcpt}>: Recipient address rejected: SPF check failed: \
             fail.example does not designate {addr} as permitted sender"
        )
    };

    let mut s = session_as(&pf, addr, "[UNAVAILABLE]", helo);
    // greyspf answers at RCPT only: the sender itself is accepted.
    assert_reply(s.mail_from(sender), MAIL_OK);
    // Every recipient of the message gets the one verdict; no triplet is recorded.
    for rcpt in rcpts {
        assert_reply(s.rcpt_to(rcpt), &rejected(rcpt));
    }
    assert_reply(s.data("unused"), "554 5.5.1 Error: no valid recipients");
    assert_reply(s.quit(), BYE);

    // greyspf, running as the spawn user, asked the test's DNS server.
    let queries = pf.dns().described_queries();
    assert!(
        queries.iter().any(|q| q == "TXT fail.example"),
        "{queries:?}"
    );
    let lines = pf.wait_greyspf_log("action=reject, reason=spf", 2);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("spf_helo=none, spf_mail_from=fail")),
        "{lines:#?}"
    );
    pf.assert_logs_clean();
}

#[test]
fn spf_pass_sender_from_a_pool_address_already_passed_accepted_without_delay() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = instance().start(&host);
    let (sender, rcpt) = ("news@pool.example", "uma@example.com");
    // Two outbound servers of one provider, in networks that share not even a /16.
    let (first, second) = ("192.0.2.10", "198.51.100.20");
    let (first_helo, second_helo) = ("out1.pool.example", "out2.pool.example");

    let t0 = Instant::now();
    let mut s = session_as(&pf, first, "[UNAVAILABLE]", first_helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);

    sleep_until(t0 + RETRY_AFTER);
    let id = message_id("pool", 1);
    let mut s = session_as(&pf, first, "[UNAVAILABLE]", first_helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "first server")));
    let waited = t0.elapsed();
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_one_x_greylist(&copies[0], waited);
    assert_one_received_spf(&copies[0], &spf_pass(first, sender, first_helo));

    // The triplet is keyed on the SPF-authenticated domain, not on the client network:
    // the other server passes at once, and the message was not delayed.
    let id = message_id("pool", 2);
    let mut s = session_as(&pf, second, "[UNAVAILABLE]", second_helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "second server")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);
    assert_one_received_spf(&copies[0], &spf_pass(second, sender, second_helo));

    // Greylisted, passed after the delay, passed as known: all on the domain's key.
    pf.wait_greyspf_log("client_key=spf:pool.example", 3);
    pf.assert_logs_clean();
}

/// Two MX hosts (two Postfix instances, each with its greyspf configuration and state
/// directory) share one Redis: a message greylisted on the first is accepted on the
/// second after the delay, with its X-Greylist header, and no keeper runs.
#[test]
fn greylisted_on_one_mx_accepted_on_another_sharing_redis() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let Some(redis) = Redis::start("e2e", &[]) else {
        return;
    };
    let shared = || {
        instance()
            .greyspf("store", "redis")
            .greyspf("redis_url", &redis.url())
    };
    let (mx1, mx2) = (shared().start(&host), shared().start(&host));
    let (addr, name, helo) = ("192.0.2.30", "mail.sender.example", "mail.sender.example");
    let (sender, rcpt) = ("carol@sender.example", "dave@example.com");

    let t0 = Instant::now();
    let mut s = session_as(&mx1, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);

    // The retry goes to the other MX, which has never seen the sender itself.
    sleep_until(t0 + RETRY_AFTER);
    let id = message_id("redis", 1);
    let mut s = session_as(&mx2, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "retried on mx2")));
    let waited = t0.elapsed();
    assert_reply(s.quit(), BYE);
    let copies = mx2.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_one_x_greylist(&copies[0], waited);
    assert_one_received_spf(&copies[0], &spf_pass(addr, sender, helo));

    mx1.assert_logs_clean();
    mx2.assert_logs_clean();
    let triplets = redis.cli(&["--scan", "--pattern", "greyspf:t:*"]);
    assert_eq!(triplets.lines().count(), 1, "{triplets}");
}

/// `zone()` with what reputation scoring looks up: reverse DNS, HELO names, the sender
/// domain's MX, and two block lists and an allow list.
fn scoring_zone() -> Zone {
    zone()
        .mx("sender.example", 10, "mail.sender.example")
        .ptr("192.0.2.10", "mail.sender.example")
        .a("mail.sender.example", "192.0.2.10")
        .ptr("203.0.113.5", "dsl-203-0-113-5.pool.isp.test")
        .a("dsl-203-0-113-5.pool.isp.test", "203.0.113.5")
        .a("5.113.0.203.bl1.test", "127.0.0.2")
        .a("7.100.51.198.bl1.test", "127.0.0.2")
        .a("7.100.51.198.bl2.test", "127.0.0.3")
}

/// An instance with scoring on against `scoring_zone()`.
fn scoring_instance(host: &postfix::Host) -> Instance {
    instance()
        .dns_zone(scoring_zone())
        .greyspf("score_enable", "yes")
        .greyspf("score_dnsbl", "bl1.test=4.5 bl2.test=3.5 wl.test=-5")
        .greyspf("score_rhsbl", "dbl.test=3.5")
        .start(host)
}

#[test]
fn scoring_accepts_a_well_run_server_at_once() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = scoring_instance(&host);
    let (addr, helo) = ("192.0.2.10", "mail.sender.example");
    let (sender, rcpt) = ("alice@sender.example", "bob@example.com");
    let id = message_id("score-pass", 1);
    let mut s = session_as(&pf, addr, helo, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    // Forward-confirmed reverse DNS, a HELO that is the client, SPF pass: no greylisting.
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "not delayed")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);
    assert_one_received_spf(&copies[0], &spf_pass(addr, sender, helo));
    let lines = pf.wait_greyspf_log("action=pass, reason=score", 1);
    assert!(
        lines[0].contains("score=-3, score_hits=helo_is_client(-1.5) spf_pass(-1.5), client_name="),
        "{lines:#?}"
    );
    // smtpd's verified name came with the request: greyspf asked no PTR of its own.
    let queries = pf.dns().described_queries();
    assert!(
        !queries.iter().any(|q| q.starts_with("PTR ")),
        "{queries:?}"
    );
    assert!(
        queries.contains(&"A 10.2.0.192.bl1.test".to_string()),
        "{queries:?}"
    );
    pf.assert_logs_clean();
}

#[test]
fn scoring_greylists_a_dynamic_listed_client() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = scoring_instance(&host);
    let (addr, helo) = ("203.0.113.5", "dsl-203-0-113-5.pool.isp.test");
    let (sender, rcpt) = ("carol@sender.example", "dave@example.com");
    let mut s = session_as(&pf, addr, "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), &greylisted(rcpt));
    assert_reply(s.quit(), BYE);
    let lines = pf.wait_greyspf_log("action=greylist, reason=new", 1);
    assert!(
        lines[0].contains(
            "score=4, score_hits=dnsbl:bl1.test(4.5) ptr_dynamic(2.5) helo_is_client(-1.5) \
             spf_pass(-1.5), client_name="
        ),
        "{lines:#?}"
    );
    pf.assert_logs_clean();
}

#[test]
fn scoring_rejects_a_client_on_two_lists_with_the_hits_named() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = scoring_instance(&host);
    let (addr, helo) = ("198.51.100.7", "client.example");
    let (sender, rcpts) = (
        "erin@sender.example",
        ["frank@example.com", "gina@example.com"],
    );
    let mut s = session_as(&pf, addr, "[UNAVAILABLE]", helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    for rcpt in rcpts {
        assert_reply(
            s.rcpt_to(rcpt),
            &format!(
                "550 5.7.1 <{rcpt}>: Recipient address rejected: Rejected for poor reputation \
                 of {addr} (score 10.5: dnsbl:bl1.test(4.5) dnsbl:bl2.test(3.5) no_ptr(2.5) \
                 helo_unresolvable(1.5) spf_pass(-1.5))"
            ),
        );
    }
    assert_reply(s.data("unused"), "554 5.5.1 Error: no valid recipients");
    assert_reply(s.quit(), BYE);
    // One evaluation for the message: each list was asked once. smtpd knew no name for
    // the client, so greyspf asked for its PTR itself.
    let queries = pf.dns().described_queries();
    assert!(
        queries.contains(&"PTR 7.100.51.198.in-addr.arpa".to_string()),
        "{queries:?}"
    );
    let listed = queries
        .iter()
        .filter(|q| q.as_str() == "A 7.100.51.198.bl1.test")
        .count();
    assert_eq!(listed, 1, "{queries:?}");
    assert_eq!(
        pf.wait_greyspf_log("action=reject, reason=score", 2).len(),
        2
    );
    pf.assert_logs_clean();
}
