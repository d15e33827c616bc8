//! Greylisting: triplet keys, the timer decision, and the whitelists.

pub mod decide;
pub mod key;
pub mod whitelist;
