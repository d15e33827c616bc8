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
    /// Whether the mail goes on (DUNNO or a header): every verdict but the two that defer.
    pub fn passes(&self) -> bool {
        !matches!(self, Verdict::New { .. } | Verdict::EarlyRetry { .. })
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

    /// The milliseconds the verdict carries (left to wait, or waited), 0 for the others:
    /// the value that travels with the reason from the keeper or the Redis script.
    pub fn value_ms(&self) -> u64 {
        match *self {
            Verdict::New { remaining_ms } | Verdict::EarlyRetry { remaining_ms } => remaining_ms,
            Verdict::Delayed { waited_ms } => waited_ms,
            _ => 0,
        }
    }

    /// The verdict of a `reason` word and its value, the inverse of the two above.
    pub fn from_reason(reason: &str, value_ms: u64) -> Option<Verdict> {
        Some(match reason {
            "new" => Verdict::New {
                remaining_ms: value_ms,
            },
            "early-retry" => Verdict::EarlyRetry {
                remaining_ms: value_ms,
            },
            "delayed" => Verdict::Delayed {
                waited_ms: value_ms,
            },
            "triplet-known" => Verdict::Known,
            "client-awl" => Verdict::ClientAwl,
            "store-whitelist" => Verdict::Whitelisted,
            _ => return None,
        })
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

/// How far a stored `last` may lag behind the truth: a thousandth of the maximum age
/// (49 minutes for 35 days). `last` only ever counts against the maximum age, so the lag
/// moves an expiry by at most that much, and a triplet or client seen again within it
/// costs the store a read and no write.
pub fn last_seen_slack(t: &Timers) -> u64 {
    t.max_age_ms / 1024
}

/// Whether a decided triplet entry must be written: always when it is new or its cycle or
/// pass state changed; when only `last` moved, once it moved by the slack.
pub fn entry_needs_write(stored: Option<Entry>, new: &Entry, t: &Timers) -> bool {
    match stored {
        Some(s) if s.first == new.first && s.passed == new.passed => {
            new.last.saturating_sub(s.last) >= last_seen_slack(t).max(1)
        }
        _ => true,
    }
}

/// The same rule for an auto-whitelist entry: a count change is always written.
pub fn awl_needs_write(stored: Option<AwlEntry>, new: &AwlEntry, t: &Timers) -> bool {
    match stored {
        Some(s) if s.count == new.count && s.last_counted == new.last_counted => {
            new.last_seen.saturating_sub(s.last_seen) >= last_seen_slack(t).max(1)
        }
        _ => true,
    }
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

/// Everything one triplet decision changes, after the whitelists: the verdict, the entries
/// to write back (None: unchanged), and the counters it adds to. Both store engines apply
/// exactly this; the Redis engine's server-side script is checked against it case by case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub triplet: Option<Entry>,
    pub awl: Option<AwlEntry>,
    pub counters: Vec<&'static str>,
}

/// The auto-whitelist check, the triplet timers and the pass count, in that order, over
/// the stored entries (`awl` is ignored while the auto-whitelist is off).
pub fn decide_request(
    triplet: Option<Entry>,
    awl: Option<AwlEntry>,
    now: u64,
    t: &Timers,
) -> Decision {
    let awl = awl.filter(|_| t.awl_clients > 0);
    if awl_listed(awl, now, t) {
        let updated = AwlEntry {
            last_seen: now,
            ..awl.unwrap_or_default()
        };
        return Decision {
            verdict: Verdict::ClientAwl,
            triplet: None,
            awl: awl_needs_write(awl, &updated, t).then_some(updated),
            counters: vec!["awl_hits"],
        };
    }
    let (entry, verdict) = decide_triplet(triplet, now, t);
    let mut d = Decision {
        verdict,
        triplet: entry_needs_write(triplet, &entry, t).then_some(entry),
        awl: None,
        counters: Vec::new(),
    };
    if verdict.passes() && t.awl_clients > 0 {
        let counted = awl_count(awl, now, t);
        d.awl = awl_needs_write(awl, &counted, t).then_some(counted);
        if counted.count == t.awl_clients && awl.is_none_or(|a| a.count < t.awl_clients) {
            d.counters.push("awl_added");
        }
    }
    match verdict {
        Verdict::New { .. } => d.counters.push("new"),
        Verdict::EarlyRetry { .. } => d.counters.push("early_retry"),
        Verdict::Delayed { waited_ms } => {
            d.counters.push("passed_after_delay");
            d.counters.push(delay_bucket(waited_ms));
        }
        Verdict::Known => d.counters.push("passed_known"),
        Verdict::ClientAwl | Verdict::Whitelisted => {}
    }
    d
}

/// The `stats` bucket of a delay that ended in a pass.
pub fn delay_bucket(ms: u64) -> &'static str {
    match ms / 1000 {
        0..=300 => "delay_le_5m",
        301..=600 => "delay_le_10m",
        601..=1800 => "delay_le_30m",
        1801..=3600 => "delay_le_1h",
        3601..=14400 => "delay_le_4h",
        14401..=86400 => "delay_le_1d",
        _ => "delay_gt_1d",
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
    fn only_new_and_early_retry_defer() {
        assert!(!Verdict::New { remaining_ms: 1 }.passes());
        assert!(!Verdict::EarlyRetry { remaining_ms: 1 }.passes());
        assert!(Verdict::Delayed { waited_ms: 1 }.passes());
        assert!(Verdict::Known.passes());
        assert!(Verdict::ClientAwl.passes());
        assert!(Verdict::Whitelisted.passes());
    }

    #[test]
    fn verdicts_travel_as_reason_and_value() {
        for v in [
            Verdict::New { remaining_ms: 7 },
            Verdict::EarlyRetry { remaining_ms: 8 },
            Verdict::Delayed { waited_ms: 9 },
            Verdict::Known,
            Verdict::ClientAwl,
            Verdict::Whitelisted,
        ] {
            assert_eq!(Verdict::from_reason(v.reason(), v.value_ms()), Some(v));
        }
        assert_eq!(Verdict::from_reason("maybe", 0), None);
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
    fn delay_buckets() {
        assert_eq!(delay_bucket(300_000), "delay_le_5m");
        assert_eq!(delay_bucket(301_000), "delay_le_10m");
        assert_eq!(delay_bucket(90_000_000), "delay_gt_1d");
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

    #[test]
    fn writes_skipped_only_while_last_lags_less_than_the_slack() {
        // 35 days / 1024 = 2,953,125 ms.
        assert_eq!(last_seen_slack(&T), 2_953_125);
        let s = Entry {
            first: 1_000,
            last: 1_000,
            passed: true,
        };
        let seen = |last| Entry { last, ..s };
        assert!(entry_needs_write(None, &s, &T));
        assert!(!entry_needs_write(Some(s), &seen(1_000), &T));
        assert!(!entry_needs_write(Some(s), &seen(1_000 + 2_953_124), &T));
        assert!(entry_needs_write(Some(s), &seen(1_000 + 2_953_125), &T));
        let unpassed = Entry { passed: false, ..s };
        assert!(entry_needs_write(Some(unpassed), &s, &T));
        assert!(entry_needs_write(Some(s), &Entry { first: 2_000, ..s }, &T));

        let a = AwlEntry {
            count: 2,
            last_counted: 5_000,
            last_seen: 5_000,
        };
        assert!(awl_needs_write(None, &a, &T));
        assert!(!awl_needs_write(
            Some(a),
            &AwlEntry {
                last_seen: 6_000,
                ..a
            },
            &T
        ));
        assert!(awl_needs_write(Some(a), &AwlEntry { count: 3, ..a }, &T));
        assert!(awl_needs_write(
            Some(a),
            &AwlEntry {
                last_seen: 5_000 + 2_953_125,
                ..a
            },
            &T
        ));
        // A tiny maximum age (tests use seconds) still writes every change of a millisecond.
        let short = Timers {
            max_age_ms: 100,
            ..T
        };
        assert!(entry_needs_write(Some(s), &seen(1_001), &short));
    }
}
