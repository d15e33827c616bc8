//! Command-line interface definitions, and the reading of the serving command line.
//!
//! clap reads every command line but one: the one spawn(8) gives for serving
//! (`greyspf [-c FILE] [-o NAME=VALUE]... [-f]`), which is read here directly. clap builds
//! its whole command tree, every subcommand's arguments included, before it looks at
//! the first argument: about 200,000 instructions, a fifth of what a spawned instance
//! runs before its first reply (callgrind). Anything this reading does not know for
//! certain goes to clap, so the two never disagree (tested).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "greyspf",
    version,
    about = "Postfix SMTPD policy service: greylisting and SPF",
    long_about = "Postfix SMTPD access-policy service: greylisting keyed on the SPF-authenticated \
domain, and SPF checks. Without a command it serves policy requests on standard input \
until end of file, as spawn(8) runs it."
)]
pub struct Cli {
    /// Configuration file [default: /etc/greyspf/greyspf.conf]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Set a configuration parameter, overriding the file (repeatable)
    #[arg(short = 'o', value_name = "NAME=VALUE", global = true)]
    pub overrides: Vec<String>,

    /// Log to standard error instead of syslog (for manual runs only)
    #[arg(short = 'f', long = "foreground", global = true)]
    pub foreground: bool,

    /// Validate the configuration, print the effective settings and exit
    #[arg(long = "check-config")]
    pub check_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate one request given as options and print the reply
    Check(CheckArgs),
    /// Serve the SMTPD policy protocol (and the postscreen callout) on network and unix
    /// sockets, in the foreground, for one or many Postfix hosts
    Daemon,
    /// Run the store keeper (normally started automatically)
    Keeper {
        /// Detach from the terminal and the caller's session
        #[arg(long)]
        detach: bool,
    },
    /// Show the counters kept in the store
    Stats {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// List greylist entries
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show only entries still being greylisted, or only those that passed
        #[arg(long, value_parser = ["greylisted", "passed"])]
        state: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete greylist entries (the next request for them is new)
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// Delete every entry (when no filter is given)
        #[arg(long)]
        all: bool,
    },
    /// Expire old entries now instead of in small steps
    Purge,
    /// Client addresses or networks that skip greylisting, kept in the store
    Whitelist {
        #[command(subcommand)]
        action: WhitelistAction,
    },
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Client address (matched as its greylisting network) or stored client key
    #[arg(long, value_name = "ADDRESS")]
    pub client: Option<String>,
    /// Envelope sender (normalised as for greylisting)
    #[arg(long, value_name = "ADDRESS")]
    pub sender: Option<String>,
    /// Envelope recipient (normalised as for greylisting)
    #[arg(long, value_name = "ADDRESS")]
    pub recipient: Option<String>,
    /// Regular expression matched against "client sender recipient"
    #[arg(long, value_name = "REGEX")]
    pub pattern: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WhitelistAction {
    /// Add an address or network
    Add { network: String },
    /// Remove an address or network
    Remove { network: String },
    /// List the entries
    List,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Client IP address
    #[arg(long = "client-address", value_name = "ADDRESS")]
    pub client_address: String,
    /// Verified client host name
    #[arg(long = "client-name", value_name = "NAME", default_value = "unknown")]
    pub client_name: String,
    /// Client host name from the PTR record, verified or not
    #[arg(
        long = "reverse-client-name",
        value_name = "NAME",
        default_value = "unknown"
    )]
    pub reverse_client_name: String,
    /// HELO/EHLO name
    #[arg(long = "helo", value_name = "NAME", default_value = "")]
    pub helo: String,
    /// Envelope sender (empty for the null sender)
    #[arg(long = "sender", value_name = "ADDRESS", default_value = "")]
    pub sender: String,
    /// Envelope recipient
    #[arg(long = "recipient", value_name = "ADDRESS")]
    pub recipient: String,
    /// Message instance (requests of one message share it)
    #[arg(long = "instance", value_name = "ID", default_value = "check")]
    pub instance: String,
    /// SMTP protocol state
    #[arg(long = "protocol-state", value_name = "STATE", default_value = "RCPT")]
    pub protocol_state: String,
}

/// Reads the command line: the serving form directly, everything else through clap.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    match serving(&args) {
        Some(cli) => Ok(cli),
        None => Cli::try_parse_from(args),
    }
}

/// The serving command line, when `args` is one for certain: only `-c`/`--config` and
/// `-f`/`--foreground` (each once, as clap allows), and `-o`, each value a separate,
/// non-empty argument that does not start with `-`. `None` for anything else
/// (subcommands, `--help`, attached values, repeated or missing values, arguments that are
/// not UTF-8): clap reads those.
fn serving(args: &[OsString]) -> Option<Cli> {
    let mut cli = Cli {
        config: None,
        overrides: Vec::new(),
        foreground: false,
        check_config: false,
        command: None,
    };
    let mut rest = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = rest.next() {
        match arg? {
            "-f" | "--foreground" if !cli.foreground => cli.foreground = true,
            "-c" | "--config" if cli.config.is_none() => {
                cli.config = Some(PathBuf::from(value(rest.next())?));
            }
            "-o" => cli.overrides.push(value(rest.next())?.to_string()),
            _ => return None,
        }
    }
    Some(cli)
}

/// An option's value as clap would take it without doubt.
fn value(arg: Option<Option<&str>>) -> Option<&str> {
    arg.flatten()
        .filter(|v| !v.is_empty() && !v.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<OsString> {
        std::iter::once("greyspf")
            .chain(line.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// The direct reading gives exactly what clap gives, wherever it answers at all.
    #[test]
    fn the_serving_form_is_read_as_clap_reads_it() {
        let lines: &[&[&str]] = &[
            &[],
            &["-c", "/etc/greyspf/greyspf.conf"],
            &[
                "--config",
                "/x.conf",
                "-o",
                "greylist_delay=5m",
                "-o",
                "dry_run = yes",
            ],
            &["-o", "a=b", "-f", "-c", "/x", "-o", "c=d"],
            &["--foreground"],
            &["-o", "spf_enable=no", "-o", "spf_enable=yes"],
        ];
        for line in lines {
            let a = args(line);
            let direct = serving(&a).expect("a serving command line");
            let clap = Cli::try_parse_from(a).expect("clap reads it");
            assert_eq!(format!("{direct:?}"), format!("{clap:?}"), "{line:?}");
        }
    }

    #[test]
    fn anything_else_goes_to_clap() {
        let lines: &[&[&str]] = &[
            &[
                "check",
                "--client-address",
                "192.0.2.1",
                "--recipient",
                "a@b",
            ],
            &["--check-config"],
            &["--help"],
            &["-V"],
            &["-c", "/a", "-c", "/b"],
            &["-f", "--foreground"],
            &["-c"],
            &["-o"],
            &["-o", ""],
            &["-o", "-f"],
            &["-oa=b"],
            &["--config=/x"],
            &["-o", "a=b", "keeper", "--detach"],
            &["--", "-o"],
        ];
        for line in lines {
            assert!(serving(&args(line)).is_none(), "{line:?}");
        }
        let cli = parse(args(&["-o", "a=b", "keeper", "--detach"])).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keeper { detach: true })
        ));
        assert_eq!(cli.overrides, ["a=b"]);
        let e = parse(args(&["-c", "/a", "-c", "/b"])).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn arguments_that_are_not_utf8_go_to_clap() {
        use std::os::unix::ffi::OsStringExt;
        let mut a = args(&["-c"]);
        a.push(OsString::from_vec(vec![b'/', 0xff]));
        assert!(serving(&a).is_none());
        let cli = parse(a).unwrap();
        assert_eq!(cli.config.unwrap().as_os_str().len(), 2);
    }
}
