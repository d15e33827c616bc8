//! The plain values of SPF that other layers share: results, identities, header kinds, the
//! outcome of one identity, and the errors of this layer.

use std::fmt;
use std::str::FromStr;

/// The results of RFC 7208 §2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpfResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl SpfResult {
    /// The lower-case name used in headers, logs and configuration lists.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::None => "none",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }

    pub(super) fn to_mail_auth(self) -> mail_auth::SpfResult {
        match self {
            SpfResult::Pass => mail_auth::SpfResult::Pass,
            SpfResult::Fail => mail_auth::SpfResult::Fail,
            SpfResult::SoftFail => mail_auth::SpfResult::SoftFail,
            SpfResult::Neutral => mail_auth::SpfResult::Neutral,
            SpfResult::None => mail_auth::SpfResult::None,
            SpfResult::TempError => mail_auth::SpfResult::TempError,
            SpfResult::PermError => mail_auth::SpfResult::PermError,
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SpfResult {
    type Err = SpfError;

    /// Accepts the names of [`SpfResult::as_str`] in any case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [
            SpfResult::Pass,
            SpfResult::Fail,
            SpfResult::SoftFail,
            SpfResult::Neutral,
            SpfResult::None,
            SpfResult::TempError,
            SpfResult::PermError,
        ]
        .into_iter()
        .find(|result| result.as_str().eq_ignore_ascii_case(value))
        .ok_or_else(|| SpfError::UnknownResult(value.to_string()))
    }
}

/// The identity checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    Helo,
    MailFrom,
}

impl fmt::Display for Identity {
    /// The `identity=` values of Received-SPF: `helo`, `mailfrom`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Identity::Helo => "helo",
            Identity::MailFrom => "mailfrom",
        })
    }
}

/// Which trace header a result is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// RFC 7208 §9.1.
    ReceivedSpf,
    /// RFC 8601, with `authserv_id` as the authentication service.
    AuthenticationResults,
    /// No header: [`SpfOutcome::header`] is empty.
    None,
}

impl FromStr for HeaderKind {
    type Err = SpfError;

    /// `received-spf`, `authentication-results` or `none`, in any case.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "received-spf" => Ok(HeaderKind::ReceivedSpf),
            "authentication-results" => Ok(HeaderKind::AuthenticationResults),
            "none" => Ok(HeaderKind::None),
            _ => Err(SpfError::UnknownHeader(value.to_string())),
        }
    }
}

/// The result of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOutcome {
    pub identity: Identity,
    pub result: SpfResult,
    /// The domain checked: the HELO name or the domain of the sender, lower case.
    pub domain: String,
    /// The domain's `exp=` explanation, on fail only; printable ASCII, at most 512 bytes.
    pub explanation: Option<String>,
    /// Why the result is a permerror or temperror (for logs and `greyspf check`, never
    /// for the client).
    pub reason: Option<String>,
    /// The trace header on one line, without the line end, e.g.
    /// `Received-SPF: pass (...) receiver=...;`; empty with [`HeaderKind::None`].
    pub header: String,
}

/// Errors of setting the checker up, and of parsing configuration values of this module.
#[derive(Debug, thiserror::Error)]
pub enum SpfError {
    #[error("{0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error(
        "unknown SPF result \"{0}\" (expected pass, fail, softfail, neutral, none, temperror or permerror)"
    )]
    UnknownResult(String),
    #[error("unknown SPF header \"{0}\" (expected received-spf, authentication-results or none)")]
    UnknownHeader(String),
}
