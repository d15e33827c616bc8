//! The store's contents and every operation on them: greylist decisions, counters,
//! listing, deletion, the administrator's whitelist, expiry, and keyed hashing of keys in
//! privacy mode. Only the keeper holds a `Db`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::greylist::ClientStanding;
use crate::greylist::decide::{self, AwlEntry, Entry, Timers, Verdict};
use crate::net::Network;
use crate::store::secret::{KeyedHash, load_secret};

/// Every counter `stats` reports, in the order it prints them.
pub const COUNTERS: &[&str] = &[
    "requests",
    "new",
    "early_retry",
    "passed_after_delay",
    "passed_known",
    "awl_hits",
    "awl_added",
    "whitelist_client_hits",
    "whitelist_recipient_hits",
    "store_whitelist_hits",
    "store_failures",
    "expired_never_passed",
    "expired_passed",
    "delay_le_5m",
    "delay_le_10m",
    "delay_le_30m",
    "delay_le_1h",
    "delay_le_4h",
    "delay_le_1d",
    "delay_gt_1d",
];

/// Counters the instances may report (the keeper counts the rest itself).
pub fn instance_counter(name: &str) -> bool {
    matches!(
        name,
        "whitelist_client_hits" | "whitelist_recipient_hits" | "store_failures" | "log_dropped"
    ) || ((name.starts_with("spf_") || name.starts_with("score_"))
        && name.len() < 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

/// One triplet as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub client: String,
    pub sender: String,
    pub recipient: String,
    pub entry: Entry,
}

impl Row {
    /// The row as LIST sends it: client, sender, recipient, first, last, passed.
    pub fn fields(self) -> [String; 6] {
        [
            self.client,
            self.sender,
            self.recipient,
            self.entry.first.to_string(),
            self.entry.last.to_string(),
            u8::from(self.entry.passed).to_string(),
        ]
    }
}

/// Which triplets `list` and `delete` act on; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub client: String,
    pub sender: String,
    pub recipient: String,
    /// `greylisted` or `passed`
    pub state: String,
    pub pattern: Option<crate::pattern::Regex>,
}

impl Filter {
    /// The filter of a LIST or DELETE request: client, sender, recipient, state and
    /// pattern (a regular expression, case-insensitive, over "client sender recipient").
    pub fn from_fields(f: &[&str]) -> Result<Filter, String> {
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let pattern = match get(4) {
            "" => None,
            p => Some(crate::pattern::build(p, true).map_err(|e| format!("bad pattern: {e}"))?),
        };
        Ok(Filter {
            client: get(0).to_string(),
            sender: get(1).to_string(),
            recipient: get(2).to_string(),
            state: get(3).to_string(),
            pattern,
        })
    }

    /// Whether the filter selects the row; `client`, `sender` and `recipient` are the
    /// filter's fields as stored (keyed in privacy mode), None when empty.
    pub fn matches(
        &self,
        row: &Row,
        client: Option<&str>,
        sender: Option<&str>,
        recipient: Option<&str>,
    ) -> bool {
        client.is_none_or(|c| c == row.client)
            && sender.is_none_or(|s| s == row.sender)
            && recipient.is_none_or(|r| r == row.recipient)
            && match self.state.as_str() {
                "greylisted" => !row.entry.passed,
                "passed" => row.entry.passed,
                _ => true,
            }
            && self.pattern.as_ref().is_none_or(|p| {
                p.is_match(format!("{} {} {}", row.client, row.sender, row.recipient).as_bytes())
            })
    }
}

pub struct Db {
    db: sled::Db,
    triplets: sled::Tree,
    awl: sled::Tree,
    whitelist: sled::Tree,
    counters_tree: sled::Tree,
    /// Counters live in memory and are written out by `persist_counters`, so a decision
    /// costs no extra write.
    counters: Mutex<BTreeMap<String, u64>>,
    /// The administrator's whitelist, cached for matching.
    whitelist_nets: Mutex<Vec<Network>>,
    /// Serialises read-modify-write decisions.
    lock: Mutex<()>,
    secret: Option<KeyedHash>,
    /// The first I/O error sled reported. After one, sled refuses every later operation,
    /// even once the cause (a full disk, say) is gone: the keeper must exit so that a
    /// new one opens the store again from what is on disk.
    io_failure: Mutex<Option<String>>,
}

type DbResult<T> = Result<T, String>;

/// Takes a lock even when a thread panicked while holding it: each holder leaves the data
/// consistent at every step (sled is the truth, the maps are caches and counters), and a
/// keeper that refused every decision after one panic would turn greylisting off.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn err(e: sled::Error) -> String {
    e.to_string()
}

impl Db {
    /// `privacy_secret`: the secret file of privacy mode, None without it.
    pub fn new(db: sled::Db, privacy_secret: Option<&Path>) -> DbResult<Db> {
        let triplets = db.open_tree("triplets").map_err(err)?;
        let awl = db.open_tree("awl").map_err(err)?;
        let whitelist = db.open_tree("whitelist").map_err(err)?;
        let counters_tree = db.open_tree("counters").map_err(err)?;
        let mut counters = BTreeMap::new();
        for item in counters_tree.iter() {
            let (k, v) = item.map_err(err)?;
            if let (Ok(k), Ok(v)) = (
                String::from_utf8(k.to_vec()),
                <[u8; 8]>::try_from(v.as_ref()),
            ) {
                counters.insert(k, u64::from_be_bytes(v));
            }
        }
        let secret = match privacy_secret {
            Some(path) => Some(KeyedHash::new(&load_secret(path)?)?),
            None => None,
        };
        let d = Db {
            db,
            triplets,
            awl,
            whitelist,
            counters_tree,
            counters: Mutex::new(counters),
            whitelist_nets: Mutex::new(Vec::new()),
            lock: Mutex::new(()),
            secret,
            io_failure: Mutex::new(None),
        };
        d.reload_whitelist()?;
        Ok(d)
    }

    /// Turns a sled error into ours, noting an I/O error for `io_failure`.
    fn failed(&self, e: sled::Error) -> String {
        let text = e.to_string();
        if matches!(e, sled::Error::Io(_)) {
            locked(&self.io_failure).get_or_insert_with(|| text.clone());
        }
        text
    }

    /// The I/O error that left this store unusable, if one did.
    pub fn io_failure(&self) -> Option<String> {
        locked(&self.io_failure).clone()
    }

    /// A key part as stored: the value itself, or its keyed hash in privacy mode.
    pub fn key_part(&self, s: &str) -> String {
        match &self.secret {
            None => s.to_string(),
            Some(k) => k.key_part(s),
        }
    }

    fn triplet_key(&self, client: &str, sender: &str, recipient: &str) -> Vec<u8> {
        [
            self.key_part(client),
            self.key_part(sender),
            self.key_part(recipient),
        ]
        .join("\0")
        .into_bytes()
    }

    pub fn count(&self, name: &str, n: u64) {
        let mut c = locked(&self.counters);
        // Counting runs on every decision: allocate a key only for a new counter.
        match c.get_mut(name) {
            Some(v) => *v += n,
            None => {
                c.insert(name.to_string(), n);
            }
        }
    }

    pub fn flush(&self) {
        self.persist_counters();
        let _ = self.db.flush();
    }

    pub fn persist_counters(&self) {
        let snapshot = locked(&self.counters).clone();
        for (k, v) in snapshot {
            if let Err(e) = self.counters_tree.insert(k.as_bytes(), &v.to_be_bytes()) {
                self.failed(e);
                return;
            }
        }
    }

    fn reload_whitelist(&self) -> DbResult<()> {
        let mut nets = Vec::new();
        for item in self.whitelist.iter() {
            let (k, _) = item.map_err(|e| self.failed(e))?;
            if let Some(n) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| s.parse::<Network>().ok())
            {
                nets.push(n);
            }
        }
        *locked(&self.whitelist_nets) = nets;
        Ok(())
    }

    /// The atomic greylist decision: administrator's whitelist, auto-whitelist, triplet
    /// timers, and the pass count, with the counters that go with them.
    pub fn grey(
        &self,
        client: &str,
        sender: &str,
        recipient: &str,
        address: &str,
        t: &Timers,
        now: u64,
    ) -> DbResult<Verdict> {
        self.count("requests", 1);
        let ip = address.parse::<std::net::IpAddr>().ok();
        let listed =
            ip.is_some_and(|ip| locked(&self.whitelist_nets).iter().any(|n| n.contains(ip)));
        if listed {
            self.count("store_whitelist_hits", 1);
            return Ok(Verdict::Whitelisted);
        }
        let key = self.triplet_key(client, sender, recipient);
        let awl_key = self.key_part(address);
        let _guard = locked(&self.lock);
        let awl = if t.awl_clients > 0 {
            self.awl
                .get(awl_key.as_bytes())
                .map_err(|e| self.failed(e))?
                .and_then(|v| AwlEntry::decode(&v))
        } else {
            None
        };
        let triplet = self
            .triplets
            .get(&key)
            .map_err(|e| self.failed(e))?
            .and_then(|v| Entry::decode(&v));
        let d = decide::decide_request(triplet, awl, now, t);
        if let Some(e) = d.triplet {
            self.triplets
                .insert(key, &e.encode())
                .map_err(|e| self.failed(e))?;
        }
        if let Some(a) = d.awl {
            self.awl
                .insert(awl_key.as_bytes(), &a.encode())
                .map_err(|e| self.failed(e))?;
        }
        for c in &d.counters {
            self.count(c, 1);
        }
        let verdict = d.verdict;
        Ok(verdict)
    }

    /// What the store knows of one client address, read-only (the postscreen callout).
    pub fn client_standing(&self, address: &str, t: &Timers, now: u64) -> DbResult<ClientStanding> {
        let Ok(ip) = address.parse::<std::net::IpAddr>() else {
            return Ok(ClientStanding::Unknown);
        };
        if locked(&self.whitelist_nets).iter().any(|n| n.contains(ip)) {
            return Ok(ClientStanding::Whitelisted);
        }
        let key = self.key_part(&ip.to_canonical().to_string());
        let entry = self
            .awl
            .get(key.as_bytes())
            .map_err(|e| self.failed(e))?
            .and_then(|v| AwlEntry::decode(&v));
        Ok(match entry {
            Some(a) if decide::awl_listed(Some(a), now, t) => ClientStanding::AutoWhitelisted {
                remaining_ms: (a.last_seen + t.max_age_ms).saturating_sub(now),
            },
            _ => ClientStanding::Unknown,
        })
    }

    /// Counter values (every known counter, zero if never counted) and store sizes.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let c = locked(&self.counters).clone();
        let mut out: Vec<(String, u64)> = COUNTERS
            .iter()
            .map(|k| (k.to_string(), c.get(*k).copied().unwrap_or(0)))
            .collect();
        for (k, v) in &c {
            if !COUNTERS.contains(&k.as_str()) {
                out.push((k.clone(), *v));
            }
        }
        out.push(("triplets".into(), self.triplets.len() as u64));
        out.push(("auto_whitelisted_clients".into(), self.awl.len() as u64));
        out.push((
            "store_whitelist_entries".into(),
            self.whitelist.len() as u64,
        ));
        out.push(("store_bytes".into(), self.db.size_on_disk().unwrap_or(0)));
        out
    }

    fn matching<'a>(&'a self, f: &'a Filter) -> impl Iterator<Item = (sled::IVec, Row)> + 'a {
        let (client, sender, recipient) = (
            (!f.client.is_empty()).then(|| self.key_part(&f.client)),
            (!f.sender.is_empty()).then(|| self.key_part(&f.sender)),
            (!f.recipient.is_empty()).then(|| self.key_part(&f.recipient)),
        );
        self.triplets.iter().filter_map(move |item| {
            let (k, v) = item.ok()?;
            let entry = Entry::decode(&v)?;
            let text = String::from_utf8_lossy(&k).to_string();
            let mut parts = text.splitn(3, '\0');
            let row = Row {
                client: parts.next()?.to_string(),
                sender: parts.next()?.to_string(),
                recipient: parts.next()?.to_string(),
                entry,
            };
            f.matches(
                &row,
                client.as_deref(),
                sender.as_deref(),
                recipient.as_deref(),
            )
            .then_some((k, row))
        })
    }

    pub fn list(&self, f: &Filter, limit: usize) -> Vec<Row> {
        self.matching(f).take(limit).map(|(_, r)| r).collect()
    }

    pub fn delete(&self, f: &Filter) -> DbResult<u64> {
        let keys: Vec<sled::IVec> = self.matching(f).map(|(k, _)| k).collect();
        let _guard = locked(&self.lock);
        let mut n = 0;
        for k in keys {
            if self
                .triplets
                .remove(k)
                .map_err(|e| self.failed(e))?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn whitelist_add(&self, net: &Network) -> DbResult<bool> {
        let added = self
            .whitelist
            .insert(net.to_string().as_bytes(), &[])
            .map_err(|e| self.failed(e))?
            .is_none();
        self.reload_whitelist()?;
        Ok(added)
    }

    pub fn whitelist_remove(&self, net: &Network) -> DbResult<bool> {
        let removed = self
            .whitelist
            .remove(net.to_string().as_bytes())
            .map_err(|e| self.failed(e))?
            .is_some();
        self.reload_whitelist()?;
        Ok(removed)
    }

    pub fn whitelist_list(&self) -> Vec<String> {
        self.whitelist
            .iter()
            .filter_map(|i| i.ok().and_then(|(k, _)| String::from_utf8(k.to_vec()).ok()))
            .collect()
    }

    /// Removes up to `step` entries past max age after `cursor` (all when `step` is
    /// `usize::MAX`); returns the triplets that expired without ever passing, for the log.
    pub fn expire(
        &self,
        cursors: &mut [Vec<u8>; 2],
        now: u64,
        max_age_ms: u64,
        step: usize,
    ) -> Vec<String> {
        let mut never = Vec::new();
        for (tree_no, tree) in [&self.triplets, &self.awl].into_iter().enumerate() {
            let cursor = &mut cursors[tree_no];
            let mut seen = 0;
            let mut last = None;
            let range = tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(cursor.as_slice()),
                std::ops::Bound::Unbounded,
            ));
            for item in range.take(step) {
                let Ok((k, v)) = item else { break };
                seen += 1;
                let state = if tree_no == 0 {
                    Entry::decode(&v).map(|e| (e.last, e.passed))
                } else {
                    AwlEntry::decode(&v).map(|a| (a.last_seen, true))
                };
                let expired = state.is_none_or(|(l, _)| now.saturating_sub(l) > max_age_ms);
                if expired {
                    let _guard = locked(&self.lock);
                    if let Err(e) = tree.remove(&k) {
                        self.failed(e);
                        break;
                    }
                    if tree_no == 0 {
                        if matches!(state, Some((_, false))) {
                            self.count("expired_never_passed", 1);
                            let text = String::from_utf8_lossy(&k).replace('\0', " ");
                            never.push(text);
                        } else {
                            self.count("expired_passed", 1);
                        }
                    }
                }
                last = Some(k.to_vec());
            }
            match last {
                Some(k) if seen == step => *cursor = k,
                _ => cursor.clear(),
            }
        }
        never
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_go_on_after_a_panic_under_the_lock() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let d = Db::new(db, None).unwrap();
        let t = Timers {
            delay_ms: 1000,
            retry_window_ms: 1000,
            max_age_ms: 1000,
            awl_clients: 0,
            awl_interval_ms: 0,
        };
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let _held = d.lock.lock().unwrap();
                let _c = d.counters.lock().unwrap();
                panic!("a decision panics");
            });
            assert!(h.join().is_err());
        });
        assert!(d.lock.is_poisoned());
        let v = d.grey("192.0.2.0/24", "a@x", "b@y", "192.0.2.1", &t, 5);
        assert!(matches!(v, Ok(Verdict::New { .. })), "{v:?}");
        assert!(d.stats().contains(&("new".to_string(), 1)));
    }
}
