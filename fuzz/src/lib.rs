//! The fuzz harness of greyspf: for the pipeline target an in-memory greylist store, the
//! configurations under test and the checks one input goes through; for the SPF target the
//! checks of a record's parse and evaluation. Kept apart from the target files so that a
//! change of `serve`'s or the SPF entry point's signature is a change here only.

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::OnceLock;

use greyspf::app::server_settings;
use greyspf::config::Config;
use greyspf::greylist::decide::{Entry, Verdict, decide_triplet};
use greyspf::protocol::{Block, Reader};
use greyspf::server::{ServerSettings, serve};
use greyspf::greylist::{GreyQuery, Greylister, StoreUnavailable};

/// The keeper's triplet logic in memory. Its clock moves 100 s per question, so a triplet
/// asked about again a few blocks later passes its delay and the header path is reached; every
/// 16th question fails, for the store-failure path. Both depend on the input only, so a
/// crash replays exactly.
#[derive(Default)]
pub struct MemStore {
    triplets: HashMap<String, Entry>,
    questions: u64,
}

impl Greylister for MemStore {
    fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreUnavailable> {
        self.questions += 1;
        if self.questions.is_multiple_of(16) {
            return Err(StoreUnavailable("keeper did not answer within 2s".into()));
        }
        let now = 1_000_000_000 + self.questions * 100_000;
        let key = format!("{}|{}|{}", q.client_key, q.sender, q.recipient);
        let (entry, verdict) = decide_triplet(self.triplets.get(&key).copied(), now, &q.timers);
        self.triplets.insert(key, entry);
        Ok(verdict)
    }
}

/// Settings every configuration shares: no SPF (no DNS), no whitelist files, no trusted
/// networks (the fixtures come from 127.0.0.1 and must reach the greylist), no syslog, and a
/// fixed host name so the replies do not depend on the machine.
const BASE: &[&str] = &[
    "spf_enable=no",
    "whitelist_clients=",
    "whitelist_recipients=",
    "trusted_networks=",
    "syslog_socket=/nonexistent",
    "hostname=mx.example.net",
];

/// Variations over BASE, to reach the branches the defaults never take.
const VARIANTS: &[&[&str]] = &[
    &[],
    &[
        "greylist_header=no",
        "protocol_states=RCPT, DATA, END-OF-MESSAGE",
        "greylist_text=%r: %s seconds left",
        "store_failure_action=DEFER_IF_PERMIT store down",
    ],
    &["dry_run=yes", "greylist_delay=0"],
    &[
        "trusted_networks=127.0.0.0/8, ::1/128",
        "greylist_ipv4_prefix=32",
        "greylist_ipv6_prefix=48",
    ],
    &["greylist_enable=no"],
];

fn configs() -> &'static [ServerSettings] {
    static CONFIGS: OnceLock<Vec<ServerSettings>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        VARIANTS
            .iter()
            .map(|v| {
                let mut o = BASE.to_vec();
                o.extend_from_slice(v);
                let cfg = Config::defaults_with(&o)
                    .unwrap_or_else(|e| panic!("fuzz configuration {v:?} rejected: {e}"));
                server_settings(&cfg)
            })
            .collect()
    })
}

/// Every block of `data`, read with a buffer of `capacity` bytes (0: the slice itself, one
/// buffer for everything). Panics if the parser yields more blocks than the input could
/// hold, which is how a loop that consumes nothing would show.
pub fn blocks(data: &[u8], capacity: usize) -> Vec<Block> {
    fn all<R: std::io::BufRead>(mut r: Reader<R>, limit: usize) -> Vec<Block> {
        let mut out = Vec::new();
        loop {
            match r.next_block() {
                Ok(Some(b)) => out.push(b),
                Ok(None) => return out,
                Err(e) => panic!("reading from memory failed: {e}"),
            }
            assert!(out.len() <= limit, "more blocks than input bytes");
        }
    }
    if capacity == 0 {
        all(Reader::new(data), data.len())
    } else {
        all(
            Reader::new(BufReader::with_capacity(capacity, data)),
            data.len(),
        )
    }
}

/// The parser alone: it ends, its blocks are well formed, and where the read buffer ends
/// does not change them (Postfix's writes arrive in pieces of any size).
pub fn check_parser(data: &[u8]) -> Vec<Block> {
    let whole = blocks(data, 0);
    for b in &whole {
        match b {
            Block::Request(r) => assert_eq!(r.request, "smtpd_access_policy"),
            Block::Malformed(why) => assert!(!why.is_empty(), "malformed without a reason"),
        }
    }
    let chunked = blocks(data, 1 + data.len() % 61);
    assert_eq!(whole, chunked, "blocks depend on the read buffer size");
    whole
}

/// The whole pipeline: `serve` with the memory store answers every block exactly once, with
/// `action=<value>\n\n`, a value Postfix can use, and DUNNO for every malformed block.
/// A panic anywhere, even one `serve` catches and answers DUNNO for, aborts the fuzzer
/// (libFuzzer's panic hook runs before the unwind), so it is reported as a crash.
pub fn check_pipeline(data: &[u8]) {
    let blocks = check_parser(data);
    let cfgs = configs();
    let cfg = &cfgs[data.len() % cfgs.len()];
    let mut store = MemStore::default();
    let mut out = Vec::new();
    if let Err(e) = serve(data, &mut out, cfg, &mut store) {
        panic!("serve failed on in-memory streams: {e}");
    }
    let Ok(out) = std::str::from_utf8(&out) else {
        panic!(
            "reply stream is not UTF-8: {:?}",
            String::from_utf8_lossy(&out)
        );
    };
    let mut rest = out;
    let mut replies = Vec::new();
    while !rest.is_empty() {
        let Some(r) = rest.strip_prefix("action=") else {
            panic!("reply does not start with action=: {rest:?}");
        };
        let Some((action, r)) = r.split_once('\n') else {
            panic!("reply without end of line: {rest:?}");
        };
        let Some(r) = r.strip_prefix('\n') else {
            panic!("reply not followed by an empty line: {rest:?}");
        };
        assert!(!action.trim().is_empty(), "empty action in {rest:?}");
        assert!(
            !action.contains(['\r', '\0']),
            "control character in action {action:?}"
        );
        replies.push(action);
        rest = r;
    }
    assert_eq!(
        replies.len(),
        blocks.len(),
        "replies and request blocks differ in number"
    );
    for (b, a) in blocks.iter().zip(&replies) {
        if matches!(b, Block::Malformed(_)) {
            assert_eq!(*a, "DUNNO", "malformed block {b:?} answered {a:?}");
        }
    }
}

/// The client addresses an SPF input is checked from, chosen by its first byte: IPv4, IPv6
/// and an IPv4-mapped IPv6 address (which must be checked as IPv4).
const SPF_CLIENTS: &[&str] = &[
    "192.0.2.1",
    "198.51.100.7",
    "2001:db8::9",
    "::ffff:192.0.2.9",
];

/// Local parts of the sender, for the `%{l}` and `%{s}` macros: plain, with delimiters, with
/// characters that URL escaping changes.
const SPF_LOCALS: &[&str] = &["postmaster", "a.b-c+d=e_f,g/h", "%41 ~"];

/// Most queries one check_host() may make: the checked record's and 10 include or redirect
/// records' TXT, 10 DNS terms of at most 1 + 10 lookups (an MX and its hosts, a PTR and
/// its names), 10 PTR names validated for `%{p}`, the exp= TXT and its PTR.
const SPF_MAX_QUERIES: usize = 11 + 10 * 11 + 10 + 2;

/// One SPF input: its first byte picks the client and the sender's local part, the rest is
/// a TXT record. The record parser and the explanation parser must end without a panic;
/// check_host() with the macro expander must end with a consistent verdict, having asked
/// only valid DNS names, and no more of them than RFC 7208's limits allow.
pub fn check_spf_record(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let selector = usize::from(selector);
    let ip = SPF_CLIENTS[selector % SPF_CLIENTS.len()].parse().unwrap();
    let local = SPF_LOCALS[selector / SPF_CLIENTS.len() % SPF_LOCALS.len()];
    let report = greyspf::spf::fuzzing::check_record(text, ip, local);
    check_spf_report(text, &report);
}

fn check_spf_report(text: &[u8], report: &greyspf::spf::fuzzing::Report) {
    use greyspf::spf::SpfResult;
    let printable = text.iter().all(|b| (b' '..=b'~').contains(b));
    if report.explanation_text.is_ok() {
        assert!(
            printable,
            "accepted a non-printable explanation: {report:?}"
        );
    }
    match &report.record {
        None => assert_eq!(report.result, SpfResult::None, "{report:?}"),
        Some(Err(_)) => assert_eq!(report.result, SpfResult::PermError, "{report:?}"),
        Some(Ok(())) => assert!(printable, "accepted a non-printable record: {report:?}"),
    }
    let error = matches!(report.result, SpfResult::TempError | SpfResult::PermError);
    assert_eq!(
        error,
        report.reason.is_some(),
        "reason iff error: {report:?}"
    );
    if let Some(explanation) = &report.explanation {
        assert_eq!(report.result, SpfResult::Fail, "explanation without fail");
        assert!(
            explanation.len() <= 512,
            "explanation of {} bytes",
            explanation.len()
        );
        assert!(
            explanation.bytes().all(|b| (b' '..=b'~').contains(&b)),
            "explanation not printable: {explanation:?}"
        );
    }
    assert!(
        report.queries.len() <= SPF_MAX_QUERIES,
        "{} queries: {:?}",
        report.queries.len(),
        report.queries
    );
    for query in &report.queries {
        let (kind, name) = query.split_once(' ').expect("TYPE name");
        if kind == "PTR" {
            continue;
        }
        assert!(
            !name.is_empty()
                && name.len() <= 253
                && name.is_ascii()
                && !name.ends_with('.')
                && name.split('.').all(|label| (1..=63).contains(&label.len())),
            "invalid name queried: {query:?}"
        );
    }
}
