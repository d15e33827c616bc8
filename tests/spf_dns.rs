//! SpfChecker against the loopback DNS server: exact results, headers and queries; and the
//! DNS client's defences and retransmissions, through the binary where configured.

mod common;
mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use greyspf::spf::{HeaderKind, Identity, SpfChecker, SpfResult, SpfSettings};
use support::dns::{DnsServer, Zone};

const HOST: &str = "mx.example.org";

fn settings(server: &DnsServer, header: HeaderKind, timeout: Duration) -> SpfSettings {
    SpfSettings {
        dns_server: Some(server.addr()),
        dns_retransmit: Duration::from_millis(400),
        timeout,
        header,
        authserv_id: HOST.to_string(),
        hostname: HOST.to_string(),
    }
}

fn checker(server: &DnsServer, header: HeaderKind, timeout: Duration) -> SpfChecker {
    SpfChecker::new(settings(server, header, timeout)).unwrap()
}

fn received_spf(server: &DnsServer) -> SpfChecker {
    checker(server, HeaderKind::ReceivedSpf, Duration::from_secs(5))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn zone() -> Zone {
    Zone::new()
        .txt(
            "example.com",
            "v=spf1 ip4:192.0.2.0/24 include:_spf.example.com -all",
        )
        .txt("_spf.example.com", "v=spf1 include:_spf2.example.com ~all")
        .txt(
            "_spf2.example.com",
            "v=spf1 ip6:2001:db8::/32 a:relay.example.com",
        )
        .a("relay.example.com", "198.51.100.7")
        .txt(
            "why.example.com",
            "v=spf1 ip4:192.0.2.1 -all exp=exp.why.example.com",
        )
        .txt(
            "exp.why.example.com",
            "%{i} may not send for %{d} (ask postmaster@%{o})",
        )
        .txt("soft.example.com", "v=spf1 ~all")
        .txt("neutral.example.com", "v=spf1 ip4:192.0.2.1 ?all")
        .txt("empty.example.com", "v=spf1")
        .txt("nospf.example.com", "google-site-verification=abc")
        .txt("two.example.com", "v=spf1 +all")
        .txt("two.example.com", "v=spf1 -all")
        .txt(
            "typo.example.com",
            "v=spf1 ip4:192.0.2.1 inclde:_spf.example.com -all",
        )
        .txt("cidr.example.com", "v=spf1 ip4:192.0.2.0/33 -all")
        .txt("badinc.example.com", "v=spf1 include:typo.example.com +all")
        .txt("six.example.com", "v=spf1 ip6:::0/0 -all")
        .txt("broken.example.com", "v=spf1 include:sf.example.com -all")
        .servfail("sf.example.com")
        .txt("slow.example.com", "v=spf1 include:never.example.com -all")
        .timeout("never.example.com")
        .txt("mail.example.com", "v=spf1 a -all")
        .a("mail.example.com", "192.0.2.25")
        .txt("bad-helo.example.net", "v=spf1 -all")
}

#[test]
fn pass_with_exact_received_spf_and_queries() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let outcome = spf.check_mail_from(ip("192.0.2.10"), "mail.example.com", "alice@example.com");
    assert_eq!(outcome.identity, Identity::MailFrom);
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(outcome.domain, "example.com");
    assert_eq!(outcome.explanation, None);
    assert_eq!(
        outcome.header,
        "Received-SPF: pass (mx.example.org: domain of alice@example.com designates 192.0.2.10 \
         as permitted sender) receiver=mx.example.org; client-ip=192.0.2.10; \
         envelope-from=\"alice@example.com\"; helo=mail.example.com;"
    );
    assert_eq!(server.described_queries(), ["TXT example.com"]);
}

#[test]
fn pass_through_an_include_chain() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let outcome = spf.check_mail_from(ip("198.51.100.7"), "relay.example.com", "bob@example.com");
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(
        server.described_queries(),
        [
            "TXT example.com",
            "TXT _spf.example.com",
            "TXT _spf2.example.com",
            "A relay.example.com",
        ]
    );
    let v6 = spf.check_mail_from(ip("2001:db8:1::25"), "relay.example.com", "bob@example.com");
    assert_eq!(v6.result, SpfResult::Pass);
    // The include chain ends in ~all, which inside an include is only "no match".
    let other = spf.check_mail_from(ip("203.0.113.5"), "relay.example.com", "bob@example.com");
    assert_eq!(other.result, SpfResult::Fail);
}

#[test]
fn fail_with_and_without_explanation() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let outcome = spf.check_mail_from(ip("203.0.113.5"), "host.example.net", "carol@example.com");
    assert_eq!(outcome.result, SpfResult::Fail);
    assert_eq!(outcome.explanation, None);
    assert_eq!(
        outcome.header,
        "Received-SPF: fail (mx.example.org: domain of carol@example.com does not designate \
         203.0.113.5 as permitted sender) receiver=mx.example.org; client-ip=203.0.113.5; \
         envelope-from=\"carol@example.com\"; helo=host.example.net;"
    );

    let outcome = spf.check_mail_from(
        ip("203.0.113.5"),
        "host.example.net",
        "dave@why.example.com",
    );
    assert_eq!(outcome.result, SpfResult::Fail);
    assert_eq!(
        outcome.explanation.as_deref(),
        Some("203.0.113.5 may not send for why.example.com (ask postmaster@why.example.com)")
    );
}

#[test]
fn softfail_neutral_and_none() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let client = ip("203.0.113.5");
    let soft = spf.check_mail_from(client, "h.example.net", "e@soft.example.com");
    assert_eq!(soft.result, SpfResult::SoftFail);
    assert_eq!(
        soft.header,
        "Received-SPF: softfail (mx.example.org: domain of e@soft.example.com reports soft fail \
         for 203.0.113.5) receiver=mx.example.org; client-ip=203.0.113.5; \
         envelope-from=\"e@soft.example.com\"; helo=h.example.net;"
    );
    let neutral = spf.check_mail_from(client, "h.example.net", "e@neutral.example.com");
    assert_eq!(neutral.result, SpfResult::Neutral);
    assert_eq!(
        neutral.header,
        "Received-SPF: neutral (mx.example.org: domain of e@neutral.example.com reports neutral \
         for 203.0.113.5) receiver=mx.example.org; client-ip=203.0.113.5; \
         envelope-from=\"e@neutral.example.com\"; helo=h.example.net;"
    );
    let empty = spf.check_mail_from(client, "h.example.net", "e@empty.example.com");
    assert_eq!(empty.result, SpfResult::Neutral);
    for sender in ["e@nospf.example.com", "e@nxdomain.example.com"] {
        let none = spf.check_mail_from(client, "h.example.net", sender);
        assert_eq!(none.result, SpfResult::None, "{sender}");
    }
    let none = spf.check_mail_from(client, "h.example.net", "e@nospf.example.com");
    assert_eq!(
        none.header,
        "Received-SPF: none (mx.example.org: no SPF records found for e@nospf.example.com) \
         receiver=mx.example.org; client-ip=203.0.113.5; \
         envelope-from=\"e@nospf.example.com\"; helo=h.example.net;"
    );
    // A malformed domain is "none" without asking the DNS.
    let before = server.queries();
    let literal = spf.check_mail_from(client, "h.example.net", "e@[192.0.2.1]");
    assert_eq!(literal.result, SpfResult::None);
    assert_eq!(server.queries(), before);
}

#[test]
fn permerror_for_bad_records() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let client = ip("192.0.2.1");
    for (sender, reason) in [
        (
            "a@two.example.com",
            "two.example.com has more than one SPF record",
        ),
        (
            "a@typo.example.com",
            "SPF record of typo.example.com: unknown mechanism \"inclde:_spf.example.com\"",
        ),
        (
            "a@cidr.example.com",
            "SPF record of cidr.example.com: invalid CIDR length in \"ip4:192.0.2.0/33\"",
        ),
        (
            "a@badinc.example.com",
            "SPF record of typo.example.com: unknown mechanism \"inclde:_spf.example.com\"",
        ),
    ] {
        let outcome = spf.check_mail_from(client, "h.example.net", sender);
        assert_eq!(outcome.result, SpfResult::PermError, "{sender}");
        assert_eq!(outcome.reason.as_deref(), Some(reason), "{sender}");
    }
    let outcome = spf.check_mail_from(client, "h.example.net", "a@two.example.com");
    assert_eq!(
        outcome.header,
        "Received-SPF: permerror (mx.example.org: unable to verify SPF record for \
         a@two.example.com) receiver=mx.example.org; client-ip=192.0.2.1; \
         envelope-from=\"a@two.example.com\"; helo=h.example.net;"
    );
}

#[test]
fn ip6_ranges_never_pass_ipv4_clients() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    for client in ["192.0.2.1", "::ffff:192.0.2.1"] {
        let outcome = spf.check_mail_from(ip(client), "h.example.net", "a@six.example.com");
        assert_eq!(outcome.result, SpfResult::Fail, "{client}");
    }
    let v6 = spf.check_mail_from(ip("2001:db8::1"), "h.example.net", "a@six.example.com");
    assert_eq!(v6.result, SpfResult::Pass);
}

#[test]
fn helo_identity() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let pass = spf
        .check_helo(ip("192.0.2.25"), "mail.example.com")
        .unwrap();
    assert_eq!(
        (pass.identity, pass.result),
        (Identity::Helo, SpfResult::Pass)
    );
    assert_eq!(
        pass.header,
        "Received-SPF: pass (mx.example.org: domain of postmaster@mail.example.com designates \
         192.0.2.25 as permitted sender) receiver=mx.example.org; client-ip=192.0.2.25; \
         envelope-from=\"postmaster@mail.example.com\"; helo=mail.example.com;"
    );
    let fail = spf
        .check_helo(ip("203.0.113.9"), "bad-helo.example.net")
        .unwrap();
    assert_eq!(fail.result, SpfResult::Fail);
    assert_eq!(fail.domain, "bad-helo.example.net");
    assert_eq!(
        fail.header,
        "Received-SPF: fail (mx.example.org: domain of postmaster@bad-helo.example.net does not \
         designate 203.0.113.9 as permitted sender) receiver=mx.example.org; \
         client-ip=203.0.113.9; envelope-from=\"postmaster@bad-helo.example.net\"; \
         helo=bad-helo.example.net;"
    );
    let before = server.queries();
    for helo in [
        "",
        "[192.0.2.1]",
        "localhost",
        "192.0.2.1",
        "bad name.example.com",
    ] {
        assert_eq!(spf.check_helo(ip("192.0.2.1"), helo), None, "{helo:?}");
    }
    assert_eq!(server.queries(), before);
}

#[test]
fn authentication_results_header() {
    let server = DnsServer::start(zone());
    let spf = checker(
        &server,
        HeaderKind::AuthenticationResults,
        Duration::from_secs(5),
    );
    let mail_from = spf.check_mail_from(ip("192.0.2.10"), "mail.example.com", "alice@example.com");
    assert_eq!(
        mail_from.header,
        "Authentication-Results: mx.example.org; spf=pass (mx.example.org: domain of \
         alice@example.com designates 192.0.2.10 as permitted sender) \
         smtp.mailfrom=alice@example.com"
    );
    let helo = spf
        .check_helo(ip("203.0.113.9"), "bad-helo.example.net")
        .unwrap();
    assert_eq!(
        helo.header,
        "Authentication-Results: mx.example.org; spf=fail (mx.example.org: domain of \
         postmaster@bad-helo.example.net does not designate 203.0.113.9 as permitted sender) \
         smtp.helo=bad-helo.example.net"
    );
    let none = checker(&server, HeaderKind::None, Duration::from_secs(5));
    let outcome = none.check_mail_from(ip("192.0.2.10"), "mail.example.com", "alice@example.com");
    assert_eq!(
        (outcome.result, outcome.header.as_str()),
        (SpfResult::Pass, "")
    );
}

#[test]
fn temperror_from_servfail() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    let outcome = spf.check_mail_from(ip("192.0.2.200"), "h.example.net", "a@broken.example.com");
    assert_eq!(outcome.result, SpfResult::TempError);
    assert_eq!(
        outcome.header,
        "Received-SPF: temperror (mx.example.org: temporary dns error validating \
         a@broken.example.com) receiver=mx.example.org; client-ip=192.0.2.200; \
         envelope-from=\"a@broken.example.com\"; helo=h.example.net;"
    );
}

#[test]
fn temperror_from_a_dead_nameserver_within_the_deadline() {
    let server = DnsServer::dead();
    let timeout = Duration::from_millis(1500);
    let spf = checker(&server, HeaderKind::ReceivedSpf, timeout);
    let started = Instant::now();
    let outcome = spf.check_mail_from(ip("192.0.2.1"), "h.example.net", "a@example.com");
    let elapsed = started.elapsed();
    assert_eq!(outcome.result, SpfResult::TempError);
    assert!(
        elapsed <= timeout + Duration::from_millis(250),
        "took {elapsed:?}"
    );
    assert!(server.queries() >= 1);
    let helo = spf.check_helo(ip("192.0.2.1"), "mail.example.com").unwrap();
    assert_eq!(helo.result, SpfResult::TempError);
}

#[test]
fn temperror_when_an_include_never_answers() {
    let server = DnsServer::start(zone());
    let timeout = Duration::from_millis(1000);
    let spf = checker(&server, HeaderKind::ReceivedSpf, timeout);
    let started = Instant::now();
    let outcome = spf.check_mail_from(ip("192.0.2.1"), "h.example.net", "a@slow.example.com");
    let elapsed = started.elapsed();
    assert_eq!(outcome.result, SpfResult::TempError);
    assert!(
        elapsed <= timeout + Duration::from_millis(250),
        "took {elapsed:?}"
    );
}

/// An SPF record of about 1.5 kB that allows 198.51.100.1 to 198.51.100.90.
fn big_record() -> String {
    let mechanisms: String = (1..=90).map(|n| format!(" ip4:198.51.100.{n}")).collect();
    let record = format!("v=spf1{mechanisms} -all");
    assert!(record.len() > 1300, "{}", record.len());
    record
}

/// An SPF record too big for one datagram (about 1.5 kB, over the 1232 bytes of EDNS that
/// greyspf offers): the UDP answer comes back truncated and the resolver fetches it over
/// TCP.
#[test]
fn a_record_too_big_for_udp_is_fetched_over_tcp() {
    let record = big_record();
    let strings: Vec<&[u8]> = record.as_bytes().chunks(255).collect();
    let server = DnsServer::start(Zone::new().txt_strings("big.example.com", &strings));
    let spf = received_spf(&server);
    let outcome = spf.check_mail_from(ip("198.51.100.90"), "h.example.net", "a@big.example.com");
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(server.tcp_queries(), 1);
    // UDP from greyspf (truncated), UDP from the resolver (truncated), then TCP.
    assert_eq!(
        server.described_queries(),
        [
            "TXT big.example.com",
            "TXT big.example.com",
            "TXT big.example.com"
        ]
    );
    let outside = spf.check_mail_from(ip("198.51.100.91"), "h.example.net", "a@big.example.com");
    assert_eq!(outside.result, SpfResult::Fail);
}

/// A server that ignores the size greyspf offers sends the big record in one datagram
/// anyway: it is read whole, with one query and no TCP.
#[test]
fn an_answer_bigger_than_the_size_offered_is_read_whole() {
    let record = big_record();
    let strings: Vec<&[u8]> = record.as_bytes().chunks(255).collect();
    let zone = Zone::new()
        .txt_strings("big.example.com", &strings)
        .ignore_udp_size();
    let server = DnsServer::start(zone);
    let spf = received_spf(&server);
    let outcome = spf.check_mail_from(ip("198.51.100.90"), "h.example.net", "a@big.example.com");
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(server.described_queries(), ["TXT big.example.com"]);
    assert_eq!(server.tcp_queries(), 0);
}

/// Every query goes out from a socket of its own, so from a port the system drew at
/// random for it (RFC 5452 §9.2): of 70 queries, no more than a chance few share a port.
#[test]
fn every_query_goes_out_from_a_fresh_port() {
    let server = DnsServer::start(zone());
    let spf = received_spf(&server);
    for n in 0..70 {
        // A different HELO name each time, so that no cached answer saves a query.
        let helo = format!("h{n}.example.net");
        let outcome = spf.check_helo(ip("192.0.2.1"), &helo).unwrap();
        assert_eq!(outcome.result, SpfResult::None);
    }
    let ports: Vec<u16> = server.query_log().iter().map(|q| q.port).collect();
    assert_eq!(ports.len(), 70);
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    // Two draws of some 28,000 ephemeral ports meet about once in 400 pairs: 70 queries
    // give about 0.1 coincidences; 6 or more would take odds of about 1 in 10^12.
    assert!(distinct.len() >= 65, "{ports:?}");
}

/// Why a test nameserver on 127/8 port 53 cannot show kept sockets here, if it cannot: not
/// root, or port 53 not privileged (greyspf then keeps nothing, rightly).
fn loopback_port_53_unusable() -> Option<&'static str> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("binding port 53 needs root");
    }
    let start = read("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    if start.trim().parse::<u16>().is_ok_and(|start| start <= 53) || start.is_empty() {
        return Some("port 53 is not privileged on this system");
    }
    None
}

/// A nameserver on loopback at a privileged port, where only it (or root) can send from
/// its address and port: a socket whose query was answered serves the next one, so that 70
/// queries one after the other go out from one port, each with an ID and a case of its own
/// (a name of mixed letters comes in at least two spellings). Needs root to bind port 53,
/// on a system where port 53 is privileged.
#[test]
fn queries_to_a_loopback_privileged_port_share_a_socket() {
    if let Some(why) = loopback_port_53_unusable() {
        eprintln!("skipped: {why}");
        return;
    }
    // An address of 127/8 of its own: another nameserver on 127.0.0.1:53 does not collide.
    let at: std::net::SocketAddr = "127.83.53.1:53".parse().unwrap();
    let server = match DnsServer::start_at(at, zone()) {
        Ok(server) => server,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("skipped: {at} is taken (a nameserver on every address?)");
            return;
        }
        Err(e) => panic!("bind {at}: {e}"),
    };
    let spf = received_spf(&server);
    for n in 0..70 {
        let helo = format!("mixed-h{n}.example.net");
        let outcome = spf.check_helo(ip("192.0.2.1"), &helo).unwrap();
        assert_eq!(outcome.result, SpfResult::None);
    }
    let log = server.query_log();
    assert_eq!(log.len(), 70);
    let ports: std::collections::BTreeSet<u16> = log.iter().map(|q| q.port).collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let lower = log
        .iter()
        .filter(|q| q.raw_name == q.raw_name.to_ascii_lowercase());
    assert!(lower.count() < 70);
}

/// Names go out in a random case ("0x20", RFC 5452 §9.1): the same name, asked 8 times,
/// comes in at least two spellings, and not only in lower case.
#[test]
fn queries_are_sent_in_random_case() {
    let name = "mixed-case-letters.example.com";
    let server = DnsServer::start(Zone::new().txt(name, "v=spf1 -all"));
    let spf = received_spf(&server);
    for _ in 0..8 {
        let outcome = spf.check_mail_from(ip("192.0.2.1"), "h.example.net", &format!("a@{name}"));
        assert_eq!(outcome.result, SpfResult::Fail);
    }
    let spellings: Vec<String> = server.query_log().into_iter().map(|q| q.raw_name).collect();
    assert_eq!(spellings.len(), 8);
    assert!(
        spellings.iter().all(|s| s.eq_ignore_ascii_case(name)),
        "{spellings:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = spellings.iter().collect();
    assert!(distinct.len() >= 2, "{spellings:?}");
    assert!(spellings.iter().any(|s| s != name), "{spellings:?}");
}

/// An answer whose question does not repeat the case the name was sent in is not the
/// answer (a forger who guessed ID and port must also guess the case): it is dropped, the
/// query is sent again after 400 ms, and at the 1 s deadline the result is temperror.
/// Taken, the answer would give pass.
#[test]
fn an_answer_with_the_question_in_another_case_is_not_taken() {
    let name = "lower-case-echo.example.com";
    let zone = Zone::new().txt(name, "v=spf1 +all").lowercase_question();
    let server = DnsServer::start(zone);
    let timeout = Duration::from_millis(1000);
    let spf = checker(&server, HeaderKind::ReceivedSpf, timeout);
    let started = Instant::now();
    let outcome = spf.check_mail_from(ip("192.0.2.1"), "h.example.net", &format!("a@{name}"));
    let elapsed = started.elapsed();
    assert_eq!(outcome.result, SpfResult::TempError);
    assert!(
        elapsed >= timeout - Duration::from_millis(10)
            && elapsed <= timeout + Duration::from_millis(250),
        "took {elapsed:?}"
    );
    // Sent at 0 and 400 ms; the next would be due at 1200 ms, after the deadline.
    assert_eq!(
        server.described_queries(),
        [format!("TXT {name}"), format!("TXT {name}")]
    );
}

/// A path that loses the first copy of every query costs one retransmission interval
/// (400 ms by default) per lookup, not a large share of the deadline (5 s here).
#[test]
fn a_lost_query_is_sent_again_after_the_retransmission_interval() {
    let server = DnsServer::start(zone().drop_first());
    let spf = received_spf(&server);
    let started = Instant::now();
    let outcome = spf.check_mail_from(ip("192.0.2.10"), "mail.example.com", "alice@example.com");
    let elapsed = started.elapsed();
    assert_eq!(outcome.result, SpfResult::Pass);
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(1),
        "took {elapsed:?}"
    );
    assert_eq!(
        server.described_queries(),
        ["TXT example.com", "TXT example.com"]
    );
    let log = server.query_log();
    assert_ne!(log[0].port, log[1].port);
    // A shorter interval is taken as configured: four lookups, each lost once.
    let server = DnsServer::start(zone().drop_first());
    let mut fast = settings(&server, HeaderKind::ReceivedSpf, Duration::from_secs(5));
    fast.dns_retransmit = Duration::from_millis(100);
    let spf = SpfChecker::new(fast).unwrap();
    let started = Instant::now();
    let outcome = spf.check_mail_from(ip("198.51.100.7"), "relay.example.com", "bob@example.com");
    let elapsed = started.elapsed();
    assert_eq!(outcome.result, SpfResult::Pass);
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(1),
        "took {elapsed:?}"
    );
    assert_eq!(
        server.described_queries(),
        [
            "TXT example.com",
            "TXT example.com",
            "TXT _spf.example.com",
            "TXT _spf.example.com",
            "TXT _spf2.example.com",
            "TXT _spf2.example.com",
            "A relay.example.com",
            "A relay.example.com",
        ]
    );
}

/// A server (or forger) that slips records of another owner into an answer: they are not
/// the answer to the question and change nothing. Used, they would give pass.
#[test]
fn records_of_another_owner_are_not_used() {
    let zone = Zone::new()
        .txt("own.example.com", "v=spf1 -all")
        .foreign_txt("own.example.com", "attacker.example.net", "v=spf1 +all")
        .foreign_txt(
            "norecord.example.com",
            "attacker.example.net",
            "v=spf1 +all",
        )
        .txt("addr.example.com", "v=spf1 a:host.example.com -all")
        .a("host.example.com", "192.0.2.1")
        .foreign(
            "host.example.com",
            "attacker.example.net",
            support::dns::Rr::A("203.0.113.5".parse().unwrap()),
        );
    let server = DnsServer::start(zone);
    let spf = received_spf(&server);
    let client = ip("203.0.113.5");
    let own = spf.check_mail_from(client, "h.example.net", "a@own.example.com");
    assert_eq!((own.result, own.reason), (SpfResult::Fail, None));
    let none = spf.check_mail_from(client, "h.example.net", "a@norecord.example.com");
    assert_eq!(none.result, SpfResult::None);
    let addr = spf.check_mail_from(client, "h.example.net", "a@addr.example.com");
    assert_eq!(addr.result, SpfResult::Fail);
    let host = spf.check_mail_from(ip("192.0.2.1"), "h.example.net", "a@addr.example.com");
    assert_eq!(host.result, SpfResult::Pass);
    assert_eq!(
        server.described_queries(),
        [
            "TXT own.example.com",
            "TXT norecord.example.com",
            "TXT addr.example.com",
            "A host.example.com",
            "TXT addr.example.com",
            "A host.example.com",
        ]
    );
}

/// An alias is followed along its CNAME chain, and only the records of the name at its end
/// count: a TXT record the server puts in the answer as owned by a name in the middle of
/// the chain (which, having a CNAME, can own nothing else) is ignored.
#[test]
fn a_cname_chain_is_followed_to_the_final_names_records_only() {
    let zone = Zone::new()
        .cname("alias.example.com", "mid.example.com")
        .cname("mid.example.com", "real.example.com")
        .txt(
            "real.example.com",
            "v=spf1 ip4:192.0.2.0/24 a:host.example.com -all",
        )
        .foreign_txt("real.example.com", "mid.example.com", "v=spf1 +all")
        .cname("host.example.com", "box.example.com")
        .a("box.example.com", "198.51.100.7")
        .foreign(
            "box.example.com",
            "host.example.com",
            support::dns::Rr::A("203.0.113.5".parse().unwrap()),
        );
    let server = DnsServer::start(zone);
    let spf = received_spf(&server);
    let pass = spf.check_mail_from(ip("192.0.2.10"), "h.example.net", "a@alias.example.com");
    assert_eq!((pass.result, pass.reason), (SpfResult::Pass, None));
    assert_eq!(server.described_queries(), ["TXT alias.example.com"]);
    let through_a = spf.check_mail_from(ip("198.51.100.7"), "h.example.net", "a@alias.example.com");
    assert_eq!(through_a.result, SpfResult::Pass);
    let outside = spf.check_mail_from(ip("203.0.113.5"), "h.example.net", "a@alias.example.com");
    assert_eq!((outside.result, outside.reason), (SpfResult::Fail, None));
}

/// Through the binary: `dns_retransmit` sets the interval after which a lost query is sent
/// again (the default deadline, 10 s, is far away). Both identities, checked at once, lose
/// their first query and send it again after the one interval: the reply comes after
/// 200 ms, not 400, and after exactly four queries.
#[test]
fn the_binary_sends_a_lost_query_again_after_dns_retransmit() {
    let dns = DnsServer::start(zone().drop_first());
    let t = common::TestDir::new("dnsloss");
    let server = format!("dns_server={}", dns.addr());
    let mut session = common::Session::start(&t.args(&[
        "spf_enable=yes",
        &server,
        "greylist_enable=no",
        "dns_retransmit=200ms",
    ]));
    let request = common::request("192.0.2.10", "alice@example.com", "r@example.org", "m1")
        .replace("helo_name=client.example", "helo_name=h.example.net");
    let started = Instant::now();
    let reply = session.ask(&request);
    let elapsed = started.elapsed();
    assert_eq!(
        reply,
        "PREPEND Received-SPF: pass (mx.test: domain of alice@example.com designates \
         192.0.2.10 as permitted sender) receiver=mx.test; client-ip=192.0.2.10; \
         envelope-from=\"alice@example.com\"; helo=h.example.net;"
    );
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(400),
        "took {elapsed:?}"
    );
    let asked = dns.sorted_queries(0);
    assert_eq!(
        asked,
        [
            "TXT example.com",
            "TXT example.com",
            "TXT h.example.net",
            "TXT h.example.net",
        ]
    );
    assert_eq!(session.finish().0, 0);
}

/// A zero interval would send copies without pause: the configuration is refused.
#[test]
fn a_zero_dns_retransmit_is_a_configuration_error() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "-c",
            "/dev/null",
            "-o",
            "dns_retransmit=0",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "greyspf: configuration error: -o dns_retransmit=0: dns_retransmit: must be above zero\n"
    );
}
