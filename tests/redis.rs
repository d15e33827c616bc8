//! The Redis store engine against a real redis-server, which each test starts on a free
//! loopback port with a directory of its own and stops: the decision script against the
//! Rust rules, several hosts sharing one greylist, concurrency, Redis failures, and
//! privacy mode.
//!
//! Without redis-server the tests print how to enable them and pass, unless
//! `GREYSPF_E2E=required` (set by CI) makes that a failure.

mod common;
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{GREYLISTED, Session, TestDir, actions, assert_header, request, run_stream};
use greyspf::greylist::GreyQuery;
use greyspf::greylist::decide::{AwlEntry, Entry, Timers, decide_request};
use greyspf::store::redis::{RedisSettings, RedisStore};
use support::redis_server::{Redis, free_port};

/// The arguments of one host using `redis`.
fn host_args(t: &TestDir, redis: &Redis, extra: &[&str]) -> Vec<String> {
    let url = format!("redis_url={}", redis.url());
    let mut all = vec!["store=redis", url.as_str()];
    all.extend_from_slice(extra);
    t.args(&all)
}

fn greyspf(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::BIN)
        .args(args)
        .args(cmd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stats(args: &[String]) -> BTreeMap<String, u64> {
    let (code, out, err) = greyspf(args, &["stats"]);
    assert_eq!(code, 0, "stats failed: {err}");
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

const T: Timers = Timers {
    delay_ms: 300_000,
    retry_window_ms: 2 * 86_400_000,
    max_age_ms: 35 * 86_400_000,
    awl_clients: 3,
    awl_interval_ms: 3_600_000,
};

fn entry(first: u64, last: u64, passed: bool) -> Entry {
    Entry {
        first,
        last,
        passed,
    }
}

fn awl(count: u32, last_counted: u64, last_seen: u64) -> AwlEntry {
    AwlEntry {
        count,
        last_counted,
        last_seen,
    }
}

type Case = (&'static str, Timers, Option<Entry>, Option<AwlEntry>);

/// The cases, with times relative to `b` (now): every branch of decide_request.
fn cases(b: u64) -> Vec<Case> {
    let s = 1000;
    let m = 60 * s;
    let d = 86_400_000;
    let zero = Timers { delay_ms: 0, ..T };
    let no_awl = Timers {
        awl_clients: 0,
        ..T
    };
    let tiny_age = Timers {
        max_age_ms: 100,
        ..T
    };
    vec![
        ("first sighting", T, None, None),
        (
            "early retry",
            T,
            Some(entry(b - 100 * s, b - 100 * s, false)),
            None,
        ),
        (
            "early retry, last moved",
            T,
            Some(entry(b - 200 * s, b - 50 * s, false)),
            None,
        ),
        (
            "retry at exactly the delay",
            T,
            Some(entry(b - 5 * m, b - 5 * m, false)),
            None,
        ),
        (
            "delayed ten minutes",
            T,
            Some(entry(b - 9 * m, b - 9 * m, false)),
            None,
        ),
        (
            "delayed five hours",
            T,
            Some(entry(b - 300 * m, b - 300 * m, false)),
            None,
        ),
        (
            "delayed two days",
            T,
            Some(entry(b - 2 * d, b - 2 * d, false)),
            None,
        ),
        (
            "retry window over",
            T,
            Some(entry(b - 2 * d - 1, b - d, false)),
            None,
        ),
        (
            "known, last within the slack",
            T,
            Some(entry(b - d, b - 10 * s, true)),
            None,
        ),
        (
            "known, last past the slack",
            T,
            Some(entry(b - d, b - 50 * m, true)),
            None,
        ),
        (
            "known, max age over",
            T,
            Some(entry(b - 40 * d, b - 35 * d - 1, true)),
            None,
        ),
        (
            "known at exactly max age",
            T,
            Some(entry(b - 40 * d, b - 35 * d, true)),
            None,
        ),
        (
            "client on the auto-whitelist",
            T,
            None,
            Some(awl(3, b - 2 * m, b - m)),
        ),
        (
            "auto-whitelist, last seen past the slack",
            T,
            None,
            Some(awl(5, b - 2 * d, b - d)),
        ),
        (
            "auto-whitelist expired",
            T,
            None,
            Some(awl(9, b - 36 * d, b - 35 * d - 1)),
        ),
        (
            "pass counts to the auto-whitelist",
            T,
            Some(entry(b - d, b - d, true)),
            Some(awl(2, b - 2 * m - 3_600_000, b - 2 * m)),
        ),
        (
            "pass within the interval",
            T,
            Some(entry(b - d, b - d, true)),
            Some(awl(2, b - 10 * m, b - 10 * m)),
        ),
        (
            "first pass of a client",
            T,
            Some(entry(b - 6 * m, b - 6 * m, false)),
            None,
        ),
        (
            "greylisted client not counted",
            T,
            None,
            Some(awl(2, b - 2 * d, b - 2 * d)),
        ),
        ("zero delay", zero, None, None),
        (
            "zero delay, auto-whitelist counted",
            Timers {
                awl_clients: 1,
                ..zero
            },
            None,
            None,
        ),
        (
            "auto-whitelist off",
            no_awl,
            Some(entry(b - d, b - d, true)),
            Some(awl(7, b - m, b - m)),
        ),
        (
            "tiny max age writes every ms",
            tiny_age,
            Some(entry(b - 50, b - 1, true)),
            None,
        ),
        (
            "tiny max age over",
            tiny_age,
            Some(entry(b - 500, b - 101, true)),
            None,
        ),
    ]
}

fn hget(c: &mut redis::Connection, key: &[u8], fields: &[&str]) -> Option<Vec<u64>> {
    let v: Vec<Option<u64>> = redis::cmd("HMGET").arg(key).arg(fields).query(c).unwrap();
    v.into_iter().collect()
}

/// The Lua script and the Rust rules agree on every case: verdict, stored entries,
/// counters, and the expiry of what was written.
#[test]
fn script_matches_decide_request() {
    let Some(r) = Redis::start("table", &[]) else {
        return;
    };
    let mut c = r.conn();
    let b = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (i, (name, timers, triplet, awl_entry)) in cases(b).into_iter().enumerate() {
        let prefix = format!("case{i}:");
        let tkey = format!("{prefix}t:192.0.2.0/24\0a@example.org\0b@example.net").into_bytes();
        let akey = format!("{prefix}a:192.0.2.7").into_bytes();
        if let Some(e) = triplet {
            let _: () = redis::cmd("HSET")
                .arg(&tkey)
                .arg(&["f", &e.first.to_string(), "l", &e.last.to_string()][..])
                .arg(&["p", if e.passed { "1" } else { "0" }][..])
                .query(&mut c)
                .unwrap();
        }
        if let Some(a) = awl_entry {
            let _: () = redis::cmd("HSET")
                .arg(&akey)
                .arg(&["c", &a.count.to_string(), "lc", &a.last_counted.to_string()][..])
                .arg(&["ls", &a.last_seen.to_string()][..])
                .query(&mut c)
                .unwrap();
        }
        let want = decide_request(triplet, awl_entry, b, &timers);
        let mut store = RedisStore::new(RedisSettings {
            url: r.url().parse().unwrap(),
            password: None,
            key_prefix: prefix.clone(),
            timeout: Duration::from_secs(5),
            tls_ca_file: None,
            dns_retransmit: Duration::from_millis(400),
            privacy_secret: None,
            max_age_ms: timers.max_age_ms,
        });
        let q = GreyQuery {
            client_key: "192.0.2.0/24",
            sender: "a@example.org",
            recipient: "b@example.net",
            client_address: "192.0.2.7",
            timers,
        };
        let got = store.decide_at(&q, Some(b)).unwrap();
        assert_eq!(got, want.verdict, "case {name:?}: verdict");

        let stored_t = hget(&mut c, &tkey, &["f", "l", "p"]).map(|v| entry(v[0], v[1], v[2] == 1));
        assert_eq!(stored_t, want.triplet.or(triplet), "case {name:?}: triplet");
        let stored_a =
            hget(&mut c, &akey, &["c", "lc", "ls"]).map(|v| awl(v[0] as u32, v[1], v[2]));
        assert_eq!(
            stored_a,
            want.awl.or(awl_entry),
            "case {name:?}: auto-whitelist"
        );

        let expire = |c: &mut redis::Connection, k: &[u8]| -> i64 {
            redis::cmd("PEXPIRETIME").arg(k).query(c).unwrap()
        };
        if let Some(e) = want.triplet {
            assert_eq!(
                expire(&mut c, &tkey),
                (e.last + timers.max_age_ms) as i64,
                "case {name:?}: triplet expiry"
            );
        }
        if let Some(a) = want.awl {
            assert_eq!(
                expire(&mut c, &akey),
                (a.last_seen + timers.max_age_ms) as i64,
                "case {name:?}: auto-whitelist expiry"
            );
        }

        let counters: BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(format!("{prefix}counters"))
            .query(&mut c)
            .unwrap();
        let mut want_counters: BTreeMap<String, u64> = BTreeMap::from([("requests".into(), 1)]);
        for k in &want.counters {
            *want_counters.entry(k.to_string()).or_default() += 1;
        }
        assert_eq!(counters, want_counters, "case {name:?}: counters");
    }
}

/// Two hosts (their own configuration and state directory) on one Redis: a triplet
/// greylisted on A passes on B after the delay, the auto-whitelist learned on A counts on
/// B, `whitelist add` on A takes effect on B's running instance, and `stats` is the same.
#[test]
fn two_hosts_share_one_greylist() {
    let Some(r) = Redis::start("twohosts", &[]) else {
        return;
    };
    let (ta, tb) = (TestDir::new("host-a"), TestDir::new("host-b"));
    let opts = ["greylist_delay=2s", "greylist_auto_whitelist_clients=1"];
    let (a, b) = (host_args(&ta, &r, &opts), host_args(&tb, &r, &opts));
    let mut sa = Session::start(&a);
    let mut sb = Session::start(&b);
    let t1 = request("192.0.2.5", "alice@example.org", "bob@example.net", "i1");
    let t2 = request(
        "198.51.100.7",
        "carol@example.com",
        "dave@example.net",
        "i2",
    );
    assert_eq!(sa.ask(&t1), GREYLISTED);
    assert_eq!(sb.ask(&t1), GREYLISTED, "B sees A's triplet: early retry");
    assert_eq!(sa.ask(&t2), GREYLISTED);
    std::thread::sleep(Duration::from_millis(2100));
    assert_header(&sb.ask(&t1), 2);
    // t2 passes on A: its client joins the auto-whitelist, which B honours for a new
    // triplet of the same client.
    assert_header(&sa.ask(&t2), 2);
    let t3 = request(
        "198.51.100.7",
        "erin@example.com",
        "frank@example.net",
        "i3",
    );
    assert_eq!(sb.ask(&t3), "DUNNO");
    assert_eq!(tb.wait_log("reason=client-awl", 1).len(), 1);

    // B's running instance holds the whitelist; A changes it.
    let (code, out, err) = greyspf(&a, &["whitelist", "add", "203.0.113.0/24"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "203.0.113.0/24: added\n"),
        "{err}"
    );
    let t4 = request("203.0.113.9", "gina@example.org", "hal@example.net", "i4");
    assert_eq!(sb.ask(&t4), "DUNNO");
    assert_eq!(tb.wait_log("reason=store-whitelist", 1).len(), 1);
    let (_, list, _) = greyspf(&b, &["whitelist", "list"]);
    assert_eq!(list, "203.0.113.0/24\n");
    assert_eq!(sa.finish().0, 0);
    assert_eq!(sb.finish().0, 0);

    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!(sa, sb, "stats differ between the hosts");
    for (k, v) in [
        ("requests", 7),
        ("new", 2),
        ("early_retry", 1),
        ("passed_after_delay", 2),
        ("awl_hits", 1),
        ("awl_added", 2),
        ("store_whitelist_hits", 1),
        ("triplets", 2),
        ("auto_whitelisted_clients", 2),
        ("store_whitelist_entries", 1),
    ] {
        assert_eq!(sa.get(k), Some(&v), "{k} in {sa:?}");
    }
    // `list --pattern` is case-insensitive, as with the sled keeper.
    let (code, list, err) = greyspf(&b, &["list", "--pattern", "ALICE@"]);
    let triplets: Vec<&str> = list
        .lines()
        .map(|l| l.split(" first_seen=").next().unwrap_or(""))
        .collect();
    assert_eq!(
        (code, triplets),
        (
            0,
            vec!["192.0.2.0/24 alice@example.org bob@example.net state=passed"]
        ),
        "{err}"
    );
    // No keeper: Redis needs none.
    assert!(ta.keeper_pids().is_empty() && tb.keeper_pids().is_empty());
    assert!(!ta.state().join("store").exists());
}

/// 2 hosts × 8 instances × 400 requests over 150 triplets, all at once: every triplet
/// is new exactly once.
#[test]
fn concurrent_instances_on_two_hosts_agree() {
    let Some(r) = Redis::start("concurrent", &[]) else {
        return;
    };
    let hosts = [TestDir::new("conc-a"), TestDir::new("conc-b")];
    let args: Vec<Vec<String>> = hosts.iter().map(|t| host_args(t, &r, &[])).collect();
    let mut threads = Vec::new();
    for (h, a) in args.iter().enumerate() {
        for inst in 0..8 {
            let a = a.clone();
            threads.push(std::thread::spawn(move || {
                let mut input = String::new();
                for i in 0..400 {
                    let n = (i + 19 * (h * 8 + inst)) % 150;
                    input.push_str(&request(
                        &format!("192.0.2.{n}"),
                        &format!("s{n}@example.org"),
                        "rcpt@example.net",
                        "x",
                    ));
                }
                let (code, out, err) = run_stream(&a, input.as_bytes());
                assert_eq!(code, 0, "{err}");
                let acts = actions(&out);
                assert_eq!(acts.len(), 400);
                assert!(acts.iter().all(|x| x == GREYLISTED), "{acts:?}");
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let s = stats(&args[0]);
    assert_eq!(s.get("requests"), Some(&6400));
    assert_eq!(s.get("new"), Some(&150), "{s:?}");
    assert_eq!(s.get("early_retry"), Some(&6250));
    assert_eq!(s.get("triplets"), Some(&150));
    assert_eq!(s.get("store_failures"), Some(&0));
}

/// Asks and times one request; it must be answered within `limit`.
fn timed(s: &mut Session, block: &str, limit: Duration) -> String {
    let t = Instant::now();
    let a = s.ask(block);
    let took = t.elapsed();
    assert!(took <= limit, "answered after {took:?}: {a}");
    a
}

/// Redis stopped (no answers) and killed mid-stream: every request is answered within
/// redis_timeout + 1 s with store_failure_action, one warning is logged, and decisions
/// resume once Redis is back, in the same instance.
#[test]
fn redis_down_costs_at_most_the_timeout() {
    let Some(mut r) = Redis::start("down", &[]) else {
        return;
    };
    let t = TestDir::new("down");
    let args = host_args(
        &t,
        &r,
        &[
            "redis_timeout=1s",
            "store_failure_action=DEFER_IF_PERMIT store down",
        ],
    );
    let mut s = Session::start(&args);
    let limit = Duration::from_secs(2);
    let req = |n: u32| {
        request(
            &format!("192.0.2.{n}"),
            "a@example.org",
            "b@example.net",
            "x",
        )
    };
    assert_eq!(timed(&mut s, &req(1), limit), GREYLISTED);
    r.signal(19); // SIGSTOP: the connection stays open, nothing answers
    for n in 2..5 {
        assert_eq!(timed(&mut s, &req(n), limit), "DEFER_IF_PERMIT store down");
    }
    r.signal(18);
    r.kill();
    for n in 5..10 {
        assert_eq!(timed(&mut s, &req(n), limit), "DEFER_IF_PERMIT store down");
        std::thread::sleep(Duration::from_millis(100));
    }
    r.run();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut n = 10;
    loop {
        let a = timed(&mut s, &req(n), limit);
        if a == GREYLISTED {
            break;
        }
        assert_eq!(a, "DEFER_IF_PERMIT store down");
        assert!(Instant::now() < deadline, "decisions did not resume");
        std::thread::sleep(Duration::from_millis(200));
        n += 1;
    }
    assert_eq!(s.finish().0, 0);
    let warnings = t.log_lines("greylist store unavailable");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no answer within 1s"), "{warnings:?}");
}

/// Redis closes connections idle for its `timeout`; an instance that smtpd kept idle
/// longer reconnects for its next request instead of failing it.
#[test]
fn idle_connection_closed_by_redis_is_replaced() {
    let Some(r) = Redis::start("idle", &["--timeout", "1"]) else {
        return;
    };
    let t = TestDir::new("idle");
    let mut s = Session::start(&host_args(&t, &r, &[]));
    let req = |n: u32| {
        request(
            &format!("192.0.2.{n}"),
            "a@example.org",
            "b@example.net",
            "x",
        )
    };
    assert_eq!(s.ask(&req(1)), GREYLISTED);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s.ask(&req(2)), GREYLISTED);
    assert_eq!(s.finish().0, 0);
    assert!(t.log_lines("greylist store unavailable").is_empty());
}

fn write_private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Wrong password, a password file others can read, a password in the URL, TLS, an
/// unreachable or silent server: `--check-config` says so clearly (exit 78) and quickly,
/// never showing the password; a serving instance logs it and answers.
#[test]
fn connection_problems_are_clear_at_check_config() {
    let Some(r) = Redis::start("auth", &["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let t = TestDir::new("auth");
    let good = t.path.join("pw-good");
    let bad = t.path.join("pw-bad");
    let open = t.path.join("pw-open");
    write_private(&good, "s3cret-pw\n", 0o600);
    write_private(&bad, "wrong-pw\n", 0o640);
    write_private(&open, "s3cret-pw\n", 0o644);
    let check = |extra: &[&str]| {
        let start = Instant::now();
        let (code, out, err) = greyspf(&host_args(&t, &r, extra), &["--check-config"]);
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
        assert!(
            !out.contains("s3cret") && !err.contains("s3cret"),
            "{out}{err}"
        );
        assert!(
            !out.contains("wrong-pw") && !err.contains("wrong-pw"),
            "{out}{err}"
        );
        (code, out, err)
    };
    let pw = |p: &Path| format!("redis_password_file={}", p.display());

    let (code, out, _) = check(&[&pw(&good)]);
    assert_eq!(code, 0);
    assert!(out.contains("# store: redis://127.0.0.1:"), "{out}");

    let (code, _, err) = check(&[&pw(&bad)]);
    assert_eq!(code, 78);
    assert!(err.contains("authentication refused: WRONGPASS"), "{err}");

    let (code, _, err) = check(&[]);
    assert_eq!(code, 78);
    assert!(err.contains("authentication refused: NOAUTH"), "{err}");

    let (code, _, err) = check(&[&pw(&open)]);
    assert_eq!(code, 78);
    assert!(err.contains("readable or writable by others"), "{err}");

    let with_pw = format!("redis_url=redis://:s3cret-pw@127.0.0.1:{}/0", r.port);
    let (code, _, err) = check(&[&with_pw]);
    assert_eq!(code, 78);
    assert!(err.contains("put it in redis_password_file"), "{err}");

    // TLS to a server that speaks plain RESP: refused in the handshake, quickly.
    let tls_to_plain = format!("redis_url=rediss://127.0.0.1:{}/0", r.port);
    let (code, _, err) = check(&[&tls_to_plain, "redis_timeout=500ms"]);
    assert_eq!(code, 78);
    assert!(
        err.contains(
            ": TLS: no answer to the handshake within 500ms (is this the server's TLS port?"
        ),
        "{err}"
    );

    let nobody = format!("redis_url=redis://127.0.0.1:{}/0", free_port());
    let (code, _, err) = check(&[&nobody]);
    assert_eq!(code, 78);
    assert!(err.contains("cannot connect: Connection refused"), "{err}");

    r.signal(19);
    let (code, _, err) = check(&[&pw(&good), "redis_timeout=500ms"]);
    r.signal(18);
    assert_eq!(code, 78);
    assert!(err.contains("no answer within 500ms"), "{err}");

    // Serving with the wrong password: answered at once, and the log says why.
    let mut s = Session::start(&host_args(&t, &r, &[&pw(&bad)]));
    let a = timed(
        &mut s,
        &request("192.0.2.1", "a@example.org", "b@example.net", "x"),
        Duration::from_secs(2),
    );
    assert_eq!(a, "DUNNO");
    assert_eq!(s.finish().0, 0);
    let lines = t.wait_log("authentication refused: WRONGPASS", 1);
    assert_eq!(lines.len(), 1);
    assert!(
        t.log
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("wrong-pw"))
    );
}

/// A server that only speaks TLS: greyspf (plain RESP only) says so instead of hanging.
#[test]
fn tls_only_server_is_a_clear_error() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("tls_only_server_is_a_clear_error: skipped: no openssl to make a certificate");
        return;
    }
    let dir = PathBuf::from(format!("/tmp/gsr-{}-tlscert", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let tls_port = free_port();
    let Some(r) = Redis::start(
        "tls",
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &c,
            "--tls-key-file",
            &k,
            "--tls-ca-cert-file",
            &c,
        ],
    ) else {
        return;
    };
    let t = TestDir::new("tls");
    let url = format!("redis_url=redis://127.0.0.1:{tls_port}/0");
    let start = Instant::now();
    let (code, _, err) = greyspf(&host_args(&t, &r, &[&url]), &["--check-config"]);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(code, 78);
    assert!(
        err.contains("does it require TLS? then use rediss://"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs openssl with `args` in `dir`; false when openssl cannot run (a skip, unless
/// `GREYSPF_E2E=required`).
fn openssl(dir: &Path, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            assert_ne!(
                std::env::var("GREYSPF_E2E").as_deref(),
                Ok("required"),
                "GREYSPF_E2E=required, but openssl cannot run: {e}"
            );
            eprintln!("skipped: openssl cannot run ({e}); it makes the test certificates");
            false
        }
    }
}

/// A CA (`NAME-ca.pem`) and a server certificate it signs for `san`
/// (`NAME-cert.pem`, `NAME-key.pem`), made in `dir`; false when openssl is missing.
fn make_pki(dir: &Path, name: &str, san: &str) -> bool {
    let ca = format!("{name}-ca.pem");
    let ca_key = format!("{name}-ca-key.pem");
    let (cert, key, csr) = (
        format!("{name}-cert.pem"),
        format!("{name}-key.pem"),
        format!("{name}.csr"),
    );
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    let subj = format!("/CN=greyspf test CA {name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subj,
            "-keyout", &ca_key, "-out", &ca,
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=redis",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    )
}

/// A TLS-only redis-server with the certificate of `make_pki(dir, name, ..)`.
fn tls_redis(dir: &Path, name: &str) -> Option<Redis> {
    let f = |what: &str| dir.join(format!("{name}-{what}.pem"));
    Redis::start_tls(name, &f("cert"), &f("key"), &f("ca"))
}

/// rediss:// to a server whose certificate a private CA signed: `--check-config` connects
/// and says so, and an instance greylists, then passes the retry, all over TLS.
#[test]
fn tls_with_private_ca_greylists_then_passes() {
    let t = TestDir::new("tls-ok");
    if !make_pki(&t.path, "good", "IP:127.0.0.1,DNS:redis.test") {
        return;
    }
    let Some(r) = tls_redis(&t.path, "good") else {
        return;
    };
    let ca = format!("redis_tls_ca_file={}", t.path.join("good-ca.pem").display());
    let args = host_args(&t, &r, &[&ca, "greylist_delay=1s"]);
    let (code, out, err) = greyspf(&args, &["--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "# store: rediss://127.0.0.1:{}/0 answered (redis ",
            r.port
        )),
        "{out}"
    );
    let mut s = Session::start(&args);
    let t1 = request("192.0.2.5", "alice@example.org", "bob@example.net", "i1");
    assert_eq!(s.ask(&t1), GREYLISTED);
    std::thread::sleep(Duration::from_millis(1100));
    assert_header(&s.ask(&t1), 1);
    assert_eq!(s.finish().0, 0);
    assert!(t.log_lines("greylist store unavailable").is_empty());
}

/// A certificate that does not verify (another CA, the system bundle, or a name it was
/// not made for) is a clear error at `--check-config` (exit 78) and a clear log line
/// while serving, answered within the deadline: never a hang, never plain text.
#[test]
fn tls_certificate_problems_are_clear() {
    let t = TestDir::new("tls-bad");
    if !(make_pki(&t.path, "good", "IP:127.0.0.1")
        && make_pki(&t.path, "other", "IP:127.0.0.1")
        && make_pki(&t.path, "named", "DNS:redis.test"))
    {
        return;
    }
    let Some(r) = tls_redis(&t.path, "good") else {
        return;
    };
    let Some(named) = tls_redis(&t.path, "named") else {
        return;
    };
    let ca = |name: &str| {
        format!(
            "redis_tls_ca_file={}",
            t.path.join(format!("{name}-ca.pem")).display()
        )
    };
    let check = |redis: &Redis, extra: &[&str]| {
        let start = Instant::now();
        let (code, _, err) = greyspf(&host_args(&t, redis, extra), &["--check-config"]);
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
        (code, err)
    };
    let (code, err) = check(&r, &[&ca("other")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("TLS: invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let (code, err) = check(&r, &[]);
    assert_eq!(code, 78);
    assert!(
        err.contains("TLS: invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let (code, err) = check(&named, &[&ca("named")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("TLS: invalid peer certificate: certificate not valid for name"),
        "{err}"
    );
    let missing = t.path.join("no-such-ca.pem");
    let (code, err) = check(&r, &[&format!("redis_tls_ca_file={}", missing.display())]);
    assert_eq!(code, 78);
    assert!(
        err.contains("TLS: CA file ") && err.contains("No such file"),
        "{err}"
    );

    let mut s = Session::start(&host_args(&t, &r, &[&ca("other")]));
    let a = timed(
        &mut s,
        &request("192.0.2.1", "a@example.org", "b@example.net", "x"),
        Duration::from_secs(2),
    );
    assert_eq!(a, "DUNNO");
    assert_eq!(s.finish().0, 0);
    let lines = t.wait_log("TLS: invalid peer certificate: UnknownIssuer", 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("greylist store unavailable"), "{lines:?}");
}

/// Whether this test may use mount namespaces (root); a skip is a failure when CI
/// requires these tests.
fn have_root(test: &str) -> bool {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert_ne!(
        std::env::var("GREYSPF_E2E").as_deref(),
        Ok("required"),
        "GREYSPF_E2E=required, but {test} needs root"
    );
    eprintln!("{test}: skipped: it needs root for a private /etc/hosts");
    false
}

/// Runs `script` (sh) in a mount namespace of its own where `hosts` is /etc/hosts; its
/// standard output.
fn with_hosts_file(hosts: &Path, script: &str) -> String {
    let script = format!("mount --bind {} /etc/hosts\n{script}", hosts.display());
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A host name in redis_url, found in /etc/hosts (without NSS) at each connection, and
/// used as the TLS server name: the certificate names only the host, not its address.
/// Where the name is unknown, `--check-config` says so within redis_timeout.
#[test]
fn host_name_from_the_hosts_file() {
    let name = "redis.greyspf.test";
    let t = TestDir::new("hostname");
    if !have_root("host_name_from_the_hosts_file")
        || !make_pki(&t.path, "named", &format!("DNS:{name}"))
    {
        return;
    }
    let Some(r) = tls_redis(&t.path, "named") else {
        return;
    };
    let hosts = t.path.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n127.0.0.1 {name} redis\n"),
    )
    .unwrap();
    let req = t.path.join("request");
    std::fs::write(
        &req,
        request("192.0.2.5", "a@example.org", "b@example.net", "x"),
    )
    .unwrap();
    let url = format!("redis_url=rediss://{name}:{}/0", r.port);
    let ca = format!(
        "redis_tls_ca_file={}",
        t.path.join("named-ca.pem").display()
    );
    let args = host_args(&t, &r, &[&url, &ca]);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let run = format!("{} {}", common::BIN, quoted.join(" "));
    let out = with_hosts_file(
        &hosts,
        &format!(
            "{run} --check-config | tail -n 1\n{run} <{req}\n{run} stats | grep -E '^(new|requests) '",
            req = req.display()
        ),
    );
    let want = format!("# store: rediss://{name}:{}/0 answered (redis ", r.port);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with(&want), "{out}");
    assert_eq!(lines[1], format!("action={GREYLISTED}"));
    assert_eq!(lines[2], "");
    let counts: Vec<String> = lines[3..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(counts, ["requests 1", "new 1"]);

    // Outside the namespace the name is unknown (.test is reserved): a clear error, soon.
    let start = Instant::now();
    let (code, _, err) = greyspf(
        &host_args(&t, &r, &[&url, &ca, "redis_timeout=1s"]),
        &["--check-config"],
    );
    assert!(start.elapsed() < Duration::from_secs(3), "{err}");
    assert_eq!(code, 78);
    assert!(
        err.contains(&format!(
            "redis rediss://{name}:{}/0: cannot find the host: {name}: ",
            r.port
        )),
        "{err}"
    );
}

/// A host name is looked up again at each new connection: Redis moves to another address
/// (the hosts file changes, the old server goes away), and the running instance's next
/// request reaches the new one, without a restart or a failed request.
#[test]
fn moved_redis_is_found_at_reconnect() {
    let name = "redis.greyspf.test";
    let t = TestDir::new("moved");
    if !have_root("moved_redis_is_found_at_reconnect") {
        return;
    }
    let Some(mut old) = Redis::start("moved-old", &[]) else {
        return;
    };
    let new = Redis::start_at("moved-new", "127.0.0.2", old.port).unwrap();
    let hosts = t.path.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {name}\n")).unwrap();
    let url = format!("redis_url=redis://{name}:{}/0", old.port);
    let args = host_args(&t, &old, &[&url]);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount --bind {} /etc/hosts\nexec {} {}",
        hosts.display(),
        common::BIN,
        quoted.join(" ")
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ask = |block: &str| {
        use std::io::{BufRead, Write};
        stdin.write_all(block.as_bytes()).unwrap();
        let (mut reply, mut line) = (String::new(), String::new());
        while line != "\n" {
            line.clear();
            assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "greyspf exited");
            reply.push_str(&line);
        }
        reply
    };
    let triplets = |r: &Redis| {
        r.cli(&["--scan", "--pattern", "greyspf:t:*"])
            .lines()
            .count()
    };
    let req = |n: u32| {
        request(
            &format!("192.0.2.{n}"),
            "a@example.org",
            "b@example.net",
            "x",
        )
    };
    assert_eq!(ask(&req(1)), format!("action={GREYLISTED}\n\n"));
    assert_eq!((triplets(&old), triplets(&new)), (1, 0));
    // Rewritten in place: the bind mount shows the same file.
    std::fs::write(&hosts, format!("127.0.0.2 {name}\n")).unwrap();
    old.kill();
    assert_eq!(ask(&req(2)), format!("action={GREYLISTED}\n\n"));
    assert_eq!(triplets(&new), 1);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert!(t.log_lines("greylist store unavailable").is_empty());
}

/// The lookup behind a host name: the hosts file first (no query), then the DNS (A and
/// AAAA), NXDOMAIN and a dead server as clear errors within the deadline.
#[test]
fn host_name_lookup_hosts_then_dns() {
    use greyspf::dns::{DnsClient, DnsSettings};
    use greyspf::store::resolve::lookup;
    use support::dns::{DnsServer, Zone};
    let zone = Zone::new()
        .a("redis.example", "192.0.2.20")
        .aaaa("redis.example", "2001:db8::20")
        .aaaa("redis6.example", "2001:db8::21");
    let server = DnsServer::start(zone);
    let settings = |server: &DnsServer| DnsSettings {
        server: Some(server.addr()),
        retransmit: Duration::from_millis(200),
        deadline: Duration::from_secs(1),
    };
    let dns = DnsClient::new(&settings(&server)).unwrap();
    let soon = || Instant::now() + Duration::from_secs(1);
    let ips = |s: &[&str]| {
        s.iter()
            .map(|a| a.parse().unwrap())
            .collect::<Vec<std::net::IpAddr>>()
    };

    let hosts = "192.0.2.99 redis.example\n";
    assert_eq!(
        lookup("redis.example", hosts, &dns, soon()),
        Ok(ips(&["192.0.2.99"]))
    );
    assert_eq!(server.queries(), 0, "the hosts file answered");
    assert_eq!(
        lookup("redis.example", "", &dns, soon()),
        Ok(ips(&["192.0.2.20", "2001:db8::20"]))
    );
    assert_eq!(
        lookup("redis6.example", "", &dns, soon()),
        Ok(ips(&["2001:db8::21"]))
    );
    assert_eq!(
        lookup("nowhere.example", "", &dns, soon()),
        Err("nowhere.example: no address in /etc/hosts or the DNS".to_string())
    );

    let dead = DnsServer::dead();
    let dns = DnsClient::new(&settings(&dead)).unwrap();
    let start = Instant::now();
    let e = lookup(
        "redis.example",
        "",
        &dns,
        Instant::now() + Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.starts_with("redis.example: A lookup: "), "{e}");
}

/// Privacy mode: Redis holds no address, sender or recipient, in key names or values;
/// a host with the same secret file shares the greylist; a host with another secret (or
/// none) refuses with a clear error instead of greylisting everything again.
#[test]
fn privacy_mode_keeps_addresses_out_of_redis() {
    let Some(r) = Redis::start("privacy", &[]) else {
        return;
    };
    let (ta, tb, tc) = (
        TestDir::new("priv-a"),
        TestDir::new("priv-b"),
        TestDir::new("priv-c"),
    );
    std::fs::create_dir_all(ta.state()).unwrap();
    let secret_a = ta.state().join("privacy.secret");
    let opts = ["greylist_privacy=yes", "greylist_delay=1s"];
    let a = host_args(&ta, &r, &opts);
    // A makes the secret; B gets a copy, C makes its own.
    let (code, _, err) = greyspf(&a, &["--check-config"]);
    assert_eq!(code, 0, "{err}");
    let copy = tb.path.join("copied.secret");
    std::fs::copy(&secret_a, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret_opt = format!("privacy_secret_file={}", copy.display());
    let mut b_opts = opts.to_vec();
    b_opts.push(&secret_opt);
    let b = host_args(&tb, &r, &b_opts);

    let req = request(
        "192.0.2.55",
        "alice.sender@example.org",
        "bob.rcpt@example.net",
        "x",
    );
    let (_, out, _) = run_stream(&a, req.as_bytes());
    assert_eq!(actions(&out), [GREYLISTED]);
    std::thread::sleep(Duration::from_millis(1100));
    let (_, out, _) = run_stream(&b, req.as_bytes());
    assert_header(&actions(&out)[0], 1);

    let keys = r.cli(&["--scan"]);
    assert_eq!(keys.lines().count(), 4, "{keys}");
    for key in keys.lines() {
        let dump = r.cli(&["--no-raw", "DUMP", key]);
        for needle in ["192.0.2", "alice", "sender", "example", "bob", "rcpt"] {
            assert!(!key.contains(needle), "{key}");
            assert!(!dump.contains(needle), "{key}: {dump}");
        }
    }
    let (_, list, _) = greyspf(&b, &["list"]);
    assert!(!list.contains("example"), "{list}");
    assert_eq!(list.lines().count(), 1);

    // C: its own secret.
    let c = host_args(&tc, &r, &opts);
    let (code, _, err) = greyspf(&c, &["--check-config"]);
    assert_eq!(code, 78);
    assert!(
        err.contains("copy privacy_secret_file from a host that works"),
        "{err}"
    );
    let (code, out, _) = run_stream(&c, req.as_bytes());
    assert_eq!((code, actions(&out)), (0, vec!["DUNNO".to_string()]));
    assert_eq!(tc.wait_log("refusing to decide", 1).len(), 1);
    // A host without privacy would write plain keys: refused too.
    let plain = host_args(&tc, &r, &[]);
    let (code, _, err) = greyspf(&plain, &["--check-config"]);
    assert_eq!(code, 78);
    assert!(err.contains("this host uses plain"), "{err}");
}
