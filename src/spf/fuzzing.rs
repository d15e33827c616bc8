//! Entry point of the SPF fuzz target: the record parser, the explanation parser and
//! check_host() with its macro expander, run over an in-memory zone that serves the input
//! itself, so no input ever reaches the network. Not part of the service's interface.

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::eval::{self, Dns, Request};
use super::record::{self, Selection};
use super::types::SpfResult;
use crate::dns::Answer;

/// The domain whose TXT record is the input.
pub const DOMAIN: &str = "fuzz.example";

/// What the parsers and one check_host() run made of an input.
#[derive(Debug)]
pub struct Report {
    /// The record parser's answer, `None` when `v=spf1` does not select the input as a
    /// record (RFC 7208 §4.5); `Err` holds the syntax error.
    pub record: Option<Result<(), String>>,
    /// The explanation parser's answer (RFC 7208 §6.2) for the same text.
    pub explanation_text: Result<(), String>,
    pub result: SpfResult,
    pub explanation: Option<String>,
    pub reason: Option<String>,
    /// Every query check_host() made, as `TYPE name`, in order.
    pub queries: Vec<String>,
}

/// Parses `text` as a record and as an explanation, then runs check_host() for
/// `local@fuzz.example` from `ip`, with `text` as the TXT record of `fuzz.example` and of
/// some of the names its terms reach (so includes, redirects and `exp=` expand it again).
pub fn check_record(text: &[u8], ip: IpAddr, local: &str) -> Report {
    let ip = ip.to_canonical();
    let sender = format!("{local}@{DOMAIN}");
    let request = Request {
        ip,
        sender: &sender,
        local_part: local,
        sender_domain: DOMAIN,
        helo: "helo.fuzz.example",
        receiver: "mx.example.org",
    };
    let zone = Zone {
        text,
        ip,
        queries: RefCell::new(Vec::new()),
    };
    let verdict = run_now(eval::check_host(&zone, &request, DOMAIN));
    Report {
        record: match record::select(&[text.to_vec()]) {
            Selection::One(text) => Some(record::parse(text).map(drop).map_err(|e| e.to_string())),
            Selection::None | Selection::Many => None,
        },
        explanation_text: record::parse_explanation(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        result: verdict.result,
        explanation: verdict.explanation,
        reason: verdict.reason,
        queries: zone.queries.into_inner(),
    }
}

/// Polls a future whose every DNS answer is ready at once; it never waits.
fn run_now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("check_host() waited on an in-memory zone"),
    }
}

/// Answers by a hash of the name, so one input always meets the same zone: found, void or
/// failed, matching the client or not.
struct Zone<'a> {
    text: &'a [u8],
    ip: IpAddr,
    queries: RefCell<Vec<String>>,
}

impl Zone<'_> {
    fn pick(&self, kind: &str, name: &str, choices: u64) -> u64 {
        self.queries.borrow_mut().push(format!("{kind} {name}"));
        // FNV-1a: stable across runs and platforms, unlike the std hasher.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
        });
        hash % choices
    }
}

impl Dns for Zone<'_> {
    async fn txt(&self, name: &str) -> Answer<Vec<u8>> {
        let choice = self.pick("TXT", name, 5);
        if name.eq_ignore_ascii_case(DOMAIN) {
            return Answer::Found(vec![self.text.to_vec()]);
        }
        match choice {
            0 => Answer::Void,
            1 => Answer::Found(vec![self.text.to_vec()]),
            2 => Answer::Found(vec![
                b"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all".to_vec(),
            ]),
            3 => Answer::Found(vec![b"v=spf1 ?all".to_vec(), self.text.to_vec()]),
            _ => Answer::Failed("fuzz zone failure".into()),
        }
    }

    async fn a(&self, name: &str) -> Answer<Ipv4Addr> {
        let client = match self.ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::new(192, 0, 2, 9),
        };
        match self.pick("A", name, 4) {
            0 => Answer::Void,
            1 => Answer::Found(vec![Ipv4Addr::new(203, 0, 113, 1)]),
            2 => Answer::Found(vec![Ipv4Addr::new(198, 51, 100, 1), client]),
            _ => Answer::Failed("fuzz zone failure".into()),
        }
    }

    async fn aaaa(&self, name: &str) -> Answer<Ipv6Addr> {
        let client = match self.ip {
            IpAddr::V6(ip) => ip,
            IpAddr::V4(_) => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9),
        };
        match self.pick("AAAA", name, 4) {
            0 => Answer::Void,
            1 => Answer::Found(vec![Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)]),
            2 => Answer::Found(vec![client]),
            _ => Answer::Failed("fuzz zone failure".into()),
        }
    }

    async fn mx(&self, name: &str) -> Answer<String> {
        match self.pick("MX", name, 4) {
            0 => Answer::Void,
            1 => Answer::Found(vec![format!("mx1.{name}"), String::new()]),
            // More than the ten an `mx` may have (RFC 7208 §4.6.4).
            2 => Answer::Found((0..11).map(|i| format!("mx{i}.{DOMAIN}")).collect()),
            _ => Answer::Failed("fuzz zone failure".into()),
        }
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        match self.pick("PTR", &ip.to_string(), 3) {
            0 => Answer::Void,
            1 => Answer::Found(vec![format!("host.{DOMAIN}"), "other.example.net".into()]),
            _ => Answer::Failed("fuzz zone failure".into()),
        }
    }
}
