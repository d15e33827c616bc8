//! Logging: syslog (with a quiet fallback when there is no socket), stderr for manual
//! foreground runs only, and the panic hook. Under spawn(8) stderr is the smtpd socket,
//! so nothing here writes to it unless the administrator asked for `--foreground`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use syslog::{Formatter3164, LoggerBackend};

type SyslogLogger = syslog::Logger<LoggerBackend, Formatter3164>;

enum Sink {
    Syslog {
        logger: Option<SyslogLogger>,
        formatter: Formatter3164,
        path: PathBuf,
        last_attempt: Instant,
    },
    Stderr,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// How long to wait before trying an absent syslog socket again.
const RECONNECT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Error,
    Warning,
    Info,
}

/// Chooses the sink. `foreground` logs to stderr, otherwise syslog at `socket`.
pub fn init(facility: syslog::Facility, socket: PathBuf, foreground: bool) {
    let sink = if foreground {
        Sink::Stderr
    } else {
        let formatter = Formatter3164 {
            facility,
            hostname: None,
            process: "greyspf".into(),
            pid: std::process::id(),
        };
        let logger = syslog::unix_custom(formatter.clone(), &socket).ok();
        Sink::Syslog {
            logger,
            formatter,
            path: socket,
            last_attempt: Instant::now(),
        }
    };
    if let Ok(mut g) = SINK.lock() {
        *g = Some(sink);
    }
}

/// The pid changes when the keeper detaches; the syslog tag must follow it.
pub fn reset_pid() {
    if let Ok(mut g) = SINK.lock()
        && let Some(Sink::Syslog {
            logger,
            formatter,
            path,
            ..
        }) = g.as_mut()
    {
        formatter.pid = std::process::id();
        *logger = syslog::unix_custom(formatter.clone(), &*path).ok();
    }
}

/// Log messages are one line: control characters would split or forge syslog records.
fn clean(msg: &str) -> String {
    msg.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn log(level: Level, msg: &str) {
    let msg = clean(msg);
    let Ok(mut guard) = SINK.lock() else { return };
    match guard.as_mut() {
        Some(Sink::Stderr) => {
            // Foreground mode only: the administrator asked for stderr.
            eprintln!("greyspf[{}]: {msg}", std::process::id());
        }
        Some(Sink::Syslog {
            logger,
            formatter,
            path,
            last_attempt,
        }) => {
            if logger.is_none() && last_attempt.elapsed() >= RECONNECT {
                *last_attempt = Instant::now();
                *logger = syslog::unix_custom(formatter.clone(), &*path).ok();
            }
            if let Some(l) = logger.as_mut() {
                let sent = match level {
                    Level::Error => l.err(&msg),
                    Level::Warning => l.warning(&msg),
                    Level::Info => l.info(&msg),
                };
                if sent.is_err() {
                    // The daemon went away; try again later rather than on every line.
                    *logger = None;
                    *last_attempt = Instant::now();
                }
            }
        }
        None => {}
    }
}

pub fn info(msg: &str) {
    log(Level::Info, msg);
}

pub fn warning(msg: &str) {
    log(Level::Warning, &format!("warning: {msg}"));
}

pub fn error(msg: &str) {
    log(Level::Error, &format!("error: {msg}"));
}

/// Replaces the default hook, which prints to stderr (the smtpd socket under spawn).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        // try_lock: a panic while the sink is held must not deadlock the hook.
        if let Ok(mut g) = SINK.try_lock()
            && let Some(Sink::Syslog {
                logger: Some(l), ..
            }) = g.as_mut()
        {
            let _ = l.crit(clean(&format!("panic: {payload}{location}")));
            return;
        }
        if let Ok(g) = SINK.try_lock()
            && matches!(g.as_ref(), Some(Sink::Stderr))
        {
            eprintln!("greyspf: panic: {payload}{location}");
        }
    }));
}
