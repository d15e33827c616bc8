//! Tests through the real binary: Postfix request streams, greylisting with real short
//! delays, whitelists, concurrency on one keeper, a killed keeper, a corrupted store.

mod common;

use std::time::Duration;

use common::*;

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn postfix_fixtures_get_one_reply_per_block() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/postfix-3.7.11");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6);
    for trusted in ["127.0.0.0/8, ::1/128", ""] {
        let t = TestDir::new("fixtures");
        for f in &files {
            let input = std::fs::read(f).unwrap();
            let blocks = String::from_utf8_lossy(&input).matches("\n\n").count();
            let (code, out, err) =
                run_stream(&t.args(&[&format!("trusted_networks={trusted}")]), &input);
            assert_eq!(code, 0, "{}", f.display());
            assert_eq!(err, "", "stderr for {}", f.display());
            let acts = actions(&out);
            assert_eq!(acts.len(), blocks, "{}", f.display());
            for a in &acts {
                // RCPT requests from untrusted clients are greylisted, all else passes.
                assert!(a == "DUNNO" || a == GREYLISTED, "{a:?} in {}", f.display());
            }
            let greylisted = acts.iter().filter(|a| *a == GREYLISTED).count();
            if trusted.is_empty() {
                let rcpt = String::from_utf8_lossy(&input)
                    .matches("protocol_state=RCPT\n")
                    .count();
                assert!(greylisted > 0 && greylisted <= rcpt, "{}", f.display());
            } else if f.ends_with("actions.txt") || f.ends_with("ipv6_loopback.txt") {
                // Every client in these captures is loopback: trusted.
                assert_eq!(greylisted, 0, "{}", f.display());
            }
        }
    }
}

#[test]
fn greylist_cycle_with_header_once_per_message_and_subnet_sharing() {
    let t = TestDir::new("cycle");
    let mut s = Session::start(&t.args(&[
        "greylist_delay=2s",
        "greylist_text=Come back in %s seconds to %r",
        "greylist_auto_whitelist_clients=0",
    ]));
    let a1 = request("192.0.2.10", "alice@example.org", "bob@example.com", "m1");
    let a2 = request("192.0.2.10", "alice@example.org", "carol@example.com", "m1");
    assert_eq!(
        s.ask(&a1),
        "DEFER_IF_PERMIT Come back in 2 seconds to example.com"
    );
    assert_eq!(
        s.ask(&a2),
        "DEFER_IF_PERMIT Come back in 2 seconds to example.com"
    );
    sleep(500);
    // Early retry: still deferred, and the clock is not reset.
    let early = s.ask(&request(
        "192.0.2.10",
        "alice@example.org",
        "bob@example.com",
        "m2",
    ));
    assert!(
        early == "DEFER_IF_PERMIT Come back in 2 seconds to example.com"
            || early == "DEFER_IF_PERMIT Come back in 1 seconds to example.com",
        "{early}"
    );
    sleep(1600);
    // The retry comes from another address of the same /24: the same triplet.
    let h = s.ask(&request(
        "192.0.2.99",
        "alice@example.org",
        "bob@example.com",
        "m3",
    ));
    assert_header(&h, 2);
    assert_eq!(
        s.ask(&request(
            "192.0.2.99",
            "alice@example.org",
            "carol@example.com",
            "m3"
        )),
        "DUNNO"
    );
    // Known triplet, next message: no header any more.
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "alice@example.org",
            "bob@example.com",
            "m4"
        )),
        "DUNNO"
    );
    // Another /24 is another triplet.
    assert_eq!(
        s.ask(&request(
            "192.0.3.10",
            "alice@example.org",
            "bob@example.com",
            "m5"
        )),
        "DEFER_IF_PERMIT Come back in 2 seconds to example.com"
    );
    let (code, err) = s.finish();
    assert_eq!((code, err.as_str()), (0, ""));
    let logs = t.wait_log("action=pass, reason=delayed", 1);
    assert!(logs[0].contains("greyspf["), "{logs:?}");
    assert!(logs[0].ends_with("action=pass, reason=delayed, delay=2, client_name=unknown, client_address=192.0.2.99, sender=alice@example.org, recipient=bob@example.com"), "{logs:?}");
}

#[test]
fn ipv6_clients_share_a_slash_64() {
    let t = TestDir::new("v6");
    let mut s = Session::start(&t.args(&["greylist_delay=1s"]));
    assert_eq!(
        s.ask(&request(
            "2001:db8:1:2::1",
            "a@example.org",
            "b@example.com",
            "x1"
        )),
        GREYLISTED
    );
    sleep(1100);
    assert_header(
        &s.ask(&request(
            "2001:db8:1:2:ffff::9",
            "a@example.org",
            "b@example.com",
            "x2",
        )),
        1,
    );
    assert_eq!(
        s.ask(&request(
            "2001:db8:1:3::1",
            "a@example.org",
            "b@example.com",
            "x3"
        )),
        GREYLISTED
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn sender_normalisation_shares_triplets() {
    let t = TestDir::new("norm");
    let mut s =
        Session::start(&t.args(&["greylist_delay=1s", "greylist_auto_whitelist_clients=0"]));
    // (first form, later form that must share the triplet)
    let table = [
        (
            "prvs=1234abcdef=user@example.org",
            "prvs=5678fedcba=user@example.org",
        ),
        ("prvs=user=1234abcdef@example.net", "user@example.net"),
        (
            "bounce-1234-56@lists.example.org",
            "bounce-9-777@lists.example.org",
        ),
        (
            "SRS0=HHH=TT=orig.example=alice@fwd.example",
            "alice@orig.example",
        ),
        (
            "SRS1=XX=fwd1.example==HHH=TT=orig2.example=bob@fwd2.example",
            "SRS0=YYY=ZZ=orig2.example=bob@other.example",
        ),
        ("dave+news@example.com", "Dave+other@EXAMPLE.com"),
    ];
    for (i, (first, _)) in table.iter().enumerate() {
        let rcpt = format!("r{i}+tag@example.com");
        assert_eq!(
            s.ask(&request("198.51.100.7", first, &rcpt, &format!("a{i}"))),
            GREYLISTED,
            "{first}"
        );
    }
    // Forms that must NOT share: another user, digits inside a word.
    assert_eq!(
        s.ask(&request(
            "198.51.100.7",
            "user2@example.org",
            "r0@example.com",
            "n1"
        )),
        GREYLISTED
    );
    sleep(1100);
    for (i, (_, later)) in table.iter().enumerate() {
        let rcpt = format!("r{i}@example.com");
        assert_header(
            &s.ask(&request("198.51.100.7", later, &rcpt, &format!("b{i}"))),
            1,
        );
    }
    assert_eq!(
        s.ask(&request(
            "198.51.100.7",
            "user3@example.org",
            "r0@example.com",
            "n2"
        )),
        GREYLISTED
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn retry_window_and_max_age_restart_the_clock() {
    let t = TestDir::new("window");
    let mut s = Session::start(&t.args(&[
        "greylist_delay=1s",
        "greylist_retry_window=2s",
        "greylist_max_age=3s",
        "greylist_auto_whitelist_clients=0",
    ]));
    let w = request("203.0.113.5", "w@example.org", "w@example.com", "w1");
    let m = request("203.0.113.5", "m@example.org", "m@example.com", "m1");
    assert_eq!(s.ask(&w), GREYLISTED);
    assert_eq!(s.ask(&m), GREYLISTED);
    sleep(1100);
    assert_header(&s.ask(&m), 1);
    sleep(2000);
    // w: first retry 3.1 s after first sight, beyond the 2 s window: new again.
    assert_eq!(s.ask(&w), GREYLISTED);
    sleep(1100);
    assert_header(
        &s.ask(&request(
            "203.0.113.5",
            "w@example.org",
            "w@example.com",
            "w2",
        )),
        1,
    );
    // m: passed, then unseen for more than max age (3 s): new again.
    sleep(2100);
    assert_eq!(
        s.ask(&request(
            "203.0.113.5",
            "m@example.org",
            "m@example.com",
            "m2"
        )),
        GREYLISTED
    );
    assert_eq!(s.finish().0, 0);
    assert_eq!(t.wait_log("reason=new", 4).len(), 4);
}

#[test]
fn auto_whitelist_after_counted_passes() {
    let t = TestDir::new("awl");
    let mut s = Session::start(&t.args(&[
        "greylist_delay=1s",
        "greylist_auto_whitelist_clients=2",
        "greylist_auto_whitelist_interval=1s",
    ]));
    let a = request("192.0.2.50", "x@example.org", "y@example.com", "a1");
    assert_eq!(s.ask(&a), GREYLISTED);
    sleep(1100);
    assert_header(&s.ask(&a), 1); // first counted pass
    assert_eq!(s.ask(&a), "DUNNO"); // same second: not counted again
    assert_eq!(
        s.ask(&request(
            "192.0.2.50",
            "new@example.org",
            "y@example.com",
            "a2"
        )),
        GREYLISTED
    );
    sleep(1100);
    assert_eq!(s.ask(&a), "DUNNO"); // second counted pass
    // Now the exact address skips greylisting; its /24 neighbour does not.
    assert_eq!(
        s.ask(&request(
            "192.0.2.50",
            "other@example.org",
            "z@example.com",
            "a3"
        )),
        "DUNNO"
    );
    assert_eq!(
        s.ask(&request(
            "192.0.2.51",
            "other@example.org",
            "z@example.com",
            "a4"
        )),
        GREYLISTED
    );
    assert_eq!(s.finish().0, 0);
    assert_eq!(t.wait_log("reason=client-awl", 1).len(), 1);
}

#[test]
fn whitelists_reload_without_restart() {
    let t = TestDir::new("wl");
    let clients = t.path.join("clients");
    let rcpts = t.path.join("rcpts");
    std::fs::write(&clients, "# none yet\n").unwrap();
    std::fs::write(&rcpts, "postmaster@\n").unwrap();
    let mut s = Session::start(&t.args(&[
        &format!("whitelist_clients={}", clients.display()),
        &format!("whitelist_recipients={}", rcpts.display()),
    ]));
    assert_eq!(
        s.ask(&request(
            "192.0.2.77",
            "a@example.org",
            "postmaster@example.com",
            "p"
        )),
        "DUNNO"
    );
    assert_eq!(
        s.ask(&request(
            "192.0.2.77",
            "a@example.org",
            "sales@example.com",
            "q"
        )),
        GREYLISTED
    );
    assert_eq!(
        s.ask(&request(
            "192.0.2.77",
            "b@example.org",
            "abuse@example.com",
            "q2"
        )),
        GREYLISTED
    );
    std::fs::write(&clients, "192.0.2.0/24\n").unwrap();
    std::fs::write(&rcpts, "postmaster@\nabuse@\n").unwrap();
    // An instance looks at its whitelist files at most once a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        s.ask(&request(
            "192.0.2.77",
            "c@example.org",
            "sales@example.com",
            "r"
        )),
        "DUNNO"
    );
    assert_eq!(
        s.ask(&request(
            "198.51.100.1",
            "c@example.org",
            "abuse@example.com",
            "s"
        )),
        "DUNNO"
    );
    assert_eq!(
        s.ask(&request(
            "198.51.100.1",
            "c@example.org",
            "sales@example.com",
            "t"
        )),
        GREYLISTED
    );
    assert_eq!(s.finish().0, 0);
    assert_eq!(t.wait_log("reason=client-whitelist", 1).len(), 1);
    assert_eq!(t.wait_log("reason=recipient-whitelist", 2).len(), 2);
}

#[test]
fn sixteen_instances_share_one_keeper() {
    let t = TestDir::new("conc");
    let args = t.args(&[
        "greylist_delay=1h",
        "store_failure_action=DEFER_IF_PERMIT STORE FAILED",
    ]);
    let triplets = 300;
    let mut handles = Vec::new();
    for i in 0..16usize {
        let args = args.clone();
        handles.push(std::thread::spawn(move || {
            let mut input = String::new();
            for j in 0..500usize {
                let k = (i * 37 + j * 7) % triplets;
                input.push_str(&request(
                    &format!("10.{}.{}.1", k % 5, k / 5),
                    &format!("s{k}@example.org"),
                    &format!("r{}@example.com", k % 3),
                    &format!("i{i}-{j}"),
                ));
            }
            let (code, out, err) = run_stream(&args, input.as_bytes());
            (code, actions(&out), err)
        }));
    }
    for h in handles {
        let (code, acts, err) = h.join().unwrap();
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(acts.len(), 500);
        assert!(
            acts.iter().all(|a| a == GREYLISTED),
            "{:?}",
            acts.iter().find(|a| *a != GREYLISTED)
        );
    }
    let news = t.wait_log("reason=new", triplets);
    assert_eq!(news.len(), triplets);
    let mut distinct: Vec<String> = news
        .iter()
        .map(|l| l.split("sender=").nth(1).unwrap().to_string())
        .collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), triplets, "a triplet was new twice");
    assert_eq!(
        t.wait_log("reason=early-retry", 8000 - triplets).len(),
        8000 - triplets
    );
    assert!(
        t.log_lines("store").is_empty(),
        "{:?}",
        t.log_lines("store")
    );
    assert_eq!(t.keeper_pids().len(), 1);
}

#[test]
fn killed_keeper_is_replaced_and_loses_nothing_flushed() {
    let t = TestDir::new("kill");
    let mut s = Session::start(&t.args(&[
        "greylist_delay=2s",
        "store_flush_interval=200ms",
        "greylist_auto_whitelist_clients=0",
    ]));
    let a = request("192.0.2.1", "a@example.org", "a@example.com", "k1");
    assert_eq!(s.ask(&a), GREYLISTED);
    let first = t.keeper_pids();
    assert_eq!(first.len(), 1);
    sleep(600); // past the flush interval
    kill9(first[0]);
    sleep(100);
    // Every later request is answered; a new keeper takes over.
    for i in 0..20 {
        assert_eq!(
            s.ask(&request(
                "192.0.2.1",
                &format!("b{i}@example.org"),
                "a@example.com",
                "k2"
            )),
            GREYLISTED
        );
    }
    let second = t.keeper_pids();
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    sleep(1500);
    // The triplet written before the kill survived: it passes after its delay.
    assert_header(
        &s.ask(&request(
            "192.0.2.1",
            "a@example.org",
            "a@example.com",
            "k3",
        )),
        2,
    );
    assert_eq!(s.finish().0, 0);
}

#[test]
fn garbage_store_is_moved_aside() {
    let t = TestDir::new("corrupt");
    let args = t.args(&["greylist_delay=1h"]);
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.1", "a@x.example", "b@y.example", "c1").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    for pid in t.keeper_pids() {
        kill9(pid);
    }
    sleep(100);
    // Overwrite every store file with garbage.
    fn scribble(p: &std::path::Path) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                scribble(&path);
            } else {
                let len = std::fs::metadata(&path).unwrap().len().max(4096) as usize;
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                let junk: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                std::fs::write(&path, junk).unwrap();
            }
        }
    }
    scribble(&t.state().join("store"));
    let (code, out, err) = run_stream(
        &args,
        request("192.0.2.1", "a@x.example", "b@y.example", "c2").as_bytes(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    // The fresh store does not know the triplet: greylisted as new, mail keeps flowing.
    assert_eq!(actions(&out), vec![GREYLISTED.to_string()]);
    let aside: Vec<_> = std::fs::read_dir(t.state())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", t.log.lock().unwrap());
    assert_eq!(t.wait_log("unreadable", 1).len(), 1);
}

#[test]
fn bad_input_gets_dunno_and_never_crashes() {
    let t = TestDir::new("bad");
    let args = t.args(&[]);
    let good = request("192.0.2.1", "a@example.org", "b@example.com", "g");
    let mut long = b"request=smtpd_access_policy\nsender=".to_vec();
    long.extend(std::iter::repeat_n(b'a', 1 << 20));
    long.extend_from_slice(b"\n\n");
    let mut many = b"request=smtpd_access_policy\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("attr{i}=value\n").as_bytes());
    }
    many.push(b'\n');
    let mut random = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..100_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        random.push((x >> 16) as u8);
    }
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("long line", long, vec!["DUNNO"]),
        ("10000 attributes", many, vec!["DUNNO"]),
        (
            "NUL",
            b"request=smtpd_access_policy\nsender=a\0b\n\n".to_vec(),
            vec!["DUNNO"],
        ),
        (
            "CRLF",
            b"request=smtpd_access_policy\r\nprotocol_state=RCPT\r\n\r\n".to_vec(),
            vec!["DUNNO"],
        ),
        (
            "no terminator",
            b"request=smtpd_access_policy\nprotocol_state=RCPT".to_vec(),
            vec!["DUNNO"],
        ),
        (
            "unknown type",
            b"request=smtpd_other_policy\n\n".to_vec(),
            vec!["DUNNO"],
        ),
        (
            "no =",
            b"request=smtpd_access_policy\nhello\n\n".to_vec(),
            vec!["DUNNO"],
        ),
    ];
    for (name, input, want) in cases {
        // Each bad block is followed by a good one: the stream must go on.
        let mut stream = input.clone();
        if name != "no terminator" {
            stream.extend_from_slice(good.as_bytes());
        }
        let (code, out, err) = run_stream(&args, &stream);
        assert_eq!((code, err.as_str()), (0, ""), "{name}");
        let mut expected: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        if name != "no terminator" {
            expected.push(GREYLISTED.to_string());
        }
        assert_eq!(actions(&out), expected, "{name}");
    }
    let (code, out, err) = run_stream(&args, &random);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(actions(&out).iter().all(|a| a == "DUNNO"));
    assert!(!t.wait_log("malformed request", 9).is_empty());
}

/// Invalid UTF-8 in attributes, used or not, must not switch greylisting off: the request
/// is decided on the lossily decoded values, and a warning names the attributes.
#[test]
fn odd_bytes_are_decided_normally() {
    let t = TestDir::new("odd");
    let args = t.args(&[]);
    let odd = request("192.0.2.1", "a\u{1}@example.org", "b@example.com", "o1")
        .replace("protocol_name=ESMTP", "protocol_name=ES\u{1}MTP")
        .replace("reverse_client_name=unknown", "reverse_client_name=\u{1}x")
        .replace("queue_id=", "queue_id=\u{1}")
        .replace("policy_context=", "policy_context=\u{1}")
        .replace("ccert_subject=", "ccert_subject=\u{1}");
    // \x01 stands for the bad byte: a lone continuation byte is not UTF-8.
    let odd: Vec<u8> = odd.bytes().map(|b| if b == 1 { 0x80 } else { b }).collect();
    let mut stream = odd.clone();
    stream.extend_from_slice(&odd);
    let (code, out, err) = run_stream(&args, &stream);
    assert_eq!((code, err.as_str()), (0, ""));
    // Greylisted, not waved through; the second copy is the same triplet (an early retry).
    assert_eq!(
        actions(&out),
        vec![GREYLISTED.to_string(), GREYLISTED.to_string()]
    );
    let warn = t.wait_log("invalid UTF-8 in", 2);
    assert_eq!(
        warn[0].split("warning: ").nth(1).unwrap(),
        "invalid UTF-8 in reverse_client_name, sender, queue_id: decoded lossily, request decided"
    );
    assert!(t.wait_log("reason=new", 1)[0].contains("sender=a\u{fffd}@example.org"));
    assert_eq!(t.wait_log("reason=early-retry", 1).len(), 1);
}

#[test]
fn exit_codes_and_check_config() {
    let t = TestDir::new("cfg");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(BIN).args(args).output().unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let conf = t.path.join("bad.conf");
    std::fs::write(&conf, "# test\ngreylist_delay = 5m\ngreylist_dleay = 5m\n").unwrap();
    let (code, _, err) = run(&["-c", conf.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 78);
    assert_eq!(
        err,
        format!(
            "greyspf: configuration error: {}:3: unknown parameter \"greylist_dleay\"\n",
            conf.display()
        )
    );
    let (code, _, err) = run(&["-c", "/nonexistent/greyspf.conf", "--check-config"]);
    assert_eq!(code, 78);
    assert_eq!(
        err,
        "greyspf: configuration error: /nonexistent/greyspf.conf: cannot read: No such file or directory (os error 2)\n"
    );
    let (code, out, _) = run(&[
        "-c",
        "/dev/null",
        "-o",
        "greylist_delay=10m",
        "--check-config",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\ngreylist_delay = 10m\n"), "{out}");
    let (code, _, _) = run(&["--no-such-flag"]);
    assert_eq!(code, 64);
    let (code, out, _) = run(&["--version"]);
    assert_eq!(
        (code, out),
        (0, format!("greyspf {}\n", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn keeper_of_another_version_is_asked_to_retire() {
    use std::io::{Read, Write};
    let t = TestDir::new("retire");
    std::fs::create_dir_all(t.state()).unwrap();
    let sock = t.state().join("keeper.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let fake = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut frames = Vec::new();
        for reply in [&b"HELLO\x000.0.1-old"[..], b"BYE"] {
            let mut len = [0u8; 4];
            c.read_exact(&mut len).unwrap();
            let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
            c.read_exact(&mut buf).unwrap();
            frames.push(String::from_utf8(buf).unwrap().replace('\0', " "));
            c.write_all(&(reply.len() as u32).to_be_bytes()).unwrap();
            c.write_all(reply).unwrap();
            if reply == b"BYE" {
                // An old keeper removes its socket as it leaves.
                std::fs::remove_file(&sock).unwrap();
            }
        }
        frames
    });
    let (code, out, err) = run_stream(
        &t.args(&[]),
        request("192.0.2.1", "a@example.org", "b@example.com", "r").as_bytes(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(actions(&out), vec![GREYLISTED.to_string()]);
    // HELLO carries the version and the digest of the keeper-side settings.
    let frames = fake.join().unwrap();
    assert_eq!(frames.len(), 2, "{frames:?}");
    let hello = format!("HELLO {} ", env!("CARGO_PKG_VERSION"));
    assert!(frames[0].starts_with(&hello), "{frames:?}");
    assert_eq!(frames[0].len(), hello.len() + 16, "{frames:?}");
    assert_eq!(frames[1], "RETIRE");
    assert_eq!(
        t.keeper_pids().len(),
        1,
        "a keeper of this version took over"
    );
}

/// A standard descriptor closed at start (by a careless service manager or a shell's
/// `<&-`) is reopened on /dev/null before greyspf opens anything, so no file or socket of
/// its own can become its standard input: with stdin closed, the syslog socket would
/// take descriptor 0 and be read as requests.
#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null() {
    use std::os::unix::process::CommandExt;
    let t = TestDir::new("closed-stdin");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(t.args(&[]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: close is async-signal-safe; the child closes its own descriptor 0.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(t.log_lines("").is_empty(), "{:?}", t.log_lines(""));
}
