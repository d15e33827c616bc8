//! The postscreen callout with reputation scoring, through `greyspf daemon` and the
//! loopback DNS server: `drop` and `enforce` by the thresholds, `pass` for an allow-listed
//! client, `ignore` for a clean one, the answer of a dead DNS server within the scoring
//! deadline, no repeated lookups on a persistent connection, and scoring off unchanged.

mod common;
mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, TestDir};
use support::dns::{DnsServer, Zone};

/// The user the daemon serves as when the tests run as root.
const NOBODY: u32 = 65534;

const LISTS: &str = "score_dnsbl=bl1.test=4.5 bl2.test=3.5 wl.test=-5";

fn zone() -> Zone {
    Zone::new()
        // Forward-confirmed, on no list.
        .ptr("192.0.2.10", "mail.example.com")
        .a("mail.example.com", "192.0.2.10")
        // No PTR, on both block lists: 4.5 + 3.5 + 2.5.
        .a("7.100.51.198.bl1.test", "127.0.0.2")
        .a("7.100.51.198.bl2.test", "127.0.0.3")
        // Forward-confirmed, on both block lists: 4.5 + 3.5.
        .ptr("198.51.100.8", "mx.listed.test")
        .a("mx.listed.test", "198.51.100.8")
        .a("8.100.51.198.bl1.test", "127.0.0.2")
        .a("8.100.51.198.bl2.test", "127.0.0.4")
        // Forward-confirmed, on the allow list: -5.
        .ptr("192.0.2.77", "relay.partner.test")
        .a("relay.partner.test", "192.0.2.77")
        .a("77.2.0.192.wl.test", "127.0.10.1")
}

/// A daemon with a postscreen listener on a free loopback port.
struct Daemon {
    child: Child,
    postscreen: SocketAddr,
}

impl Daemon {
    fn start(t: &TestDir, dns: &DnsServer, extra: &[&str]) -> Daemon {
        std::fs::create_dir_all(t.state()).unwrap();
        std::fs::set_permissions(t.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(t.path.join("log"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(t.state(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let server = format!("dns_server={}", dns.addr());
        let mut all = vec![
            "listen=",
            "postscreen_listen=inet:127.0.0.1:0",
            "listen_unix_group=",
            "daemon_user=nobody",
            &server,
            LISTS,
            "score_rhsbl=",
        ];
        all.extend_from_slice(extra);
        let mut args = t.args(&all);
        args.push("daemon".into());
        let child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let tag = format!("greyspf[{}]: daemon listening on inet:", child.id());
        let lines = t.wait_log(&tag, 1);
        assert!(!lines.is_empty(), "the daemon did not start");
        let rest = lines[0].split(&tag).nth(1).unwrap();
        assert!(rest.contains("(postscreen callout)"), "{rest}");
        let postscreen = rest.split(' ').next().unwrap().parse().unwrap();
        Daemon { child, postscreen }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One postscreen connection, kept open as postscreen keeps it.
struct Postscreen {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Postscreen {
    fn connect(d: &Daemon) -> Postscreen {
        let s = TcpStream::connect(d.postscreen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Postscreen {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends a block and reads the reply's lines up to the empty line.
    fn send(&mut self, block: &str) -> Vec<String> {
        self.writer.write_all(block.as_bytes()).unwrap();
        common::read_block(&mut self.reader)
    }

    fn ask(&mut self, client: &str) -> Vec<String> {
        self.send(&format!(
            "client_address={client}\nserver_address=192.0.2.1\nclient_port=40000\n\
             server_port=25\n\n"
        ))
    }
}

/// The postscreen log lines of a client, from `postscreen: ` on.
fn decisions(t: &TestDir, client: &str, n: usize) -> Vec<String> {
    let lines = t.wait_log(&format!("client_address={client}"), n);
    assert_eq!(lines.len(), n, "{lines:?}");
    lines
        .iter()
        .map(|l| l[l.find("postscreen: ").unwrap()..].to_string())
        .collect()
}

fn scoring<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["score_enable=yes"];
    all.extend_from_slice(extra);
    all
}

#[test]
fn a_client_on_two_lists_is_dropped_or_enforced_by_the_thresholds() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("pss-bad");
    let d = Daemon::start(&t, &dns, &scoring(&["postscreen_drop_threshold=10"]));
    let mut ps = Postscreen::connect(&d);
    assert_eq!(ps.ask("198.51.100.7"), ["action=drop"]);
    assert_eq!(ps.ask("198.51.100.8"), ["action=enforce"]);
    assert_eq!(
        decisions(&t, "198.51.100.7", 1),
        [
            "postscreen: action=drop, ttl=0, score=10.5, score_hits=dnsbl:bl1.test(4.5) \
          dnsbl:bl2.test(3.5) no_ptr(2.5), client_address=198.51.100.7"
        ]
    );
    assert_eq!(
        decisions(&t, "198.51.100.8", 1),
        [
            "postscreen: action=enforce, ttl=0, score=8, score_hits=dnsbl:bl1.test(4.5) \
          dnsbl:bl2.test(3.5), client_address=198.51.100.8"
        ]
    );
}

#[test]
fn by_default_a_client_on_two_lists_is_enforced_never_dropped() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("pss-def");
    let d = Daemon::start(&t, &dns, &scoring(&[]));
    let mut ps = Postscreen::connect(&d);
    assert_eq!(ps.ask("198.51.100.7"), ["action=enforce"]);
    assert_eq!(ps.ask("198.51.100.8"), ["action=enforce"]);
}

#[test]
fn an_allow_listed_client_passes_and_a_whitelisted_one_is_not_looked_up() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("pss-wl");
    let wl = t.path.join("whitelist_clients");
    std::fs::write(&wl, "203.0.113.0/24\n").unwrap();
    let wl_opt = format!("whitelist_clients={}", wl.display());
    let d = Daemon::start(&t, &dns, &scoring(&[&wl_opt, "postscreen_pass_ttl=10m"]));
    let mut ps = Postscreen::connect(&d);
    assert_eq!(ps.ask("192.0.2.77"), ["action=pass", "ttl=600"]);
    assert_eq!(
        decisions(&t, "192.0.2.77", 1),
        [
            "postscreen: action=pass, ttl=600, score=-5, score_hits=dnsbl:wl.test(-5), \
          client_address=192.0.2.77"
        ]
    );
    let asked = dns.queries();
    assert_eq!(ps.ask("203.0.113.4"), ["action=pass", "ttl=86400"]);
    assert_eq!(dns.queries(), asked, "{:?}", dns.described_queries());
}

#[test]
fn an_unlisted_confirmed_client_is_ignored_and_so_is_a_malformed_request() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("pss-ok");
    let d = Daemon::start(&t, &dns, &scoring(&[]));
    let mut ps = Postscreen::connect(&d);
    assert_eq!(ps.ask("192.0.2.10"), ["action=ignore"]);
    let asked = dns.sorted_queries(0);
    // The lists and the PTR with its confirmation; no HELO, sender or SPF lookups.
    assert_eq!(
        asked,
        [
            "A 10.2.0.192.bl1.test",
            "A 10.2.0.192.bl2.test",
            "A 10.2.0.192.wl.test",
            "A mail.example.com",
            "AAAA mail.example.com",
            "PTR 10.2.0.192.in-addr.arpa",
        ]
    );
    assert_eq!(
        decisions(&t, "192.0.2.10", 1),
        ["postscreen: action=ignore, ttl=0, score=0, client_address=192.0.2.10"]
    );
    assert_eq!(ps.send("client_address=nowhere\n\n"), ["action=ignore"]);
    assert_eq!(ps.ask("198.51.100.7"), ["action=enforce"]);
}

#[test]
fn a_dead_dns_server_still_gets_an_answer_within_the_scoring_deadline() {
    let dns = DnsServer::dead();
    let t = TestDir::new("pss-dead");
    let d = Daemon::start(&t, &dns, &scoring(&["score_timeout=1s"]));
    let mut ps = Postscreen::connect(&d);
    let started = Instant::now();
    assert_eq!(ps.ask("198.51.100.7"), ["action=ignore"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(
        decisions(&t, "198.51.100.7", 1),
        [
            "postscreen: action=ignore, ttl=0, score=0, score_failed=dnsbl:bl1.test \
          dnsbl:bl2.test dnsbl:wl.test no_ptr ptr_unconfirmed ptr_dynamic, \
          client_address=198.51.100.7"
        ]
    );
    // The connection goes on.
    assert_eq!(ps.send("garbage\n\n"), ["action=ignore"]);
}

#[test]
fn a_repeated_request_on_one_connection_asks_the_dns_nothing_new() {
    let dns = DnsServer::start(zone().ttl(60).negative_ttl(60));
    let t = TestDir::new("pss-cache");
    let d = Daemon::start(&t, &dns, &scoring(&[]));
    let mut ps = Postscreen::connect(&d);
    assert_eq!(ps.ask("198.51.100.7"), ["action=enforce"]);
    assert_eq!(ps.ask("192.0.2.10"), ["action=ignore"]);
    let asked = dns.queries();
    assert_eq!(asked, 4 + 6, "{:?}", dns.described_queries());
    assert_eq!(ps.ask("198.51.100.7"), ["action=enforce"]);
    assert_eq!(ps.ask("192.0.2.10"), ["action=ignore"]);
    assert_eq!(dns.queries(), asked, "{:?}", dns.described_queries());
    let lines = decisions(&t, "198.51.100.7", 2);
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn with_scoring_off_the_thresholds_change_nothing_and_nothing_is_looked_up() {
    let dns = DnsServer::start(zone());
    let t = TestDir::new("pss-off");
    let d = Daemon::start(
        &t,
        &dns,
        &[
            "score_enable=no",
            "postscreen_enforce_threshold=1",
            "postscreen_drop_threshold=2",
        ],
    );
    let mut ps = Postscreen::connect(&d);
    assert_eq!(ps.ask("198.51.100.7"), ["action=ignore"]);
    assert_eq!(ps.ask("192.0.2.77"), ["action=ignore"]);
    assert_eq!(dns.queries(), 0);
    assert_eq!(
        decisions(&t, "198.51.100.7", 1),
        ["postscreen: action=ignore, ttl=0, client_address=198.51.100.7"]
    );
}
