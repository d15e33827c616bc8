//! tcp_driver: feeds policy daemons over TCP, as smtpd processes do, and measures them side
//! by side.
//!
//! ```text
//! tcp_driver --requests FILE --target NAME=ADDRESS:PORT [--target ...]
//!            [--prepare NAME=COMMAND]... [--pidfile NAME=FILE]... [--settle-ms N]
//!            [--ratio rate:A/B]... [--ratio cpu:A/B]... [--connections N[,N...]] [--runs N]
//! ```
//!
//! For each number of connections N and each run, every target in turn (interleaved, so
//! that all see the same machine state) gets the request stream split into N contiguous
//! parts, one per connection, all started together; each connection writes one request,
//! waits for the whole reply, then writes the next, as smtpd does. `--prepare` runs a
//! command to completion, untimed, before each run of a target (to restart a daemon on a
//! fresh store, so that every run does the same greylisting work).
//!
//! `--pidfile` names the file holding the daemon's process id (read again after every
//! prepare, as a restart changes it): the driver then measures the daemon's own CPU time
//! per request, user + system of the process and all its threads (exited ones included),
//! read before and after each timed run. The driver's own CPU is not counted. Two readings
//! of the same sum: `/proc/PID/stat` (utime + stime, which the kernel derives from the
//! process's run time and rounds down to clock ticks of 10 ms) and the process CPU clock
//! (`clock_getcpuclockid`, the run time itself in nanoseconds). A run of 5,000 requests
//! at 15 µs each is only 7 or 8 ticks, so the ratios use the clock and the tick figure is
//! printed beside it as a check; both are summed over all runs and divided by all their
//! requests. Start-up is left out: after the prepare step the driver waits `--settle-ms`
//! (default 1500) before the first reading. Work the run leaves behind (the store's
//! periodic flush of what the run wrote, connections closing) is counted: the second
//! reading comes `--settle-ms` after the last reply. That window also holds the daemon's
//! idle work, so the driver measures an idle window of the same length just before each
//! run and prints it (it is not subtracted).
//!
//! Prints one Markdown table: requests/s from the first request to the last reply (median
//! of the runs), latency p50 and p99 over every request of every run, and the daemon CPU;
//! then, for every `--ratio`, A's figure divided by B's (`rate`: requests/s, `cpu`: CPU
//! per request) for each number of connections. Exit status 2 when a reply was missing or
//! malformed or a daemon's CPU could not be read, 64 for usage errors.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Target {
    name: String,
    address: String,
    prepare: Option<String>,
    pidfile: Option<String>,
}

/// A ratio to print: `A / B` of requests/s (`cpu == false`) or of CPU per request.
struct Ratio {
    cpu: bool,
    a: String,
    b: String,
}

struct Options {
    requests: Vec<Vec<u8>>,
    targets: Vec<Target>,
    connections: Vec<usize>,
    runs: usize,
    settle: Duration,
    ratios: Vec<Ratio>,
}

fn usage(why: &str) -> ! {
    eprintln!("tcp_driver: {why}");
    eprintln!(
        "usage: tcp_driver --requests FILE --target NAME=ADDRESS:PORT [--prepare NAME=COMMAND] \
         [--pidfile NAME=FILE] [--settle-ms N] [--ratio rate|cpu:A/B] [--connections N[,N...]] \
         [--runs N]"
    );
    std::process::exit(64)
}

fn split_blocks(data: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    text.split("\n\n")
        .map(|b| b.trim_start_matches('\n'))
        .filter(|b| !b.is_empty())
        .map(|b| format!("{b}\n\n").into_bytes())
        .collect()
}

/// Splits `NAME=REST` of an option, or stops with a usage error.
fn name_value(option: &str, v: &str) -> (String, String) {
    let (name, rest) = v
        .split_once('=')
        .unwrap_or_else(|| usage(&format!("{option} wants NAME=...")));
    (name.into(), rest.into())
}

/// Parses `rate:A/B` or `cpu:A/B`.
fn ratio(v: &str) -> Ratio {
    let (kind, pair) = v
        .split_once(':')
        .unwrap_or_else(|| usage("--ratio wants rate:A/B or cpu:A/B"));
    let (a, b) = pair
        .split_once('/')
        .unwrap_or_else(|| usage("--ratio wants rate:A/B or cpu:A/B"));
    let cpu = match kind {
        "rate" => false,
        "cpu" => true,
        _ => usage("--ratio kind is rate or cpu"),
    };
    Ratio {
        cpu,
        a: a.into(),
        b: b.into(),
    }
}

/// Attaches the per-target options (`--prepare`, `--pidfile`) to their targets.
fn attach(targets: &mut [Target], extras: Vec<(String, String, String)>) {
    for (option, name, value) in extras {
        let Some(t) = targets.iter_mut().find(|t| t.name == name) else {
            usage(&format!("{option} for unknown target {name}"))
        };
        if option == "--prepare" {
            t.prepare = Some(value);
        } else {
            t.pidfile = Some(value);
        }
    }
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut requests = None;
    let mut targets: Vec<Target> = Vec::new();
    let mut extras: Vec<(String, String, String)> = Vec::new();
    let mut ratios = Vec::new();
    let mut connections = vec![1, 16];
    let mut runs = 3;
    let mut settle = Duration::from_millis(1500);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--requests" => {
                let path = value();
                let data = std::fs::read(&path).unwrap_or_else(|e| usage(&format!("{path}: {e}")));
                requests = Some(split_blocks(&data));
            }
            "--target" => {
                let (name, address) = name_value(&a, &value());
                targets.push(Target {
                    name,
                    address,
                    prepare: None,
                    pidfile: None,
                });
            }
            "--prepare" | "--pidfile" => {
                let (name, v) = name_value(&a, &value());
                extras.push((a.clone(), name, v));
            }
            "--ratio" => ratios.push(ratio(&value())),
            "--settle-ms" => {
                let ms = value().parse().unwrap_or_else(|_| usage("bad --settle-ms"));
                settle = Duration::from_millis(ms);
            }
            "--connections" => {
                connections = value()
                    .split(',')
                    .map(|n| n.parse().unwrap_or_else(|_| usage("bad --connections")))
                    .collect();
            }
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage("bad --runs")),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    attach(&mut targets, extras);
    for r in &ratios {
        for name in [&r.a, &r.b] {
            if !targets.iter().any(|t| &t.name == name) {
                usage(&format!("--ratio names unknown target {name}"));
            }
        }
    }
    let requests = requests.unwrap_or_else(|| usage("--requests is required"));
    if targets.is_empty() || requests.is_empty() {
        usage("no targets or no requests");
    }
    Options {
        requests,
        targets,
        connections,
        runs: runs.max(1),
        settle,
        ratios,
    }
}

/// A daemon's CPU time so far: user + system of all its threads, as `/proc/PID/stat` gives
/// it (clock ticks), and as the process CPU clock gives it (nanoseconds).
#[derive(Clone, Copy, Default)]
struct Cpu {
    ticks: u64,
    nanos: u64,
}

impl Cpu {
    fn minus(self, earlier: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            nanos: self.nanos.saturating_sub(earlier.nanos),
        }
    }

    fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks + other.ticks,
            nanos: self.nanos + other.nanos,
        }
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The process CPU clock of `pid` (all threads, exited ones included), in nanoseconds.
fn clock_nanos(pid: libc::pid_t) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both pointers are to live locals of the right types.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid, &mut clock) == 0 && libc::clock_gettime(clock, &mut ts) == 0
    };
    ok.then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn read_cpu(pid: libc::pid_t) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Cpu {
        ticks: stat_ticks(&stat)?,
        nanos: clock_nanos(pid)?,
    })
}

fn read_pid(pidfile: &str) -> Option<libc::pid_t> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// One run: `n` connections on contiguous parts of the stream. Returns the wall time, the
/// latencies, and the number of bad or missing replies.
fn run(address: &str, requests: &Arc<Vec<Vec<u8>>>, n: usize) -> (Duration, Vec<Duration>, usize) {
    let per = requests.len().div_ceil(n);
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (requests, barrier, address) = (
                Arc::clone(requests),
                Arc::clone(&barrier),
                address.to_string(),
            );
            std::thread::spawn(move || {
                let part =
                    &requests[(i * per).min(requests.len())..((i + 1) * per).min(requests.len())];
                let mut lat = Vec::with_capacity(part.len());
                let Ok(stream) = TcpStream::connect(&address) else {
                    barrier.wait();
                    return (lat, part.len());
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                barrier.wait();
                let mut bad = 0;
                let mut line = String::new();
                for r in part {
                    let t = Instant::now();
                    if writer.write_all(r).is_err() {
                        bad += 1;
                        continue;
                    }
                    line.clear();
                    let ok = reader.read_line(&mut line).is_ok() && line.starts_with("action=");
                    let mut blank = String::new();
                    let ok = ok && reader.read_line(&mut blank).is_ok() && blank == "\n";
                    lat.push(t.elapsed());
                    if !ok {
                        bad += 1;
                    }
                }
                (lat, bad)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    let mut bad = 0;
    for t in threads {
        let (lat, b) = t.join().expect("connection thread");
        all.extend(lat);
        bad += b;
    }
    (start.elapsed(), all, bad)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Everything measured for one target at one number of connections, over all runs.
#[derive(Default)]
struct Tally {
    rates: Vec<f64>,
    latencies: Vec<Duration>,
    bad: usize,
    /// The daemon's CPU during the timed runs, and during the idle windows; `None` without
    /// a pid file, or once a reading failed.
    cpu: Option<(Cpu, Cpu)>,
    requests: usize,
}

/// Reads the daemon's CPU now; a failure ends the benchmark, as its figures would lie.
fn cpu_now(target: &Target, pid: libc::pid_t) -> Cpu {
    read_cpu(pid).unwrap_or_else(|| {
        eprintln!(
            "tcp_driver: cannot read the CPU time of {} (pid {pid})",
            target.name
        );
        std::process::exit(2);
    })
}

fn prepare(target: &Target) {
    if let Some(cmd) = &target.prepare {
        let ok = Command::new("sh").arg("-c").arg(cmd).status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("tcp_driver: prepare of {} failed", target.name);
            std::process::exit(2);
        }
    }
}

/// One run of one target: prepare, let start-up settle, an idle window, the timed run,
/// then the settle window after it, adding the figures to `tally`.
fn measured_run(
    t: &Target,
    requests: &Arc<Vec<Vec<u8>>>,
    n: usize,
    o: &Options,
    tally: &mut Tally,
) {
    prepare(t);
    let pid = t.pidfile.as_deref().map(|f| {
        read_pid(f).unwrap_or_else(|| {
            eprintln!("tcp_driver: no process id in {f} for {}", t.name);
            std::process::exit(2);
        })
    });
    let mut idle = Cpu::default();
    let mut before = Cpu::default();
    if let Some(pid) = pid {
        std::thread::sleep(o.settle);
        let start = cpu_now(t, pid);
        std::thread::sleep(o.settle);
        before = cpu_now(t, pid);
        idle = before.minus(start);
    }
    let (wall, lat, bad) = run(&t.address, requests, n);
    if let Some(pid) = pid {
        std::thread::sleep(o.settle);
        let used = cpu_now(t, pid).minus(before);
        let (u, i) = tally.cpu.unwrap_or_default();
        tally.cpu = Some((u.plus(used), i.plus(idle)));
    }
    tally.rates.push(requests.len() as f64 / wall.as_secs_f64());
    tally.latencies.extend(lat);
    tally.bad += bad;
    tally.requests += requests.len();
}

/// The figures of one row: median requests/s and CPU µs per request (ticks, clock).
struct Row {
    rate: f64,
    cpu_ticks_us: Option<f64>,
    cpu_clock_us: Option<f64>,
    idle_us: Option<f64>,
}

fn row(tally: &mut Tally, runs: usize) -> Row {
    tally.rates.sort_by(f64::total_cmp);
    tally.latencies.sort();
    let per_request = tally.requests.max(1) as f64;
    let tick_us = 1e6 / ticks_per_second();
    Row {
        rate: tally.rates[tally.rates.len() / 2],
        cpu_ticks_us: tally
            .cpu
            .map(|(u, _)| u.ticks as f64 * tick_us / per_request),
        cpu_clock_us: tally.cpu.map(|(u, _)| u.nanos as f64 / 1e3 / per_request),
        idle_us: tally.cpu.map(|(_, i)| i.nanos as f64 / 1e3 / runs as f64),
    }
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

fn print_header(o: &Options) {
    println!(
        "| target | connections | req/s | p50 µs | p99 µs | daemon CPU µs/req \
         | same, /proc ticks | idle CPU µs per {} ms | bad replies |",
        o.settle.as_millis()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
}

/// Prints the `--ratio` table: one column per number of connections.
fn print_ratios(o: &Options, rows: &[(usize, String, Row)]) {
    if o.ratios.is_empty() {
        return;
    }
    let find = |n: usize, name: &str| rows.iter().find(|(m, t, _)| *m == n && t == name);
    println!();
    let columns: Vec<String> = o.connections.iter().map(|n| format!("{n} conn.")).collect();
    println!("| ratio | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for r in &o.ratios {
        let what = if r.cpu {
            "CPU per request"
        } else {
            "requests/s"
        };
        let cells: Vec<String> = o
            .connections
            .iter()
            .map(|&n| {
                let (Some((_, _, a)), Some((_, _, b))) = (find(n, &r.a), find(n, &r.b)) else {
                    return String::new();
                };
                let v = if r.cpu {
                    a.cpu_clock_us.zip(b.cpu_clock_us).map(|(a, b)| a / b)
                } else {
                    Some(a.rate / b.rate)
                };
                v.map(|v| format!("{v:.2}x")).unwrap_or_default()
            })
            .collect();
        println!("| {what}: {} / {} | {} |", r.a, r.b, cells.join(" | "));
    }
}

fn main() {
    let o = options();
    let requests = Arc::new(o.requests.clone());
    let mut failed = false;
    let mut rows = Vec::new();
    print_header(&o);
    for &n in &o.connections {
        let mut tallies: Vec<Tally> = o.targets.iter().map(|_| Tally::default()).collect();
        for _ in 0..o.runs {
            for (t, tally) in o.targets.iter().zip(tallies.iter_mut()) {
                measured_run(t, &requests, n, &o, tally);
            }
        }
        for (t, mut tally) in o.targets.iter().zip(tallies) {
            let r = row(&mut tally, o.runs);
            failed |= tally.bad > 0;
            println!(
                "| {} | {n} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} |",
                t.name,
                r.rate,
                percentile(&tally.latencies, 0.5),
                percentile(&tally.latencies, 0.99),
                cell(r.cpu_clock_us, 1),
                cell(r.cpu_ticks_us, 1),
                cell(r.idle_us, 0),
                tally.bad
            );
            rows.push((n, t.name.clone(), r));
        }
    }
    print_ratios(&o, &rows);
    if failed {
        std::process::exit(2);
    }
}
