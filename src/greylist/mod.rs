//! Greylisting: triplet keys, the timer decision, the whitelists, and the interface every
//! store engine offers the decision pipeline.

pub mod decide;
pub mod key;
pub mod whitelist;

use decide::{Timers, Verdict};

/// One greylist question for the store.
#[derive(Debug, Clone)]
pub struct GreyQuery<'a> {
    pub client_key: &'a str,
    pub sender: &'a str,
    pub recipient: &'a str,
    /// The exact client address, for the auto-whitelist.
    pub client_address: &'a str,
    pub timers: Timers,
}

/// Why the store could not answer: the request gets `store_failure_action`, and the
/// serving loop logs this, rate-limited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreUnavailable(pub String);

/// What the store knows of one client address, for the postscreen callout: nothing, an
/// administrator's whitelist entry (no lifetime), or an auto-whitelist entry with the time
/// it has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStanding {
    Unknown,
    Whitelisted,
    AutoWhitelisted { remaining_ms: u64 },
}

/// Anything that can answer greylist questions: the keeper's client, or a test double.
pub trait Greylister {
    fn greylist(&mut self, q: &GreyQuery<'_>) -> Result<Verdict, StoreUnavailable>;
    /// Adds to counters the store cannot see for itself (whitelist hits, SPF results).
    fn count(&mut self, _name: &str) {}
    /// A read-only look at one client address (store whitelist, auto-whitelist). Engines
    /// that cannot tell answer Unknown.
    fn client_standing(
        &mut self,
        _address: &str,
        _timers: &Timers,
    ) -> Result<ClientStanding, StoreUnavailable> {
        Ok(ClientStanding::Unknown)
    }
    /// Called at end of input: a last chance to hand over what is still held back.
    fn finish(&mut self) {}
}
