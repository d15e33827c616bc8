//! tcp_driver: feeds policy daemons over TCP, as smtpd processes do, and measures them side
//! by side.
//!
//! ```text
//! tcp_driver --requests FILE --target NAME=ADDRESS:PORT [--target ...]
//!            [--prepare NAME=COMMAND]... [--connections N[,N...]] [--runs N]
//! ```
//!
//! For each number of connections N and each run, every target in turn (interleaved, so
//! that all see the same machine state) gets the request stream split into N contiguous
//! parts, one per connection, all started together; each connection writes one request,
//! waits for the whole reply, then writes the next, as smtpd does. `--prepare` runs a
//! command to completion, untimed, before each run of a target (to restart a daemon on a
//! fresh store, so that every run does the same greylisting work).
//!
//! Prints one Markdown table: requests/s from the first request to the last reply (median
//! of the runs), and latency p50 and p99 over every request of every run. Exit status 2
//! when a reply was missing or malformed, 64 for usage errors.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

struct Target {
    name: String,
    address: String,
    prepare: Option<String>,
}

struct Options {
    requests: Vec<Vec<u8>>,
    targets: Vec<Target>,
    connections: Vec<usize>,
    runs: usize,
}

fn usage(why: &str) -> ! {
    eprintln!("tcp_driver: {why}");
    eprintln!(
        "usage: tcp_driver --requests FILE --target NAME=ADDRESS:PORT [--prepare NAME=COMMAND] \
         [--connections N[,N...]] [--runs N]"
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

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut requests = None;
    let mut targets: Vec<Target> = Vec::new();
    let mut prepares: Vec<(String, String)> = Vec::new();
    let mut connections = vec![1, 16];
    let mut runs = 3;
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
            "--target" | "--prepare" => {
                let v = value();
                let (name, rest) = v
                    .split_once('=')
                    .unwrap_or_else(|| usage(&format!("{a} wants NAME=...")));
                if a == "--target" {
                    targets.push(Target {
                        name: name.into(),
                        address: rest.into(),
                        prepare: None,
                    });
                } else {
                    prepares.push((name.into(), rest.into()));
                }
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
    for (name, cmd) in prepares {
        match targets.iter_mut().find(|t| t.name == name) {
            Some(t) => t.prepare = Some(cmd),
            None => usage(&format!("--prepare for unknown target {name}")),
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
    }
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

fn main() {
    let o = options();
    let requests = Arc::new(o.requests);
    let mut failed = false;
    println!("| target | connections | req/s | p50 µs | p99 µs | bad replies |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &n in &o.connections {
        let mut results: Vec<(Vec<f64>, Vec<Duration>, usize)> = o
            .targets
            .iter()
            .map(|_| (Vec::new(), Vec::new(), 0))
            .collect();
        for _ in 0..o.runs {
            for (t, r) in o.targets.iter().zip(results.iter_mut()) {
                if let Some(cmd) = &t.prepare {
                    let ok = Command::new("sh").arg("-c").arg(cmd).status();
                    if !ok.is_ok_and(|s| s.success()) {
                        eprintln!("tcp_driver: prepare of {} failed", t.name);
                        std::process::exit(2);
                    }
                }
                let (wall, lat, bad) = run(&t.address, &requests, n);
                r.0.push(requests.len() as f64 / wall.as_secs_f64());
                r.1.extend(lat);
                r.2 += bad;
            }
        }
        for (t, (mut rates, mut lat, bad)) in o.targets.iter().zip(results) {
            rates.sort_by(f64::total_cmp);
            lat.sort();
            failed |= bad > 0;
            println!(
                "| {} | {n} | {:.0} | {:.1} | {:.1} | {bad} |",
                t.name,
                rates[rates.len() / 2],
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
        }
    }
    if failed {
        std::process::exit(2);
    }
}
