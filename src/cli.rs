//! Command-line interface definitions.

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
