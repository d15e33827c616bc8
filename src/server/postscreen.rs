//! The postscreen policy callout (the 2016 design; no Postfix release ships it): parsing
//! `name=value` blocks with limits, and the answer from what greyspf knows about the
//! client: `pass` with a ttl for a whitelisted or auto-whitelisted client; otherwise, with
//! reputation scoring on, `drop`, `enforce`, `pass` (allow-listed) or `ignore` by the score
//! of the checks that need only the client address; `ignore` when scoring is off. Every
//! request is answered, a malformed one with `ignore`: the design makes a closed connection
//! an error on postscreen's side.

use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::dns::{DnsSettings, SharedDns};
use crate::greylist::decide::Timers;
use crate::greylist::whitelist::Whitelists;
use crate::greylist::{ClientStanding, Greylister};
use crate::logging;
use crate::protocol::{MAX_ATTRS, MAX_LINE, ProtocolError};
use crate::score::dns::LazyScore;
use crate::score::{KnownRdns, Score, ScoreSettings, Scored, Subject};

/// What the callout needs; the composition root builds it from the configuration.
#[derive(Debug, Clone)]
pub struct PostscreenSettings {
    pub whitelist_clients: Vec<PathBuf>,
    /// The auto-whitelist's rules (count and lifetime), as the greylisting uses them.
    pub timers: Timers,
    /// The longest ttl given; a whitelist entry has no lifetime of its own and gets this.
    pub max_ttl: Duration,
    /// None when reputation scoring is off: clients not passed are ignored.
    pub score: Option<PostscreenScore>,
    /// How to reach the DNS; a connection builds its client on its first scored request.
    pub dns: DnsSettings,
}

/// Reputation scoring of postscreen clients.
#[derive(Debug, Clone)]
pub struct PostscreenScore {
    /// The scoring settings of the SMTPD policy; only the checks that need nothing but the
    /// client address are used (`ScoreSettings::client_only`).
    pub settings: ScoreSettings,
    pub thresholds: Thresholds,
}

/// Where a client's total takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub enforce: f64,
    /// None: never drop.
    pub drop: Option<f64>,
    /// An allow-listed client below this total (the greylisting threshold) passes.
    pub pass_below: f64,
    /// The ttl of such a pass (at most `max_ttl`).
    pub pass_ttl: Duration,
}

/// One request block: the client address when it is usable, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Client(IpAddr),
    Malformed(String),
}

/// The reply to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Pass { ttl_secs: u64 },
    Ignore,
    Enforce,
    Drop,
}

impl Answer {
    /// The reply text, ended by the empty line.
    pub fn wire(&self) -> String {
        match self {
            Answer::Pass { ttl_secs } => format!("action=pass\nttl={ttl_secs}\n\n"),
            other => format!("action={}\n\n", other.action()),
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Answer::Pass { .. } => "pass",
            Answer::Ignore => "ignore",
            Answer::Enforce => "enforce",
            Answer::Drop => "drop",
        }
    }

    /// The leading log fields: the action and the ttl (0 but for a pass).
    fn log_fields(&self) -> Vec<(&'static str, String)> {
        let ttl = match self {
            Answer::Pass { ttl_secs } => *ttl_secs,
            _ => 0,
        };
        vec![
            ("action", self.action().to_string()),
            ("ttl", ttl.to_string()),
        ]
    }
}

/// The decision, pure: a whitelisted client passes for the longest ttl, an auto-whitelisted
/// one for what is left of its entry (at most the longest ttl, at least a second).
pub fn decide(file_listed: bool, standing: ClientStanding, max_ttl: Duration) -> Answer {
    let max = max_ttl.as_secs().max(1);
    match standing {
        _ if file_listed => Answer::Pass { ttl_secs: max },
        ClientStanding::Whitelisted => Answer::Pass { ttl_secs: max },
        ClientStanding::AutoWhitelisted { remaining_ms } => Answer::Pass {
            ttl_secs: (remaining_ms / 1000).clamp(1, max),
        },
        ClientStanding::Unknown => Answer::Ignore,
    }
}

/// The decision by score, pure: drop, then enforce, from their thresholds up; a pass for a
/// client on an allow list whose total stays below the greylisting threshold; otherwise
/// ignore (postscreen's own tests decide).
pub fn decide_score(scored: &Scored, t: &Thresholds, max_ttl: Duration) -> Answer {
    let total = scored.total;
    if t.drop.is_some_and(|d| total >= d) {
        Answer::Drop
    } else if total >= t.enforce {
        Answer::Enforce
    } else if scored.allow_listed() && total < t.pass_below {
        Answer::Pass {
            ttl_secs: t.pass_ttl.min(max_ttl).as_secs().max(1),
        }
    } else {
        Answer::Ignore
    }
}

/// Reads one line of at most `MAX_LINE` bytes (the rest of a longer one is skipped).
/// Returns None at EOF before any byte; Some((line, too_long, terminated)) otherwise.
fn read_line<R: BufRead>(input: &mut R) -> Result<Option<(Vec<u8>, bool, bool)>, ProtocolError> {
    let mut line = Vec::new();
    let n = input
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(ProtocolError::Read)?;
    if n == 0 {
        return Ok(None);
    }
    let terminated = line.last() == Some(&b'\n');
    if terminated {
        line.pop();
        return Ok(Some((line, false, true)));
    }
    if line.len() <= MAX_LINE {
        return Ok(Some((line, false, false)));
    }
    // Too long: skip to the end of the line.
    let mut rest = Vec::new();
    loop {
        rest.clear();
        let n = input
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut rest)
            .map_err(ProtocolError::Read)?;
        if n == 0 || rest.last() == Some(&b'\n') {
            return Ok(Some((line, true, n > 0)));
        }
    }
}

/// Reads the next block. `Ok(None)`: EOF with nothing pending.
pub fn next_query<R: BufRead>(input: &mut R) -> Result<Option<Query>, ProtocolError> {
    let mut client: Option<String> = None;
    let mut problem: Option<String> = None;
    let mut attrs = 0usize;
    let mut started = false;
    loop {
        let Some((line, too_long, terminated)) = read_line(input)? else {
            return Ok(started.then(|| Query::Malformed("request cut off by end of input".into())));
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.is_empty() && !too_long {
            if !started {
                // Blank lines between blocks are tolerated, as smtpd's protocol reader does.
                continue;
            }
            break;
        }
        started = true;
        attrs += 1;
        if problem.is_some() {
            continue;
        }
        problem = if !terminated {
            Some("request cut off by end of input".into())
        } else if too_long {
            Some(format!("line longer than {MAX_LINE} bytes"))
        } else if attrs > MAX_ATTRS {
            Some(format!("more than {MAX_ATTRS} attributes"))
        } else {
            match line.iter().position(|&b| b == b'=') {
                None => Some("line without '='".into()),
                Some(i) if &line[..i] == b"client_address" => {
                    client = Some(String::from_utf8_lossy(&line[i + 1..]).into_owned());
                    None
                }
                // Unknown attributes (and server_address, client_port, server_port, which
                // the answer does not use) are ignored, as the design asks.
                Some(_) => None,
            }
        };
        if !terminated {
            break;
        }
    }
    Ok(Some(match (problem, client) {
        (Some(p), _) => Query::Malformed(p),
        (None, None) => Query::Malformed("no client_address".into()),
        (None, Some(c)) => match c.parse::<IpAddr>() {
            Ok(ip) => Query::Client(ip.to_canonical()),
            Err(_) => Query::Malformed(format!("client_address {c:?} is not an IP address")),
        },
    }))
}

/// A connection's scorer: the client-only settings, and the lookups on the connection's
/// DNS client, whose answer cache serves repeated requests for the same client.
struct Scorer<'a> {
    settings: ScoreSettings,
    thresholds: &'a Thresholds,
    lookups: LazyScore,
}

impl<'a> Scorer<'a> {
    fn new(s: &'a PostscreenScore, dns: DnsSettings) -> Scorer<'a> {
        let settings = s.settings.client_only();
        Scorer {
            lookups: LazyScore::new(settings.clone(), Rc::new(SharedDns::new(dns))),
            settings,
            thresholds: &s.thresholds,
        }
    }

    /// The client's score; HELO, sender and SPF are not known yet and count nothing.
    fn score(&self, ip: IpAddr) -> Scored {
        let subject = Subject {
            ip,
            helo: "",
            sender_domain: None,
            server_address: None,
            spf: None,
            // postscreen runs before smtpd has looked anything up.
            rdns: KnownRdns::Unknown,
        };
        let facts = self.lookups.facts(&subject);
        crate::score::evaluate(&self.settings, &subject, &facts)
    }
}

/// Serves callout requests from `input` until EOF.
pub fn serve<R: BufRead, W: Write>(
    mut input: R,
    mut output: W,
    settings: &PostscreenSettings,
    store: &mut dyn Greylister,
) -> Result<(), ProtocolError> {
    let mut whitelists = Whitelists::new(settings.whitelist_clients.clone(), Vec::new());
    let scorer = (settings.score.as_ref()).map(|s| Scorer::new(s, settings.dns.clone()));
    while let Some(q) = next_query(&mut input)? {
        for w in whitelists.refresh() {
            logging::warning(&w);
        }
        let answer = match q {
            Query::Malformed(why) => {
                logging::warning(&format!(
                    "postscreen: malformed request, answered ignore: {why}"
                ));
                Answer::Ignore
            }
            Query::Client(ip) => {
                let known = answer_client(ip, settings, &whitelists, store);
                match (known, &scorer) {
                    (Answer::Ignore, Some(sc)) => answer_by_score(ip, sc, settings.max_ttl),
                    _ => {
                        log_answer(&known.log_fields(), ip);
                        known
                    }
                }
            }
        };
        output
            .write_all(answer.wire().as_bytes())
            .and_then(|_| output.flush())
            .map_err(ProtocolError::Write)?;
    }
    store.finish();
    Ok(())
}

/// What the whitelists and the auto-whitelist say of the client: pass, or ignore.
fn answer_client(
    ip: IpAddr,
    settings: &PostscreenSettings,
    whitelists: &Whitelists,
    store: &mut dyn Greylister,
) -> Answer {
    let listed = whitelists.client_listed(Some(ip), "");
    let standing = if listed {
        ClientStanding::Unknown
    } else {
        // A store that cannot answer must not slow postscreen down further: ignore.
        store
            .client_standing(&ip.to_string(), &settings.timers)
            .unwrap_or_else(|e| {
                logging::warning(&format!(
                    "postscreen: store unavailable, answered ignore: {e}"
                ));
                ClientStanding::Unknown
            })
    };
    decide(listed, standing, settings.max_ttl)
}

/// The answer by the client's score, logged with the score and its hits. A panic while
/// scoring becomes `ignore` and a log line: postscreen gets its answer all the same.
fn answer_by_score(ip: IpAddr, scorer: &Scorer<'_>, max_ttl: Duration) -> Answer {
    let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scorer.score(ip)));
    let Ok(scored) = scored else {
        logging::error("postscreen: internal error while scoring (logged above), answered ignore");
        return Answer::Ignore;
    };
    let answer = decide_score(&scored, scorer.thresholds, max_ttl);
    let mut fields = answer.log_fields();
    fields.extend(scored.log_fields());
    log_answer(&fields, ip);
    answer
}

/// One log line per answer: `postscreen: action=..., ttl=..., [score=..., ]client_address=...`.
fn log_answer(fields: &[(&'static str, String)], ip: IpAddr) {
    let mut line = String::from("postscreen: ");
    for (k, v) in fields {
        line.push_str(&format!("{k}={v}, "));
    }
    line.push_str(&format!("client_address={ip}"));
    logging::info(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queries(input: &[u8]) -> Vec<Query> {
        let mut r = std::io::Cursor::new(input);
        let mut v = Vec::new();
        while let Some(q) = next_query(&mut r).unwrap() {
            v.push(q);
        }
        v
    }

    #[test]
    fn parses_blocks_in_any_order_with_unknown_attributes() {
        let q = queries(
            b"server_port=25\nfuture=1\nclient_address=192.0.2.7\nclient_port=4\n\n\
              client_address=::ffff:192.0.2.8\n\n",
        );
        assert_eq!(
            q,
            [
                Query::Client("192.0.2.7".parse().unwrap()),
                Query::Client("192.0.2.8".parse().unwrap())
            ]
        );
    }

    #[test]
    fn malformed_blocks_are_reported_and_the_stream_goes_on() {
        let long = format!("client_address={}\n\n", "1".repeat(MAX_LINE + 10));
        let mut input = b"garbage\n\nclient_address=nope\n\nserver_port=25\n\n".to_vec();
        input.extend_from_slice(long.as_bytes());
        input.extend_from_slice(b"client_address=192.0.2.1\n\nclient_address=192.0.2.2");
        let q = queries(&input);
        assert_eq!(q.len(), 6);
        assert_eq!(q[0], Query::Malformed("line without '='".into()));
        assert!(matches!(&q[1], Query::Malformed(m) if m.contains("not an IP")));
        assert_eq!(q[2], Query::Malformed("no client_address".into()));
        assert!(matches!(&q[3], Query::Malformed(m) if m.contains("longer than")));
        assert_eq!(q[4], Query::Client("192.0.2.1".parse().unwrap()));
        assert!(matches!(&q[5], Query::Malformed(m) if m.contains("cut off")));
    }

    #[test]
    fn answers() {
        let day = Duration::from_secs(86400);
        assert_eq!(decide(false, ClientStanding::Unknown, day), Answer::Ignore);
        assert_eq!(
            decide(true, ClientStanding::Unknown, day),
            Answer::Pass { ttl_secs: 86400 }
        );
        assert_eq!(
            decide(false, ClientStanding::Whitelisted, day),
            Answer::Pass { ttl_secs: 86400 }
        );
        let awl = |ms| ClientStanding::AutoWhitelisted { remaining_ms: ms };
        assert_eq!(decide(false, awl(5_500), day), Answer::Pass { ttl_secs: 5 });
        assert_eq!(decide(false, awl(10), day), Answer::Pass { ttl_secs: 1 });
        assert_eq!(
            decide(false, awl(30 * 86_400_000), day),
            Answer::Pass { ttl_secs: 86400 }
        );
        assert_eq!(
            Answer::Pass { ttl_secs: 3 }.wire(),
            "action=pass\nttl=3\n\n"
        );
        assert_eq!(Answer::Ignore.wire(), "action=ignore\n\n");
        assert_eq!(Answer::Enforce.wire(), "action=enforce\n\n");
        assert_eq!(Answer::Drop.wire(), "action=drop\n\n");
    }

    fn scored(total: f64, allow_listed: bool) -> Scored {
        let hit = |name: &str, weight| crate::score::Check {
            name: name.into(),
            weight,
            hit: true,
            failed: false,
            detail: String::new(),
        };
        let checks = if allow_listed {
            vec![hit("dnsbl:wl.example", -5.0)]
        } else {
            vec![hit("no_ptr", 2.5)]
        };
        Scored {
            checks,
            total,
            level: crate::score::Level::Greylist,
        }
    }

    #[test]
    fn answers_by_score() {
        let day = Duration::from_secs(86400);
        let mut t = Thresholds {
            enforce: 8.0,
            drop: Some(12.0),
            pass_below: 2.0,
            pass_ttl: Duration::from_secs(3600),
        };
        let by = |total, wl, t: &Thresholds| decide_score(&scored(total, wl), t, day);
        assert_eq!(by(12.0, false, &t), Answer::Drop);
        assert_eq!(by(11.99, false, &t), Answer::Enforce);
        assert_eq!(by(8.0, false, &t), Answer::Enforce);
        assert_eq!(by(7.5, false, &t), Answer::Ignore);
        assert_eq!(by(0.0, false, &t), Answer::Ignore);
        // A pass needs an allow list and a total below the greylisting threshold.
        assert_eq!(by(-5.0, true, &t), Answer::Pass { ttl_secs: 3600 });
        assert_eq!(by(2.0, true, &t), Answer::Ignore);
        assert_eq!(by(-5.0, false, &t), Answer::Ignore);
        // At most the longest ttl; no drop threshold, no drop.
        assert_eq!(
            decide_score(&scored(-5.0, true), &t, Duration::from_secs(60)),
            Answer::Pass { ttl_secs: 60 }
        );
        t.drop = None;
        assert_eq!(by(100.0, false, &t), Answer::Enforce);
    }
}
