//! The greylisting decision: triplet timers and the client auto-whitelist, as pure
//! functions of the stored entries and the current time (milliseconds since the epoch).

/// The timers of one decision; sent with each request so the keeper applies the
/// configuration of the instance that asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub delay_ms: u64,
    pub retry_window_ms: u64,
    pub max_age_ms: u64,
    /// Passes that put a client address on the auto-whitelist; 0 turns it off.
    pub awl_clients: u32,
    pub awl_interval_ms: u64,
}

/// A triplet as stored: when it was first seen in its current cycle, last seen, and
/// whether it ever passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    pub first: u64,
    pub last: u64,
    pub passed: bool,
}

impl Entry {
    pub const LEN: usize = 17;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.first.to_be_bytes());
        b[8..16].copy_from_slice(&self.last.to_be_bytes());
        b[16] = u8::from(self.passed);
        b
    }

    pub fn decode(b: &[u8]) -> Option<Entry> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(Entry {
            first: u64::from_be_bytes(b[..8].try_into().ok()?),
            last: u64::from_be_bytes(b[8..16].try_into().ok()?),
            passed: b[16] != 0,
        })
    }
}

/// A client address on its way to the auto-whitelist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AwlEntry {
    pub count: u32,
    pub last_counted: u64,
    pub last_seen: u64,
}

impl AwlEntry {
    pub const LEN: usize = 20;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..4].copy_from_slice(&self.count.to_be_bytes());
        b[4..12].copy_from_slice(&self.last_counted.to_be_bytes());
        b[12..20].copy_from_slice(&self.last_seen.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<AwlEntry> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        Some(AwlEntry {
            count: u32::from_be_bytes(b[..4].try_into().ok()?),
            last_counted: u64::from_be_bytes(b[4..12].try_into().ok()?),
            last_seen: u64::from_be_bytes(b[12..20].try_into().ok()?),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First sighting, or a restart after the retry window or max age ran out.
    New { remaining_ms: u64 },
    /// Seen before, but the delay has not passed yet.
    EarlyRetry { remaining_ms: u64 },
    /// The first pass after a delay: this is when the X-Greylist header is due.
    Delayed { waited_ms: u64 },
    /// The triplet passed before (or the delay is zero).
    Known,
    /// The client address is on the auto-whitelist.
    ClientAwl,
    /// The client address is on the whitelist the administrator keeps in the store.
    Whitelisted,
}

impl Verdict {
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Verdict::Delayed { .. } | Verdict::Known | Verdict::ClientAwl
        )
    }

    /// The `reason=` word of the log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::New { .. } => "new",
            Verdict::EarlyRetry { .. } => "early-retry",
            Verdict::Delayed { .. } => "delayed",
            Verdict::Known => "triplet-known",
            Verdict::ClientAwl => "client-awl",
            Verdict::Whitelisted => "store-whitelist",
        }
    }
}

/// Applies the timers to a triplet. Early retries move `last` but never `first`, so a
/// client that hammers does not push its own delay further out.
pub fn decide_triplet(stored: Option<Entry>, now: u64, t: &Timers) -> (Entry, Verdict) {
    let fresh = |now| {
        if t.delay_ms == 0 {
            (
                Entry {
                    first: now,
                    last: now,
                    passed: true,
                },
                Verdict::Known,
            )
        } else {
            (
                Entry {
                    first: now,
                    last: now,
                    passed: false,
                },
                Verdict::New {
                    remaining_ms: t.delay_ms,
                },
            )
        }
    };
    let Some(e) = stored else { return fresh(now) };
    if now.saturating_sub(e.last) > t.max_age_ms {
        return fresh(now);
    }
    if e.passed {
        return (Entry { last: now, ..e }, Verdict::Known);
    }
    let waited = now.saturating_sub(e.first);
    if waited > t.retry_window_ms {
        return fresh(now);
    }
    if waited >= t.delay_ms {
        return (
            Entry {
                first: e.first,
                last: now,
                passed: true,
            },
            Verdict::Delayed { waited_ms: waited },
        );
    }
    (
        Entry { last: now, ..e },
        Verdict::EarlyRetry {
            remaining_ms: t.delay_ms - waited,
        },
    )
}

/// True when the client address is auto-whitelisted now.
pub fn awl_listed(stored: Option<AwlEntry>, now: u64, t: &Timers) -> bool {
    match stored {
        Some(a) if t.awl_clients > 0 => {
            a.count >= t.awl_clients && now.saturating_sub(a.last_seen) <= t.max_age_ms
        }
        _ => false,
    }
}

/// Counts a pass for the client address, at most once per `awl_interval`, so one busy
/// burst does not whitelist a client.
pub fn awl_count(stored: Option<AwlEntry>, now: u64, t: &Timers) -> AwlEntry {
    match stored {
        Some(a) if now.saturating_sub(a.last_seen) <= t.max_age_ms => {
            if now.saturating_sub(a.last_counted) >= t.awl_interval_ms {
                AwlEntry {
                    count: a.count.saturating_add(1),
                    last_counted: now,
                    last_seen: now,
                }
            } else {
                AwlEntry {
                    last_seen: now,
                    ..a
                }
            }
        }
        _ => AwlEntry {
            count: 1,
            last_counted: now,
            last_seen: now,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timers = Timers {
        delay_ms: 300_000,
        retry_window_ms: 2 * 86_400_000,
        max_age_ms: 35 * 86_400_000,
        awl_clients: 3,
        awl_interval_ms: 3_600_000,
    };

    #[test]
    fn timers() {
        let (e, v) = decide_triplet(None, 1_000, &T);
        assert_eq!(
            v,
            Verdict::New {
                remaining_ms: 300_000
            }
        );
        let (e, v) = decide_triplet(Some(e), 200_000, &T);
        assert_eq!(
            v,
            Verdict::EarlyRetry {
                remaining_ms: 101_000
            }
        );
        assert_eq!(e.first, 1_000);
        // A retry at exactly the delay passes.
        let (e, v) = decide_triplet(Some(e), 301_000, &T);
        assert_eq!(v, Verdict::Delayed { waited_ms: 300_000 });
        let (e, v) = decide_triplet(Some(e), 400_000, &T);
        assert_eq!(v, Verdict::Known);
        assert_eq!(e.last, 400_000);
        // Max age after the last sighting restarts the cycle.
        let (_, v) = decide_triplet(Some(e), 400_001 + T.max_age_ms, &T);
        assert_eq!(
            v,
            Verdict::New {
                remaining_ms: 300_000
            }
        );
    }

    #[test]
    fn retry_window_restarts_the_clock() {
        let (e, _) = decide_triplet(None, 0, &T);
        let (e, v) = decide_triplet(Some(e), T.retry_window_ms + 1, &T);
        assert_eq!(
            v,
            Verdict::New {
                remaining_ms: 300_000
            }
        );
        assert_eq!(e.first, T.retry_window_ms + 1);
    }

    #[test]
    fn zero_delay_passes_at_once() {
        let t = Timers { delay_ms: 0, ..T };
        assert_eq!(decide_triplet(None, 5, &t).1, Verdict::Known);
    }

    #[test]
    fn auto_whitelist_counts_once_per_interval() {
        let mut a = awl_count(None, 0, &T);
        a = awl_count(Some(a), 1_000, &T);
        assert_eq!(a.count, 1);
        a = awl_count(Some(a), 3_600_000, &T);
        assert!(!awl_listed(Some(a), 3_600_000, &T));
        a = awl_count(Some(a), 7_200_000, &T);
        assert_eq!(a.count, 3);
        assert!(awl_listed(Some(a), 7_200_000, &T));
        assert!(!awl_listed(Some(a), 7_200_001 + T.max_age_ms, &T));
        assert!(!awl_listed(
            Some(a),
            7_200_000,
            &Timers {
                awl_clients: 0,
                ..T
            }
        ));
    }

    #[test]
    fn encoding_round_trips() {
        let e = Entry {
            first: 1,
            last: u64::MAX,
            passed: true,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        let a = AwlEntry {
            count: 7,
            last_counted: 2,
            last_seen: 3,
        };
        assert_eq!(AwlEntry::decode(&a.encode()), Some(a));
        assert_eq!(Entry::decode(b"short"), None);
    }
}
