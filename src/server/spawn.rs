//! The SMTPD policy serving loop over one stream: request blocks in, one reply each out,
//! until EOF. Spawn mode runs it on stdin/stdout; the daemon runs it on each connection.
//! A panic while deciding becomes DUNNO and a log line; the stream goes on.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crate::date::now_ms;
use crate::greylist::Greylister;
use crate::greylist::whitelist::Whitelists;
use crate::logging;
use crate::policy::{self, Action, Context, MessageState};
use crate::protocol::{Block, ProtocolError, Reader, write_reply};

use super::ServerSettings;

/// Store failures are logged at most this often: a dead store must not flood syslog.
const STORE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Serves requests from `input` until EOF.
pub fn serve<R: BufRead, W: Write>(
    input: R,
    mut output: W,
    settings: &ServerSettings,
    store: &mut dyn Greylister,
) -> Result<(), ProtocolError> {
    let mut reader = Reader::new(input);
    let mut whitelists = Whitelists::new(
        settings.whitelist_clients.clone(),
        settings.whitelist_recipients.clone(),
    );
    let mut msg = MessageState::default();
    let dns = std::rc::Rc::new(crate::dns::SharedDns::new(settings.dns.clone()));
    let spf = (settings.spf.clone()).map(|s| crate::spf::LazySpf::shared(s, dns.clone()));
    let spf = spf.as_ref().map(|s| s as &dyn crate::spf::Spf);
    let score = (settings.policy.score.clone()).map(|s| crate::score::dns::LazyScore::new(s, dns));
    let score = score.as_ref().map(|s| s as &dyn crate::score::Score);
    let mut store_warnings = StoreWarnings::default();
    while let Some(block) = reader.next_block()? {
        count_log_drops(store);
        let req = match block {
            Block::Request(r) => r,
            Block::Malformed(why) => {
                logging::warning(&format!("malformed request, answered DUNNO: {why}"));
                write_reply(&mut output, &Action::Dunno.to_string())?;
                continue;
            }
        };
        if !req.lossy.is_empty() {
            logging::warning(&format!(
                "invalid UTF-8 in {}: decoded lossily, request decided",
                req.lossy.join(", ")
            ));
        }
        for w in whitelists.refresh() {
            logging::warning(&w);
        }
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cx = Context {
                whitelists: &whitelists,
                store: &mut *store,
                spf,
                score,
                now_ms: now_ms(),
            };
            policy::decide(&req, &settings.policy, &mut cx, &mut msg)
        }));
        let action = match decided {
            Ok(d) => {
                if let Some(e) = &d.store_error {
                    store_warnings.note(e, &settings.policy.store_failure_action);
                }
                if let Some(line) = &d.log {
                    logging::info(line);
                }
                d.action
            }
            Err(_) => {
                logging::error("internal error while deciding (logged above), answered DUNNO");
                Action::Dunno
            }
        };
        write_reply(&mut output, &action.to_string())?;
    }
    count_log_drops(store);
    store.finish();
    Ok(())
}

/// One warning a minute while the store is unavailable, saying how many were held back.
#[derive(Default)]
struct StoreWarnings {
    last: Option<Instant>,
    suppressed: u64,
}

impl StoreWarnings {
    fn note(&mut self, error: &str, answered: &Action) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < STORE_WARNING_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let more = if self.suppressed > 0 {
            format!(" ({} more since the last warning)", self.suppressed)
        } else {
            String::new()
        };
        logging::warning(&format!(
            "greylist store unavailable, answering {answered}: {error}{more}"
        ));
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Hands the log lines dropped so far (syslog socket full) to the `log_dropped` counter,
/// which travels to the keeper with the other instance counts.
fn count_log_drops(store: &mut dyn Greylister) {
    for _ in 0..logging::take_dropped() {
        store.count("log_dropped");
    }
}
