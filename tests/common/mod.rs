//! Shared helpers for the tests that run the real greyspf binary: temporary state
//! directories, a syslog socket of our own, interactive policy sessions, request builders.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_greyspf");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private directory for one test, with a syslog socket that collects greyspf's lines.
pub struct TestDir {
    pub path: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Short paths: unix socket paths are limited to 108 bytes.
        let path = PathBuf::from(format!("/tmp/gst-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let sock = UnixDatagram::bind(path.join("log")).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                let line = String::from_utf8_lossy(&buf[..n]).to_string();
                sink.lock().unwrap().push(line);
            }
        });
        TestDir { path, log }
    }

    pub fn state(&self) -> PathBuf {
        self.path.join("state")
    }

    /// The `-o` arguments every test uses, plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["-c".to_string(), "/dev/null".to_string()];
        let base = [
            format!("state_directory={}", self.state().display()),
            format!("syslog_socket={}", self.path.join("log").display()),
            "keeper_idle_timeout=3s".to_string(),
            "hostname=mx.test".to_string(),
            "spf_enable=no".to_string(),
            "whitelist_clients=".to_string(),
            "whitelist_recipients=".to_string(),
            "trusted_networks=".to_string(),
        ];
        for o in base.iter().map(String::as_str).chain(extra.iter().copied()) {
            a.push("-o".into());
            a.push(o.to_string());
        }
        a
    }

    /// Log lines received so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until the syslog socket got at least `n` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let l = self.log_lines(needle);
            if l.len() >= n || Instant::now() > deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn keeper_pids(&self) -> Vec<u32> {
        keeper_pids(&self.state())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for pid in self.keeper_pids() {
            // SAFETY: signalling a process we started.
            unsafe { libc_kill(pid as i32, 9) };
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn kill9(pid: u32) {
    // SAFETY: plain signal delivery.
    unsafe { libc_kill(pid as i32, 9) };
}

/// Keeper processes serving `state`, found by their command line.
pub fn keeper_pids(state: &Path) -> Vec<u32> {
    let needle = format!("state_directory={}", state.display());
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).to_string())
            .collect();
        if args.iter().any(|a| a == &needle) && args.iter().any(|a| a == "keeper") {
            // Skip zombies and the short-lived detaching parent.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !stat.contains(") Z ") {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A request block with the attributes a real Postfix 3.7 sends.
pub fn request(client: &str, sender: &str, recipient: &str, instance: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address={client}\nclient_name=unknown\nclient_port=40000\nreverse_client_name=unknown\nserver_address=192.0.2.1\nserver_port=25\nhelo_name=client.example\nsender={sender}\nrecipient={recipient}\nrecipient_count=0\nqueue_id=\ninstance={instance}\nsize=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
    )
}

/// Starts greyspf with all three standard streams piped, as spawn(8) connects them.
fn spawn(args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A running greyspf with a conversation open, as smtpd holds one.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    pub fn start(args: &[String]) -> Session {
        let mut child = spawn(args);
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one block and returns the action of its reply, checking the reply grammar.
    pub fn ask(&mut self, block: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(block.as_bytes()).unwrap();
        stdin.flush().unwrap();
        read_reply(&mut self.stdout)
    }

    /// Closes stdin and returns (exit code, stderr).
    pub fn finish(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "output after the last reply");
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

/// Reads `action=...\n\n` and returns what follows `action=`.
pub fn read_reply<R: BufRead>(r: &mut R) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut blank = String::new();
    r.read_line(&mut blank).unwrap();
    assert_eq!(blank, "\n", "reply not followed by an empty line: {line:?}");
    let action = line
        .strip_prefix("action=")
        .unwrap_or_else(|| panic!("not a reply: {line:?}"));
    action.strip_suffix('\n').unwrap().to_string()
}

/// Reads the lines of one reply block up to its empty line (postscreen replies have
/// several); a closed connection or an unterminated line fails the test.
pub fn read_block<R: BufRead>(r: &mut R) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "connection closed");
        let l = l.strip_suffix('\n').expect("unterminated line").to_string();
        if l.is_empty() {
            return lines;
        }
        lines.push(l);
    }
}

/// Runs greyspf on `input` with a deadline; returns (exit code, stdout, stderr).
pub fn run_stream(args: &[String], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = spawn(args);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("greyspf did not exit within 30 s (hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    let out = reader.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// Splits a reply stream into actions, asserting the exact grammar.
pub fn actions(out: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(out).unwrap();
    let mut r = std::io::Cursor::new(text.as_bytes());
    let mut v = Vec::new();
    while (r.position() as usize) < text.len() {
        v.push(read_reply(&mut r));
    }
    v
}

pub const GREYLISTED: &str = "DEFER_IF_PERMIT Greylisted, please try again later";

/// Asserts an X-Greylist header for `secs` seconds with a well-formed date.
pub fn assert_header(action: &str, secs: u64) {
    let prefix = format!(
        "PREPEND X-Greylist: delayed {secs} seconds by greyspf-{} at mx.test; ",
        env!("CARGO_PKG_VERSION")
    );
    let date = action
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{action:?} lacks {prefix:?}"));
    let re = greyspf::pattern::build(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$", false).unwrap();
    assert!(re.is_match(date.as_bytes()), "bad date in {action:?}");
}

impl Session {
    /// The process id of the serving greyspf, to look at it from outside (/proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
