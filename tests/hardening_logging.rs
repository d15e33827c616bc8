//! Logging hardening through the real binary: a syslog daemon that never reads cannot
//! stall answers (drops are counted and reported), stderr of a serving instance is
//! /dev/null, configuration errors reach syslog, and the log line of a store-whitelisted
//! request says what the reply does.

mod common;

use std::io::{BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Lines waiting in `sock`, read without waiting for more.
fn drain(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut lines = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    sock.set_nonblocking(false).unwrap();
    lines
}

/// Kills `pid` unless `done` is set within `limit`: a stalled instance fails the test
/// instead of hanging it.
fn watchdog(pid: u32, limit: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill9(pid);
    });
    done
}

fn stats_json(args: &[String]) -> String {
    let o = Command::new(BIN)
        .args(args)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn an_unread_syslog_socket_never_stalls_answers() {
    let t = TestDir::new("stuck");
    // A syslog daemon that hangs: its socket is bound and never read.
    let stuck_path = t.path.join("stuck");
    let stuck = UnixDatagram::bind(&stuck_path).unwrap();
    let args = t.args(&[&format!("syslog_socket={}", stuck_path.display())]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let done = watchdog(pid, Duration::from_secs(20));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |n: usize| {
        let block = request(
            "192.0.2.10",
            "a@example.org",
            &format!("r{n}@example.com"),
            "",
        );
        stdin.write_all(block.as_bytes()).unwrap();
        stdin.flush().unwrap();
        read_reply(&mut stdout)
    };

    let start = Instant::now();
    for n in 0..200 {
        assert_eq!(ask(n), GREYLISTED, "request {n}");
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "200 answers took {elapsed:?}"
    );

    // The daemon wakes up: what it queued gets read, and the next line of the instance
    // says how many were lost in between.
    let tag = format!("greyspf[{pid}]: ");
    let queued: Vec<String> = drain(&stuck)
        .into_iter()
        .filter(|l| l.contains(&tag))
        .collect();
    assert!(queued.len() < 200, "nothing was dropped: {}", queued.len());
    assert!(
        queued
            .iter()
            .all(|l| l.contains("action=greylist, reason=new"))
    );
    assert!(
        queued.iter().all(|l| !l.contains("log_dropped")),
        "{queued:?}"
    );
    assert_eq!(ask(200), GREYLISTED);
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let next = loop {
        let n = stuck.recv(&mut buf).expect("the next line never came");
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        if line.contains(&tag) {
            break line;
        }
    };
    let dropped = 200 - queued.len();
    assert!(
        next.ends_with(&format!(
            "action=greylist, reason=new, remaining=300, client_name=unknown, client_address=192.0.2.10, sender=a@example.org, recipient=r200@example.com, log_dropped={dropped}"
        )),
        "{next}"
    );

    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    done.store(true, Ordering::SeqCst);
    let _ = drain(&stuck);

    // The same count in stats (it reaches the keeper with the instance's last counts).
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = format!("\"log_dropped\":{dropped}");
    let mut json = stats_json(&args);
    while !json.contains(&want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let _ = drain(&stuck);
        json = stats_json(&args);
    }
    assert!(json.contains(&want), "{want} missing in {json}");
}

#[test]
fn a_serving_instance_has_stderr_on_dev_null() {
    let t = TestDir::new("fd2");
    let mut s = Session::start(&t.args(&[]));
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "a@example.org",
            "b@example.com",
            "m1"
        )),
        GREYLISTED
    );
    let fd2 = std::fs::read_link(format!("/proc/{}/fd/2", s.pid())).unwrap();
    assert_eq!(fd2, std::path::Path::new("/dev/null"));
    assert_eq!(s.finish(), (0, String::new()));
}

#[test]
fn foreground_serving_still_logs_to_stderr() {
    let t = TestDir::new("fg");
    let mut args = t.args(&[]);
    args.push("-f".into());
    let mut s = Session::start(&args);
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "a@example.org",
            "b@example.com",
            "m1"
        )),
        GREYLISTED
    );
    let fd2 = std::fs::read_link(format!("/proc/{}/fd/2", s.pid())).unwrap();
    assert!(fd2.to_string_lossy().starts_with("pipe:"), "{fd2:?}");
    let (code, err) = s.finish();
    assert_eq!(code, 0);
    assert!(
        err.ends_with("action=greylist, reason=new, remaining=300, client_name=unknown, client_address=192.0.2.10, sender=a@example.org, recipient=b@example.com\n"),
        "{err:?}"
    );
}

#[test]
fn a_configuration_error_reaches_syslog_and_stderr() {
    let t = TestDir::new("cfgerr");
    let o = Command::new(BIN)
        .args(t.args(&["greylist_delay=soon"]))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let msg =
        "configuration error: -o greylist_delay=soon: greylist_delay: bad time value \"soon\"";
    assert_eq!(o.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("greyspf: {msg}\n")
    );
    assert!(o.stdout.is_empty());
    let logs = t.wait_log("configuration error", 1);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].starts_with("<19>"), "mail.err: {logs:?}");
    assert!(logs[0].ends_with(&format!("]: error: {msg}")), "{logs:?}");
}

#[test]
fn a_store_whitelisted_request_is_logged_as_a_pass() {
    let t = TestDir::new("wl");
    let args = t.args(&[]);
    let o = Command::new(BIN)
        .args(&args)
        .args(["whitelist", "add", "192.0.2.0/24"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "192.0.2.0/24: added\n");
    let mut s = Session::start(&args);
    assert_eq!(
        s.ask(&request(
            "192.0.2.10",
            "a@example.org",
            "b@example.com",
            "m1"
        )),
        "DUNNO"
    );
    assert_eq!(s.finish(), (0, String::new()));
    let logs = t.wait_log("reason=store-whitelist", 1);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].ends_with("]: action=pass, reason=store-whitelist, client_name=unknown, client_address=192.0.2.10, sender=a@example.org, recipient=b@example.com"),
        "{logs:?}"
    );
}

/// The keeper logs too (expired triplets, one line each): what a stuck syslog made it
/// drop is counted in `stats` like the instances' drops.
#[test]
fn the_keepers_own_dropped_lines_are_counted() {
    let t = TestDir::new("keeperdrop");
    let stuck_path = t.path.join("stuck");
    let stuck = UnixDatagram::bind(&stuck_path).unwrap();
    let settings = ["greylist_max_age=1s", "keeper_idle_timeout=60s"];
    let args = t.args(&settings);
    // The keeper alone logs to the stuck socket; the instances log to the test's reader.
    let mut keeper_args = args.clone();
    keeper_args.extend([
        "-o".into(),
        format!("syslog_socket={}", stuck_path.display()),
    ]);
    keeper_args.push("keeper".into());
    let mut keeper = Command::new(BIN)
        .args(&keeper_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = t.state().join("keeper.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stream: String = (0..30)
        .map(|n| {
            request(
                "192.0.2.10",
                "a@example.org",
                &format!("r{n}@example.com"),
                "",
            )
        })
        .collect();
    let (code, out, err) = run_stream(&args, stream.as_bytes());
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(actions(&out).len(), 30);
    assert_eq!(t.wait_log("reason=new", 30).len(), 30);
    assert_eq!(
        t.log_lines("log_dropped").len(),
        0,
        "an instance dropped lines"
    );
    // Past max_age the keeper expires the 30 triplets, logging a line for each: its queue
    // holds about ten, the rest are dropped and counted at its next housekeeping step.
    let deadline = Instant::now() + Duration::from_secs(15);
    let dropped = loop {
        let stats = stats_json(&args);
        let n = stats
            .split("\"log_dropped\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match n {
            Some(n) if n > 0 => break n,
            _ if Instant::now() > deadline => panic!("no log_dropped in {stats}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let expired = drain(&stuck)
        .iter()
        .filter(|l| l.contains("reason=never-retried"))
        .count() as u64;
    assert_eq!(expired + dropped, 30, "{expired} logged, {dropped} dropped");
    let _ = keeper.kill();
    let _ = keeper.wait();
}
