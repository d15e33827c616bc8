//! SPF through the real binary against a DNS server on loopback: the exact reply for each
//! result, one evaluation per message, the deadline of a dead nameserver, and greylisting
//! keyed on the SPF-authenticated domain.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use support::dns::{DnsServer, Zone};

fn zone() -> Zone {
    Zone::new()
        .txt("pass.example", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("fail.example", "v=spf1 -all")
        .txt("exp.example", "v=spf1 -all exp=why.exp.example")
        .txt("why.exp.example", "%{i} is not one of %{d}'s servers")
        .txt("soft.example", "v=spf1 ~all")
        .txt("neutral.example", "v=spf1 ?all")
        .txt("perm.example", "v=spf1 foo:bar -all")
        .timeout("temp.example")
        .txt("helofail.example", "v=spf1 -all")
        .txt("inc.example", "v=spf1 include:a.inc.example -all")
        .txt("a.inc.example", "v=spf1 include:b.inc.example -all")
        .txt("b.inc.example", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt(
            "pool.example",
            "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all",
        )
        .txt("local.example", "v=spf1 exists:%{l}.ok.local.example -all")
        .a("postmaster.ok.local.example", "127.0.0.2")
}

fn args(t: &TestDir, dns: &DnsServer, extra: &[&str]) -> Vec<String> {
    let server = format!("dns_server={}", dns.addr());
    let mut e = vec!["spf_enable=yes", &server, "spf_timeout=1s"];
    e.extend_from_slice(extra);
    t.args(&e)
}

fn req(client: &str, helo: &str, sender: &str, rcpt: &str, instance: &str) -> String {
    request(client, sender, rcpt, instance)
        .replace("helo_name=client.example", &format!("helo_name={helo}"))
}

fn received(result: &str, comment: &str, client: &str, from: &str, helo: &str) -> String {
    format!(
        "PREPEND Received-SPF: {result} ({comment}) receiver=mx.test; client-ip={client}; envelope-from=\"{from}\"; helo={helo};"
    )
}

#[test]
fn each_result_gets_its_exact_reply() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("spfres");
    let mut s = Session::start(&args(&t, &dns, &["greylist_enable=no"]));
    let ip = "192.0.2.10";
    let cases: Vec<(&str, String)> = vec![
        ("alice@pass.example", received("pass", "mx.test: domain of alice@pass.example designates 192.0.2.10 as permitted sender", ip, "alice@pass.example", "client.example")),
        ("bob@fail.example", "550 5.7.23 SPF check failed: fail.example does not designate 192.0.2.10 as permitted sender".into()),
        ("carol@exp.example", "550 5.7.23 192.0.2.10 is not one of exp.example's servers".into()),
        ("dave@soft.example", received("softfail", "mx.test: domain of dave@soft.example reports soft fail for 192.0.2.10", ip, "dave@soft.example", "client.example")),
        ("erin@neutral.example", received("neutral", "mx.test: domain of erin@neutral.example reports neutral for 192.0.2.10", ip, "erin@neutral.example", "client.example")),
        ("frank@none.example", received("none", "mx.test: no SPF records found for frank@none.example", ip, "frank@none.example", "client.example")),
        ("grace@perm.example", received("permerror", "mx.test: unable to verify SPF record for grace@perm.example", ip, "grace@perm.example", "client.example")),
        ("heidi@temp.example", received("temperror", "mx.test: temporary dns error validating heidi@temp.example", ip, "heidi@temp.example", "client.example")),
        ("ivan@inc.example", received("pass", "mx.test: domain of ivan@inc.example designates 192.0.2.10 as permitted sender", ip, "ivan@inc.example", "client.example")),
    ];
    for (i, (sender, want)) in cases.iter().enumerate() {
        let got = s.ask(&req(
            ip,
            "client.example",
            sender,
            "rcpt@example.com",
            &format!("r{i}"),
        ));
        assert_eq!(&got, want, "{sender}");
    }
    // HELO fail rejects; the null sender is judged (and labelled) by HELO only.
    assert_eq!(
        s.ask(&req(
            ip,
            "helofail.example",
            "x@pass.example",
            "rcpt@example.com",
            "h1"
        )),
        "550 5.7.23 SPF check failed: helofail.example does not designate 192.0.2.10 as permitted sender"
    );
    assert_eq!(
        s.ask(&req(ip, "pass.example", "", "rcpt@example.com", "h2")),
        received(
            "pass",
            "mx.test: domain of postmaster@pass.example designates 192.0.2.10 as permitted sender",
            ip,
            "postmaster@pass.example",
            "pass.example"
        )
    );
    assert_eq!(s.finish().0, 0);
    let lines = t.wait_log("action=reject, reason=spf", 3);
    assert!(lines[0].ends_with("action=reject, reason=spf, spf_helo=none, spf_mail_from=fail, client_name=unknown, client_address=192.0.2.10, sender=bob@fail.example, recipient=rcpt@example.com"), "{lines:?}");
}

#[test]
fn one_evaluation_per_message_and_configured_defer() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("spfonce");
    let mut s = Session::start(&args(
        &t,
        &dns,
        &["greylist_delay=1h", "spf_defer_results=temperror"],
    ));
    let first = s.ask(&req(
        "192.0.2.20",
        "client.example",
        "bob@fail.example",
        "a@example.com",
        "m1",
    ));
    assert!(first.starts_with("550 5.7.23 "), "{first}");
    let after_first = dns.queries();
    assert!(after_first > 0);
    // Later recipients of the same message: same answer, not one more query.
    for r in ["b@example.com", "c@example.com"] {
        assert_eq!(
            s.ask(&req(
                "192.0.2.20",
                "client.example",
                "bob@fail.example",
                r,
                "m1"
            )),
            first
        );
    }
    assert_eq!(dns.queries(), after_first);
    let defer = s.ask(&req(
        "192.0.2.20",
        "client.example",
        "x@temp.example",
        "a@example.com",
        "m2",
    ));
    assert_eq!(
        defer,
        "451 4.7.24 SPF check for temp.example could not be completed, please try again later"
    );
    assert_eq!(s.finish().0, 0);
    // SPF results are counted by identity and result; they reach the keeper at the end
    // of input, since no greylist question carried them earlier.
    let args = args(&t, &dns, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = "\"spf_helo_none\":2,\"spf_mail_from_fail\":1,\"spf_mail_from_temperror\":1";
    loop {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .args(["stats", "--json"])
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&out.stdout).to_string();
        if json.contains(want) {
            break;
        }
        assert!(Instant::now() < deadline, "{json}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Answers are kept for their TTL, negative ones for their SOA's: a second message from
/// the same client and sender domain costs no query. Without an SOA a negative answer is
/// not kept (RFC 2308), so the unknown HELO name is asked again.
#[test]
fn answers_are_cached_for_their_ttl_across_messages() {
    for (negative, queries_for_second) in [(Some(60), 0), (None, 1)] {
        let mut z = zone().ttl(300);
        if let Some(seconds) = negative {
            z = z.negative_ttl(seconds);
        }
        let dns = DnsServer::start(z);
        let t = TestDir::new("spfcache");
        let mut s = Session::start(&args(&t, &dns, &["greylist_enable=no"]));
        let ask = |s: &mut Session, instance| {
            s.ask(&req(
                "192.0.2.30",
                "unknown-host.example",
                "bob@pass.example",
                "a@example.com",
                instance,
            ))
        };
        let first = ask(&mut s, "m1");
        let want = received(
            "pass",
            "mx.test: domain of bob@pass.example designates 192.0.2.30 as permitted sender",
            "192.0.2.30",
            "bob@pass.example",
            "unknown-host.example",
        );
        assert_eq!(first, want);
        // One TXT query for the HELO name (NXDOMAIN), one for the sender domain.
        assert_eq!(dns.queries(), 2, "{:?}", dns.described_queries());
        assert_eq!(ask(&mut s, "m2"), want);
        assert_eq!(
            dns.queries(),
            2 + queries_for_second,
            "negative TTL {negative:?}: {:?}",
            dns.described_queries()
        );
        assert_eq!(s.finish().0, 0);
    }
}

/// The two identities of a message are evaluated at once and share their answers: a HELO
/// that is the sender's domain costs no second query, and both results are those the
/// identities get one at a time.
#[test]
fn helo_and_mail_from_of_one_domain_share_one_query() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("spfshare");
    let mut s = Session::start(&args(&t, &dns, &["greylist_enable=no"]));
    let reply = s.ask(&req(
        "192.0.2.10",
        "pass.example",
        "alice@pass.example",
        "r@example.com",
        "s1",
    ));
    assert_eq!(
        reply,
        received(
            "pass",
            "mx.test: domain of alice@pass.example designates 192.0.2.10 as permitted sender",
            "192.0.2.10",
            "alice@pass.example",
            "pass.example"
        )
    );
    assert_eq!(dns.described_queries(), ["TXT pass.example"]);
    let line = &t.wait_log("spf_mail_from=pass", 1)[0];
    assert!(line.contains("spf_helo=pass, spf_mail_from=pass"), "{line}");
    assert_eq!(s.finish().0, 0);
}

/// HELO and MAIL FROM are checked at once, under one deadline: a dead nameserver costs
/// spf_timeout (1 s) once for both, not once for each.
#[test]
fn dead_nameserver_costs_the_timeout_once_for_both_identities() {
    let dns = DnsServer::dead();
    let t = TestDir::new("spfdead");
    let mut s = Session::start(&args(&t, &dns, &["greylist_enable=no"]));
    let start = Instant::now();
    let reply = s.ask(&req(
        "192.0.2.30",
        "client.example",
        "a@pass.example",
        "r@example.com",
        "d1",
    ));
    let took = start.elapsed();
    assert!(
        reply.starts_with("PREPEND Received-SPF: temperror "),
        "{reply}"
    );
    // Both identities ran out at the same deadline: 1 s, plus start-up, not 2 s.
    assert!(took >= Duration::from_millis(1000), "took {took:?}");
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    let line = &t.wait_log("spf_mail_from=temperror", 1)[0];
    assert!(
        line.contains("spf_helo=temperror, spf_mail_from=temperror"),
        "{line}"
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn spf_keyed_greylisting_lets_a_sender_pool_through() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("spfkey");
    let mut s = Session::start(&args(
        &t,
        &dns,
        &["greylist_delay=1s", "greylist_auto_whitelist_clients=0"],
    ));
    let pass_hdr = |ip: &str| {
        received(
            "pass",
            &format!("mx.test: domain of news@pool.example designates {ip} as permitted sender"),
            ip,
            "news@pool.example",
            "client.example",
        )
    };
    assert_eq!(
        s.ask(&req(
            "192.0.2.40",
            "client.example",
            "news@pool.example",
            "u@example.com",
            "p1"
        )),
        GREYLISTED
    );
    std::thread::sleep(Duration::from_millis(1100));
    // Passes: the SPF header on the first recipient, X-Greylist on the next request of
    // the message (here its DATA request).
    assert_eq!(
        s.ask(&req(
            "192.0.2.40",
            "client.example",
            "news@pool.example",
            "u@example.com",
            "p2"
        )),
        pass_hdr("192.0.2.40")
    );
    let data = req(
        "192.0.2.40",
        "client.example",
        "news@pool.example",
        "",
        "p2",
    )
    .replace("protocol_state=RCPT", "protocol_state=DATA");
    assert_header(&s.ask(&data), 1);
    // Another provider range: the triplet is keyed on pool.example, so no new delay.
    assert_eq!(
        s.ask(&req(
            "198.51.100.77",
            "client.example",
            "news@pool.example",
            "u@example.com",
            "p3"
        )),
        pass_hdr("198.51.100.77")
    );
    // Without SPF pass the network keys the triplet: soft.example from there is delayed.
    assert_eq!(
        s.ask(&req(
            "198.51.100.77",
            "client.example",
            "news@soft.example",
            "u@example.com",
            "p4"
        )),
        GREYLISTED
    );
    assert_eq!(s.finish().0, 0);
    assert_eq!(t.wait_log("client_key=spf:pool.example", 3).len(), 3);
}

/// RFC 7208 §4.3: `MAIL FROM:<local.example>` (Postfix sends `sender=local.example`) is
/// checked as postmaster@local.example: the record's `%{l}` is `postmaster`, so it passes.
#[test]
fn sender_without_at_is_postmaster_at_that_domain() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("spfnoat");
    let mut s = Session::start(&args(&t, &dns, &["greylist_enable=no"]));
    let ip = "192.0.2.10";
    assert_eq!(
        s.ask(&req(
            ip,
            "client.example",
            "local.example",
            "r@example.com",
            "n1"
        )),
        received(
            "pass",
            "mx.test: domain of local.example designates 192.0.2.10 as permitted sender",
            ip,
            "local.example",
            "client.example"
        )
    );
    assert_eq!(
        s.ask(&req(
            ip,
            "client.example",
            "fail.example",
            "r@example.com",
            "n2"
        )),
        "550 5.7.23 SPF check failed: fail.example does not designate 192.0.2.10 as permitted sender"
    );
    assert_eq!(s.finish().0, 0);
    let lines = t.wait_log("sender=fail.example", 1);
    assert!(lines[0].ends_with("action=reject, reason=spf, spf_helo=none, spf_mail_from=fail, client_name=unknown, client_address=192.0.2.10, sender=fail.example, recipient=r@example.com"), "{lines:?}");
}

/// RFC 7208 §4.3: for the null sender, a HELO that is not a multi-label domain name (a
/// bare name, an address literal) gives the result `none`, with its header and log field,
/// and no DNS query.
#[test]
fn null_sender_with_unusable_helo_is_none() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("spfnullhelo");
    let mut s = Session::start(&args(&t, &dns, &["greylist_enable=no"]));
    let ip = "192.0.2.10";
    for (i, helo) in ["A2345678", "[192.0.2.10]"].into_iter().enumerate() {
        assert_eq!(
            s.ask(&req(ip, helo, "", "r@example.com", &format!("z{i}"))),
            received(
                "none",
                &format!("mx.test: no SPF records found for postmaster@{helo}"),
                ip,
                &format!("postmaster@{helo}"),
                helo
            ),
            "{helo}"
        );
    }
    assert_eq!(s.finish().0, 0);
    assert_eq!(dns.queries(), 0, "{:?}", dns.described_queries());
    let lines = t.wait_log("spf_helo=none", 2);
    for line in &lines {
        assert!(
            line.ends_with(": action=pass, reason=greylisting-off, spf_helo=none, client_name=unknown, client_address=192.0.2.10, sender=, recipient=r@example.com"),
            "{lines:?}"
        );
    }
}
