//! The program: argument handling, configuration, logging set-up, dispatch to the serving
//! loop or a subcommand, and the mapping of every outcome to an exit code.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::admin;
use crate::admin::{AdminError, AdminSettings, StoreChoice};
use crate::cli::{CheckArgs, Command, FilterArgs, WhitelistAction};
use crate::config::StoreEngine;
use crate::config::{Config, KEYS, Sources};
use crate::date::now_ms;
use crate::dns::{DnsSettings, SharedDns};
use crate::greylist::Greylister;
use crate::greylist::decide::Timers;
use crate::greylist::whitelist::Whitelists;
use crate::logging;
use crate::policy::{self, Action, Context, MessageState, PolicySettings};
use crate::protocol::Request;
use crate::score::dns::LazyScore;
use crate::score::{Score, ScoreSettings, Weights};
use crate::server::ServerSettings;
use crate::server::daemon::{DaemonSettings, Reload, Runtime, Start, StoreFactory};
use crate::server::postscreen::{PostscreenScore, PostscreenSettings, Thresholds};
use crate::spf::SpfSettings;
use crate::store::client::{ClientSettings, KeeperClient};
use crate::store::keeper::Keeper;
#[cfg(feature = "redis")]
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::{KeeperSettings, keeper};

/// Exit codes (sysexits): usage, runtime and configuration errors differ.
pub const EXIT_OK: i32 = 0;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_RUNTIME: i32 = 70;
pub const EXIT_CONFIG: i32 = 78;

/// What the standard library's start-up would have done that greyspf needs (the binary
/// starts without it, src/main.rs): SIGPIPE ignored, so that a write to a gone smtpd is an
/// error and not death, and descriptors 0 to 2 open (on /dev/null if they were closed), so
/// that no file greyspf opens, the store say, can become its standard error.
pub fn setup_process() {
    // SAFETY: plain libc calls on values owned here; nothing else runs yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    for (fd, closed) in (0..).zip(closed_standard_fds()) {
        // SAFETY: open with a constant path; it returns the lowest free descriptor, the
        // closed one, unless something is badly wrong, when going on would be worse.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } != fd {
            std::process::abort();
        }
    }
}

/// Whether each of descriptors 0 to 2 is closed: one `poll`, or where that cannot say (a
/// descriptor limit below 3, no memory), one `fcntl` each, as the standard library asks.
fn closed_standard_fds() -> [bool; 3] {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    loop {
        // SAFETY: the array is valid for its three entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0 {
            return fds.map(|f| f.revents & libc::POLLNVAL != 0);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EINVAL | libc::EAGAIN | libc::ENOMEM) => break,
            _ => std::process::abort(),
        }
    }
    [0, 1, 2].map(|fd| {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
    })
}

/// Runs the program and returns its exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    // Before anything can panic or fail: the default hook and error paths print to
    // stderr, which under spawn(8) is the smtpd socket.
    logging::install_panic_hook();
    early_logging(&[]);
    let cli = match crate::cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            if e.use_stderr() {
                logging::error(&format!("command line: {}", first_line(&e.to_string())));
            }
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
            // stderr is where an administrator running the command looks; syslog is where
            // one looks when smtpd spawned it (smtpd only sees a malformed reply).
            early_logging(&cli.overrides);
            logging::error(&format!("configuration error: {e}"));
            eprintln!("greyspf: configuration error: {e}");
            return EXIT_CONFIG;
        }
    };
    if cli.check_config {
        if let Err(e) = compile_patterns(&cfg) {
            eprintln!("greyspf: configuration error: score_dynamic_patterns: {e}");
            return EXIT_CONFIG;
        }
        print!("{}", cfg.render());
        if cfg.store == StoreEngine::Sled
            && let Err(e) = crate::store::statedir::check(&cfg.state_directory)
        {
            eprintln!("greyspf: configuration error: {e}");
            return EXIT_CONFIG;
        }
        return check_store(&cfg);
    }
    let detach = matches!(cli.command, Some(Command::Keeper { detach: true }));
    logging::init(
        cfg.syslog_facility,
        cfg.syslog_socket.clone(),
        cli.foreground && !detach,
    );
    match cli.command {
        None => {
            if !cli.foreground {
                silence_stderr();
            }
            serve(&cfg)
        }
        Some(Command::Keeper { detach }) => {
            if detach && let Err(e) = keeper::detach() {
                logging::error(&format!("keeper: {e}"));
                return EXIT_RUNTIME;
            }
            match keeper::run(&keeper_settings(&cfg)) {
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
        Some(Command::Daemon) => daemon(&cfg),
        Some(command) => admin_out(admin_settings(&cfg).and_then(|a| admin_command(&a, command))),
    }
}

/// The administrator's commands, against whichever store the configuration names.
fn admin_command(a: &AdminSettings, command: Command) -> Result<String, AdminError> {
    match command {
        Command::Stats { json } => admin::stats(a, json),
        Command::List {
            filter,
            state,
            json,
        } => admin::list(a, &selection(filter, state), json),
        Command::Delete { filter, all } => admin::delete(a, &selection(filter, None), all),
        Command::Purge => admin::purge(a),
        Command::Whitelist { action } => match action {
            WhitelistAction::Add { network } => admin::whitelist(a, "add", Some(&network)),
            WhitelistAction::Remove { network } => admin::whitelist(a, "remove", Some(&network)),
            WhitelistAction::List => admin::whitelist(a, "list", None),
        },
        Command::Keeper { .. } | Command::Check(_) | Command::Daemon => {
            Err(AdminError::Usage("not an administrator's command".into()))
        }
    }
}

/// Logging before the configuration is loaded: to the syslog socket and facility of the
/// `-o` overrides when given (the last one wins, as in the configuration), else to the
/// built-in defaults. A configuration that failed to load is not trusted for this.
fn early_logging(overrides: &[String]) {
    let default = |key: &str| {
        KEYS.iter()
            .find(|k| k.name == key)
            .map_or("", |k| k.default)
    };
    let (mut facility, mut socket) = (default("syslog_facility"), default("syslog_socket"));
    for (k, v) in overrides.iter().filter_map(|o| o.split_once('=')) {
        match k.trim() {
            "syslog_facility" => facility = v.trim(),
            "syslog_socket" => socket = v.trim(),
            _ => {}
        }
    }
    let facility = facility.parse().unwrap_or(syslog::Facility::LOG_MAIL);
    logging::init_early(facility, PathBuf::from(socket));
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    line.strip_prefix("error: ").unwrap_or(line)
}

/// Points fd 2 at /dev/null before serving. Under spawn(8) it is the smtpd socket, and
/// some messages bypass every hook (allocation failure, stack overflow): they must not
/// reach smtpd as a reply.
fn silence_stderr() {
    let null = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            logging::warning(&format!("cannot open /dev/null for stderr: {e}"));
            return;
        }
    };
    // SAFETY: dup2 on two descriptors we own; fd 2 is replaced atomically.
    if unsafe { libc::dup2(null.as_raw_fd(), 2) } < 0 {
        let e = std::io::Error::last_os_error();
        logging::warning(&format!("cannot point stderr at /dev/null: {e}"));
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

/// The greylisting timers of the configuration, in the store's units.
pub fn timers(cfg: &Config) -> Timers {
    Timers {
        delay_ms: cfg.greylist_delay.as_millis() as u64,
        retry_window_ms: cfg.greylist_retry_window.as_millis() as u64,
        max_age_ms: cfg.greylist_max_age.as_millis() as u64,
        awl_clients: cfg.greylist_auto_whitelist_clients,
        awl_interval_ms: cfg.greylist_auto_whitelist_interval.as_millis() as u64,
    }
}

/// The decision pipeline's part of the configuration.
pub fn policy_settings(cfg: &Config) -> PolicySettings {
    PolicySettings {
        protocol_states: cfg.protocol_states.clone(),
        trusted_networks: cfg.trusted_networks.clone(),
        dry_run: cfg.dry_run,
        hostname: cfg.hostname.clone(),
        spf_enable: cfg.spf_enable,
        spf_helo_check: cfg.spf_helo_check,
        spf_skip_networks: cfg.spf_skip_networks.clone(),
        spf_reject_results: cfg.spf_reject_results.clone(),
        spf_defer_results: cfg.spf_defer_results.clone(),
        spf_reject_text: cfg.spf_reject_text.clone(),
        spf_defer_text: cfg.spf_defer_text.clone(),
        greylist_enable: cfg.greylist_enable,
        greylist_spf_key: cfg.greylist_spf_key,
        greylist_ipv4_prefix: cfg.greylist_ipv4_prefix,
        greylist_ipv6_prefix: cfg.greylist_ipv6_prefix,
        greylist_action: cfg.greylist_action.clone(),
        greylist_text: cfg.greylist_text.clone(),
        greylist_header: cfg.greylist_header,
        timers: timers(cfg),
        store_failure_action: Action::parse(&cfg.store_failure_action),
        score: cfg.score_enable.then(|| score_settings(cfg)),
        score_reject_action: cfg.score_reject_action.clone(),
        score_reject_text: cfg.score_reject_text.clone(),
        score_header: cfg.score_header,
    }
}

/// Reputation scoring's part of the configuration.
pub fn score_settings(cfg: &Config) -> ScoreSettings {
    ScoreSettings {
        dnsbl: cfg.score_dnsbl.clone(),
        rhsbl: cfg.score_rhsbl.clone(),
        weights: Weights {
            no_ptr: cfg.score_no_ptr,
            ptr_unconfirmed: cfg.score_ptr_unconfirmed,
            ptr_dynamic: cfg.score_ptr_dynamic,
            helo_literal: cfg.score_helo_literal,
            helo_not_fqdn: cfg.score_helo_not_fqdn,
            helo_unresolvable: cfg.score_helo_unresolvable,
            helo_is_client: cfg.score_helo_is_client,
            helo_ours: cfg.score_helo_ours,
            sender_unroutable: cfg.score_sender_unroutable,
            spf_pass: cfg.score_spf_pass,
            spf_fail: cfg.score_spf_fail,
            spf_softfail: cfg.score_spf_softfail,
        },
        // Checked when the configuration was loaded with scoring on.
        dynamic_patterns: crate::score::parse_patterns(&cfg.score_dynamic_patterns.join(" "))
            .unwrap_or_default(),
        greylist_threshold: cfg.score_greylist_threshold,
        reject_threshold: cfg.score_reject_threshold,
        timeout: cfg.score_timeout,
        hostname: cfg.hostname.clone(),
    }
}

/// The one DNS client of a process, shared by SPF and scoring: its per-try timeout follows
/// the longer of their deadlines.
pub fn dns_settings(cfg: &Config) -> DnsSettings {
    let scoring = if cfg.score_enable {
        cfg.score_timeout
    } else {
        Duration::ZERO
    };
    DnsSettings {
        server: cfg.dns_server,
        retransmit: cfg.dns_retransmit,
        deadline: cfg.spf_timeout.max(scoring),
    }
}

/// The SPF checker's part of the configuration.
pub fn spf_settings(cfg: &Config) -> SpfSettings {
    SpfSettings {
        dns_server: cfg.dns_server,
        dns_retransmit: cfg.dns_retransmit,
        timeout: cfg.spf_timeout,
        header: cfg.spf_header,
        authserv_id: cfg.spf_authserv_id.clone(),
        hostname: cfg.hostname.clone(),
    }
}

/// The serving loop's part of the configuration.
pub fn server_settings(cfg: &Config) -> ServerSettings {
    ServerSettings {
        policy: policy_settings(cfg),
        spf: cfg.spf_enable.then(|| spf_settings(cfg)),
        dns: dns_settings(cfg),
        whitelist_clients: cfg.whitelist_clients.clone(),
        whitelist_recipients: cfg.whitelist_recipients.clone(),
    }
}

/// What the daemon fixes at start: listeners, pool size, socket access, user.
pub fn daemon_settings(cfg: &Config) -> DaemonSettings {
    DaemonSettings {
        listen: cfg.listen.clone(),
        postscreen_listen: cfg.postscreen_listen.clone(),
        max_connections: cfg.max_connections as usize,
        unix_mode: cfg.listen_unix_mode,
        unix_group: cfg.listen_unix_group.clone(),
        user: cfg.daemon_user.clone(),
    }
}

/// The postscreen callout's part of the configuration.
pub fn postscreen_settings(cfg: &Config) -> PostscreenSettings {
    PostscreenSettings {
        whitelist_clients: cfg.whitelist_clients.clone(),
        timers: timers(cfg),
        max_ttl: cfg.postscreen_max_ttl,
        score: cfg.score_enable.then(|| PostscreenScore {
            settings: score_settings(cfg),
            thresholds: Thresholds {
                enforce: cfg.postscreen_enforce_threshold,
                drop: cfg.postscreen_drop_threshold,
                pass_below: cfg.score_greylist_threshold,
                pass_ttl: cfg.postscreen_pass_ttl,
            },
        }),
        dns: dns_settings(cfg),
    }
}

/// What each new daemon connection is served with; rebuilt by a reload. With sled, the
/// connections decide in the daemon's own store.
pub fn daemon_runtime(cfg: &Config, keeper: Option<&Arc<Keeper>>) -> Result<Runtime, String> {
    let store: StoreFactory = match (cfg.store, keeper) {
        (StoreEngine::Sled, Some(k)) => {
            let k = Arc::clone(k);
            Box::new(move || Box::new(k.store()) as Box<dyn Greylister>)
        }
        (StoreEngine::Sled, None) => return Err("the store is not open".into()),
        #[cfg(feature = "redis")]
        (StoreEngine::Redis, _) => {
            let redis = redis_settings(cfg)?;
            Box::new(move || Box::new(RedisStore::new(redis.clone())) as Box<dyn Greylister>)
        }
    };
    Ok(Runtime {
        server: server_settings(cfg),
        postscreen: postscreen_settings(cfg),
        allowed_clients: cfg.allowed_clients.clone(),
        idle_timeout: cfg.connection_idle_timeout,
        store,
    })
}

/// Opens the daemon's store and builds its first runtime, and the reload that builds the
/// next ones. What the open store fixes (engine, directory, keeper settings) cannot change
/// without a restart: a reload that changes it is refused as a whole.
fn daemon_start(
    cfg: &Config,
    opened: &Arc<OnceLock<Arc<Keeper>>>,
) -> Result<(Runtime, Reload), String> {
    let keeper = match cfg.store {
        StoreEngine::Sled => {
            let k = Keeper::embedded(&keeper_settings(cfg)).map_err(|e| e.to_string())?;
            let k = Arc::clone(opened.get_or_init(|| Arc::new(k)));
            Some(k)
        }
        #[cfg(feature = "redis")]
        StoreEngine::Redis => None,
    };
    let runtime = daemon_runtime(cfg, keeper.as_ref())?;
    let (sources, engine) = (cfg.sources.clone(), cfg.store);
    let fixed = keeper_settings(cfg);
    let reload: Reload = Box::new(move || {
        let c = Config::load(&sources).map_err(|e| e.to_string())?;
        let now = keeper_settings(&c);
        if c.store != engine
            || (engine == StoreEngine::Sled
                && (now.state_directory != fixed.state_directory || now.digest() != fixed.digest()))
        {
            return Err(
                "store, state_directory, greylist_privacy, greylist_max_age, \
                        store_flush_interval and keeper_idle_timeout change only with a restart"
                    .into(),
            );
        }
        daemon_runtime(&c, keeper.as_ref())
    });
    Ok((runtime, reload))
}

/// The store keeper's part of the configuration.
pub fn keeper_settings(cfg: &Config) -> KeeperSettings {
    KeeperSettings {
        state_directory: cfg.state_directory.clone(),
        privacy: cfg.greylist_privacy,
        privacy_secret_file: cfg.privacy_secret_file.clone(),
        max_age: cfg.greylist_max_age,
        flush_interval: cfg.store_flush_interval,
        idle_timeout: cfg.keeper_idle_timeout,
    }
}

/// How instances and commands reach the keeper, and start one configured as they are.
pub fn client_settings(cfg: &Config) -> ClientSettings {
    let mut keeper_args: Vec<OsString> = Vec::new();
    if let Some(f) = &cfg.sources.file {
        keeper_args.extend(["-c".into(), f.clone().into_os_string()]);
    }
    for o in &cfg.sources.overrides {
        keeper_args.extend(["-o".into(), o.into()]);
    }
    ClientSettings {
        keeper: keeper_settings(cfg),
        timeout: cfg.store_timeout,
        keeper_args,
    }
}

/// The administrator's commands' part of the configuration.
pub fn admin_settings(cfg: &Config) -> Result<AdminSettings, AdminError> {
    let store = match cfg.store {
        StoreEngine::Sled => StoreChoice::Keeper(client_settings(cfg)),
        #[cfg(feature = "redis")]
        StoreEngine::Redis => StoreChoice::Redis(redis_settings(cfg).map_err(AdminError::Config)?),
    };
    Ok(AdminSettings {
        store,
        ipv4_prefix: cfg.greylist_ipv4_prefix,
        ipv6_prefix: cfg.greylist_ipv6_prefix,
        privacy: cfg.greylist_privacy,
    })
}

/// The Redis engine's part of the configuration, with the password and the privacy secret
/// read from their files.
#[cfg(feature = "redis")]
pub fn redis_settings(cfg: &Config) -> Result<RedisSettings, String> {
    let password = match &cfg.redis_password_file {
        Some(p) => Some(crate::store::redis::read_password(p)?),
        None => None,
    };
    let privacy_secret = if cfg.greylist_privacy {
        let secret = crate::store::secret::load_secret(&cfg.privacy_secret_file)?;
        Some(crate::store::secret::KeyedHash::new(&secret)?)
    } else {
        None
    };
    Ok(RedisSettings {
        url: cfg.redis_url.clone(),
        password,
        key_prefix: cfg.redis_key_prefix.clone(),
        timeout: cfg.redis_timeout,
        tls_ca_file: cfg.redis_tls_ca_file.clone(),
        dns_retransmit: cfg.dns_retransmit,
        privacy_secret,
        max_age_ms: cfg.greylist_max_age.as_millis() as u64,
    })
}

/// The store engine of the configuration, for the serving loop and `check`.
fn greylister(cfg: &Config) -> Result<Box<dyn Greylister>, String> {
    Ok(match cfg.store {
        StoreEngine::Sled => Box::new(KeeperClient::new(&client_settings(cfg))),
        #[cfg(feature = "redis")]
        StoreEngine::Redis => Box::new(RedisStore::new(redis_settings(cfg)?)),
    })
}

/// `--check-config` compiles the patterns of dynamic names that serving compiles only when
/// it first needs them: one the regex engine cannot build is refused now, not ignored later.
fn compile_patterns(cfg: &Config) -> Result<(), String> {
    if !cfg.score_enable {
        return Ok(());
    }
    let patterns = crate::score::parse_patterns(&cfg.score_dynamic_patterns.join(" "))?;
    patterns.iter().try_for_each(crate::score::Pattern::compile)
}

/// `--check-config` with `store = redis`: connects, authenticates and checks the privacy
/// keying, so a wrong password or secret shows now rather than in the mail log.
#[cfg(feature = "redis")]
fn check_store(cfg: &Config) -> i32 {
    if cfg.store != StoreEngine::Redis {
        return EXIT_OK;
    }
    let result =
        redis_settings(cfg).and_then(|s| RedisStore::new(s).check().map_err(|e| e.to_string()));
    match result {
        Ok(line) => {
            println!("# store: {line}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("greyspf: store: {e}");
            EXIT_CONFIG
        }
    }
}

/// Without the Redis engine the store is always the keeper's, checked when it starts.
#[cfg(not(feature = "redis"))]
fn check_store(_cfg: &Config) -> i32 {
    EXIT_OK
}

fn serve(cfg: &Config) -> i32 {
    let mut store = match greylister(cfg) {
        Ok(s) => s,
        Err(e) => {
            logging::error(&format!("configuration error: {e}"));
            return EXIT_CONFIG;
        }
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    match crate::server::serve(stdin, stdout, &server_settings(cfg), store.as_mut()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            logging::error(&e.to_string());
            EXIT_RUNTIME
        }
    }
}

/// `greyspf daemon`: serves until SIGTERM, then writes the store to disk; SIGHUP loads
/// the configuration from the same sources again and keeps the old one if the new one is bad.
fn daemon(cfg: &Config) -> i32 {
    let opened: Arc<OnceLock<Arc<Keeper>>> = Arc::new(OnceLock::new());
    let start: Start = {
        let (cfg, opened) = (cfg.clone(), Arc::clone(&opened));
        Box::new(move || daemon_start(&cfg, &opened))
    };
    let result = crate::server::daemon::run(&daemon_settings(cfg), start);
    if let Some(k) = opened.get() {
        k.close();
    }
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            logging::error(&format!("daemon: {e}"));
            eprintln!("greyspf: daemon: {e}");
            EXIT_RUNTIME
        }
    }
}

fn check(cfg: &Config, a: CheckArgs) -> i32 {
    let req = Request {
        request: "smtpd_access_policy".into(),
        protocol_state: a.protocol_state,
        client_address: a.client_address,
        client_name: a.client_name,
        reverse_client_name: a.reverse_client_name,
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
    let mut store = match greylister(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("greyspf: configuration error: {e}");
            return EXIT_CONFIG;
        }
    };
    let dns = Rc::new(SharedDns::new(dns_settings(cfg)));
    let spf = crate::spf::LazySpf::shared(spf_settings(cfg), Rc::clone(&dns));
    let score = LazyScore::new(score_settings(cfg), dns);
    let mut out = std::io::stdout().lock();
    if cfg.spf_enable {
        print_spf(&mut out, cfg, &req, &spf);
    }
    let spf_ref: Option<&dyn crate::spf::Spf> =
        cfg.spf_enable.then_some(&spf as &dyn crate::spf::Spf);
    let score_ref: Option<&dyn Score> = cfg.score_enable.then_some(&score as &dyn Score);
    if let Some(score) = score_ref {
        print_score(&mut out, cfg, &req, spf_ref, score);
    }
    let mut cx = Context {
        whitelists: &wl,
        store: store.as_mut(),
        spf: spf_ref,
        score: score_ref,
        now_ms: now_ms(),
    };
    let d = policy::decide(
        &req,
        &policy_settings(cfg),
        &mut cx,
        &mut MessageState::default(),
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

/// `check`: every SPF identity with its result. It is shown from an evaluation of its own
/// so that the administrator sees every identity, even when the decision stopped at the
/// first.
fn print_spf(out: &mut impl Write, cfg: &Config, req: &Request, spf: &crate::spf::LazySpf) {
    let (Ok(ip), Some(checker)) = (
        req.client_address.parse::<std::net::IpAddr>(),
        spf.checker(),
    ) else {
        return;
    };
    let (helo, mail_from) = policy::spf_identities(checker, cfg.spf_helo_check, req, ip);
    for (name, o) in [("spf_helo", helo), ("spf_mail_from", mail_from)] {
        let Some(o) = o else { continue };
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

/// `check` with scoring on: every check with its weight and what it saw, then the total.
/// The decision after it scores again (from the DNS client's cache, within the TTLs).
fn print_score(
    out: &mut impl Write,
    cfg: &Config,
    req: &Request,
    spf: Option<&dyn crate::spf::Spf>,
    score: &dyn Score,
) {
    let Ok(ip) = req.client_address.parse::<std::net::IpAddr>() else {
        return;
    };
    let spf_result = spf.and_then(|spf| {
        if req.sender.is_empty() {
            spf.null_sender(ip, &req.helo_name).map(|o| o.result)
        } else {
            Some(spf.mail_from(ip, &req.helo_name, &req.sender).result)
        }
    });
    let subject = policy::score_subject(req, ip, spf_result);
    let settings = score_settings(cfg);
    let scored = crate::score::evaluate(&settings, &subject, &score.facts(&subject));
    for c in &scored.checks {
        let _ = writeln!(
            out,
            "score_check={} weight={} hit={} detail=\"{}\"",
            c.name,
            crate::score::Weight(c.weight),
            if c.hit { "yes" } else { "no" },
            c.detail
        );
    }
    let _ = writeln!(
        out,
        "score={} outcome={}",
        crate::score::Weight(scored.total),
        scored.level.as_str()
    );
}
