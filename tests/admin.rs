//! Administration through the real binary while an instance serves: exact counters,
//! list, delete, the store whitelist, purge, privacy mode, and counters across restarts.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn admin(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(BIN)
        .args(args)
        .args(cmd)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn stats_json(args: &[String]) -> String {
    let (code, out, err) = admin(args, &["stats", "--json"]);
    assert_eq!((code, err.as_str()), (0, ""));
    out
}

/// The value of one counter in `stats --json` output.
fn counter(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let rest = &json[json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} missing in {json}"))
        + key.len()..];
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}

fn wait_keeper_gone(t: &TestDir) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.keeper_pids().is_empty() {
        assert!(Instant::now() < deadline, "keeper did not exit when idle");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `list` lines without their timestamps.
fn listed(args: &[String], extra: &[&str]) -> Vec<String> {
    let mut cmd = vec!["list"];
    cmd.extend_from_slice(extra);
    let (code, out, err) = admin(args, &cmd);
    assert_eq!((code, err.as_str()), (0, ""));
    out.lines()
        .map(|l| l.split(" first_seen=").next().unwrap().to_string())
        .collect()
}

#[test]
fn counters_list_delete_and_whitelist_while_serving() {
    let t = TestDir::new("admin");
    let rcpts = t.path.join("rcpts");
    std::fs::write(&rcpts, "postmaster@\n").unwrap();
    let args = t.args(&[
        "greylist_delay=1s",
        "greylist_auto_whitelist_clients=0",
        "keeper_idle_timeout=2s",
        &format!("whitelist_recipients={}", rcpts.display()),
    ]);
    let mut s = Session::start(&args);
    let a = request("192.0.2.10", "a@example.org", "x@example.com", "m1");
    assert_eq!(s.ask(&a), GREYLISTED);
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "b@example.org",
            "x@example.com",
            "m2"
        )),
        GREYLISTED
    );
    assert_eq!(
        s.ask(&request(
            "198.51.100.3",
            "c@example.org",
            "y@example.com",
            "m3"
        )),
        GREYLISTED
    );
    assert_eq!(s.ask(&a), GREYLISTED);
    assert_eq!(s.ask(&a), GREYLISTED);
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "a@example.org",
            "postmaster@example.com",
            "m4"
        )),
        "DUNNO"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_header(&s.ask(&a), 1);
    assert_eq!(s.ask(&a), "DUNNO");

    // The instance is still connected and serving while the administrator looks.
    let j = stats_json(&args);
    for (name, want) in [
        ("requests", 7),
        ("new", 3),
        ("early_retry", 2),
        ("passed_after_delay", 1),
        ("passed_known", 1),
        ("delay_le_5m", 1),
        ("whitelist_recipient_hits", 1),
        ("whitelist_client_hits", 0),
        ("store_failures", 0),
        ("triplets", 3),
    ] {
        assert_eq!(counter(&j, name), want, "{name} in {j}");
    }
    assert_eq!(
        listed(&args, &[]),
        vec![
            "192.0.2.0/24 a@example.org x@example.com state=passed",
            "192.0.2.0/24 b@example.org x@example.com state=greylisted",
            "198.51.100.0/24 c@example.org y@example.com state=greylisted",
        ]
    );
    assert_eq!(
        listed(&args, &["--state", "passed"]),
        vec!["192.0.2.0/24 a@example.org x@example.com state=passed"]
    );
    assert_eq!(listed(&args, &["--client", "192.0.2.200"]).len(), 2);
    let (_, json, _) = admin(&args, &["list", "--sender", "C@Example.org", "--json"]);
    assert!(json.starts_with("[{\"client\":\"198.51.100.0/24\",\"sender\":\"c@example.org\",\"recipient\":\"y@example.com\",\"first_seen\":"), "{json}");
    assert!(json.ends_with(",\"state\":\"greylisted\"}]\n"), "{json}");

    // delete: the next request for that triplet is new again.
    assert_eq!(
        admin(&args, &["delete", "--sender", "a@example.org"]).1,
        "deleted 1 entries\n"
    );
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "a@example.org",
            "x@example.com",
            "m5"
        )),
        GREYLISTED
    );
    assert_eq!(
        admin(&args, &["delete", "--pattern", "^198\\.51\\.100\\."]).1,
        "deleted 1 entries\n"
    );
    let (code, _, err) = admin(&args, &["delete"]);
    assert_eq!(
        (code, err.as_str()),
        (
            64,
            "greyspf: delete needs --client, --sender, --recipient, --pattern or --all\n"
        )
    );

    // whitelist add: the address passes at once; remove: greylisted again.
    assert_eq!(
        admin(&args, &["whitelist", "add", "203.0.113.7"]).1,
        "203.0.113.7/32: added\n"
    );
    assert_eq!(admin(&args, &["whitelist", "list"]).1, "203.0.113.7/32\n");
    assert_eq!(
        s.ask(&request(
            "203.0.113.7",
            "z@example.org",
            "x@example.com",
            "m6"
        )),
        "DUNNO"
    );
    assert_eq!(
        admin(&args, &["whitelist", "remove", "203.0.113.7"]).1,
        "203.0.113.7/32: removed\n"
    );
    assert_eq!(
        s.ask(&request(
            "203.0.113.7",
            "z@example.org",
            "x@example.com",
            "m7"
        )),
        GREYLISTED
    );
    assert_eq!(t.wait_log("reason=store-whitelist", 1).len(), 1);

    let before = stats_json(&args);
    assert_eq!(counter(&before, "store_whitelist_hits"), 1);
    assert_eq!(counter(&before, "requests"), 10);
    assert_eq!(s.finish().0, 0);
    // Counters survive the keeper: wait for its idle exit, then ask a new one.
    wait_keeper_gone(&t);
    let after = stats_json(&args);
    // store_bytes is the size on disk, which compaction changes: everything else is equal.
    let without_size = |j: &str| j.split(",\"store_bytes\"").next().unwrap().to_string();
    assert_eq!(without_size(&after), without_size(&before));
    assert_eq!(counter(&after, "requests"), 10);
}

#[test]
fn entries_that_never_retried_are_logged_and_counted() {
    let t = TestDir::new("expire");
    let args = t.args(&["greylist_delay=1h", "greylist_max_age=1s"]);
    let (code, out, _) = run_stream(
        &args,
        request("192.0.2.9", "spam@example.net", "v@example.com", "e").as_bytes(),
    );
    assert_eq!((code, actions(&out)), (0, vec![GREYLISTED.to_string()]));
    let lines = t.wait_log("action=expired", 1);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with("action=expired, reason=never-retried, client=192.0.2.0/24, sender=spam@example.net, recipient=v@example.com"), "{lines:?}");
    let j = stats_json(&args);
    assert_eq!(
        (counter(&j, "expired_never_passed"), counter(&j, "triplets")),
        (1, 0)
    );
    assert_eq!(
        admin(&args, &["purge"]).1,
        "purged; 0 entries expired without ever passing\n"
    );
}

#[test]
fn privacy_mode_stores_no_addresses() {
    let t = TestDir::new("privacy");
    let args = t.args(&[
        "greylist_privacy=yes",
        "greylist_delay=1h",
        "keeper_idle_timeout=1s",
    ]);
    let mut input = String::new();
    for i in 0..20 {
        input.push_str(&request(
            &format!("198.51.100.{i}"),
            &format!("secretsender{i}@hidden.example"),
            "secretrcpt@hidden.example",
            "p",
        ));
    }
    let (code, out, _) = run_stream(&args, input.as_bytes());
    assert_eq!(code, 0);
    assert!(actions(&out).iter().all(|a| a == GREYLISTED));
    let rows = listed(&args, &[]);
    assert_eq!(rows.len(), 20);
    assert!(
        rows.iter()
            .all(|r| r.len() == 32 * 3 + 2 + " state=greylisted".len()),
        "{rows:?}"
    );
    // delete takes the plain triplet and hashes it.
    let (_, out, _) = admin(
        &args,
        &[
            "delete",
            "--client",
            "198.51.100.3",
            "--sender",
            "secretsender3@hidden.example",
            "--recipient",
            "secretrcpt@hidden.example",
        ],
    );
    assert_eq!(out, "deleted 1 entries\n");
    wait_keeper_gone(&t);
    let secret = std::fs::metadata(t.state().join("privacy.secret")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&secret.permissions()) & 0o777,
        0o600
    );
    fn search(dir: &std::path::Path, needles: &[&[u8]]) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                search(&p, needles);
            } else if let Ok(bytes) = std::fs::read(&p) {
                for n in needles {
                    assert!(
                        !bytes.windows(n.len()).any(|w| w == *n),
                        "{} contains {:?}",
                        p.display(),
                        String::from_utf8_lossy(n)
                    );
                }
            }
        }
    }
    search(
        &t.state(),
        &[
            b"198.51.100",
            b"secretsender",
            b"secretrcpt",
            b"hidden.example",
        ],
    );
}

#[test]
fn sigterm_stops_the_keeper_without_losing_state() {
    let t = TestDir::new("term");
    // A long flush interval: only the clean exit can have written these.
    let args = t.args(&[
        "greylist_delay=1h",
        "store_flush_interval=1h",
        "keeper_idle_timeout=1h",
    ]);
    let mut input = String::new();
    for i in 0..5 {
        input.push_str(&request(
            "192.0.2.1",
            &format!("s{i}@example.org"),
            "r@example.com",
            "t",
        ));
    }
    assert_eq!(run_stream(&args, input.as_bytes()).0, 0);
    let pids = t.keeper_pids();
    assert_eq!(pids.len(), 1);
    assert!(
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pids[0].to_string())
            .status()
            .unwrap()
            .success()
    );
    wait_keeper_gone(&t);
    assert_eq!(t.wait_log("keeper exiting: signal 15", 1).len(), 1);
    let j = stats_json(&args);
    assert_eq!((counter(&j, "new"), counter(&j, "triplets")), (5, 5), "{j}");
}
