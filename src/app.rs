//! The program: argument handling, configuration, logging set-up, dispatch to the serving
//! loop or a subcommand, and the mapping of every outcome to an exit code.

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

use crate::admin;
use crate::cli::{CheckArgs, Cli, Command, FilterArgs, WhitelistAction};
use crate::config::{Config, Sources};
use crate::greylist::whitelist::Whitelists;
use crate::logging;
use crate::policy::{self, MessageState};
use crate::protocol::Request;
use crate::store::{client::KeeperClient, keeper, now_ms};

/// Exit codes (sysexits): usage, runtime and configuration errors differ.
pub const EXIT_OK: i32 = 0;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_RUNTIME: i32 = 70;
pub const EXIT_CONFIG: i32 = 78;

/// Runs the program and returns its exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let sources = Sources {
        file: cli.config.clone(),
        overrides: cli.overrides.clone(),
    };
    let cfg = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            // Configuration errors happen before serving: stderr is where an administrator
            // running the command looks, and where smtpd logs a failed spawn.
            eprintln!("greyspf: configuration error: {e}");
            return EXIT_CONFIG;
        }
    };
    if cli.check_config {
        print!("{}", cfg.render());
        if let Err(e) = crate::store::statedir::check(&cfg.state_directory) {
            eprintln!("greyspf: configuration error: {e}");
            return EXIT_CONFIG;
        }
        return EXIT_OK;
    }
    let detach = matches!(cli.command, Some(Command::Keeper { detach: true }));
    logging::init(
        cfg.syslog_facility,
        cfg.syslog_socket.clone(),
        cli.foreground && !detach,
    );
    logging::install_panic_hook();
    match cli.command {
        None => serve(&cfg),
        Some(Command::Keeper { detach }) => {
            if detach && let Err(e) = keeper::detach() {
                logging::error(&format!("keeper: {e}"));
                return EXIT_RUNTIME;
            }
            match keeper::run(&cfg) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    logging::error(&format!("keeper: {e}"));
                    if !detach {
                        eprintln!("greyspf: keeper: {e}");
                    }
                    EXIT_RUNTIME
                }
            }
        }
        Some(Command::Check(args)) => check(&cfg, args),
        Some(Command::Stats { json }) => admin_out(admin::stats(&cfg, json)),
        Some(Command::List {
            filter,
            state,
            json,
        }) => admin_out(admin::list(&cfg, &selection(filter, state), json)),
        Some(Command::Delete { filter, all }) => {
            admin_out(admin::delete(&cfg, &selection(filter, None), all))
        }
        Some(Command::Purge) => admin_out(admin::purge(&cfg)),
        Some(Command::Whitelist { action }) => admin_out(match action {
            WhitelistAction::Add { network } => admin::whitelist(&cfg, "add", Some(&network)),
            WhitelistAction::Remove { network } => admin::whitelist(&cfg, "remove", Some(&network)),
            WhitelistAction::List => admin::whitelist(&cfg, "list", None),
        }),
    }
}

fn selection(f: FilterArgs, state: Option<String>) -> admin::Selection {
    admin::Selection {
        client: f.client,
        sender: f.sender,
        recipient: f.recipient,
        state,
        pattern: f.pattern,
    }
}

/// Prints an admin command's output; its errors go to stderr (these commands are run by
/// people, never under spawn).
fn admin_out(r: Result<String, admin::AdminError>) -> i32 {
    match r {
        Ok(s) => {
            print!("{s}");
            EXIT_OK
        }
        Err(admin::AdminError::Usage(m)) => {
            eprintln!("greyspf: {m}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("greyspf: {e}");
            EXIT_RUNTIME
        }
    }
}

fn serve(cfg: &Config) -> i32 {
    let mut store = KeeperClient::new(cfg);
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    match crate::server::serve(stdin, stdout, cfg, &mut store) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            logging::error(&e.to_string());
            EXIT_RUNTIME
        }
    }
}

fn check(cfg: &Config, a: CheckArgs) -> i32 {
    let req = Request {
        request: "smtpd_access_policy".into(),
        protocol_state: a.protocol_state,
        client_address: a.client_address,
        client_name: a.client_name.clone(),
        reverse_client_name: a.client_name,
        helo_name: a.helo,
        sender: a.sender,
        recipient: a.recipient,
        instance: a.instance,
        ..Request::default()
    };
    let mut wl = Whitelists::new(
        cfg.whitelist_clients.clone(),
        cfg.whitelist_recipients.clone(),
    );
    for w in wl.refresh() {
        logging::warning(&w);
    }
    let mut store = KeeperClient::new(cfg);
    let spf = crate::spf::LazySpf::new(crate::spf::SpfSettings::from_config(cfg));
    let mut out = std::io::stdout().lock();
    // The SPF results are shown from a separate evaluation so that the administrator sees
    // every identity, even when the decision stopped at the first.
    if cfg.spf_enable
        && let (Ok(ip), Some(checker)) = (
            req.client_address.parse::<std::net::IpAddr>(),
            spf.checker(),
        )
    {
        let helo = if cfg.spf_helo_check {
            checker.helo(ip, &req.helo_name)
        } else {
            None
        };
        let mail_from =
            (!req.sender.is_empty()).then(|| checker.mail_from(ip, &req.helo_name, &req.sender));
        for (name, o) in [("spf_helo", helo), ("spf_mail_from", mail_from)] {
            if let Some(o) = o {
                let _ = write!(out, "{name}={} domain={}", o.result, o.domain);
                if let Some(e) = &o.explanation {
                    let _ = write!(out, " explanation=\"{e}\"");
                }
                if let Some(r) = &o.reason {
                    let _ = write!(out, " reason=\"{r}\"");
                }
                let _ = writeln!(out);
            }
        }
    }
    let spf_ref: Option<&dyn policy::Spf> = cfg.spf_enable.then_some(&spf as &dyn policy::Spf);
    let d = policy::decide(
        &req,
        cfg,
        &wl,
        &mut store,
        spf_ref,
        &mut MessageState::default(),
        now_ms(),
    );
    let _ = writeln!(out, "action={}", d.action);
    if let Some(l) = &d.log {
        let _ = writeln!(out, "{l}");
    }
    if let Some(e) = &d.store_error {
        let _ = writeln!(out, "store_error={e}");
    }
    EXIT_OK
}
