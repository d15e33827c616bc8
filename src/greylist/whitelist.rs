//! Client and recipient whitelists in postgrey's file syntax, reloaded when a file changes.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::pattern::{self, Regex};

use crate::net::Network;

#[derive(Debug)]
enum ClientRule {
    Net(Network),
    /// The verified client name equals the domain or ends with `.domain`.
    Domain(String),
    Regex(Regex),
}

#[derive(Debug)]
enum RecipientRule {
    /// `user@`: that local part at any domain.
    User(String),
    Address(String),
    /// `domain`: that domain and its subdomains.
    Domain(String),
    Regex(Regex),
}

/// What identifies a file version; a change of any part triggers a reload.
type Stamp = Option<(i64, i64, u64, u64)>;

/// Rules from a list of files, re-read when a file's mtime, size or inode changes.
#[derive(Debug)]
struct Files<R> {
    files: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    rules: Vec<R>,
    loaded: bool,
}

impl<R> Files<R> {
    fn new(files: Vec<PathBuf>) -> Self {
        let n = files.len();
        Files {
            files,
            stamps: vec![None; n],
            rules: Vec::new(),
            loaded: false,
        }
    }

    /// Reloads when a file changed; returns warnings (missing files, bad lines) to log.
    fn refresh(&mut self, parse: fn(&str) -> Result<Option<R>, String>) -> Vec<String> {
        let stamps: Vec<Stamp> = self
            .files
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
            })
            .collect();
        if self.loaded && stamps == self.stamps {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        let mut rules = Vec::new();
        for f in &self.files {
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    for (i, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        match parse(line) {
                            Ok(Some(r)) => rules.push(r),
                            Ok(None) => {}
                            Err(e) => warnings.push(format!("{}:{}: {e}", f.display(), i + 1)),
                        }
                    }
                }
                Err(e) => warnings.push(format!("{}: whitelist not loaded: {e}", f.display())),
            }
        }
        self.rules = rules;
        self.stamps = stamps;
        self.loaded = true;
        warnings
    }
}

fn parse_regex(line: &str) -> Option<Result<Regex, String>> {
    let body = line.strip_prefix('/')?.strip_suffix('/')?;
    Some(pattern::build(body, true).map_err(|e| format!("bad regular expression {line:?}: {e}")))
}

fn parse_client(line: &str) -> Result<Option<ClientRule>, String> {
    if let Some(r) = parse_regex(line) {
        return r.map(|r| Some(ClientRule::Regex(r)));
    }
    if let Ok(n) = line.parse::<Network>() {
        return Ok(Some(ClientRule::Net(n)));
    }
    // postgrey accepts partial IPv4 addresses such as `192.168.` or `10.1.2`.
    let octets: Vec<&str> = line.trim_end_matches('.').split('.').collect();
    if octets.len() < 4
        && octets
            .iter()
            .all(|o| !o.is_empty() && o.len() <= 3 && o.bytes().all(|b| b.is_ascii_digit()))
    {
        let mut full = octets.clone();
        full.resize(4, "0");
        let cidr = format!("{}/{}", full.join("."), octets.len() * 8);
        return cidr.parse::<Network>().map(|n| Some(ClientRule::Net(n)));
    }
    if line.contains('/') || line.contains(':') {
        return Err(format!(
            "not an address, network, domain or /regex/: {line:?}"
        ));
    }
    Ok(Some(ClientRule::Domain(
        line.trim_start_matches('.').to_ascii_lowercase(),
    )))
}

fn parse_recipient(line: &str) -> Result<Option<RecipientRule>, String> {
    if let Some(r) = parse_regex(line) {
        return r.map(|r| Some(RecipientRule::Regex(r)));
    }
    let lower = line.to_ascii_lowercase();
    Ok(Some(match lower.split_once('@') {
        Some((user, "")) => RecipientRule::User(user.to_string()),
        Some(_) => RecipientRule::Address(lower),
        None => RecipientRule::Domain(lower),
    }))
}

/// Both whitelists of a running instance.
#[derive(Debug)]
pub struct Whitelists {
    clients: Files<ClientRule>,
    recipients: Files<RecipientRule>,
    checked: Option<std::time::Instant>,
}

/// How often the files are looked at: a stat per file per request would cost a busy
/// instance more than its whole decision.
pub const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn domain_match(name: &str, domain: &str) -> bool {
    name == domain
        || (name.len() > domain.len()
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.')
}

impl Whitelists {
    pub fn new(clients: Vec<PathBuf>, recipients: Vec<PathBuf>) -> Self {
        Whitelists {
            clients: Files::new(clients),
            recipients: Files::new(recipients),
            checked: None,
        }
    }

    /// Re-reads changed files, looking at most once per [`CHECK_INTERVAL`].
    pub fn refresh(&mut self) -> Vec<String> {
        let now = std::time::Instant::now();
        if self
            .checked
            .is_some_and(|t| now.duration_since(t) < CHECK_INTERVAL)
        {
            return Vec::new();
        }
        self.checked = Some(now);
        let mut w = self.clients.refresh(parse_client);
        w.extend(self.recipients.refresh(parse_recipient));
        w
    }

    /// `client_name` is Postfix's verified name (`unknown` when it did not verify), so a
    /// forged PTR record cannot whitelist a client.
    pub fn client_listed(&self, ip: Option<IpAddr>, client_name: &str) -> bool {
        let name = client_name.to_ascii_lowercase();
        let verified = !name.is_empty() && name != "unknown";
        self.clients.rules.iter().any(|r| match r {
            ClientRule::Net(n) => ip.is_some_and(|ip| n.contains(ip)),
            ClientRule::Domain(d) => verified && domain_match(&name, d),
            ClientRule::Regex(re) => verified && re.is_match(name.as_bytes()),
        })
    }

    pub fn recipient_listed(&self, recipient: &str) -> bool {
        let lower = recipient.to_ascii_lowercase();
        let (user, domain) = lower.rsplit_once('@').unwrap_or((lower.as_str(), ""));
        self.recipients.rules.iter().any(|r| match r {
            RecipientRule::User(u) => u == user,
            RecipientRule::Address(a) => *a == lower,
            RecipientRule::Domain(d) => domain_match(domain, d),
            RecipientRule::Regex(re) => re.is_match(lower.as_bytes()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(path: &std::path::Path, text: &str) {
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn rules_and_reload() {
        let dir = std::env::temp_dir().join(format!("greyspf-wl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("clients");
        let r = dir.join("recipients");
        write(
            &c,
            "# comment\n192.0.2.0/24\n10.1.\nmail.example.org\n/^mx[0-9]+\\.example\\.net$/\n2001:db8::/32\n/bad(/\n",
        );
        write(
            &r,
            "postmaster@\nabuse@example.com\nexample.org\n/^list-.*@/\n",
        );
        let mut w = Whitelists::new(vec![c.clone(), dir.join("missing")], vec![r.clone()]);
        let warnings = w.refresh();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("clients:7: bad regular expression \"/bad(/\": "),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1]
                .ends_with("missing: whitelist not loaded: No such file or directory (os error 2)"),
            "{}",
            warnings[1]
        );
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(w.client_listed(ip("192.0.2.9"), "unknown"));
        assert!(w.client_listed(ip("10.1.200.3"), "unknown"));
        assert!(!w.client_listed(ip("10.2.0.1"), "unknown"));
        assert!(w.client_listed(ip("203.0.113.1"), "out.mail.example.org"));
        assert!(w.client_listed(ip("203.0.113.1"), "MAIL.example.org"));
        assert!(!w.client_listed(ip("203.0.113.1"), "evilmail.example.org"));
        assert!(w.client_listed(ip("203.0.113.1"), "mx12.example.net"));
        assert!(!w.client_listed(ip("203.0.113.1"), "unknown"));
        assert!(w.client_listed(ip("2001:db8:5::1"), "unknown"));
        assert!(w.recipient_listed("Postmaster@any.example"));
        assert!(w.recipient_listed("abuse@example.com"));
        assert!(!w.recipient_listed("abuse@example.net"));
        assert!(w.recipient_listed("bob@sub.example.org"));
        assert!(w.recipient_listed("list-x@example.net"));
        assert!(!w.recipient_listed("bob@example.net"));

        assert!(w.refresh().is_empty(), "no change, no reload");
        write(&r, "bob@example.net\n");
        w.refresh();
        assert!(
            !w.recipient_listed("bob@example.net"),
            "files are looked at once per interval"
        );
        std::thread::sleep(CHECK_INTERVAL);
        w.refresh();
        assert!(w.recipient_listed("bob@example.net"));
        assert!(!w.recipient_listed("postmaster@x.example"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
