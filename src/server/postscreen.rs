//! The postscreen policy callout (the 2016 design; no Postfix release ships it): parsing
//! `name=value` blocks with limits, and the answer from what greyspf already knows about
//! the client: `pass` with a ttl for a whitelisted or auto-whitelisted client, `ignore`
//! otherwise. Every request is answered, a malformed one with `ignore`: the design makes a
//! closed connection an error on postscreen's side.

use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::greylist::decide::Timers;
use crate::greylist::whitelist::Whitelists;
use crate::greylist::{ClientStanding, Greylister};
use crate::logging;
use crate::protocol::{MAX_ATTRS, MAX_LINE, ProtocolError};

/// What the callout needs; the composition root builds it from the configuration.
#[derive(Debug, Clone)]
pub struct PostscreenSettings {
    pub whitelist_clients: Vec<PathBuf>,
    /// The auto-whitelist's rules (count and lifetime), as the greylisting uses them.
    pub timers: Timers,
    /// The longest ttl given; a whitelist entry has no lifetime of its own and gets this.
    pub max_ttl: Duration,
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
}

impl Answer {
    /// The reply text, ended by the empty line.
    pub fn wire(&self) -> String {
        match self {
            Answer::Pass { ttl_secs } => format!("action=pass\nttl={ttl_secs}\n\n"),
            Answer::Ignore => "action=ignore\n\n".to_string(),
        }
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

/// Serves callout requests from `input` until EOF.
pub fn serve<R: BufRead, W: Write>(
    mut input: R,
    mut output: W,
    settings: &PostscreenSettings,
    store: &mut dyn Greylister,
) -> Result<(), ProtocolError> {
    let mut whitelists = Whitelists::new(settings.whitelist_clients.clone(), Vec::new());
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
            Query::Client(ip) => answer_client(ip, settings, &whitelists, store),
        };
        output
            .write_all(answer.wire().as_bytes())
            .and_then(|_| output.flush())
            .map_err(ProtocolError::Write)?;
    }
    store.finish();
    Ok(())
}

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
    let answer = decide(listed, standing, settings.max_ttl);
    let (action, ttl) = match answer {
        Answer::Pass { ttl_secs } => ("pass", ttl_secs),
        Answer::Ignore => ("ignore", 0),
    };
    logging::info(&format!(
        "postscreen: action={action}, ttl={ttl}, client_address={ip}"
    ));
    answer
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
    }
}
