//! The DNS side of scoring: every lookup of one evaluation at once, under one deadline,
//! through the process's shared DNS client; lists that keep failing are rested, and lists
//! that answer with error codes are reported once.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{
    Facts, Listing, Probe, Score, ScoreSettings, Subject, Weights, is_error_code, is_fqdn,
};
use crate::dns::{Answer, Boxed, DnsClient, Lookup, SharedDns, join_all};

/// A list that failed this many evaluations in a row is rested...
const SKIP_AFTER_FAILURES: u32 = 3;
/// ...for this long, then asked again (policyd-weight's BL_ERROR_SKIP).
const SKIP_FOR: Duration = Duration::from_secs(600);
/// At most this many PTR names are checked for forward confirmation.
const MAX_PTR_NAMES: usize = 4;

/// One lookup's result, tagged with where it goes in the facts.
enum Job {
    Dnsbl(usize, Listing),
    RhsblSender(usize, Listing),
    RhsblHelo(usize, Listing),
    Ptr(Probe<Vec<(String, bool)>>),
    Helo(Probe<Vec<IpAddr>>),
    Sender(Probe<bool>),
}

type JobFuture<'a> = Boxed<'a, Job>;

/// A lookup and what it gives when the deadline comes first.
type Pending<'a> = (JobFuture<'a>, Job);

#[derive(Debug, Default)]
struct Health {
    failures: u32,
    rested_until: Option<Instant>,
}

/// Gathers the facts of a subject from the DNS; built once per process.
pub struct ScoreChecker {
    dns: Rc<DnsClient>,
    settings: ScoreSettings,
    health: RefCell<HashMap<String, Health>>,
    warned: RefCell<HashSet<String>>,
}

impl ScoreChecker {
    pub fn new(dns: Rc<DnsClient>, settings: ScoreSettings) -> Self {
        ScoreChecker {
            dns,
            settings,
            health: RefCell::new(HashMap::new()),
            warned: RefCell::new(HashSet::new()),
        }
    }

    fn rested(&self, zone: &str, now: Instant) -> bool {
        self.health
            .borrow()
            .get(zone)
            .and_then(|h| h.rested_until)
            .is_some_and(|until| now < until)
    }

    /// Every lookup of one evaluation, each with its result should the deadline come first.
    fn jobs<'a>(
        &'a self,
        lookup: &'a Lookup<'a>,
        subject: &Subject<'_>,
        known: &Known,
    ) -> Vec<Pending<'a>> {
        let late = format!("no answer within {} ms", self.settings.timeout.as_millis());
        let helo = subject.helo.trim_end_matches('.').to_ascii_lowercase();
        let helo = Some(helo).filter(|h| is_fqdn(h));
        let sender = subject
            .sender_domain
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| is_fqdn(d));
        let mut jobs = self.list_jobs(lookup, subject.ip.to_canonical(), &sender, &helo, &late);
        jobs.extend(self.host_jobs(lookup, subject.ip.to_canonical(), known, sender, helo, late));
        jobs
    }

    /// The DNS list lookups: the client address in each `dnsbl` zone, the sender domain
    /// and the HELO name in each `rhsbl` zone. Rested lists answer `Skipped` at once.
    fn list_jobs<'a>(
        &'a self,
        lookup: &'a Lookup<'a>,
        ip: IpAddr,
        sender: &Option<String>,
        helo: &Option<String>,
        late: &str,
    ) -> Vec<Pending<'a>> {
        let s = &self.settings;
        let now = Instant::now();
        let failed = || Listing::Failed(late.to_string());
        let mut jobs: Vec<Pending<'a>> = Vec::new();
        for (i, z) in s.dnsbl.iter().enumerate().filter(|(_, z)| z.is_on()) {
            let rested = self.rested(&z.zone, now);
            let name = super::list_name(ip, &z.zone);
            jobs.push((
                Box::pin(async move { Job::Dnsbl(i, list(lookup, name, rested).await) }),
                Job::Dnsbl(i, failed()),
            ));
        }
        for (i, z) in s.rhsbl.iter().enumerate().filter(|(_, z)| z.is_on()) {
            let rested = self.rested(&z.zone, now);
            if let Some(d) = sender {
                let name = format!("{d}.{}", z.zone);
                jobs.push((
                    Box::pin(async move { Job::RhsblSender(i, list(lookup, name, rested).await) }),
                    Job::RhsblSender(i, failed()),
                ));
            }
            if let Some(h) = helo {
                let name = format!("{h}.{}", z.zone);
                jobs.push((
                    Box::pin(async move { Job::RhsblHelo(i, list(lookup, name, rested).await) }),
                    Job::RhsblHelo(i, failed()),
                ));
            }
        }
        jobs
    }

    /// The lookups of the checks that are on: the client's PTR names, the HELO name's
    /// addresses, the sender domain's MX (or A); none for what Postfix already found.
    fn host_jobs<'a>(
        &'a self,
        lookup: &'a Lookup<'a>,
        ip: IpAddr,
        known: &Known,
        sender: Option<String>,
        helo: Option<String>,
        late: String,
    ) -> Vec<Pending<'a>> {
        let w = &self.settings.weights;
        let mut jobs: Vec<Pending<'a>> = Vec::new();
        if ptr_wanted(w) && known.ptr.is_none() {
            jobs.push((
                Box::pin(async move { Job::Ptr(ptr(lookup, ip).await) }),
                Job::Ptr(Probe::Failed(late.clone())),
            ));
        }
        let helo = helo.filter(|_| helo_wanted(w) && known.helo.is_none());
        if let Some(h) = helo {
            jobs.push((
                Box::pin(async move { Job::Helo(addresses(lookup, &h).await) }),
                Job::Helo(Probe::Failed(late.clone())),
            ));
        }
        if let Some(d) = sender.filter(|_| w.sender_unroutable != 0.0) {
            jobs.push((
                Box::pin(async move { Job::Sender(routable(lookup, &d).await) }),
                Job::Sender(Probe::Failed(late)),
            ));
        }
        jobs
    }

    /// Files the results, notes failures for resting, and warns once per zone of error
    /// answers.
    fn collect(&self, results: Vec<Job>) -> Facts {
        let s = &self.settings;
        let mut facts = Facts::none();
        for job in results {
            match job {
                Job::Dnsbl(i, l) => facts.dnsbl.push((s.dnsbl[i].zone.clone(), l)),
                Job::RhsblSender(i, l) => facts.rhsbl_sender.push((s.rhsbl[i].zone.clone(), l)),
                Job::RhsblHelo(i, l) => facts.rhsbl_helo.push((s.rhsbl[i].zone.clone(), l)),
                Job::Ptr(p) => facts.ptr = p,
                Job::Helo(p) => facts.helo_addresses = p,
                Job::Sender(p) => facts.sender_routable = p,
            }
        }
        let all = facts
            .dnsbl
            .iter()
            .chain(&facts.rhsbl_sender)
            .chain(&facts.rhsbl_helo);
        let mut outcome: HashMap<&str, bool> = HashMap::new();
        for (zone, listing) in all {
            match listing {
                Listing::Failed(_) => {
                    outcome.entry(zone).or_insert(false);
                }
                Listing::Skipped => {}
                Listing::Listed(codes) => {
                    self.warn_error_codes(zone, codes);
                    outcome.insert(zone, true);
                }
                Listing::NotListed => {
                    outcome.insert(zone, true);
                }
            }
        }
        for (zone, answered) in outcome {
            self.note_health(zone, answered);
        }
        facts
    }

    fn warn_error_codes(&self, zone: &str, codes: &[std::net::Ipv4Addr]) {
        let Some(code) = codes.iter().find(|c| is_error_code(**c)) else {
            return;
        };
        if self.warned.borrow_mut().insert(zone.to_string()) {
            crate::logging::warning(&format!(
                "configuration: DNS list {zone} answered {code}, an error code, not a \
                 listing (counted 0): check the list's terms and the resolver greyspf uses \
                 (public and shared resolvers are often refused)"
            ));
        }
    }

    fn note_health(&self, zone: &str, answered: bool) {
        let mut health = self.health.borrow_mut();
        let h = health.entry(zone.to_string()).or_default();
        if answered {
            *h = Health::default();
            return;
        }
        h.failures += 1;
        if h.failures >= SKIP_AFTER_FAILURES {
            h.failures = 0;
            h.rested_until = Some(Instant::now() + SKIP_FOR);
            crate::logging::warning(&format!(
                "DNS list {zone} failed {SKIP_AFTER_FAILURES} times in a row: not asked for \
                 the next {} s",
                SKIP_FOR.as_secs()
            ));
        }
    }
}

impl Score for ScoreChecker {
    fn facts(&self, subject: &Subject<'_>) -> Facts {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let lookup = self.dns.lookup(deadline);
        let known = Known::of(subject, &self.settings);
        let jobs = self.jobs(&lookup, subject, &known);
        let results = self.dns.block_on(join_all(
            jobs.into_iter()
                .map(|(job, late)| bounded(deadline, job, late))
                .collect(),
        ));
        let mut facts = self.collect(results);
        if let Some(p) = known.ptr {
            facts.ptr = p;
        }
        if let Some(p) = known.helo {
            facts.helo_addresses = p;
        }
        facts
    }
}

fn ptr_wanted(w: &Weights) -> bool {
    w.no_ptr != 0.0 || w.ptr_unconfirmed != 0.0 || w.ptr_dynamic != 0.0
}

fn helo_wanted(w: &Weights) -> bool {
    w.helo_unresolvable != 0.0 || w.helo_is_client != 0.0
}

/// The facts Postfix's reverse DNS already gives, for the checks that are on.
struct Known {
    ptr: Option<Probe<Vec<(String, bool)>>>,
    helo: Option<Probe<Vec<IpAddr>>>,
}

impl Known {
    fn of(subject: &Subject<'_>, s: &ScoreSettings) -> Known {
        let w = &s.weights;
        Known {
            ptr: subject.rdns.ptr().filter(|_| ptr_wanted(w)),
            helo: (is_fqdn(subject.helo) && helo_wanted(w))
                .then(|| subject.rdns.helo_addresses(subject.helo, subject.ip))
                .flatten(),
        }
    }
}

/// A job that gives up at the deadline with its `late` result (the check counts 0).
fn bounded<'a>(deadline: tokio::time::Instant, job: JobFuture<'a>, late: Job) -> JobFuture<'a> {
    Box::pin(async move { tokio::time::timeout_at(deadline, job).await.unwrap_or(late) })
}

async fn list(lookup: &Lookup<'_>, name: String, rested: bool) -> Listing {
    if rested {
        return Listing::Skipped;
    }
    match lookup.a(&name).await {
        Answer::Found(codes) => Listing::Listed(codes),
        Answer::Void => Listing::NotListed,
        Answer::Failed(e) => Listing::Failed(e),
    }
}

/// The client's PTR names, each with whether it resolves back to the client.
async fn ptr(lookup: &Lookup<'_>, ip: IpAddr) -> Probe<Vec<(String, bool)>> {
    let names = match lookup.ptr(ip).await {
        Answer::Found(names) => names,
        Answer::Void => return Probe::Answer(Vec::new()),
        Answer::Failed(e) => return Probe::Failed(e),
    };
    let names: Vec<String> = names.into_iter().take(MAX_PTR_NAMES).collect();
    let checks = names
        .iter()
        .map(|name| -> Boxed<'_, Probe<bool>> {
            Box::pin(async move {
                match addresses(lookup, name).await {
                    Probe::Answer(found) => Probe::Answer(found.contains(&ip)),
                    other => Probe::Failed(format!("{other:?}")),
                }
            })
        })
        .collect();
    let confirmed = join_all(checks).await;
    if !confirmed.contains(&Probe::Answer(true))
        && let Some(Probe::Failed(e)) = confirmed.iter().find(|c| matches!(c, Probe::Failed(_)))
    {
        return Probe::Failed(e.clone());
    }
    let pairs = names
        .into_iter()
        .zip(confirmed)
        .map(|(n, c)| (n, c == Probe::Answer(true)))
        .collect();
    Probe::Answer(pairs)
}

/// The IPv4 and IPv6 addresses of a name, asked at once.
async fn addresses(lookup: &Lookup<'_>, name: &str) -> Probe<Vec<IpAddr>> {
    let v4 = async {
        match lookup.a(name).await {
            Answer::Found(a) => Ok(a.into_iter().map(IpAddr::V4).collect()),
            Answer::Void => Ok(Vec::new()),
            Answer::Failed(e) => Err(e),
        }
    };
    let v6 = async {
        match lookup.aaaa(name).await {
            Answer::Found(a) => Ok(a.into_iter().map(IpAddr::V6).collect()),
            Answer::Void => Ok(Vec::new()),
            Answer::Failed(e) => Err(e),
        }
    };
    let both: Vec<Boxed<'_, Result<Vec<IpAddr>, String>>> = vec![Box::pin(v4), Box::pin(v6)];
    let mut found = Vec::new();
    let mut failure = None;
    for r in join_all(both).await {
        match r {
            Ok(a) => found.extend(a),
            Err(e) => failure = Some(e),
        }
    }
    match failure {
        Some(e) if found.is_empty() => Probe::Failed(e),
        _ => Probe::Answer(found),
    }
}

/// Whether a domain can receive mail: an MX that is not a null MX (RFC 7505), or without
/// any MX an A record.
async fn routable(lookup: &Lookup<'_>, domain: &str) -> Probe<bool> {
    match lookup.mx(domain).await {
        Answer::Found(hosts) => Probe::Answer(hosts.iter().any(|h| !h.is_empty())),
        Answer::Failed(e) => Probe::Failed(e),
        Answer::Void => match lookup.a(domain).await {
            Answer::Found(_) => Probe::Answer(true),
            Answer::Void => Probe::Answer(false),
            Answer::Failed(e) => Probe::Failed(e),
        },
    }
}

/// Builds the checker on first use, on the process's shared DNS client; one that cannot be
/// built is reported once and scoring sees no DNS facts (mail keeps flowing).
pub struct LazyScore {
    settings: ScoreSettings,
    dns: Rc<SharedDns>,
    checker: OnceCell<Option<ScoreChecker>>,
}

impl LazyScore {
    pub fn new(settings: ScoreSettings, dns: Rc<SharedDns>) -> Self {
        LazyScore {
            settings,
            dns,
            checker: OnceCell::new(),
        }
    }
}

impl Score for LazyScore {
    fn facts(&self, subject: &Subject<'_>) -> Facts {
        let checker = self.checker.get_or_init(|| match self.dns.get() {
            Ok(dns) => Some(ScoreChecker::new(dns, self.settings.clone())),
            Err(e) => {
                crate::logging::error(&format!("reputation scoring without DNS: {e}"));
                None
            }
        });
        match checker {
            Some(c) => c.facts(subject),
            None => Facts::none(),
        }
    }
}
