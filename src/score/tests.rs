//! The pure scoring: parsing of the list syntax, each check, totals and thresholds.

use super::*;

fn settings() -> ScoreSettings {
    ScoreSettings {
        dnsbl: parse_zones(
            "zen.example=127.0.0.2:4.5,127.0.0.10:2.5 bl.example=3.5, wl.example=-5",
        )
        .unwrap(),
        rhsbl: parse_zones("dbl.example=3.5").unwrap(),
        weights: Weights::for_tests(),
        dynamic_patterns: parse_patterns("(^|[.-])(dyn|dsl|pool|cable|dhcp)([0-9.-]|$)").unwrap(),
        greylist_threshold: 2.0,
        reject_threshold: 8.0,
        timeout: Duration::from_secs(5),
        hostname: "mx.example.net".into(),
    }
}

fn subject(helo: &str) -> Subject<'_> {
    Subject {
        ip: "203.0.113.5".parse().unwrap(),
        helo,
        sender_domain: Some("example.org"),
        server_address: Some("192.0.2.1".parse().unwrap()),
        spf: None,
        rdns: KnownRdns::Unknown,
    }
}

fn a(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn clean() -> Facts {
    Facts {
        dnsbl: vec![
            ("zen.example".into(), Listing::NotListed),
            ("bl.example".into(), Listing::NotListed),
            ("wl.example".into(), Listing::NotListed),
        ],
        rhsbl_sender: vec![("dbl.example".into(), Listing::NotListed)],
        rhsbl_helo: vec![("dbl.example".into(), Listing::NotListed)],
        ptr: Probe::Answer(vec![("mail.example.org".into(), true)]),
        helo_addresses: Probe::Answer(vec!["203.0.113.5".parse().unwrap()]),
        sender_routable: Probe::Answer(true),
    }
}

#[test]
fn zone_lists_parse_with_codes_and_signs() {
    let zones = parse_zones("zen.example=127.0.0.4:3,127.0.0.10:1.5 List.Example.=-5").unwrap();
    assert_eq!(
        zones,
        vec![
            ListZone {
                zone: "zen.example".into(),
                weight: 0.0,
                codes: vec![(a("127.0.0.4"), 3.0), (a("127.0.0.10"), 1.5)],
            },
            ListZone {
                zone: "list.example".into(),
                weight: -5.0,
                codes: vec![],
            },
        ]
    );
    assert_eq!(parse_zones("").unwrap(), vec![]);
    for bad in [
        "zen.example",
        "zen.example=x",
        "127.0.0.4:3",
        "a.example=1 127.0.0.4:3",
        "zen=1",
        "zen.example=127.0.0.x:3",
        "zen.example=inf",
    ] {
        assert!(parse_zones(bad).is_err(), "{bad:?}");
    }
    assert!(parse_patterns("(").is_err());
}

#[test]
fn error_codes_are_never_listings() {
    for code in [
        "127.255.255.254",
        "127.255.255.252",
        "127.0.0.255",
        "127.0.1.255",
        "10.0.0.2",
    ] {
        assert!(is_error_code(a(code)), "{code}");
    }
    for code in ["127.0.0.2", "127.0.0.10", "127.0.1.2"] {
        assert!(!is_error_code(a(code)), "{code}");
    }
    let s = settings();
    let mut facts = clean();
    facts.dnsbl[1].1 = Listing::Listed(vec![a("127.255.255.254")]);
    let scored = evaluate(&s, &subject("mail.example.org"), &facts);
    assert_eq!(scored.total, -1.5);
    let check = scored
        .checks
        .iter()
        .find(|c| c.name == "dnsbl:bl.example")
        .unwrap();
    assert!(!check.hit);
    assert_eq!(check.detail, "error answer 127.255.255.254, counted 0");
}

#[test]
fn a_clean_confirmed_client_with_spf_pass_is_not_greylisted() {
    let s = settings();
    let mut subj = subject("mail.example.org");
    subj.spf = Some(SpfResult::Pass);
    let scored = evaluate(&s, &subj, &clean());
    assert_eq!(scored.hit_list(), "helo_is_client(-1.5) spf_pass(-1.5)");
    assert_eq!(scored.total, -3.0);
    assert_eq!(scored.level, Level::Pass);
}

#[test]
fn dynamic_and_listed_is_greylisted_two_lists_and_no_ptr_rejected() {
    let s = settings();
    let mut facts = clean();
    facts.ptr = Probe::Answer(vec![("dsl-203-0-113-5.pool.example.net".into(), true)]);
    facts.dnsbl[0].1 = Listing::Listed(vec![a("127.0.0.2"), a("127.0.0.10")]);
    facts.helo_addresses = Probe::Answer(vec!["192.0.2.99".parse().unwrap()]);
    let scored = evaluate(&s, &subject("mail.example.org"), &facts);
    assert_eq!(scored.hit_list(), "dnsbl:zen.example(4.5) ptr_dynamic(2.5)");
    assert_eq!((scored.total, scored.level), (7.0, Level::Greylist));
    // A HELO that does not resolve as well: the bot-like client is rejected.
    facts.helo_addresses = Probe::Answer(vec![]);
    let scored = evaluate(&s, &subject("mail.example.org"), &facts);
    assert_eq!((scored.total, scored.level), (8.5, Level::Reject));
    facts.ptr = Probe::Answer(vec![]);
    facts.dnsbl[1].1 = Listing::Listed(vec![a("127.0.0.2")]);
    let scored = evaluate(&s, &subject("mail.example.org"), &facts);
    assert_eq!(
        scored.hit_list(),
        "dnsbl:zen.example(4.5) dnsbl:bl.example(3.5) no_ptr(2.5) helo_unresolvable(1.5)"
    );
    assert_eq!((scored.total, scored.level), (12.0, Level::Reject));
}

#[test]
fn an_allow_list_outweighs_a_bad_helo() {
    let s = settings();
    let mut facts = clean();
    facts.dnsbl[2].1 = Listing::Listed(vec![a("127.0.10.2")]);
    facts.helo_addresses = Probe::NotAsked;
    let scored = evaluate(&s, &subject("[203.0.113.5]"), &facts);
    assert_eq!(scored.hit_list(), "dnsbl:wl.example(-5) helo_literal(2.5)");
    assert_eq!(scored.level, Level::Pass);
}

#[test]
fn failures_count_zero_and_are_named() {
    let s = settings();
    let mut facts = clean();
    facts.dnsbl[0].1 = Listing::Failed("no answer within 5000 ms".into());
    facts.dnsbl[1].1 = Listing::Skipped;
    facts.ptr = Probe::Failed("SERVFAIL".into());
    let scored = evaluate(&s, &subject("mail.example.org"), &facts);
    assert_eq!(scored.hit_list(), "helo_is_client(-1.5)");
    assert_eq!(
        scored.failed_list(),
        "dnsbl:zen.example dnsbl:bl.example no_ptr ptr_unconfirmed ptr_dynamic"
    );
}

#[test]
fn helo_shapes() {
    let s = settings();
    let facts = Facts {
        helo_addresses: Probe::NotAsked,
        ..clean()
    };
    let hits = |helo: &str| evaluate(&s, &subject(helo), &facts).hit_list();
    assert_eq!(hits("203.0.113.5"), "helo_literal(2.5)");
    assert_eq!(hits("[IPv6:2001:db8::1]"), "helo_literal(2.5)");
    assert_eq!(hits("localhost"), "helo_not_fqdn(1.5)");
    assert_eq!(hits(""), "helo_not_fqdn(1.5)");
    assert_eq!(hits("MX.Example.NET"), "helo_ours(4)");
    assert_eq!(hits("[192.0.2.1]"), "helo_literal(2.5) helo_ours(4)");
}

#[test]
fn sender_domain_and_spf() {
    let s = settings();
    let mut facts = clean();
    facts.sender_routable = Probe::Answer(false);
    let mut subj = subject("mail.example.org");
    subj.spf = Some(SpfResult::SoftFail);
    let scored = evaluate(&s, &subj, &facts);
    assert_eq!(
        scored.hit_list(),
        "helo_is_client(-1.5) sender_unroutable(2.5) spf_softfail(1.5)"
    );
    assert_eq!((scored.total, scored.level), (2.5, Level::Greylist));
}

#[test]
fn dynamic_names() {
    let p = parse_patterns("(^|[.-])(dyn|dsl|pool|cable|dhcp)([0-9.-]|$)").unwrap();
    let ip: IpAddr = "203.0.113.5".parse().unwrap();
    for name in [
        "dsl-1.example.net",
        "host.pool.example.net",
        "203-0-113-5.example.net",
        "5.113.0.203.in.example.net",
        "c-0-113-5.example.net",
        "cb007105.example.net",
    ] {
        assert!(looks_dynamic(name, ip, &p), "{name}");
    }
    for name in [
        "mail.example.net",
        "mx5.example.net",
        "dslr.example.net",
        "113-5.example.net",
    ] {
        assert!(!looks_dynamic(name, ip, &p), "{name}");
    }
}

#[test]
fn zero_weights_and_list_names() {
    let mut s = settings();
    s.weights.no_ptr = 0.0;
    let mut facts = clean();
    facts.ptr = Probe::Answer(vec![]);
    assert_eq!(
        evaluate(&s, &subject("mail.example.org"), &facts).hit_list(),
        "helo_is_client(-1.5)"
    );
    assert_eq!(
        list_name("203.0.113.5".parse().unwrap(), "zen.example"),
        "5.113.0.203.zen.example"
    );
    assert!(list_name("2001:db8::1".parse().unwrap(), "z.example").starts_with("1.0.0.0.0.0"));
    assert_eq!(Weight(4.5).to_string(), "4.5");
    assert_eq!(Weight(-1.5).to_string(), "-1.5");
    assert_eq!(Weight(3.0).to_string(), "3");
    assert_eq!(Weight(0.1 + 0.2).to_string(), "0.3");
}

#[test]
fn client_only_counts_what_the_address_alone_shows() {
    let s = settings().client_only();
    assert!(s.rhsbl.is_empty());
    assert_eq!((s.weights.no_ptr, s.weights.ptr_dynamic), (2.5, 2.5));
    // An empty HELO, no sender, no SPF: nothing counts but the lists and the PTR.
    let bare = Subject {
        ip: "203.0.113.5".parse().unwrap(),
        helo: "",
        sender_domain: None,
        server_address: None,
        spf: Some(SpfResult::Fail),
        rdns: KnownRdns::Unknown,
    };
    let mut facts = Facts::none();
    facts.dnsbl = vec![
        ("bl.example".into(), Listing::Listed(vec![a("127.0.0.2")])),
        ("wl.example".into(), Listing::NotListed),
    ];
    facts.ptr = Probe::Answer(vec![]);
    let scored = evaluate(&s, &bare, &facts);
    assert_eq!(scored.hit_list(), "dnsbl:bl.example(3.5) no_ptr(2.5)");
    assert_eq!(scored.total, 6.0);
    assert!(!scored.allow_listed());
    assert_eq!(
        scored.log_fields(),
        [
            ("score", "6".to_string()),
            (
                "score_hits",
                "dnsbl:bl.example(3.5) no_ptr(2.5)".to_string()
            )
        ]
    );
    facts.dnsbl[1].1 = Listing::Listed(vec![a("127.0.10.1")]);
    facts.ptr = Probe::Failed("timed out".into());
    let scored = evaluate(&s, &bare, &facts);
    assert!(scored.allow_listed());
    assert_eq!(
        scored.log_fields(),
        [
            ("score", "-1.5".to_string()),
            (
                "score_hits",
                "dnsbl:bl.example(3.5) dnsbl:wl.example(-5)".to_string()
            ),
            (
                "score_failed",
                "no_ptr ptr_unconfirmed ptr_dynamic".to_string()
            )
        ]
    );
}

#[test]
fn postfix_names_give_the_reverse_dns_facts() {
    let ip: IpAddr = "203.0.113.5".parse().unwrap();
    assert_eq!(
        KnownRdns::from_postfix("unknown", "unknown"),
        KnownRdns::Unknown
    );
    assert_eq!(KnownRdns::from_postfix("", ""), KnownRdns::Unknown);
    let confirmed = KnownRdns::from_postfix("Mail.Example.COM.", "mail.example.com");
    assert_eq!(confirmed, KnownRdns::Confirmed("Mail.Example.COM."));
    assert_eq!(
        confirmed.ptr(),
        Some(Probe::Answer(vec![("mail.example.com".to_string(), true)]))
    );
    assert_eq!(
        confirmed.helo_addresses("mail.example.com", ip),
        Some(Probe::Answer(vec![ip]))
    );
    assert_eq!(confirmed.helo_addresses("other.example.com", ip), None);
    let unconfirmed = KnownRdns::from_postfix("unknown", "dsl-5.pool.isp.test");
    assert_eq!(
        unconfirmed.ptr(),
        Some(Probe::Answer(vec![(
            "dsl-5.pool.isp.test".to_string(),
            false
        )]))
    );
    // A name that does not lead back says nothing of the HELO's addresses.
    assert_eq!(unconfirmed.helo_addresses("dsl-5.pool.isp.test", ip), None);
    assert_eq!(KnownRdns::Unknown.ptr(), None);
}
