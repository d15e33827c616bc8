//! bench_driver: feeds policy services one request at a time, as smtpd does, and measures them side by side.
//!
//! Usage:
//!
//! ```text
//! bench_driver --requests FILE --policy NAME=COMMAND [--policy NAME=COMMAND]...
//!              [--prepare NAME=COMMAND]... [--runs N] [--warmup N] [--json OUT]
//!              [--timeout SECONDS] [--settle SECONDS] [--keep-env]
//!              [--first-reply-only N | --concurrency N[,N...] [--split]]
//! ```
//!
//! FILE holds request blocks back to back (each ended by an empty line). COMMAND is split on
//! white space; `{run}` in it becomes the run number (`w1`... for warm-up runs; the spawn
//! number with `--first-reply-only`), `{n}` the concurrency level and `{copy}` the copy
//! number, so that a command can take a fresh state directory per run. `--prepare` gives a
//! policy a command (same placeholders) run to completion, untimed, before each start of
//! the policy: to start a daemon it needs, so that a fresh store does not mean a cold one.
//!
//! Modes:
//! - stream (default): per run, one process per policy gets the whole stream, one request at
//!   a time, each written when the previous reply is complete; spawn-to-first-reply,
//!   latency p50/p99 (the first request excluded: it is the start-up), requests/s from the
//!   first to the last reply, CPU per request, peak RSS (VmHWM, read before EOF).
//! - `--first-reply-only N`: N processes per policy, one request each: the start-up cost that
//!   spawn(8) pays for every smtpd process.
//! - `--concurrency N,...`: N copies of each policy at once, each on the stream (or, with
//!   `--split`, on its own contiguous 1/N of it); total requests/s, p99, lost requests.
//!
//! Policies are interleaved run by run (A, B, A, B...) so that both see the same machine
//! state. The child gets the environment spawn(8) gives (PATH and LANG) unless `--keep-env`.
//! Exit status: 0 when every request got one well-formed reply, every process exited 0 at
//! EOF, left no descendant holding its stdout or stderr, and wrote nothing to stderr; 2
//! otherwise (after printing the results); 64 and up for usage and file errors.
//!
//! Helper processes: the driver makes itself a child subreaper, so a daemon a policy starts
//! and detaches (greyspf's store keeper) stays its descendant. Their CPU time is charged to
//! the policy that started them (helper CPU), their peak RSS shown apart (helper RSS): work
//! moved out of the measured process is still work, but it is shared by all instances.
//! `--settle` (default 2 s) waits after the last run for work a helper defers (a flush).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{self, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Barrier;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Options

struct Policy {
    name: String,
    words: Vec<String>,
    /// Run to completion before every start of the policy, untimed (see --prepare).
    prepare: Option<Vec<String>>,
}

enum Mode {
    Stream,
    FirstReply(usize),
    Concurrency(Vec<usize>),
}

struct Options {
    requests: PathBuf,
    runs: usize,
    warmup: usize,
    json: Option<PathBuf>,
    policies: Vec<Policy>,
    mode: Mode,
    split: bool,
    timeout: Duration,
    settle: Duration,
    keep_env: bool,
}

const USAGE: &str = "usage: bench_driver --requests FILE --policy NAME=COMMAND... \
[--prepare NAME=COMMAND]... [--runs N] [--warmup N] [--json OUT] [--timeout SECONDS] \
[--settle SECONDS] [--keep-env] [--first-reply-only N | --concurrency N[,N...] [--split]]";

fn usage_error(message: &str) -> ! {
    eprintln!("bench_driver: {message}\n{USAGE}");
    process::exit(64);
}

fn parse_number(flag: &str, value: &str) -> usize {
    value
        .parse()
        .unwrap_or_else(|_| usage_error(&format!("{flag} wants a number, not {value:?}")))
}

fn parse_options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut requests = None;
    let mut runs = 5;
    let mut warmup = 1;
    let mut json = None;
    let mut policies = Vec::new();
    let mut first_reply = None;
    let mut concurrency = None;
    let mut split = false;
    let mut timeout = Duration::from_secs(10);
    let mut settle = Duration::from_secs(2);
    let mut keep_env = false;
    let mut prepares: Vec<(String, Vec<String>)> = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage_error(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--requests" => requests = Some(PathBuf::from(value())),
            "--runs" => runs = parse_number("--runs", &value()),
            "--warmup" => warmup = parse_number("--warmup", &value()),
            "--json" => json = Some(PathBuf::from(value())),
            "--first-reply-only" => {
                first_reply = Some(parse_number("--first-reply-only", &value()))
            }
            "--concurrency" => {
                let levels: Vec<usize> = value()
                    .split(',')
                    .map(|v| parse_number("--concurrency", v.trim()))
                    .collect();
                concurrency = Some(levels);
            }
            "--split" => split = true,
            "--timeout" => timeout = parse_seconds("--timeout", &value()),
            "--settle" => settle = parse_seconds("--settle", &value()),
            "--keep-env" => keep_env = true,
            "--policy" => {
                let (name, words) = parse_command("--policy", &value());
                policies.push(Policy {
                    name,
                    words,
                    prepare: None,
                });
            }
            "--prepare" => prepares.push(parse_command("--prepare", &value())),
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let requests = requests.unwrap_or_else(|| usage_error("--requests is required"));
    if policies.is_empty() {
        usage_error("at least one --policy is required");
    }
    for (name, words) in prepares {
        let policy = policies
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| usage_error(&format!("--prepare for unknown policy {name:?}")));
        policy.prepare = Some(words);
    }
    let mode = match (first_reply, concurrency) {
        (Some(_), Some(_)) => usage_error("--first-reply-only and --concurrency are separate runs"),
        (Some(0), None) => usage_error("--first-reply-only needs at least 1"),
        (Some(n), None) => Mode::FirstReply(n),
        (None, Some(levels)) if levels.contains(&0) => {
            usage_error("--concurrency levels start at 1")
        }
        (None, Some(levels)) => Mode::Concurrency(levels),
        (None, None) => Mode::Stream,
    };
    if runs == 0 {
        usage_error("--runs must be at least 1");
    }
    if timeout.is_zero() {
        usage_error("--timeout must be positive");
    }
    Options {
        requests,
        runs,
        warmup,
        json,
        policies,
        mode,
        split,
        timeout,
        settle,
        keep_env,
    }
}

fn parse_seconds(flag: &str, value: &str) -> Duration {
    match value.parse::<f64>() {
        Ok(seconds) if (0.0..1e6).contains(&seconds) => Duration::from_secs_f64(seconds),
        _ => usage_error(&format!("{flag} wants seconds, not {value:?}")),
    }
}

/// `NAME=COMMAND WORDS...`, the command split on white space.
fn parse_command(flag: &str, value: &str) -> (String, Vec<String>) {
    let (name, command) = value
        .split_once('=')
        .unwrap_or_else(|| usage_error(&format!("{flag} wants NAME=COMMAND, not {value:?}")));
    let words: Vec<String> = command.split_whitespace().map(String::from).collect();
    if name.is_empty() || words.is_empty() {
        usage_error(&format!("{flag} wants NAME=COMMAND, not {value:?}"));
    }
    (name.to_string(), words)
}

// ---------------------------------------------------------------------------------------
// Request stream

/// Splits a stream into request blocks, each with its terminating empty line. Blank lines
/// between blocks are dropped (they are no request); an unterminated tail is reported and
/// dropped, since no policy could answer it.
fn split_blocks(data: &[u8]) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    for (i, &byte) in data.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        if i == line_start {
            if i > start {
                blocks.push(&data[start..=i]);
            }
            start = i + 1;
        }
        line_start = i + 1;
    }
    if data[start..].iter().any(|&b| b != b'\n') {
        eprintln!(
            "bench_driver: ignoring {} bytes after the last complete request block",
            data.len() - start
        );
    }
    blocks
}

// ---------------------------------------------------------------------------------------
// One policy process

/// Why a process stopped answering.
enum Stop {
    Timeout,
    Eof,
    Io(io::Error),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Timeout => f.write_str("timed out"),
            Stop::Eof => f.write_str("the process closed its output (exited?)"),
            Stop::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

struct Instance {
    pid: libc::pid_t,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    chunk: Box<[u8]>,
}

/// Gives a command the environment spawn(8) gives: PATH and LANG (and MAIL_CONFIG, which
/// no policy here reads). RUST_BACKTRACE and friends from a shell would change what a
/// policy does.
fn spawn_environment(command: &mut Command) {
    command.env_clear();
    command.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
    command.env(
        "LANG",
        std::env::var_os("LANG").unwrap_or_else(|| "C".into()),
    );
}

/// Replaces the placeholders of a command word.
fn expand(word: &str, vars: &[(&str, String)]) -> String {
    let mut word = word.to_string();
    for (name, value) in vars {
        word = word.replace(&format!("{{{name}}}"), value);
    }
    word
}

/// Runs a policy's prepare command (if any) to completion, with stdio on /dev/null so that
/// a daemon it leaves behind holds none of our pipes. Not timed.
fn prepare(policy: &Policy, vars: &[(&str, String)], options: &Options) -> Result<(), String> {
    let Some(words) = &policy.prepare else {
        return Ok(());
    };
    let words: Vec<String> = words.iter().map(|w| expand(w, vars)).collect();
    let mut command = Command::new(&words[0]);
    command
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !options.keep_env {
        spawn_environment(&mut command);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("prepare: cannot start {:?}: {e}", words[0]))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("prepare: {status}")),
            Ok(None) if started.elapsed() > options.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "prepare: still running after {:?}; killed",
                    options.timeout
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("prepare: {e}")),
        }
    }
}

impl Instance {
    /// Starts the policy process; the caller takes the time just before.
    ///
    /// The stderr reader thread and the read buffer are made first (the pipe is handed to
    /// the thread afterwards), so that their cost does not count as the policy's start-up.
    fn spawn(
        policy: &Policy,
        vars: &[(&str, String)],
        keep_env: bool,
    ) -> io::Result<(Instance, Instant)> {
        let words: Vec<String> = policy.words.iter().map(|w| expand(w, vars)).collect();
        let mut command = Command::new(&words[0]);
        command
            .args(&words[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !keep_env {
            spawn_environment(&mut command);
        }
        let (pipe_tx, pipe_rx) = mpsc::channel::<process::ChildStderr>();
        let (text_tx, text_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Ok(mut stderr) = pipe_rx.recv() {
                let _ = stderr.read_to_end(&mut text);
            }
            let _ = text_tx.send(text);
        });
        let chunk = vec![0; 64 * 1024].into_boxed_slice();
        let started = Instant::now();
        let mut child = command.spawn()?;
        let _ = pipe_tx.send(child.stderr.take().expect("stderr is piped"));
        // The process is reaped with wait4 (for its rusage), never through `child`.
        let instance = Instance {
            pid: child.id() as libc::pid_t,
            stdin: child.stdin.take(),
            stdout: child.stdout.take().expect("stdout is piped"),
            stderr: text_rx,
            pending: Vec::new(),
            chunk,
        };
        Ok((instance, started))
    }

    fn send(&mut self, block: &[u8]) -> Result<(), Stop> {
        // One write per request, as smtpd writes a whole request before it flushes.
        let stdin = self.stdin.as_mut().ok_or(Stop::Eof)?;
        stdin.write_all(block).map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                Stop::Eof
            } else {
                Stop::Io(e)
            }
        })
    }

    /// Waits for `timeout` at most for more output; Ok(false) at EOF.
    fn fill(&mut self, timeout: Duration) -> Result<bool, Stop> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, millis) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Stop::Io(error));
            }
            if ready == 0 {
                return Err(Stop::Timeout);
            }
            match self.stdout.read(&mut self.chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pending.extend_from_slice(&self.chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Stop::Io(e)),
            }
        }
    }

    /// Reads one reply: everything up to and including the first empty line.
    fn reply(&mut self, timeout: Duration) -> Result<Vec<u8>, Stop> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            // A reply that opens with an empty line is an empty attribute list: smtpd would
            // take it as a malformed answer, so it is returned (and judged) as it is.
            if self.pending.first() == Some(&b'\n') {
                return Ok(self.pending.drain(..1).collect());
            }
            if let Some(at) = self.pending[scanned..]
                .windows(2)
                .position(|w| w == b"\n\n")
            {
                let end = scanned + at + 2;
                return Ok(self.pending.drain(..end).collect());
            }
            scanned = self.pending.len().saturating_sub(1);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::Timeout);
            }
            if !self.fill(left)? {
                return Err(Stop::Eof);
            }
        }
    }
}

/// What the end of a process showed.
#[derive(Default)]
struct Exit {
    /// Exit code, or 128 + signal; None when it had to be killed.
    status: Option<i32>,
    exit_ms: f64,
    cpu_us: f64,
    ru_maxrss_kib: u64,
    stderr: Vec<u8>,
    problems: Vec<String>,
}

/// Closes stdin (the EOF smtpd gives when it goes away), waits for the exit and collects
/// rusage, stderr and whatever else the process left behind.
fn finish(mut instance: Instance, timeout: Duration) -> Exit {
    let mut exit = Exit::default();
    drop(instance.stdin.take());
    let closed = Instant::now();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; it is only read after wait4 filled it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut waited = false;
    let mut pause = Duration::from_micros(50);
    while closed.elapsed() < timeout {
        // SAFETY: pointers to locals; the pid is our own child.
        let got = unsafe { libc::wait4(instance.pid, &mut status, libc::WNOHANG, &mut usage) };
        if got == instance.pid {
            waited = true;
            break;
        }
        if got < 0 {
            exit.problems
                .push(format!("wait4: {}", io::Error::last_os_error()));
            break;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    if !waited {
        exit.problems
            .push(format!("did not exit within {timeout:?} of EOF; killed"));
        // SAFETY: plain syscalls on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(instance.pid, libc::SIGKILL);
            libc::wait4(instance.pid, &mut status, 0, &mut usage);
        }
    } else {
        exit.exit_ms = closed.elapsed().as_secs_f64() * 1e3;
        exit.status = Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        });
        if exit.status != Some(0) {
            exit.problems
                .push(format!("exit status {}", exit.status.unwrap_or(-1)));
        }
    }
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    exit.cpu_us = micros(usage.ru_utime) + micros(usage.ru_stime);
    exit.ru_maxrss_kib = usage.ru_maxrss.max(0) as u64;
    // After the exit, stdout must reach EOF at once. If it does not, a descendant still
    // holds the pipe: under spawn(8) that is the smtpd socket, which must never leak.
    if !instance.pending.is_empty() {
        exit.problems.push(format!(
            "{} bytes of output nobody asked for",
            instance.pending.len()
        ));
    }
    match instance.fill(Duration::from_millis(500)) {
        Ok(false) => {}
        Ok(true) => exit.problems.push(format!(
            "{} bytes of output after the last reply",
            instance.pending.len()
        )),
        Err(Stop::Timeout) => exit
            .problems
            .push("stdout still open after exit (inherited by another process)".into()),
        Err(e) => exit
            .problems
            .push(format!("reading stdout after exit: {e}")),
    }
    match instance.stderr.recv_timeout(Duration::from_millis(500)) {
        Ok(text) => exit.stderr = text,
        Err(RecvTimeoutError::Timeout) => exit
            .problems
            .push("stderr still open after exit (inherited by another process)".into()),
        Err(RecvTimeoutError::Disconnected) => {}
    }
    if !exit.stderr.is_empty() {
        let text = String::from_utf8_lossy(&exit.stderr);
        let first = text.lines().next().unwrap_or("");
        exit.problems.push(format!(
            "wrote {} bytes to stderr, first line: {:?}",
            exit.stderr.len(),
            first.chars().take(200).collect::<String>()
        ));
    }
    exit
}

/// Peak and current resident set of a live process, in KiB, from /proc.
fn memory_kib(pid: libc::pid_t) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

// ---------------------------------------------------------------------------------------
// Reply grammar

/// Judges one reply against what smtpd accepts: exactly `action=<value>\n\n`, LF only.
/// Returns the action keyword (upper case) or what is wrong.
fn judge(reply: &[u8]) -> Result<String, String> {
    let Some(body) = reply.strip_suffix(b"\n\n") else {
        return Err("empty attribute list".into());
    };
    let Ok(body) = std::str::from_utf8(body) else {
        return Err("not UTF-8".into());
    };
    if body.contains('\r') {
        return Err("CR in reply (smtpd would wait for its timeout)".into());
    }
    if body.contains('\n') {
        return Err("more than one line".into());
    }
    let Some(value) = body.strip_prefix("action=") else {
        return Err(format!(
            "not an action line: {:?}",
            body.chars().take(80).collect::<String>()
        ));
    };
    let keyword = value.split_whitespace().next().unwrap_or("");
    if keyword.is_empty() {
        // An empty action accepts the mail in Postfix: never acceptable.
        return Err("empty action".into());
    }
    Ok(keyword.to_ascii_uppercase())
}

// ---------------------------------------------------------------------------------------
// Measurements

#[derive(Default)]
struct RunResult {
    requests: usize,
    replies: usize,
    malformed: usize,
    malformed_examples: Vec<String>,
    unanswered: usize,
    first_reply_ms: Option<f64>,
    /// Per-request latency in nanoseconds, first request excluded.
    latencies_ns: Vec<u64>,
    /// From the first reply to the last one.
    stream_secs: f64,
    /// When the last reply came, for batch throughput.
    last_reply_at: Option<Instant>,
    started_at: Option<Instant>,
    actions: BTreeMap<String, usize>,
    hwm_kib: Option<u64>,
    rss_kib: Option<u64>,
    exit: Exit,
    stop: Option<String>,
}

impl RunResult {
    fn requests_per_second(&self) -> Option<f64> {
        (self.replies > 1 && self.stream_secs > 0.0)
            .then(|| (self.replies - 1) as f64 / self.stream_secs)
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(stop) = &self.stop {
            problems.push(stop.clone());
        }
        if self.malformed > 0 {
            problems.push(format!(
                "{} malformed replies, e.g. {}",
                self.malformed,
                self.malformed_examples.join("; ")
            ));
        }
        problems.extend(self.exit.problems.iter().cloned());
        problems
    }
}

/// Feeds `blocks` to one new process of `policy`, one at a time, and measures.
fn run_stream(
    policy: &Policy,
    blocks: &[&[u8]],
    vars: &[(&str, String)],
    options: &Options,
    barrier: Option<&Barrier>,
) -> RunResult {
    let mut result = RunResult {
        requests: blocks.len(),
        ..RunResult::default()
    };
    if let Some(barrier) = barrier {
        barrier.wait();
    }
    let (mut instance, started) = match Instance::spawn(policy, vars, options.keep_env) {
        Ok(spawned) => spawned,
        Err(e) => {
            result.unanswered = blocks.len();
            result.stop = Some(format!("cannot start {:?}: {e}", policy.words[0]));
            return result;
        }
    };
    result.started_at = Some(started);
    let mut first_at = None;
    result.latencies_ns.reserve(blocks.len());
    for (index, block) in blocks.iter().enumerate() {
        let sent = Instant::now();
        let outcome = instance
            .send(block)
            .and_then(|()| instance.reply(options.timeout));
        let now = Instant::now();
        match outcome {
            Ok(reply) => {
                result.replies += 1;
                // More output already there is an answer to a request not yet sent: smtpd
                // would take it as the reply to the next one and stay out of step.
                let verdict = if instance.pending.is_empty() {
                    judge(&reply)
                } else {
                    instance.pending.clear();
                    Err("more output than one reply".to_string())
                };
                match verdict {
                    Ok(keyword) => *result.actions.entry(keyword).or_default() += 1,
                    Err(why) => {
                        result.malformed += 1;
                        if result.malformed_examples.len() < 3 {
                            result
                                .malformed_examples
                                .push(format!("request {}: {why}", index + 1));
                        }
                    }
                }
                if index == 0 {
                    result.first_reply_ms = Some((now - started).as_secs_f64() * 1e3);
                    first_at = Some(now);
                } else {
                    result.latencies_ns.push((now - sent).as_nanos() as u64);
                }
                result.last_reply_at = Some(now);
            }
            Err(stop) => {
                result.unanswered = blocks.len() - index;
                result.stop = Some(format!("no reply to request {}: {stop}", index + 1));
                if matches!(stop, Stop::Timeout) {
                    // SAFETY: our own child, not reaped yet.
                    unsafe { libc::kill(instance.pid, libc::SIGKILL) };
                }
                break;
            }
        }
    }
    if let (Some(first), Some(last)) = (first_at, result.last_reply_at) {
        result.stream_secs = (last - first).as_secs_f64();
    }
    // Read before EOF: the process is still alive and its peak is final for this stream.
    if let Some((hwm, rss)) = memory_kib(instance.pid) {
        result.hwm_kib = Some(hwm);
        result.rss_kib = Some(rss);
    }
    result.exit = finish(instance, options.timeout);
    result
}

// ---------------------------------------------------------------------------------------
// Helper processes (descendants a policy started, such as a store keeper)

/// CPU time and memory of helper processes, charged to the policy that started them.
///
/// Each look lists the driver's descendants. A process first seen right after a run of
/// policy P belongs to P; the CPU time a helper used between two looks is charged to the run
/// of its owner that is open at the second look (its latest run), so work a daemon defers
/// past the end of a run (a flush) still lands on that run, and never on another policy.
struct Ledger {
    tick_us: f64,
    /// (pid, start time) -> (CPU ticks at the last look, owner). The start time keeps a
    /// recycled pid from passing for the same process.
    known: BTreeMap<(i32, u64), (u64, usize)>,
    /// Per owner: CPU microseconds of each measured run, and which run is open.
    cpu_us: BTreeMap<usize, Vec<f64>>,
    open: BTreeMap<usize, Option<usize>>,
    peak_kib: BTreeMap<usize, u64>,
}

impl Ledger {
    fn new() -> Ledger {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ledger {
            tick_us: 1e6 / ticks_per_second,
            known: BTreeMap::new(),
            cpu_us: BTreeMap::new(),
            open: BTreeMap::new(),
            peak_kib: BTreeMap::new(),
        }
    }

    /// Opens a new run for `owner` (None for a warm-up run, whose helper time is dropped).
    fn open_run(&mut self, owner: usize, measured: bool) {
        let runs = self.cpu_us.entry(owner).or_default();
        let slot = measured.then(|| {
            runs.push(0.0);
            runs.len() - 1
        });
        self.open.insert(owner, slot);
    }

    /// Looks at the descendants and charges the CPU time used since the last look. New
    /// processes belong to `owner`; `after_run` says whether they started during a run (and
    /// their whole time is the run's) or before it (a prepare step: only later time counts).
    fn look(&mut self, owner: usize, after_run: bool) {
        let mut seen = BTreeMap::new();
        for (key, ticks) in descendants() {
            let (before, who) = match self.known.get(&key) {
                Some(&(then, who)) => (then, who),
                None if after_run => (0, owner),
                None => (ticks, owner),
            };
            let used = ticks.saturating_sub(before) as f64 * self.tick_us;
            if let Some(Some(run)) = self.open.get(&who) {
                self.cpu_us.get_mut(&who).expect("opened")[*run] += used;
            }
            if let Some((hwm, _)) = memory_kib(key.0) {
                let peak = self.peak_kib.entry(who).or_default();
                *peak = (*peak).max(hwm);
            }
            seen.insert(key, (ticks, who));
        }
        // Helpers that exited since are forgotten: their last ticks were charged already.
        self.known = seen;
    }

    fn runs(&self, owner: usize) -> &[f64] {
        self.cpu_us.get(&owner).map_or(&[], Vec::as_slice)
    }

    fn peak(&self, owner: usize) -> Option<u64> {
        self.peak_kib.get(&owner).copied()
    }

    fn has_helpers(&self) -> bool {
        !self.known.is_empty()
    }
}

/// CPU ticks (user + system) of every descendant of this process, keyed by pid and start
/// time.
fn descendants() -> BTreeMap<(i32, u64), u64> {
    let me = process::id() as i32;
    let mut parent = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rfind(')').and_then(|at| stat.get(at + 2..)) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19).
        let number = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        parent.insert(pid, number(1) as i32);
        samples.insert((pid, number(19)), number(11) + number(12));
    }
    samples.retain(|&(pid, _), _| {
        let mut at = pid;
        // Bounded walk: the table is a snapshot and could in theory hold a cycle.
        for _ in 0..64 {
            match parent.get(&at) {
                Some(&p) if p == me => return true,
                Some(&p) if p > 1 => at = p,
                _ => return false,
            }
        }
        false
    });
    samples
}

// ---------------------------------------------------------------------------------------
// Statistics

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least p of the samples at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn percentile_f(values: &mut [f64], p: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return None;
    }
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

// ---------------------------------------------------------------------------------------
// JSON (std only, so a tiny writer)

enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn obj(fields: Vec<(&str, Json)>) -> Json {
        Json::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn opt(value: Option<f64>) -> Json {
        value.map_or(Json::Null, Json::Num)
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) if n.is_finite() => {
                let rounded = (n * 1000.0).round() / 1000.0;
                let _ = write!(out, "{rounded}");
            }
            Json::Num(_) => out.push_str("null"),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    item.write(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (i, (key, value)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    Json::Str(key.clone()).write(out, indent + 2);
                    out.push_str(": ");
                    value.write(out, indent + 2);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn machine() -> Json {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json::obj(vec![
        ("cpus", Json::Int(cpus as i64)),
        ("cpu_model", Json::Str(cpu)),
        ("kernel", Json::Str(kernel)),
        ("unix_time", Json::Int(now as i64)),
    ])
}

fn run_json(run: &RunResult, helper_cpu_us: Option<f64>) -> Json {
    let mut sorted = run.latencies_ns.clone();
    sorted.sort_unstable();
    let micros = |ns: Option<u64>| Json::opt(ns.map(|n| n as f64 / 1e3));
    Json::obj(vec![
        ("helper_cpu_us", Json::opt(helper_cpu_us)),
        ("requests", Json::Int(run.requests as i64)),
        ("replies", Json::Int(run.replies as i64)),
        ("malformed", Json::Int(run.malformed as i64)),
        ("unanswered", Json::Int(run.unanswered as i64)),
        ("first_reply_ms", Json::opt(run.first_reply_ms)),
        ("latency_p50_us", micros(percentile(&sorted, 0.50))),
        ("latency_p99_us", micros(percentile(&sorted, 0.99))),
        ("latency_max_us", micros(sorted.last().copied())),
        ("requests_per_second", Json::opt(run.requests_per_second())),
        ("cpu_us", Json::Num(run.exit.cpu_us)),
        (
            "cpu_us_per_request",
            Json::opt((run.requests > 0).then(|| run.exit.cpu_us / run.requests as f64)),
        ),
        ("peak_rss_kib", Json::opt(run.hwm_kib.map(|k| k as f64))),
        ("rss_at_end_kib", Json::opt(run.rss_kib.map(|k| k as f64))),
        // Linux charges the pre-exec image of a vfork-style spawn to the child's maxrss, so
        // this can show the driver's size: peak_rss_kib (VmHWM) is the figure to use.
        ("ru_maxrss_kib", Json::Int(run.exit.ru_maxrss_kib as i64)),
        (
            "exit_status",
            run.exit.status.map_or(Json::Null, |s| Json::Int(s as i64)),
        ),
        ("exit_after_eof_ms", Json::Num(run.exit.exit_ms)),
        ("stderr_bytes", Json::Int(run.exit.stderr.len() as i64)),
        (
            "stderr",
            Json::Str(
                String::from_utf8_lossy(&run.exit.stderr[..run.exit.stderr.len().min(4096)])
                    .into_owned(),
            ),
        ),
        (
            "actions",
            Json::Obj(
                run.actions
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::Int(*v as i64)))
                    .collect(),
            ),
        ),
        (
            "problems",
            Json::Arr(run.problems().into_iter().map(Json::Str).collect()),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// Modes

/// Everything measured for one policy in one mode.
struct Report {
    name: String,
    command: String,
    summary: Vec<(&'static str, Json)>,
    /// Cells of the Markdown table row, in the order of the mode's header.
    row: Vec<String>,
    runs: Vec<Json>,
    /// Each distinct problem with the runs that showed it, so that one fault repeated in
    /// every run reads as one line.
    problems: BTreeMap<String, Vec<String>>,
    /// Reply keywords of the measured runs: shows at a glance whether the policy did the
    /// work it was meant to (greylisted, passed, prepended) rather than just answering.
    actions: BTreeMap<String, usize>,
}

impl Report {
    fn new(policy: &Policy) -> Report {
        Report {
            name: policy.name.clone(),
            command: policy.words.join(" "),
            summary: Vec::new(),
            row: Vec::new(),
            runs: Vec::new(),
            problems: BTreeMap::new(),
            actions: BTreeMap::new(),
        }
    }

    /// Records a run's problems (warm-up runs too: a fault is a fault) and, for measured
    /// runs, its replies.
    fn absorb(&mut self, label: &str, run: &RunResult, measured: bool) {
        for problem in run.problems() {
            self.problems
                .entry(problem)
                .or_default()
                .push(label.to_string());
        }
        if measured {
            for (action, count) in &run.actions {
                *self.actions.entry(action.clone()).or_default() += count;
            }
        }
    }

    /// Records a problem outside any run (a failed prepare step).
    fn note(&mut self, label: &str, problem: String) {
        self.problems
            .entry(problem)
            .or_default()
            .push(label.to_string());
    }

    fn problem_lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|(problem, labels)| {
                let shown: Vec<&str> = labels.iter().take(5).map(String::as_str).collect();
                let more = if labels.len() > 5 {
                    format!(", ... ({} in all)", labels.len())
                } else {
                    String::new()
                };
                format!("{problem} [{}{more}]", shown.join(", "))
            })
            .collect()
    }
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// The label of a round: `w1`... for warm-up rounds, then `1`, `2`...
fn round_label(round: usize, warmup: usize) -> (String, bool) {
    if round < warmup {
        (format!("w{}", round + 1), false)
    } else {
        (format!("{}", round - warmup + 1), true)
    }
}

fn stream_mode(options: &Options, blocks: &[&[u8]]) -> (Vec<&'static str>, Vec<Report>) {
    let mut ledger = Ledger::new();
    let mut results: Vec<Vec<RunResult>> = options.policies.iter().map(|_| Vec::new()).collect();
    let mut reports: Vec<Report> = options.policies.iter().map(Report::new).collect();
    for round in 0..options.warmup + options.runs {
        let (label, measured) = round_label(round, options.warmup);
        for (index, policy) in options.policies.iter().enumerate() {
            let vars = [("run", label.clone())];
            if let Err(problem) = prepare(policy, &vars, options) {
                reports[index].note(&format!("run {label}"), problem);
            }
            ledger.look(index, false);
            let run = run_stream(policy, blocks, &vars, options, None);
            ledger.open_run(index, measured);
            ledger.look(index, true);
            eprintln!(
                "bench_driver: {} run {label}{}: {} replies, {} req/s, first reply {} ms",
                policy.name,
                if measured { "" } else { " (warm-up)" },
                run.replies,
                cell(run.requests_per_second(), 0),
                cell(run.first_reply_ms, 2)
            );
            reports[index].absorb(&format!("run {label}"), &run, measured);
            if measured {
                results[index].push(run);
            }
        }
    }
    settle(&mut ledger, options);
    for (index, (report, runs)) in reports.iter_mut().zip(&results).enumerate() {
        let helper_us = ledger.runs(index);
        for (run, helper) in runs.iter().zip(helper_us) {
            report.runs.push(run_json(run, Some(*helper)));
        }
        let mut all: Vec<u64> = runs
            .iter()
            .flat_map(|r| r.latencies_ns.iter().copied())
            .collect();
        all.sort_unstable();
        let micros = |p: f64| percentile(&all, p).map(|ns| ns as f64 / 1e3);
        let mut first: Vec<f64> = runs.iter().filter_map(|r| r.first_reply_ms).collect();
        let mut rates: Vec<f64> = runs
            .iter()
            .filter_map(RunResult::requests_per_second)
            .collect();
        let mut cpu: Vec<f64> = runs
            .iter()
            .map(|r| r.exit.cpu_us / r.requests.max(1) as f64)
            .collect();
        let mut helper: Vec<f64> = runs
            .iter()
            .zip(helper_us)
            .map(|(r, h)| h / r.requests.max(1) as f64)
            .collect();
        let peak = runs
            .iter()
            .filter_map(|r| r.hwm_kib)
            .max()
            .map(|k| k as f64);
        let helper_peak = ledger.peak(index).map(|k| k as f64);
        let bad: usize = runs.iter().map(|r| r.malformed + r.unanswered).sum();
        let stderr: usize = runs.iter().map(|r| r.exit.stderr.len()).sum();
        let (first, rate, cpu, helper) = (
            median(&mut first),
            median(&mut rates),
            median(&mut cpu),
            median(&mut helper),
        );
        let (p50, p99) = (micros(0.50), micros(0.99));
        report.summary = vec![
            ("runs", Json::Int(runs.len() as i64)),
            ("requests_per_run", Json::Int(blocks.len() as i64)),
            ("first_reply_ms_median", Json::opt(first)),
            ("latency_p50_us", Json::opt(p50)),
            ("latency_p99_us", Json::opt(p99)),
            ("requests_per_second_median", Json::opt(rate)),
            ("cpu_us_per_request_median", Json::opt(cpu)),
            ("helper_cpu_us_per_request_median", Json::opt(helper)),
            ("peak_rss_kib_max", Json::opt(peak)),
            ("helper_peak_rss_kib_max", Json::opt(helper_peak)),
            ("bad_or_missing_replies", Json::Int(bad as i64)),
            ("stderr_bytes", Json::Int(stderr as i64)),
        ];
        report.row = vec![
            cell(first, 2),
            cell(p50, 1),
            cell(p99, 1),
            cell(rate, 0),
            cell(cpu, 1),
            cell(helper, 1),
            cell(peak, 0),
            cell(helper_peak, 0),
            bad.to_string(),
            stderr.to_string(),
        ];
    }
    let header = vec![
        "first reply ms",
        "p50 µs",
        "p99 µs",
        "req/s",
        "CPU µs/req",
        "helper CPU µs/req",
        "peak RSS KiB",
        "helper RSS KiB",
        "bad replies",
        "stderr bytes",
    ];
    (header, reports)
}

/// Gives helpers a moment to finish work they deferred past the last run (a periodic
/// flush), then charges it.
fn settle(ledger: &mut Ledger, options: &Options) {
    ledger.look(usize::MAX, false);
    if ledger.has_helpers() {
        thread::sleep(options.settle);
        ledger.look(usize::MAX, false);
    }
}

fn first_reply_mode(
    options: &Options,
    blocks: &[&[u8]],
    spawns: usize,
) -> (Vec<&'static str>, Vec<Report>) {
    let mut reports: Vec<Report> = options.policies.iter().map(Report::new).collect();
    let mut first: Vec<Vec<f64>> = vec![Vec::new(); options.policies.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); options.policies.len()];
    let mut peak: Vec<Vec<f64>> = vec![Vec::new(); options.policies.len()];
    let mut bad = vec![0usize; options.policies.len()];
    let mut stderr = vec![0usize; options.policies.len()];
    for round in 0..options.warmup + spawns {
        let (label, measured) = round_label(round, options.warmup);
        // Successive spawns take successive requests, so no one triplet is favoured.
        let block = blocks[round % blocks.len()];
        for (index, policy) in options.policies.iter().enumerate() {
            let vars = [("run", label.clone())];
            if let Err(problem) = prepare(policy, &vars, options) {
                reports[index].note(&format!("spawn {label}"), problem);
            }
            let run = run_stream(policy, &[block], &vars, options, None);
            reports[index].absorb(&format!("spawn {label}"), &run, measured);
            if !measured {
                continue;
            }
            if let Some(ms) = run.first_reply_ms {
                first[index].push(ms);
            }
            cpu[index].push(run.exit.cpu_us / 1e3);
            if let Some(kib) = run.hwm_kib {
                peak[index].push(kib as f64);
            }
            bad[index] += run.malformed + run.unanswered;
            stderr[index] += run.exit.stderr.len();
            reports[index].runs.push(Json::obj(vec![
                ("first_reply_ms", Json::opt(run.first_reply_ms)),
                ("cpu_ms", Json::Num(run.exit.cpu_us / 1e3)),
                ("peak_rss_kib", Json::opt(run.hwm_kib.map(|k| k as f64))),
                ("exit_after_eof_ms", Json::Num(run.exit.exit_ms)),
            ]));
        }
    }
    for (index, report) in reports.iter_mut().enumerate() {
        let values = &mut first[index];
        let (med, p90) = (median(values), percentile_f(values, 0.90));
        let (min, max) = (values.first().copied(), values.last().copied());
        let cpu = median(&mut cpu[index]);
        let rss = median(&mut peak[index]);
        report.summary = vec![
            ("spawns", Json::Int(values.len() as i64)),
            ("first_reply_ms_median", Json::opt(med)),
            ("first_reply_ms_p90", Json::opt(p90)),
            ("first_reply_ms_min", Json::opt(min)),
            ("first_reply_ms_max", Json::opt(max)),
            ("cpu_ms_per_process_median", Json::opt(cpu)),
            ("peak_rss_kib_median", Json::opt(rss)),
            ("bad_or_missing_replies", Json::Int(bad[index] as i64)),
            ("stderr_bytes", Json::Int(stderr[index] as i64)),
        ];
        report.row = vec![
            values.len().to_string(),
            cell(med, 2),
            cell(p90, 2),
            cell(min, 2),
            cell(max, 2),
            cell(cpu, 2),
            cell(rss, 0),
            bad[index].to_string(),
            stderr[index].to_string(),
        ];
    }
    let header = vec![
        "spawns",
        "first reply ms (median)",
        "p90 ms",
        "min ms",
        "max ms",
        "CPU ms/process",
        "peak RSS KiB",
        "bad replies",
        "stderr bytes",
    ];
    (header, reports)
}

fn concurrency_mode(
    options: &Options,
    blocks: &[&[u8]],
    levels: &[usize],
) -> (Vec<&'static str>, Vec<Report>) {
    /// One table row: a policy at one concurrency level.
    struct Row {
        copies: usize,
        rates: Vec<f64>,
        latencies: Vec<u64>,
        lost: usize,
        requests: usize,
        peak_kib: Option<u64>,
        stderr: usize,
        batches: Vec<(Option<f64>, Vec<RunResult>)>,
    }
    let mut ledger = Ledger::new();
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for &copies in levels {
        for policy in &options.policies {
            let mut report = Report::new(policy);
            report.name = format!("{} ×{copies}", policy.name);
            reports.push(report);
            rows.push(Row {
                copies,
                rates: Vec::new(),
                latencies: Vec::new(),
                lost: 0,
                requests: 0,
                peak_kib: None,
                stderr: 0,
                batches: Vec::new(),
            });
        }
    }
    for (level, &copies) in levels.iter().enumerate() {
        // Each copy's share: the whole stream, or a contiguous slice that keeps the
        // requests of one message together except at the seams.
        let shares: Vec<&[&[u8]]> = (0..copies)
            .map(|copy| {
                if options.split {
                    &blocks[copy * blocks.len() / copies..(copy + 1) * blocks.len() / copies]
                } else {
                    blocks
                }
            })
            .collect();
        for round in 0..options.warmup + options.runs {
            let (label, measured) = round_label(round, options.warmup);
            for (index, policy) in options.policies.iter().enumerate() {
                let owner = level * options.policies.len() + index;
                let base = [("run", label.clone()), ("n", copies.to_string())];
                if let Err(problem) = prepare(policy, &base, options) {
                    reports[owner].note(&format!("run {label}"), problem);
                }
                ledger.look(owner, false);
                let barrier = Barrier::new(copies + 1);
                let runs: Vec<RunResult> = thread::scope(|scope| {
                    let handles: Vec<_> = shares
                        .iter()
                        .enumerate()
                        .map(|(copy, share)| {
                            let barrier = &barrier;
                            let mut vars = base.to_vec();
                            vars.push(("copy", (copy + 1).to_string()));
                            scope.spawn(move || {
                                run_stream(policy, share, &vars, options, Some(barrier))
                            })
                        })
                        .collect();
                    barrier.wait();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("worker thread"))
                        .collect()
                });
                ledger.open_run(owner, measured);
                ledger.look(owner, true);
                // Throughput of the whole batch: every reply, from the first spawn to the
                // last reply, start-up included (it is part of what N processes cost).
                let start = runs.iter().filter_map(|r| r.started_at).min();
                let end = runs.iter().filter_map(|r| r.last_reply_at).max();
                let replies: usize = runs.iter().map(|r| r.replies).sum();
                let rate = match (start, end) {
                    (Some(s), Some(e)) if e > s => Some(replies as f64 / (e - s).as_secs_f64()),
                    _ => None,
                };
                eprintln!(
                    "bench_driver: {} ×{copies} run {label}{}: {replies} replies, {} req/s in all",
                    policy.name,
                    if measured { "" } else { " (warm-up)" },
                    cell(rate, 0)
                );
                for (copy, run) in runs.iter().enumerate() {
                    reports[owner].absorb(&format!("run {label} copy {}", copy + 1), run, measured);
                }
                if measured {
                    let row = &mut rows[owner];
                    row.rates.extend(rate);
                    for run in &runs {
                        row.latencies.extend_from_slice(&run.latencies_ns);
                        row.lost += run.malformed + run.unanswered;
                        row.requests += run.requests;
                        row.peak_kib = row.peak_kib.max(run.hwm_kib);
                        row.stderr += run.exit.stderr.len();
                    }
                    row.batches.push((rate, runs));
                }
            }
        }
    }
    settle(&mut ledger, options);
    for (owner, (report, row)) in reports.iter_mut().zip(&mut rows).enumerate() {
        let helper_us = ledger.runs(owner);
        for ((rate, runs), helper) in row.batches.iter().zip(helper_us) {
            report.runs.push(Json::obj(vec![
                ("requests_per_second", Json::opt(*rate)),
                ("helper_cpu_us", Json::Num(*helper)),
                (
                    "copies",
                    Json::Arr(runs.iter().map(|r| run_json(r, None)).collect()),
                ),
            ]));
        }
        row.latencies.sort_unstable();
        let micros = |p: f64| percentile(&row.latencies, p).map(|ns| ns as f64 / 1e3);
        let (p50, p99) = (micros(0.50), micros(0.99));
        let rate = median(&mut row.rates);
        let helper_total: f64 = helper_us.iter().sum();
        let helper = (row.requests > 0).then(|| helper_total / row.requests as f64);
        let helper_peak = ledger.peak(owner).map(|k| k as f64);
        let peak = row.peak_kib.map(|k| k as f64);
        report.summary = vec![
            ("copies", Json::Int(row.copies as i64)),
            ("split", Json::Bool(options.split)),
            ("runs", Json::Int(options.runs as i64)),
            ("requests_all_runs", Json::Int(row.requests as i64)),
            ("requests_per_second_median", Json::opt(rate)),
            ("latency_p50_us", Json::opt(p50)),
            ("latency_p99_us", Json::opt(p99)),
            ("no_well_formed_reply", Json::Int(row.lost as i64)),
            ("peak_rss_kib_max_per_copy", Json::opt(peak)),
            ("helper_cpu_us_per_request", Json::opt(helper)),
            ("helper_peak_rss_kib_max", Json::opt(helper_peak)),
            ("stderr_bytes", Json::Int(row.stderr as i64)),
        ];
        report.row = vec![
            row.copies.to_string(),
            cell(rate, 0),
            cell(p50, 1),
            cell(p99, 1),
            row.lost.to_string(),
            cell(peak, 0),
            cell(helper, 1),
            cell(helper_peak, 0),
            row.stderr.to_string(),
        ];
    }
    let header = vec![
        "copies",
        "req/s in all",
        "p50 µs",
        "p99 µs",
        "no well-formed reply",
        "peak RSS KiB per copy",
        "helper CPU µs/req",
        "helper RSS KiB",
        "stderr bytes",
    ];
    (header, reports)
}

// ---------------------------------------------------------------------------------------

fn main() {
    let options = parse_options();
    let data = fs::read(&options.requests).unwrap_or_else(|e| {
        eprintln!("bench_driver: {}: {e}", options.requests.display());
        process::exit(66);
    });
    let blocks = split_blocks(&data);
    if blocks.is_empty() {
        eprintln!(
            "bench_driver: {}: no request blocks",
            options.requests.display()
        );
        process::exit(65);
    }
    // Become the reaper of orphaned descendants, so that a daemon a policy starts and
    // detaches stays visible (and accountable) as our descendant.
    // SAFETY: prctl with an integer argument; failure only loses helper accounting.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };

    let (mode_name, (header, reports)) = match &options.mode {
        Mode::Stream => ("stream", stream_mode(&options, &blocks)),
        Mode::FirstReply(n) => ("first-reply-only", first_reply_mode(&options, &blocks, *n)),
        Mode::Concurrency(levels) => ("concurrency", concurrency_mode(&options, &blocks, levels)),
    };

    let mut table = String::new();
    let _ = writeln!(table, "| policy | {} |", header.join(" | "));
    let _ = writeln!(table, "|---|{}", "---:|".repeat(header.len()));
    for report in &reports {
        let _ = writeln!(table, "| {} | {} |", report.name, report.row.join(" | "));
    }
    print!("{table}");
    // What the policies answered: a fast policy that answers the wrong thing is no result.
    let replies: Vec<String> = reports
        .iter()
        .map(|report| {
            let actions: Vec<String> = report
                .actions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            format!("{}: {}", report.name, actions.join(", "))
        })
        .collect();
    println!("\nReplies (measured runs): {}.", replies.join("; "));
    let mut problems = 0;
    for report in &reports {
        for line in report.problem_lines() {
            problems += 1;
            println!("PROBLEM {}: {line}", report.name);
        }
    }

    if let Some(path) = &options.json {
        let (runs_label, runs_value) = match &options.mode {
            Mode::FirstReply(n) => ("spawns", *n),
            _ => ("runs", options.runs),
        };
        let document = Json::obj(vec![
            ("mode", Json::Str(mode_name.into())),
            (
                "requests_file",
                Json::Str(options.requests.display().to_string()),
            ),
            ("request_blocks", Json::Int(blocks.len() as i64)),
            (runs_label, Json::Int(runs_value as i64)),
            ("warmup", Json::Int(options.warmup as i64)),
            ("machine", machine()),
            ("table_markdown", Json::Str(table.clone())),
            (
                "policies",
                Json::Arr(
                    reports
                        .into_iter()
                        .map(|r| {
                            let problems = r.problem_lines().into_iter().map(Json::Str).collect();
                            let mut fields = vec![
                                ("name".to_string(), Json::Str(r.name)),
                                ("command".to_string(), Json::Str(r.command)),
                            ];
                            fields.extend(r.summary.into_iter().map(|(k, v)| (k.to_string(), v)));
                            fields.push((
                                "actions".into(),
                                Json::Obj(
                                    r.actions
                                        .into_iter()
                                        .map(|(k, v)| (k, Json::Int(v as i64)))
                                        .collect(),
                                ),
                            ));
                            fields.push(("problems".into(), Json::Arr(problems)));
                            fields.push(("runs".into(), Json::Arr(r.runs)));
                            Json::Obj(fields)
                        })
                        .collect(),
                ),
            ),
        ]);
        let mut text = String::new();
        document.write(&mut text, 0);
        text.push('\n');
        if let Err(e) = fs::write(path, text) {
            eprintln!("bench_driver: {}: {e}", path.display());
            process::exit(73);
        }
    }
    process::exit(if problems == 0 { 0 } else { 2 });
}
