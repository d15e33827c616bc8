//! What one DNS lookup gives: records, a void answer, or a failure.

/// The answer to one DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// At least one record of the requested type.
    Found(Vec<T>),
    /// NXDOMAIN, or no record of that type (a "void lookup").
    Void,
    /// Timeout, SERVFAIL or any other failure: a temperror where the RFC says so.
    Failed(String),
}
