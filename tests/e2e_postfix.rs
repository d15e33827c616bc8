//! End-to-end tests: real SMTP sessions to a private Postfix instance that runs the
//! freshly built greyspf through spawn(8), exactly as a mail server would.
//!
//! Each test starts its own instance (see `support::postfix`), so tests can run in
//! parallel and count processes without seeing each other's. Clients are impersonated
//! with XCLIENT, which Postfix allows from 127.0.0.1 in the test configuration.
//!
//! These tests need root and an installed Postfix; without them they print how to
//! enable them and pass, unless `GREYSPF_E2E=required` (set by CI) makes that a failure.

mod support;

use std::collections::BTreeSet;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::postfix::{
    self, Delivered, GREYLIST_DELAY, GREYSPF_HOSTNAME, Instance, KEEPER_IDLE_TIMEOUT, MTA_HOSTNAME,
    Process,
};
use support::smtp::{self, Reply, Session};

/// When a retry is sent: past the greylist delay by a margin that covers a store that
/// keeps whole seconds, and a busy machine.
const RETRY_AFTER: Duration = GREYLIST_DELAY.saturating_add(Duration::from_millis(1300));

const MAIL_OK: &str = "250 2.1.0 Ok";
const RCPT_OK: &str = "250 2.1.5 Ok";
const RSET_OK: &str = "250 2.0.0 Ok";
const BYE: &str = "221 2.0.0 Bye";

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

#[test]
fn first_attempt_greylisted_retry_after_delay_accepted_with_one_header() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = Instance::builder().start(&host);
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

    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].delivered_to(), rcpt);
    assert_one_x_greylist(&copies[0], waited);

    // The triplet has passed: the next message is accepted at once, and carries no
    // X-Greylist since it was not delayed.
    let id = message_id("basic", 2);
    let mut s = session_as(&pf, addr, name, helo);
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "already passed")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);

    pf.assert_logs_clean();
}

#[test]
fn two_recipients_greylisted_then_accepted_with_the_header_once_per_message() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = Instance::builder().start(&host);
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
    // shows the message's headers, so each must have exactly one X-Greylist.
    let copies = pf.wait_for_delivery(&id, 2);
    let delivered_to: BTreeSet<&str> = copies.iter().map(|m| m.delivered_to()).collect();
    assert_eq!(delivered_to, rcpts.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(copies.len(), 2);
    for copy in &copies {
        assert_one_x_greylist(copy, waited);
    }

    pf.assert_logs_clean();
}

#[test]
fn whitelisted_clients_trusted_networks_and_postmaster_accepted_at_once() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = Instance::builder()
        .whitelist_client("# test whitelist")
        .whitelist_client("trusted.example")
        .whitelist_client("198.51.100.0/24")
        .whitelist_recipient("postmaster@")
        .start(&host);

    // By the verified client name: a subdomain of a whitelisted domain.
    let id = message_id("whitelist", 1);
    let (sender, rcpt) = ("frank@trusted.example", "gail@example.com");
    let mut s = session_as(
        &pf,
        "203.0.113.50",
        "relay.trusted.example",
        "relay.trusted.example",
    );
    assert_reply(s.mail_from(sender), MAIL_OK);
    assert_reply(s.rcpt_to(rcpt), RCPT_OK);
    assert_queued(s.data(&smtp::message(sender, &[rcpt], &id, "whitelisted by name")));
    assert_reply(s.quit(), BYE);
    let copies = pf.wait_for_delivery(&id, 1);
    assert_eq!(copies.len(), 1);
    assert_no_x_greylist(&copies[0]);

    // By address, within a whitelisted network, with no host name.
    let id = message_id("whitelist", 2);
    let (sender, rcpt) = ("hank@sender.example", "iris@example.com");
    let mut s = session_as(
        &pf,
        "198.51.100.25",
        "[UNAVAILABLE]",
        "unnamed.sender.example",
    );
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

    // postmaster@ is accepted at once from an unknown client, while another recipient
    // of the same message is greylisted: the exemption is per recipient.
    let id = message_id("whitelist", 3);
    let (sender, postmaster, other) = (
        "jane@elsewhere.example",
        "postmaster@example.com",
        "kurt@example.com",
    );
    let mut s = session_as(
        &pf,
        "203.0.113.60",
        "[UNAVAILABLE]",
        "unknown.elsewhere.example",
    );
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

    // A client on loopback (no XCLIENT) is in the default trusted_networks.
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

    pf.assert_logs_clean();
}

#[test]
fn ipv6_clients_greylisted_by_64_network() {
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = Instance::builder().start(&host);
    let (sender, rcpt) = ("nina@sender.example", "otto@example.com");
    let helo = "v6.sender.example";

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
    let Some(host) = postfix::host_or_skip() else {
        return;
    };
    let pf = Instance::builder().start(&host);
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
                let mut s = session_as(pf, &addr, "[UNAVAILABLE]", "parallel.sender.example");
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
                let mut s = session_as(pf, &addr, "[UNAVAILABLE]", "parallel.sender.example");
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
    let mut pf = Instance::builder().start(&host);
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
