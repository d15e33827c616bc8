//! The instance's DNS answer cache: the records the checks use, held compactly until
//! their TTL runs out, within a byte budget.
//!
//! The resolver's own cache keeps whole DNS messages (about 1.2 kB an answer here), so a
//! cache large enough to matter would cost an instance megabytes. This one keeps only what
//! the evaluation reads: a TXT answer of one SPF record costs about 150 bytes.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::rc::Rc;
use std::time::Instant;

use super::answer::Answer;

/// What one cached record is reckoned to cost beyond its bytes: its slice and the
/// allocator's header and rounding.
const RECORD_OVERHEAD: usize = 40;
/// What one cached answer is reckoned to cost beyond its name and records: the map slot at
/// the map's usual load, the order queue's slot, the name's and the record list's
/// allocations. Measured: an instance's memory grows by about this much per answer.
const ENTRY_OVERHEAD: usize = 200;

/// The bytes a record takes, for the budget.
pub(crate) trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for Vec<u8> {
    fn weight(&self) -> usize {
        self.len() + RECORD_OVERHEAD
    }
}

impl Weight for String {
    fn weight(&self) -> usize {
        self.len() + RECORD_OVERHEAD
    }
}

impl Weight for Ipv4Addr {
    fn weight(&self) -> usize {
        4
    }
}

impl Weight for Ipv6Addr {
    fn weight(&self) -> usize {
        16
    }
}

struct Cached<T> {
    until: Instant,
    /// When it was stored, in puts: tells a current position in `order` from a stale one.
    seq: u64,
    /// `None`: the name has no record of this type (a void answer with a negative TTL).
    records: Option<Box<[T]>>,
    weight: usize,
}

/// Answers of one record type by name. Failures are never cached: the next check asks
/// again. When the budget is spent, the oldest answers go first.
pub(crate) struct AnswerCache<T> {
    /// The names are shared with `order`, not copied.
    entries: HashMap<Rc<str>, Cached<T>>,
    /// Names in the order they were stored; a name may appear again after a refresh, and
    /// stale positions are skipped when they come up.
    order: VecDeque<(Rc<str>, u64)>,
    puts: u64,
    bytes: usize,
    budget: usize,
}

impl<T: Clone + Weight> AnswerCache<T> {
    pub(crate) fn new(budget: usize) -> Self {
        AnswerCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            puts: 0,
            bytes: 0,
            budget,
        }
    }

    /// The cached answer for `name`, if it is still valid at `now`.
    pub(crate) fn get(&mut self, name: &str, now: Instant) -> Option<Answer<T>> {
        let cached = self.entries.get(name)?;
        if cached.until <= now {
            self.remove(name);
            return None;
        }
        Some(match &cached.records {
            Some(records) => Answer::Found(records.to_vec()),
            None => Answer::Void,
        })
    }

    /// Keeps `answer` for `name` until `until`; failures and answers too large for the
    /// budget are not kept.
    pub(crate) fn put(&mut self, name: &str, answer: &Answer<T>, until: Instant, now: Instant) {
        let records = match answer {
            Answer::Found(records) => Some(records.clone().into_boxed_slice()),
            Answer::Void => None,
            Answer::Failed(_) => return,
        };
        if until <= now {
            return;
        }
        let weight = name.len()
            + ENTRY_OVERHEAD
            + records
                .as_ref()
                .map_or(0, |r| r.iter().map(Weight::weight).sum());
        if weight > self.budget {
            return;
        }
        self.remove(name);
        while self.bytes + weight > self.budget {
            if !self.evict_oldest() {
                break;
            }
        }
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(name, seq)| entries.get(name).is_some_and(|c| c.seq == *seq));
        }
        self.puts += 1;
        let key: Rc<str> = name.into();
        self.order.push_back((key.clone(), self.puts));
        self.entries.insert(
            key,
            Cached {
                until,
                seq: self.puts,
                records,
                weight,
            },
        );
        self.bytes += weight;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.entries.remove(name) {
            self.bytes -= old.weight;
        }
    }

    /// Drops the oldest stored answer; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((name, seq)) = self.order.pop_front() {
            // A position is stale when its name was stored again later, or removed.
            if self.entries.get(&name).is_some_and(|c| c.seq == seq) {
                self.remove(&name);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn txt(s: &str) -> Answer<Vec<u8>> {
        Answer::Found(vec![s.as_bytes().to_vec()])
    }

    #[test]
    fn answers_live_until_their_ttl() {
        let now = Instant::now();
        let mut c = AnswerCache::new(10_000);
        c.put(
            "a.example",
            &txt("v=spf1 -all"),
            now + Duration::from_secs(300),
            now,
        );
        c.put(
            "void.example",
            &Answer::Void,
            now + Duration::from_secs(60),
            now,
        );
        c.put(
            "broken.example",
            &Answer::Failed("SERVFAIL".into()),
            now + Duration::from_secs(60),
            now,
        );
        c.put("zero.example", &txt("v=spf1"), now, now);
        assert_eq!(c.get("a.example", now), Some(txt("v=spf1 -all")));
        assert_eq!(c.get("void.example", now), Some(Answer::Void));
        assert_eq!(c.get("broken.example", now), None);
        assert_eq!(c.get("zero.example", now), None);
        let later = now + Duration::from_secs(60);
        assert_eq!(c.get("void.example", later), None);
        assert_eq!(c.get("a.example", later), Some(txt("v=spf1 -all")));
        assert_eq!(c.get("a.example", now + Duration::from_secs(300)), None);
        assert_eq!(c.len(), 0);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn the_budget_evicts_the_oldest_first() {
        let now = Instant::now();
        let until = now + Duration::from_secs(300);
        // Each answer weighs 9 + 200 + 1 + 40 = 250 bytes: three fit in 800.
        let mut c = AnswerCache::new(800);
        for name in ["n1.example", "n2.example", "n3.example"] {
            c.put(&name[..9], &txt("x"), until, now);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.bytes, 750);
        // Storing n1 again moves it to the back: n2 is now the oldest.
        c.put("n1.exampl", &txt("x"), until, now);
        c.put("n4.exampl", &txt("x"), until, now);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("n2.exampl", now), None);
        assert!(c.get("n1.exampl", now).is_some());
        assert!(c.get("n3.exampl", now).is_some());
        assert!(c.get("n4.exampl", now).is_some());
        assert!(c.bytes <= 800);
        // An answer larger than the whole budget is not kept, and evicts nothing.
        c.put("big.example", &txt(&"y".repeat(1000)), until, now);
        assert_eq!(c.get("big.example", now), None);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn stale_positions_do_not_pile_up() {
        let now = Instant::now();
        let mut c = AnswerCache::new(10_000);
        for i in 0..10_000u64 {
            let until = now + Duration::from_millis(1 + i % 7);
            c.put("same.example", &Answer::<Vec<u8>>::Void, until, now);
        }
        assert_eq!(c.len(), 1);
        assert!(c.order.len() <= 2 * c.len() + 65, "{}", c.order.len());
    }
}
