//! `greyspf daemon` through the real binary: the SMTPD policy protocol over TCP and unix
//! sockets to many connections at once, access control, the pool bound, the privilege
//! drop, SIGHUP and SIGTERM, one store shared with spawn instances, socket activation, and
//! the postscreen callout against a client written from the design (Postfix releases do
//! not ship one).

mod common;
#[path = "support/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The user the daemon serves as when the tests run as root.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: plain libc call.
    unsafe { libc::geteuid() == 0 }
}

/// Prepares the test directory for a daemon that drops to nobody: the state directory
/// owned by it, the syslog socket writable by it.
fn prepare(t: &TestDir) {
    std::fs::create_dir_all(t.state()).unwrap();
    std::fs::set_permissions(t.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(t.path.join("log"), std::fs::Permissions::from_mode(0o666)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(t.state(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// The arguments of a daemon on free loopback ports, plus `extra`.
fn daemon_args(t: &TestDir, extra: &[&str]) -> Vec<String> {
    let mut all = vec![
        "listen=inet:127.0.0.1:0",
        "listen_unix_group=",
        "daemon_user=nobody",
    ];
    all.extend_from_slice(extra);
    let mut a = t.args(&all);
    a.push("daemon".into());
    a
}

struct Daemon {
    child: Child,
    policy: Option<SocketAddr>,
    postscreen: Option<SocketAddr>,
}

impl Daemon {
    fn start(t: &TestDir, extra: &[&str]) -> Daemon {
        Daemon::start_args(t, &daemon_args(t, extra))
    }

    fn start_args(t: &TestDir, args: &[String]) -> Daemon {
        prepare(t);
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            policy: None,
            postscreen: None,
        };
        let started = format!("greyspf[{}]: daemon listening on ", d.child.id());
        assert!(
            !t.wait_log(&started, 1).is_empty(),
            "the daemon did not start"
        );
        let tag = format!("{started}inet:");
        // Every listener is logged before the first connection is accepted.
        std::thread::sleep(Duration::from_millis(100));
        for l in t.log_lines(&tag) {
            let rest = l.split(&tag).nth(1).unwrap();
            let addr: SocketAddr = rest.split(' ').next().unwrap().parse().unwrap();
            if rest.contains("(postscreen callout)") {
                d.postscreen = Some(addr);
            } else {
                d.policy = Some(addr);
            }
        }
        d
    }

    fn connect(&self) -> Client {
        Client::tcp(self.policy.expect("no policy listener"))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit and returns its code.
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One policy connection, as smtpd holds it.
struct Client {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    /// The TCP socket, to shorten the read timeout while waiting for a close.
    tcp: Option<TcpStream>,
}

impl Client {
    fn tcp(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            reader: BufReader::new(Box::new(s.try_clone().unwrap())),
            tcp: Some(s.try_clone().unwrap()),
            writer: Box::new(s),
        }
    }

    fn unix(path: &std::path::Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            reader: BufReader::new(Box::new(s.try_clone().unwrap())),
            writer: Box::new(s),
            tcp: None,
        }
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    fn ask(&mut self, block: &str) -> String {
        self.send(block);
        read_reply(&mut self.reader)
    }

    /// True when the daemon closes the connection (EOF or reset) within 3 s, without
    /// sending anything.
    fn closed(&mut self) -> bool {
        let tcp = self.tcp.as_ref().expect("a TCP client");
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Reads one postscreen reply: its lines up to the empty line.
    fn postscreen_reply(&mut self) -> Vec<String> {
        common::read_block(&mut self.reader)
    }

    fn postscreen(&mut self, block: &str) -> Vec<String> {
        self.send(block);
        self.postscreen_reply()
    }
}

fn req(sender: &str) -> String {
    request("192.0.2.10", sender, "rcpt@example.com", "i1")
}

/// The store's counters, from `greyspf stats` with the test's settings.
fn stats(t: &TestDir, extra: &[&str]) -> std::collections::HashMap<String, u64> {
    let mut a = t.args(extra);
    a.push("stats".into());
    let out = Command::new(BIN).args(&a).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// The effective uid of a process.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn sixty_four_connections_of_200_requests_each_triplet_new_exactly_once() {
    let t = TestDir::new("d64");
    let d = Daemon::start(&t, &[]);
    let addr = d.policy.unwrap();
    let threads: Vec<_> = (0..64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = Client::tcp(addr);
                let mut answers = Vec::new();
                // Every connection asks about the same 200 triplets, each from its own
                // starting point, so that they race on every one.
                for i in 0..200 {
                    let n = (i + c * 3) % 200;
                    answers.push(client.ask(&req(&format!("s{n}@example.org"))));
                }
                answers
            })
        })
        .collect();
    let mut answered = 0;
    for th in threads {
        for a in th.join().unwrap() {
            assert_eq!(a, GREYLISTED);
            answered += 1;
        }
    }
    assert_eq!(answered, 64 * 200);
    let s = stats(&t, &[]);
    assert_eq!(s["requests"], 12_800);
    assert_eq!(s["new"], 200);
    assert_eq!(s["early_retry"], 12_600);
    assert_eq!(t.keeper_pids(), [] as [u32; 0], "the daemon owns the store");
}

#[test]
fn a_stalled_half_request_does_not_delay_other_connections() {
    let t = TestDir::new("dstall");
    let d = Daemon::start(&t, &[]);
    let mut stalled = d.connect();
    let full = req("stall@example.org");
    let (head, tail) = full.split_at(100);
    stalled.send(head);
    let started = Instant::now();
    let mut other = d.connect();
    for i in 0..20 {
        assert_eq!(other.ask(&req(&format!("o{i}@example.org"))), GREYLISTED);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "other connections waited {:?}",
        started.elapsed()
    );
    // The stalled request, once complete, is answered on its connection.
    stalled.send(tail);
    assert_eq!(read_reply(&mut stalled.reader), GREYLISTED);
}

#[test]
fn past_max_connections_a_connection_waits_until_one_closes() {
    let t = TestDir::new("dmax");
    let d = Daemon::start(&t, &["max_connections=1"]);
    let mut first = d.connect();
    assert_eq!(first.ask(&req("a@example.org")), GREYLISTED);
    let addr = d.policy.unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut second = Client::tcp(addr);
        let a = second.ask(&req("b@example.org"));
        tx.send(a).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a second connection was served past max_connections=1"
    );
    drop(first);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        GREYLISTED
    );
    waiter.join().unwrap();
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout_and_frees_its_place() {
    let t = TestDir::new("didle");
    let d = Daemon::start(&t, &["max_connections=1", "connection_idle_timeout=1s"]);
    let mut silent = d.connect();
    let started = Instant::now();
    // closed() waits up to 3 s: the daemon must close it after about 1 s.
    assert!(silent.closed(), "a silent connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(d.connect().ask(&req("i@example.org")), GREYLISTED);
}

#[test]
fn a_client_not_in_allowed_clients_is_refused() {
    let t = TestDir::new("drefuse");
    let d = Daemon::start(&t, &["allowed_clients=192.0.2.0/24"]);
    let mut c = d.connect();
    let _ = c.writer.write_all(req("x@example.org").as_bytes());
    assert!(c.closed(), "a refused client got an answer");
    let lines = t.wait_log(
        "refused a connection from 127.0.0.1: not in allowed_clients",
        1,
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(stats(&t, &[])["requests"], 0);
}

#[test]
fn unix_listener_mode_and_the_user_the_daemon_serves_as() {
    let t = TestDir::new("dunix");
    let sock = t.path.join("policy");
    let listen = format!("listen=unix:{}", sock.display());
    // As root: the group of nobody's own (nogroup, 65534), so that the check below does
    // not depend on the machine having a postfix group. Others may only give their own.
    let group = if is_root() {
        "listen_unix_group=nogroup"
    } else {
        "listen_unix_group="
    };
    let d = Daemon::start(&t, &[&listen, "listen_unix_mode=0640", group]);
    let tag = format!("greyspf[{}]: daemon listening on unix:", d.child.id());
    assert_eq!(t.wait_log(&tag, 1).len(), 1);
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    let mut c = Client::unix(&sock);
    assert_eq!(c.ask(&req("u@example.org")), GREYLISTED);
    if is_root() {
        assert_eq!(
            (meta.uid(), meta.gid()),
            (NOBODY, NOBODY),
            "socket owner and group"
        );
        assert_eq!(
            uid_of(d.child.id()),
            NOBODY,
            "the daemon still runs as root"
        );
    }
}

#[test]
fn sighup_reloads_and_a_broken_configuration_keeps_the_old_one() {
    let t = TestDir::new("dhup");
    let conf = t.path.join("greyspf.conf");
    std::fs::write(&conf, "greylist_text = First\n").unwrap();
    let mut args = daemon_args(&t, &[]);
    args[1] = conf.display().to_string();
    let mut d = Daemon::start_args(&t, &args);
    let mut old = d.connect();
    assert_eq!(old.ask(&req("a@example.org")), "DEFER_IF_PERMIT First");

    std::fs::write(&conf, "greylist_text = Second\n").unwrap();
    d.signal(libc::SIGHUP);
    assert_eq!(t.wait_log("configuration reloaded", 1).len(), 1);
    assert_eq!(
        d.connect().ask(&req("b@example.org")),
        "DEFER_IF_PERMIT Second"
    );
    // A connection keeps the configuration it started with.
    assert_eq!(old.ask(&req("c@example.org")), "DEFER_IF_PERMIT First");

    std::fs::write(&conf, "greylist_text = Third\ngreylist_delay = banana\n").unwrap();
    d.signal(libc::SIGHUP);
    let refused = t.wait_log("configuration reload refused", 1);
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains("greylist_delay"), "{}", refused[0]);
    assert!(d.alive());
    assert_eq!(
        d.connect().ask(&req("d@example.org")),
        "DEFER_IF_PERMIT Second"
    );
}

#[test]
fn sigterm_answers_what_was_read_exits_zero_and_loses_no_store_write() {
    let t = TestDir::new("dterm");
    // No periodic flush during the test: what reaches the disk is what the exit writes.
    let mut d = Daemon::start(&t, &["store_flush_interval=1h"]);
    let mut c = d.connect();
    for i in 0..50 {
        assert_eq!(c.ask(&req(&format!("t{i}@example.org"))), GREYLISTED);
    }
    let mut idle = d.connect();
    c.send(&req("last@example.org"));
    std::thread::sleep(Duration::from_millis(50));
    d.signal(libc::SIGTERM);
    assert_eq!(read_reply(&mut c.reader), GREYLISTED);
    assert!(c.closed(), "the connection stayed open after SIGTERM");
    assert!(
        idle.closed(),
        "an idle connection stayed open after SIGTERM"
    );
    assert_eq!(d.wait(Duration::from_secs(15)), 0);
    let socket_left = t.state().join("keeper.sock").exists();
    // The admin command starts a keeper process, which reads the store from disk.
    let s = stats(&t, &["store_flush_interval=1h"]);
    assert_eq!((s["requests"], s["new"]), (51, 51));
    assert!(!socket_left, "keeper socket left behind");
    // A daemon started again takes the store over from that keeper.
    let d = Daemon::start(&t, &["store_flush_interval=1h"]);
    let mut c = d.connect();
    assert_eq!(c.ask(&req("last@example.org")), GREYLISTED);
    let s = stats(&t, &["store_flush_interval=1h"]);
    assert_eq!((s["new"], s["early_retry"]), (51, 1));
    assert_eq!(t.keeper_pids(), [] as [u32; 0], "the daemon owns the store");
}

#[test]
fn spawn_instances_and_the_daemon_share_one_store() {
    let t = TestDir::new("dshare");
    prepare(&t);
    // A spawn instance first: it starts a keeper process, which the daemon then retires
    // to own the store itself; the instance follows the store to the daemon's socket.
    let mut spawn = Session::start(&t.args(&["greylist_delay=3s"]));
    assert_eq!(spawn.ask(&req("two@example.org")), GREYLISTED);
    assert_eq!(t.keeper_pids().len(), 1);
    let d = Daemon::start(&t, &["greylist_delay=3s"]);
    let mut daemon = d.connect();
    assert_eq!(daemon.ask(&req("one@example.org")), GREYLISTED);
    assert_eq!(spawn.ask(&req("one@example.org")), GREYLISTED);
    assert_eq!(daemon.ask(&req("two@example.org")), GREYLISTED);
    std::thread::sleep(Duration::from_millis(3200));
    assert_header(&spawn.ask(&req("one@example.org")), 3);
    assert_header(&daemon.ask(&req("two@example.org")), 3);
    assert_eq!(daemon.ask(&req("one@example.org")), "DUNNO");
    assert_eq!(spawn.ask(&req("two@example.org")), "DUNNO");
    let s = stats(&t, &["greylist_delay=3s"]);
    assert_eq!(
        (s["new"], s["early_retry"], s["passed_after_delay"]),
        (2, 2, 2)
    );
    assert_eq!(t.keeper_pids(), [] as [u32; 0], "the daemon owns the store");
    let (code, err) = spawn.finish();
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn a_spawn_instance_with_other_store_settings_cannot_retire_the_daemon() {
    let t = TestDir::new("dretire");
    let mut d = Daemon::start(&t, &[]);
    // Another greylist_max_age: the instance asks the store's owner to retire, as it asks
    // a keeper process; the daemon refuses and the instance answers store_failure_action.
    let started = Instant::now();
    let (code, out, err) = run_stream(
        &t.args(&["greylist_max_age=10d"]),
        req("x@example.org").as_bytes(),
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(actions(&out), ["DUNNO"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t.wait_log("daemon's store to retire; refused", 1).len(), 1);
    assert!(d.alive());
    assert_eq!(d.connect().ask(&req("y@example.org")), GREYLISTED);
}

#[test]
fn sockets_passed_by_systemd_are_served() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let t = TestDir::new("dsd");
    prepare(&t);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // systemd's contract: the sockets from fd 3, LISTEN_FDS of them, LISTEN_PID ours. A
    // shell sets LISTEN_PID to its own pid and execs the daemon, which keeps that pid.
    let mut args = vec![
        "-c".to_string(),
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"".to_string(),
        BIN.to_string(),
    ];
    args.extend(daemon_args(&t, &["listen=inet:127.0.0.1:1"]));
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let tag = format!("daemon listening on inet:{addr} (from systemd)");
    assert_eq!(t.wait_log(&tag, 1).len(), 1, "{:?}", t.log_lines("daemon"));
    let mut c = Client::tcp(addr);
    assert_eq!(c.ask(&req("sd@example.org")), GREYLISTED);
    let _ = child.kill();
    let _ = child.wait();
}

// The postscreen callout, with a client written from the design: `name=value` lines and an
// empty line; replies `action=...` (and `ttl=` for pass) and an empty line.

fn ps_request(client: &str) -> String {
    format!(
        "client_address={client}\nserver_address=192.0.2.1\nclient_port=40000\nserver_port=25\n\n"
    )
}

fn postscreen_daemon(t: &TestDir, extra: &[&str]) -> Daemon {
    let mut all = vec!["postscreen_listen=inet:127.0.0.1:0"];
    all.extend_from_slice(extra);
    let d = Daemon::start(t, &all);
    assert!(d.postscreen.is_some(), "no postscreen listener");
    d
}

#[test]
fn postscreen_passes_an_auto_whitelisted_client_for_its_remaining_lifetime() {
    let t = TestDir::new("psawl");
    let wl = t.path.join("whitelist_clients");
    std::fs::write(&wl, "198.51.100.0/24\n").unwrap();
    let wl_opt = format!("whitelist_clients={}", wl.display());
    let d = postscreen_daemon(
        &t,
        &[
            "greylist_delay=1s",
            "greylist_auto_whitelist_clients=1",
            "greylist_max_age=1h",
            "postscreen_max_ttl=2h",
            &wl_opt,
        ],
    );
    let mut ps = Client::tcp(d.postscreen.unwrap());
    assert_eq!(ps.postscreen(&ps_request("192.0.2.10")), ["action=ignore"]);
    // One pass after the delay puts the client on the auto-whitelist.
    let mut policy = d.connect();
    assert_eq!(policy.ask(&req("p@example.org")), GREYLISTED);
    std::thread::sleep(Duration::from_millis(2100));
    assert_header(&policy.ask(&req("p@example.org")), 2);
    let reply = ps.postscreen(&ps_request("192.0.2.10"));
    assert_eq!(reply.len(), 2, "{reply:?}");
    assert_eq!(reply[0], "action=pass");
    let ttl: u64 = reply[1].strip_prefix("ttl=").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    // A whitelisted network passes for the longest ttl; another address of the AWL
    // client's network is not the client.
    assert_eq!(
        ps.postscreen(&ps_request("198.51.100.7")),
        ["action=pass", "ttl=7200"]
    );
    assert_eq!(ps.postscreen(&ps_request("192.0.2.11")), ["action=ignore"]);
}

#[test]
fn postscreen_ignores_unknown_clients_on_one_connection_for_1000_requests() {
    let t = TestDir::new("ps1000");
    let d = postscreen_daemon(&t, &[]);
    let mut ps = Client::tcp(d.postscreen.unwrap());
    for i in 0..1000 {
        let client = format!("203.0.113.{}", i % 250);
        assert_eq!(
            ps.postscreen(&ps_request(&client)),
            ["action=ignore"],
            "request {i}"
        );
    }
}

#[test]
fn postscreen_serves_16_parallel_connections() {
    let t = TestDir::new("ps16");
    let d = postscreen_daemon(&t, &[]);
    let addr = d.postscreen.unwrap();
    let threads: Vec<_> = (0..16)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ps = Client::tcp(addr);
                (0..100)
                    .filter(|i| {
                        let client = format!("2001:db8::{c}:{i}");
                        ps.postscreen(&ps_request(&client)) == ["action=ignore"]
                    })
                    .count()
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 1600);
}

#[test]
fn postscreen_ignores_unknown_attributes_and_answers_malformed_requests_ignore() {
    let t = TestDir::new("psbad");
    let wl = t.path.join("whitelist_clients");
    std::fs::write(&wl, "198.51.100.0/24\n").unwrap();
    let wl_opt = format!("whitelist_clients={}", wl.display());
    let d = postscreen_daemon(&t, &[&wl_opt]);
    let mut ps = Client::tcp(d.postscreen.unwrap());
    // Any order, attributes the design does not name.
    let odd = "server_port=25\nfuture_attribute=x\nclient_address=198.51.100.9\nprotocol=smtp\n\n";
    assert_eq!(ps.postscreen(odd), ["action=pass", "ttl=86400"]);
    for bad in [
        "no equals sign\n\n".to_string(),
        "client_address=not-an-address\n\n".to_string(),
        "server_address=192.0.2.1\n\n".to_string(),
        format!("client_address=198.51.100.9{}\n\n", "9".repeat(5000)),
    ] {
        assert_eq!(ps.postscreen(&bad), ["action=ignore"], "{bad:.40?}");
    }
    // The connection is still in use after all of them.
    assert_eq!(
        ps.postscreen(&ps_request("198.51.100.10")),
        ["action=pass", "ttl=86400"]
    );
    assert!(
        t.wait_log("postscreen: malformed request, answered ignore", 4)
            .len()
            >= 4
    );
}

#[test]
fn with_redis_the_daemon_greylists_and_postscreen_sees_both_whitelists() {
    let Some(r) = redis_server::Redis::start("dredis", &[]) else {
        return;
    };
    let t = TestDir::new("dredis");
    let url = format!("redis_url={}", r.url());
    let settings = [
        "store=redis",
        url.as_str(),
        "greylist_delay=1s",
        "greylist_auto_whitelist_clients=1",
        "greylist_max_age=1h",
    ];
    let d = postscreen_daemon(&t, &settings);
    let mut ps = Client::tcp(d.postscreen.unwrap());
    assert_eq!(ps.postscreen(&ps_request("192.0.2.10")), ["action=ignore"]);
    let mut policy = d.connect();
    assert_eq!(policy.ask(&req("r@example.org")), GREYLISTED);
    std::thread::sleep(Duration::from_millis(2100));
    assert_header(&policy.ask(&req("r@example.org")), 2);
    let reply = ps.postscreen(&ps_request("192.0.2.10"));
    assert_eq!(reply[0], "action=pass", "{reply:?}");
    let ttl: u64 = reply[1].strip_prefix("ttl=").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    // The store whitelist, changed by the administrator while the connection stays open.
    let mut a = t.args(&settings);
    a.extend(["whitelist".into(), "add".into(), "198.51.100.0/24".into()]);
    assert!(Command::new(BIN).args(&a).status().unwrap().success());
    assert_eq!(
        ps.postscreen(&ps_request("198.51.100.3")),
        ["action=pass", "ttl=86400"]
    );
    assert!(
        !t.state().join("keeper.sock").exists(),
        "a keeper socket with store = redis"
    );
}

#[test]
fn bad_daemon_settings_are_configuration_errors() {
    for (setting, message) in [
        (
            "listen=127.0.0.1:10023",
            "listen: bad endpoint \"127.0.0.1:10023\"",
        ),
        (
            "postscreen_listen=unix:relative",
            "postscreen_listen: bad endpoint",
        ),
        (
            "listen_unix_mode=0999",
            "listen_unix_mode: expected an octal mode",
        ),
        ("max_connections=0", "max_connections: must be above zero"),
        (
            "allowed_clients=localhost",
            "allowed_clients: bad network address",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["-c", "/dev/null", "-o", setting, "--check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{setting}: {err}");
        assert!(err.contains(message), "{setting}: {err}");
    }
}
