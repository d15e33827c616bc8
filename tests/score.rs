//! Reputation scoring through the binary, against the loopback DNS server: which clients
//! are greylisted, passed or rejected, exact replies and log fields, error-code answers,
//! a list that never answers, one evaluation per message, and the counters.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{GREYLISTED, Session, TestDir};
use support::dns::{DnsServer, Zone};

fn zone() -> Zone {
    Zone::new()
        // A well-run server: forward-confirmed PTR, HELO its own name, SPF pass.
        .ptr("192.0.2.10", "mail.example.com")
        .a("mail.example.com", "192.0.2.10")
        .txt("mail.example.com", "v=spf1 a -all")
        .txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
        .mx("example.com", 10, "mail.example.com")
        // A dynamic address, confirmed, listed once.
        .ptr("203.0.113.5", "dsl-203-0-113-5.pool.isp.test")
        .a("dsl-203-0-113-5.pool.isp.test", "203.0.113.5")
        .a("5.113.0.203.bl1.test", "127.0.0.2")
        .mx("isp.test", 10, "mx.isp.test")
        // No PTR, listed twice, a sender domain that takes no mail.
        .a("7.100.51.198.bl1.test", "127.0.0.2")
        .a("7.100.51.198.bl2.test", "127.0.0.3")
        .txt("spam.test", "nothing")
        // On the allow list, with an address for a HELO.
        .ptr("192.0.2.77", "relay.partner.test")
        .a("relay.partner.test", "192.0.2.77")
        .a("77.2.0.192.wl.test", "127.0.10.1")
        .mx("partner.test", 10, "relay.partner.test")
        // A list answering with an error code.
        .ptr("192.0.2.88", "mail.good.test")
        .a("mail.good.test", "192.0.2.88")
        .a("88.2.0.192.bl1.test", "127.255.255.254")
        .mx("good.test", 10, "mail.good.test")
        // A list whose server never answers.
        .timeout("9.113.0.203.bl2.test")
}

const LISTS: &str = "score_dnsbl=bl1.test=4.5 bl2.test=3.5 wl.test=-5";

fn args(t: &TestDir, dns: &DnsServer, extra: &[&str]) -> Vec<String> {
    let server = format!("dns_server={}", dns.addr());
    let mut all = vec!["score_enable=yes", &server, LISTS, "score_rhsbl="];
    all.extend_from_slice(extra);
    t.args(&all)
}

fn req(client: &str, helo: &str, sender: &str, rcpt: &str, instance: &str) -> String {
    common::request(client, sender, rcpt, instance)
        .replace("helo_name=client.example", &format!("helo_name={helo}"))
}

/// The decision log line (the one with `action=`) of a client.
fn decision_lines(t: &TestDir, client: &str, n: usize) -> Vec<String> {
    let needle = format!("client_address={client},");
    let lines = t.wait_log(&needle, n);
    assert_eq!(lines.len(), n, "{lines:?}");
    lines
        .iter()
        .map(|l| l[l.find("action=").unwrap()..].to_string())
        .collect()
}

#[test]
fn a_confirmed_client_with_spf_pass_is_not_greylisted() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-good");
    let mut s = Session::start(&args(&t, &dns, &["spf_enable=yes"]));
    let reply = s.ask(&req(
        "192.0.2.10",
        "mail.example.com",
        "alice@example.com",
        "bob@example.net",
        "m1",
    ));
    assert_eq!(
        reply,
        "PREPEND Received-SPF: pass (mx.test: domain of alice@example.com designates \
         192.0.2.10 as permitted sender) receiver=mx.test; client-ip=192.0.2.10; \
         envelope-from=\"alice@example.com\"; helo=mail.example.com;"
    );
    assert_eq!(
        decision_lines(&t, "192.0.2.10", 1),
        [
            "action=pass, reason=score, spf_helo=pass, spf_mail_from=pass, score=-3, \
          score_hits=helo_is_client(-1.5) spf_pass(-1.5), client_name=unknown, \
          client_address=192.0.2.10, sender=alice@example.com, recipient=bob@example.net"
        ]
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn a_dynamic_client_on_one_list_is_greylisted_once_per_message() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-dyn");
    let mut s = Session::start(&args(&t, &dns, &[]));
    let helo = "dsl-203-0-113-5.pool.isp.test";
    let first = req("203.0.113.5", helo, "x@isp.test", "a@example.net", "m1");
    assert_eq!(s.ask(&first), GREYLISTED);
    let queries = dns.described_queries();
    // Every list, the PTR, the addresses of its name (which is also the HELO name: asked
    // once for both checks), the sender domain's MX.
    assert_eq!(
        dns.sorted_queries(0),
        [
            "A 5.113.0.203.bl1.test",
            "A 5.113.0.203.bl2.test",
            "A 5.113.0.203.wl.test",
            "A dsl-203-0-113-5.pool.isp.test",
            "AAAA dsl-203-0-113-5.pool.isp.test",
            "MX isp.test",
            "PTR 5.113.0.203.in-addr.arpa",
        ]
    );
    // The second recipient of the same message: the same score, no new lookups.
    let second = req("203.0.113.5", helo, "x@isp.test", "b@example.net", "m1");
    assert_eq!(s.ask(&second), GREYLISTED);
    assert_eq!(dns.described_queries(), queries);
    let hits = "score=5.5, score_hits=dnsbl:bl1.test(4.5) ptr_dynamic(2.5) helo_is_client(-1.5)";
    assert_eq!(
        decision_lines(&t, "203.0.113.5", 2),
        [
            format!(
                "action=greylist, reason=new, remaining=300, {hits}, client_name=unknown, \
                 client_address=203.0.113.5, sender=x@isp.test, recipient=a@example.net"
            ),
            format!(
                "action=greylist, reason=new, remaining=300, {hits}, client_name=unknown, \
                 client_address=203.0.113.5, sender=x@isp.test, recipient=b@example.net"
            ),
        ]
    );
    assert_eq!(s.finish().0, 0);
}

/// A host whose PTR name is also its HELO name and its sender domain (no MX), checked
/// against a right-hand-side list too: every check that needs the name's addresses, or the
/// name in the list, shares one query for each (name, type), with answers that live 0 s.
#[test]
fn each_question_of_one_evaluation_is_asked_once() {
    let dns = DnsServer::start(
        zone()
            .ptr("192.0.2.30", "host.solo.test")
            .a("host.solo.test", "192.0.2.30")
            .aaaa("host.solo.test", "2001:db8::30"),
    );
    let t = TestDir::new("sc-once");
    let mut s = Session::start(&args(&t, &dns, &["score_rhsbl=rhs.test=2"]));
    let r = req(
        "192.0.2.30",
        "host.solo.test",
        "x@host.solo.test",
        "a@example.net",
        "m1",
    );
    assert_eq!(s.ask(&r), "DUNNO");
    let asked = dns.sorted_queries(0);
    assert_eq!(
        asked,
        [
            "A 30.2.0.192.bl1.test",
            "A 30.2.0.192.bl2.test",
            "A 30.2.0.192.wl.test",
            "A host.solo.test",
            "A host.solo.test.rhs.test",
            "AAAA host.solo.test",
            "MX host.solo.test",
            "PTR 30.2.0.192.in-addr.arpa",
        ]
    );
    assert_eq!(
        decision_lines(&t, "192.0.2.30", 1),
        [
            "action=pass, reason=score, score=-1.5, score_hits=helo_is_client(-1.5), \
          client_name=unknown, client_address=192.0.2.30, sender=x@host.solo.test, \
          recipient=a@example.net"
        ]
    );
    assert_eq!(s.finish().0, 0);
}

/// The reverse DNS that smtpd found comes with the request (`client_name`, verified, and
/// `reverse_client_name`): greyspf takes it and asks for none of it again. A verified
/// name that is also the HELO name answers the HELO checks too.
#[test]
fn the_reverse_dns_postfix_found_is_not_asked_again() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-pfname");
    let mut s = Session::start(&args(&t, &dns, &[]));
    let confirmed = req(
        "192.0.2.10",
        "mail.example.com",
        "a@example.com",
        "b@example.net",
        "m1",
    )
    .replace("client_name=unknown", "client_name=mail.example.com")
    .replace(
        "reverse_client_name=unknown",
        "reverse_client_name=mail.example.com",
    );
    assert_eq!(s.ask(&confirmed), "DUNNO");
    let asked = dns.sorted_queries(0);
    assert_eq!(
        asked,
        [
            "A 10.2.0.192.bl1.test",
            "A 10.2.0.192.bl2.test",
            "A 10.2.0.192.wl.test",
            "MX example.com",
        ]
    );
    // A dynamic-looking PTR name that smtpd could not confirm: no PTR query either, and
    // the HELO, not confirmed by smtpd, is looked up as usual.
    let name = "dsl-203-0-113-5.pool.isp.test";
    let unconfirmed = req("203.0.113.5", name, "x@isp.test", "c@example.net", "m2").replace(
        "reverse_client_name=unknown",
        &format!("reverse_client_name={name}"),
    );
    assert_eq!(s.ask(&unconfirmed), GREYLISTED);
    let asked = dns.sorted_queries(4);
    assert_eq!(
        asked,
        [
            "A 5.113.0.203.bl1.test",
            "A 5.113.0.203.bl2.test",
            "A 5.113.0.203.wl.test",
            "A dsl-203-0-113-5.pool.isp.test",
            "AAAA dsl-203-0-113-5.pool.isp.test",
            "MX isp.test",
        ]
    );
    assert_eq!(
        decision_lines(&t, "192.0.2.10", 1),
        [
            "action=pass, reason=score, score=-1.5, score_hits=helo_is_client(-1.5), \
          client_name=mail.example.com, client_address=192.0.2.10, sender=a@example.com, \
          recipient=b@example.net"
        ]
    );
    assert_eq!(
        decision_lines(&t, "203.0.113.5", 1),
        [
            "action=greylist, reason=new, remaining=300, score=7, score_hits=dnsbl:bl1.test(4.5) \
          ptr_unconfirmed(1.5) ptr_dynamic(2.5) helo_is_client(-1.5), client_name=unknown, \
          client_address=203.0.113.5, sender=x@isp.test, recipient=c@example.net"
        ]
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn two_lists_and_no_ptr_are_rejected_with_the_hits_named() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-bad");
    let mut s = Session::start(&args(&t, &dns, &[]));
    let reply = s.ask(&req(
        "198.51.100.7",
        "client.example",
        "m@spam.test",
        "a@example.net",
        "m1",
    ));
    let hits = "dnsbl:bl1.test(4.5) dnsbl:bl2.test(3.5) no_ptr(2.5) helo_unresolvable(1.5) \
                sender_unroutable(2.5)";
    assert_eq!(
        reply,
        format!("550 5.7.1 Rejected for poor reputation of 198.51.100.7 (score 14.5: {hits})")
    );
    assert_eq!(
        decision_lines(&t, "198.51.100.7", 1),
        [format!(
            "action=reject, reason=score, score=14.5, score_hits={hits}, client_name=unknown, \
             client_address=198.51.100.7, sender=m@spam.test, recipient=a@example.net"
        )]
    );
    assert_eq!(s.finish().0, 0);
    // Each outcome is counted, once per message.
    let out = std::process::Command::new(common::BIN)
        .args(args(&t, &dns, &[]))
        .args(["stats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["score_reject", "1"]
                || l.replace(' ', "") == "score_reject:1"
        ),
        "{stats}"
    );
}

#[test]
fn a_configured_defer_instead_of_the_reject() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-defer");
    let mut s = Session::start(&args(
        &t,
        &dns,
        &[
            "score_reject_action=450 4.7.1",
            "score_reject_text=Go away (%s)",
        ],
    ));
    let reply = s.ask(&req(
        "198.51.100.7",
        "client.example",
        "m@spam.test",
        "a@example.net",
        "m1",
    ));
    assert_eq!(reply, "450 4.7.1 Go away (14.5)");
    assert!(decision_lines(&t, "198.51.100.7", 1)[0].starts_with("action=defer, reason=score,"));
    assert_eq!(s.finish().0, 0);
}

#[test]
fn an_allow_listed_client_is_not_greylisted_despite_a_bad_helo() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-wl");
    let mut s = Session::start(&args(&t, &dns, &[]));
    let reply = s.ask(&req(
        "192.0.2.77",
        "[192.0.2.77]",
        "n@partner.test",
        "a@example.net",
        "m1",
    ));
    assert_eq!(reply, "DUNNO");
    assert_eq!(
        decision_lines(&t, "192.0.2.77", 1),
        [
            "action=pass, reason=score, score=-2.5, score_hits=dnsbl:wl.test(-5) \
          helo_literal(2.5), client_name=unknown, client_address=192.0.2.77, \
          sender=n@partner.test, recipient=a@example.net"
        ]
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn an_error_code_answer_counts_zero_and_is_reported_once() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-err");
    let mut s = Session::start(&args(&t, &dns, &[]));
    for (i, rcpt) in ["a@example.net", "b@example.net"].iter().enumerate() {
        let reply = s.ask(&req(
            "192.0.2.88",
            "mail.good.test",
            "g@good.test",
            rcpt,
            &format!("m{i}"),
        ));
        assert_eq!(reply, "DUNNO");
    }
    assert_eq!(
        decision_lines(&t, "192.0.2.88", 2)[1],
        "action=pass, reason=score, score=-1.5, score_hits=helo_is_client(-1.5), \
         client_name=unknown, client_address=192.0.2.88, sender=g@good.test, \
         recipient=b@example.net"
    );
    assert_eq!(s.finish().0, 0);
    let warnings = t.log_lines("answered 127.255.255.254");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(
            "configuration: DNS list bl1.test answered 127.255.255.254, an error code, \
             not a listing (counted 0)"
        ),
        "{warnings:?}"
    );
}

#[test]
fn a_list_that_never_answers_costs_at_most_the_score_timeout() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-dead");
    let mut s = Session::start(&args(&t, &dns, &["score_timeout=1s"]));
    let started = Instant::now();
    let reply = s.ask(&req(
        "203.0.113.9",
        "client.example",
        "x@isp.test",
        "a@example.net",
        "m1",
    ));
    let took = started.elapsed();
    assert_eq!(reply, GREYLISTED);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(
        decision_lines(&t, "203.0.113.9", 1),
        ["action=greylist, reason=new, remaining=300, score=4, \
          score_hits=no_ptr(2.5) helo_unresolvable(1.5), score_failed=dnsbl:bl2.test, \
          client_name=unknown, client_address=203.0.113.9, sender=x@isp.test, \
          recipient=a@example.net"]
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn a_list_that_keeps_failing_is_rested() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-rest");
    let mut s = Session::start(&args(&t, &dns, &["score_timeout=300ms"]));
    let bl2 = || {
        dns.described_queries()
            .iter()
            .filter(|q| q.ends_with(".bl2.test"))
            .count()
    };
    for i in 0..3 {
        let r = req(
            "203.0.113.9",
            "client.example",
            "x@isp.test",
            "a@example.net",
            &format!("m{i}"),
        );
        s.ask(&r);
    }
    assert_eq!(bl2(), 3);
    let started = Instant::now();
    let r = req(
        "203.0.113.9",
        "client.example",
        "x@isp.test",
        "a@example.net",
        "m3",
    );
    s.ask(&r);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(bl2(), 3);
    let rested = t.wait_log("failed 3 times in a row", 1);
    assert_eq!(rested.len(), 1);
    assert!(
        rested[0]
            .contains("DNS list bl2.test failed 3 times in a row: not asked for the next 600 s"),
        "{rested:?}"
    );
    assert_eq!(s.finish().0, 0);
}

/// `greyspf check` shows every check with its weight, then the total.
#[test]
fn check_prints_every_check_with_its_weight() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("sc-check");
    let out = std::process::Command::new(common::BIN)
        .args(args(&t, &dns, &[]))
        .args([
            "check",
            "--client-address",
            "198.51.100.7",
            "--helo",
            "client.example",
            "--sender",
            "m@spam.test",
            "--recipient",
            "a@example.net",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let checks: Vec<&str> = text.lines().filter(|l| l.starts_with("score")).collect();
    assert_eq!(
        checks,
        [
            "score_check=dnsbl:bl1.test weight=4.5 hit=yes detail=\"listed 127.0.0.2\"",
            "score_check=dnsbl:bl2.test weight=3.5 hit=yes detail=\"listed 127.0.0.3\"",
            "score_check=dnsbl:wl.test weight=-5 hit=no detail=\"not listed\"",
            "score_check=no_ptr weight=2.5 hit=yes detail=\"no PTR\"",
            "score_check=helo_literal weight=2.5 hit=no detail=\"client.example\"",
            "score_check=helo_not_fqdn weight=1.5 hit=no detail=\"client.example\"",
            "score_check=helo_ours weight=4 hit=no detail=\"client.example\"",
            "score_check=helo_unresolvable weight=1.5 hit=yes detail=\"no address\"",
            "score_check=helo_is_client weight=-1.5 hit=no detail=\"no address\"",
            "score_check=sender_unroutable weight=2.5 hit=yes detail=\"no MX and no A\"",
            "score=14.5 outcome=reject",
        ],
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0));
}

/// SPF and scoring ask through one DNS client: what SPF looked up (the HELO name's address,
/// for its `a` mechanism) is in the cache when scoring needs it.
#[test]
fn spf_and_scoring_share_one_dns_client() {
    let dns = DnsServer::start(zone().ttl(60));
    let t = TestDir::new("sc-shared");
    let mut s = Session::start(&args(&t, &dns, &["spf_enable=yes"]));
    let reply = s.ask(&req(
        "192.0.2.10",
        "mail.example.com",
        "alice@example.com",
        "bob@example.net",
        "m1",
    ));
    assert!(reply.starts_with("PREPEND Received-SPF: pass "), "{reply}");
    let asked = dns.described_queries();
    let helo_a = asked.iter().filter(|q| *q == "A mail.example.com").count();
    assert_eq!(helo_a, 1, "{asked:?}");
    assert!(asked.contains(&"PTR 10.2.0.192.in-addr.arpa".to_string()));
    assert_eq!(s.finish().0, 0);
}

/// IPv6 clients: listed by nibbles under the zone, confirmed through AAAA records.
#[test]
fn an_ipv6_client_is_looked_up_by_nibbles_and_confirmed_by_aaaa() {
    let listed = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl1.test";
    let dns = DnsServer::start(
        Zone::new()
            .ptr("2001:db8::1", "mail.v6.test")
            .aaaa("mail.v6.test", "2001:db8::1")
            .a(listed, "127.0.0.2")
            .mx("v6.test", 10, "mail.v6.test"),
    );
    let t = TestDir::new("sc-v6");
    let mut s = Session::start(&args(&t, &dns, &[]));
    let reply = s.ask(&req(
        "2001:db8::1",
        "mail.v6.test",
        "v@v6.test",
        "a@example.net",
        "m1",
    ));
    assert_eq!(reply, GREYLISTED);
    assert_eq!(
        decision_lines(&t, "2001:db8::1", 1),
        ["action=greylist, reason=new, remaining=300, score=3, \
          score_hits=dnsbl:bl1.test(4.5) helo_is_client(-1.5), client_name=unknown, \
          client_address=2001:db8::1, sender=v@v6.test, recipient=a@example.net"]
    );
    assert!(dns.described_queries().contains(&format!("A {listed}")));
    assert_eq!(s.finish().0, 0);
}

/// A client whose PTR name is dynamic by one of the default words only (no address digits).
fn cable_zone() -> Zone {
    zone()
        .ptr("192.0.2.20", "cust.cable.isp.test")
        .a("cust.cable.isp.test", "192.0.2.20")
}

/// The decision line's score fields of one request from a confirmed client that names
/// itself in its HELO.
fn score_of(t: &TestDir, dns: &DnsServer, patterns: &str, client: &str, helo: &str) -> String {
    let setting = format!("score_dynamic_patterns={patterns}");
    let mut s = Session::start(&args(t, dns, &[&setting]));
    let reply = s.ask(&req(client, helo, "x@isp.test", "a@example.net", "m1"));
    assert_eq!(reply, "DUNNO");
    assert_eq!(s.finish().0, 0);
    let line = decision_lines(t, client, 1).remove(0);
    line[..line.find(", client_name").unwrap()].to_string()
}

/// The default patterns (matched without a regex engine) and patterns of one's own (compiled
/// when first needed) judge PTR names as before; one's own replace the default.
#[test]
fn default_and_own_dynamic_patterns_judge_ptr_names() {
    let dns = DnsServer::start(cable_zone());
    let default = score_of(
        &TestDir::new("sc-pat-default"),
        &dns,
        score_default_patterns(),
        "192.0.2.20",
        "cust.cable.isp.test",
    );
    assert_eq!(
        default,
        "action=pass, reason=score, score=1, score_hits=ptr_dynamic(2.5) helo_is_client(-1.5)"
    );
    let own = "^mail[.] ^relay[0-9]*[.]";
    let mail = score_of(
        &TestDir::new("sc-pat-own"),
        &dns,
        own,
        "192.0.2.10",
        "mail.example.com",
    );
    assert_eq!(
        mail,
        "action=pass, reason=score, score=1, score_hits=ptr_dynamic(2.5) helo_is_client(-1.5)"
    );
    let cable = score_of(
        &TestDir::new("sc-pat-own2"),
        &dns,
        own,
        "192.0.2.20",
        "cust.cable.isp.test",
    );
    assert_eq!(
        cable,
        "action=pass, reason=score, score=-1.5, score_hits=helo_is_client(-1.5)"
    );
}

/// The shipped default of score_dynamic_patterns, as --check-config prints it.
fn score_default_patterns() -> &'static str {
    "(^|[.-])(dyn|dynamic|dsl|adsl|vdsl|xdsl|pool|cable|dhcp|dial|dialup|ppp|pppoe|broadband|cust|customer|cpe)([0-9.-]|$)"
}

/// A pattern with bad syntax is refused when the configuration is loaded; one with good
/// syntax that the regex engine cannot build (too large) is refused by --check-config, and
/// when serving it is reported and matches nothing, the mail flowing on.
#[test]
fn patterns_the_engine_cannot_build_are_refused_by_check_config_and_ignored_in_service() {
    let dns = DnsServer::start(cable_zone());
    let t = TestDir::new("sc-pat-bad");
    let check = |pattern: &str| {
        let setting = format!("score_dynamic_patterns={pattern}");
        let out = std::process::Command::new(common::BIN)
            .args(args(&t, &dns, &[&setting]))
            .arg("--check-config")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = check("(");
    assert_eq!(code, 78);
    assert!(
        err.starts_with(
            "greyspf: configuration error: -o score_dynamic_patterns=(: \
             score_dynamic_patterns: bad pattern \"(\""
        ),
        "{err}"
    );
    let big = r"\w{1000}{1000} ^mail[.]";
    let (code, err) = check(big);
    assert_eq!(code, 78);
    assert!(
        err.starts_with(
            "greyspf: configuration error: score_dynamic_patterns: bad pattern \
             \"\\\\w{1000}{1000}\""
        ),
        "{err}"
    );
    // Serving: the pattern that builds still works, the other is reported once.
    let served = score_of(&t, &dns, big, "192.0.2.10", "mail.example.com");
    assert_eq!(
        served,
        "action=pass, reason=score, score=1, score_hits=ptr_dynamic(2.5) helo_is_client(-1.5)"
    );
    let reported = t.wait_log("the pattern matches nothing", 1);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(
        reported[0]
            .contains("configuration: score_dynamic_patterns: bad pattern \"\\\\w{1000}{1000}\""),
        "{reported:?}"
    );
}
