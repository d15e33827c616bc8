//! Micro-benchmarks: the request parser, sender normalisation, the pure greylist decision,
//! and one keeper round trip, each printed as ns per operation beside a baseline loop.
//! Run with `cargo bench --bench micro`.

use std::hint::black_box;
use std::io::BufReader;
use std::time::{Duration, Instant};

use greyspf::config::Config;
use greyspf::greylist::decide::{Timers, decide_triplet};
use greyspf::greylist::key::normalize_sender;
use greyspf::greylist::{GreyQuery, Greylister};
use greyspf::protocol::{Block, Reader};
use greyspf::store::client::KeeperClient;

/// Runs `f` repeatedly for about `budget` and returns ns per call (best of 5 rounds).
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < budget / 5 {
            for _ in 0..64 {
                f();
            }
            n += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn row(name: &str, ns: f64) {
    println!("| {name} | {ns:.0} | {:.0} |", 1e9 / ns);
}

fn main() {
    // Started as a keeper by a client that found none: never run the benchmarks again.
    if std::env::args().any(|a| a == "keeper") {
        return;
    }
    // `cargo bench` passes --bench; a filter word after it is not supported here.
    let budget = Duration::from_millis(1500);
    let fixture = include_bytes!("../tests/fixtures/postfix-3.7.11/actions.txt");
    let blocks = fixture.windows(2).filter(|w| w == b"\n\n").count() as f64;
    println!("| operation | ns/op | ops/s |");
    println!("|---|---:|---:|");

    row(
        "baseline: copy the fixture bytes (per block)",
        measure(budget, || {
            black_box(fixture.to_vec());
        }) / blocks,
    );
    row(
        "parse one Postfix 3.7 request block",
        measure(budget, || {
            let mut r = Reader::new(BufReader::new(&fixture[..]));
            while let Ok(Some(b)) = r.next_block() {
                black_box(matches!(b, Block::Request(_)));
            }
        }) / blocks,
    );

    let senders = [
        "alice@example.org",
        "prvs=1234abcdef=bounce@example.org",
        "bounce-12345-678@lists.example.org",
        "SRS0=HHH=TT=example.org=alice@forwarder.example",
    ];
    for s in senders {
        row(
            &format!("normalise {s}"),
            measure(budget, || {
                black_box(normalize_sender(black_box(s)));
            }),
        );
    }

    let t = Timers {
        delay_ms: 300_000,
        retry_window_ms: 172_800_000,
        max_age_ms: 3_024_000_000,
        awl_clients: 5,
        awl_interval_ms: 3_600_000,
    };
    let mut now = 0u64;
    let mut entry = None;
    row(
        "greylist decision (pure)",
        measure(budget, || {
            now += 1000;
            let (e, v) = decide_triplet(black_box(entry), now, &t);
            entry = Some(e);
            black_box(v);
        }),
    );

    // The keeper round trip: a keeper of the real binary on a private state directory.
    let dir = std::env::temp_dir().join(format!("greyspf-micro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = format!("state_directory={}", dir.display());
    let overrides = [
        state.as_str(),
        "keeper_idle_timeout=5s",
        "syslog_socket=/nonexistent",
    ];
    let mut args = vec!["-c".to_string(), "/dev/null".to_string()];
    for o in overrides {
        args.push("-o".into());
        args.push(o.into());
    }
    let keeper = std::process::Command::new(env!("CARGO_BIN_EXE_greyspf"))
        .args(&args)
        .args(["keeper", "--detach"])
        .status();
    if !keeper.is_ok_and(|s| s.success()) {
        println!("| keeper round trip | (keeper did not start) | |");
        return;
    }
    // Connect only once the keeper listens: a client that finds no keeper starts one from
    // its own executable, which here is this benchmark, not greyspf.
    let socket = greyspf::store::socket_path(&dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !socket.exists() {
        println!("| keeper round trip | (keeper socket did not appear) | |");
        return;
    }
    let Ok(cfg) = Config::defaults_with(&overrides) else {
        return;
    };
    let mut client = KeeperClient::new(&greyspf::app::client_settings(&cfg));
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.call(&["HELLO", greyspf::VERSION]).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut i = 0u64;
    row(
        "keeper round trip (HELLO)",
        measure(budget, || {
            black_box(client.call(&["HELLO", greyspf::VERSION]).is_ok());
        }),
    );
    row(
        "keeper greylist decision (new triplet each time)",
        measure(budget, || {
            i += 1;
            let sender = format!("s{i}@example.org");
            let q = GreyQuery {
                client_key: "192.0.2.0/24",
                sender: &sender,
                recipient: "r@example.com",
                client_address: "192.0.2.1",
                timers: t,
            };
            black_box(client.greylist(&q).is_ok());
        }),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
