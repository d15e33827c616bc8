//! A private redis-server for one test: a free loopback port, a directory of its own, no
//! persistence; stopped (SIGKILL) when dropped. Without redis-server a test is skipped,
//! unless `GREYSPF_E2E=required` makes that a failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of one test: its own port and directory, killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// TLS only: `port` is the TLS port, the plain one is off.
    tls: bool,
    /// The loopback address it listens on.
    pub bind: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether redis-server can run here; a skip is a failure when CI requires these tests.
pub fn redis_available(test: &str) -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("GREYSPF_E2E").as_deref() == Ok("required") {
            panic!("GREYSPF_E2E=required, but redis-server is not installed");
        }
        eprintln!(
            "{test}: skipped: redis-server not found (install the redis-server package; \
             set GREYSPF_E2E=required to make this skip a failure)"
        );
    }
    ok
}

impl Redis {
    pub fn start(name: &str, extra: &[&str]) -> Option<Redis> {
        if !redis_available(name) {
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/gsr-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: false,
            bind: "127.0.0.1".into(),
        };
        r.run();
        Some(r)
    }

    /// A plain server on another loopback address (127.0.0.0/8) and a given port.
    pub fn start_at(name: &str, bind: &str, port: u16) -> Option<Redis> {
        if !redis_available(name) {
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/gsr-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port,
            dir,
            extra: Vec::new(),
            tls: false,
            bind: bind.into(),
        };
        r.run();
        Some(r)
    }

    /// A server that speaks TLS only, with this certificate and key (clients are not
    /// asked for certificates).
    pub fn start_tls(name: &str, cert: &Path, key: &Path, ca: &Path) -> Option<Redis> {
        if !redis_available(name) {
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/gsr-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut extra = vec!["--tls-auth-clients".to_string(), "no".to_string()];
        for (flag, path) in [
            ("--tls-cert-file", cert),
            ("--tls-key-file", key),
            ("--tls-ca-cert-file", ca),
        ] {
            extra.push(flag.to_string());
            extra.push(path.display().to_string());
        }
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            extra,
            tls: true,
            bind: "127.0.0.1".into(),
        };
        r.run();
        Some(r)
    }

    /// Starts the server (again, on the same port) and waits until it answers.
    pub fn run(&mut self) {
        let port = self.port.to_string();
        let ports: &[&str] = if self.tls {
            &["--port", "0", "--tls-port", &port]
        } else {
            &["--port", &port]
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", &self.bind])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect((self.bind.as_str(), self.port)) {
                if self.tls {
                    // Listening is all a plain client can see of a TLS port.
                    return;
                }
                let _ = s.write_all(b"PING\r\n");
                let mut b = [0u8; 1];
                if s.read(&mut b).is_ok_and(|n| n == 1) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: signalling the server this test started.
        unsafe { kill(pid as i32, sig) };
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}/0", self.bind, self.port)
    }

    /// redis-cli with `args`; its output, one line per value.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.bind, "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A connection of the redis crate, to seed and read keys.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(18); // SIGCONT, in case a test left it stopped
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

unsafe extern "C" {
    pub fn kill(pid: i32, sig: i32) -> i32;
}
