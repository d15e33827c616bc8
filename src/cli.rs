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
    /// Run the store keeper (normally started automatically)
    Keeper {
        /// Detach from the terminal and the caller's session
        #[arg(long)]
        detach: bool,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Client IP address
    #[arg(long = "client-address", value_name = "ADDRESS")]
    pub client_address: String,
    /// Verified client host name
    #[arg(long = "client-name", value_name = "NAME", default_value = "unknown")]
    pub client_name: String,
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
