//! Serving loops: spawn mode (one stream on stdin/stdout), the daemon's listeners and
//! connection pool, and the postscreen callout protocol.

pub mod daemon;
pub mod postscreen;
pub mod spawn;

use std::path::PathBuf;

use crate::policy::PolicySettings;

pub use spawn::serve;

/// What the SMTPD policy loop needs; the composition root builds it from the configuration.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub policy: PolicySettings,
    /// None when SPF is switched off.
    pub spf: Option<crate::spf::SpfSettings>,
    /// The one DNS client of the process, shared by SPF and scoring.
    pub dns: crate::dns::DnsSettings,
    pub whitelist_clients: Vec<PathBuf>,
    pub whitelist_recipients: Vec<PathBuf>,
}
