//! The public RFC 7208 test suite (tests/fixtures/rfc7208/, maintained with pyspf): every
//! scenario's zone served by the loopback DNS server, every test case checked through
//! SpfChecker for its expected result and explanation.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use greyspf::spf::{HeaderKind, SpfChecker, SpfOutcome, SpfSettings};
use serde_norway::Value;
use support::dns::{DnsServer, Rr, Zone};

const SUITE: &str = include_str!("fixtures/rfc7208/rfc7208-tests.yml");
const CASES: usize = 203;

/// The explanation the suite expects when the domain gives none (pyspf's default is set to
/// this word by the suite's driver).
const DEFAULT_EXPLANATION: &str = "DEFAULT";

/// The zone of one scenario as the suite's driver builds it: TXT records as given (`NONE`
/// for none), and the type-99 SPF records served as TXT where a name has no TXT entry.
fn zone(data: &Value) -> Zone {
    let mut zone = Zone::new();
    let Some(names) = data.as_mapping() else {
        return zone;
    };
    for (name, records) in names {
        let name = name.as_str().expect("zone name");
        let records = records.as_sequence().expect("zone records");
        let has_txt = records.iter().any(|r| r.get("TXT").is_some());
        for record in records {
            if record.as_str() == Some("TIMEOUT") {
                zone = zone.add(name, Rr::Timeout);
                continue;
            }
            let (kind, value) = record
                .as_mapping()
                .and_then(|m| m.iter().next())
                .expect("one record");
            let rr = match kind.as_str().expect("record type") {
                "TXT" => txt(value),
                "SPF" if !has_txt => txt(value),
                "SPF" => None,
                "A" => Some(Rr::A(text(value).parse().expect("A"))),
                "AAAA" => Some(Rr::Aaaa(text(value).parse().expect("AAAA"))),
                "CNAME" => Some(Rr::Cname(text(value).to_string())),
                "PTR" => Some(Rr::Ptr(text(value).to_string())),
                "MX" => {
                    let pair = value.as_sequence().expect("MX pair");
                    let preference = pair[0].as_u64().expect("MX preference");
                    Some(Rr::Mx(preference as u16, text(&pair[1]).to_string()))
                }
                other => panic!("record type {other} in the suite"),
            };
            if let Some(rr) = rr {
                zone = zone.add(name, rr);
            }
        }
    }
    zone
}

/// A TXT record: one string, or a list of character-strings; `NONE` is no record.
fn txt(value: &Value) -> Option<Rr> {
    let strings: Vec<Vec<u8>> = match value {
        // A TXT record of no character-string at all (RDLENGTH 0) breaks RFC 1035, and
        // the resolver then drops the whole answer; zone files write such "null text" as
        // one empty string, which is what is served.
        Value::Sequence(parts) if parts.is_empty() => vec![Vec::new()],
        Value::Sequence(parts) => parts.iter().map(|p| text(p).as_bytes().to_vec()).collect(),
        _ if text(value) == "NONE" => return None,
        _ => vec![text(value).as_bytes().to_vec()],
    };
    Some(Rr::Txt(strings))
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

/// One test case of the suite.
struct Case {
    helo: String,
    host: String,
    mailfrom: String,
    /// One result, or the results the suite accepts.
    result: Value,
    explanation: Option<String>,
}

impl Case {
    fn from(value: &Value) -> Case {
        let field = |name: &str| text(&value[name]).to_string();
        Case {
            helo: field("helo"),
            host: field("host"),
            mailfrom: field("mailfrom"),
            result: value["result"].clone(),
            explanation: value.get("explanation").map(|e| text(e).to_string()),
        }
    }

    /// The mail-from check as RFC 7208 §2.4 makes it: the null sender is postmaster@HELO.
    fn run(&self, checker: &SpfChecker) -> SpfOutcome {
        let ip: IpAddr = self.host.parse().expect("client address");
        if self.mailfrom.is_empty() {
            checker.check_null_sender(ip, &self.helo)
        } else {
            checker.check_mail_from(ip, &self.helo, &self.mailfrom)
        }
    }

    /// Why `outcome` is not what the suite expects, or `None` when it is.
    fn mismatch(&self, outcome: &SpfOutcome) -> Option<String> {
        let got = outcome.result.as_str();
        let accepted: Vec<&str> = match &self.result {
            Value::Sequence(results) => results.iter().map(text).collect(),
            single => vec![text(single)],
        };
        if !accepted.contains(&got) {
            return Some(format!(
                "result {got} ({:?}), expected {accepted:?}",
                outcome.reason
            ));
        }
        let explanation = outcome
            .explanation
            .as_deref()
            .unwrap_or(DEFAULT_EXPLANATION);
        match &self.explanation {
            Some(want) if want != explanation => {
                Some(format!("explanation {explanation:?}, expected {want:?}"))
            }
            _ => None,
        }
    }
}

#[test]
fn every_case_of_the_rfc7208_suite() {
    let mut passed = 0;
    let mut failures = Vec::new();
    // One YAML document per scenario; the comments before the first belong to none.
    for document in SUITE.split("\n---\n").skip(1) {
        let scenario: Value = serde_norway::from_str(document).expect("suite scenario");
        let server = DnsServer::start(zone(&scenario["zonedata"]));
        // A fresh checker per scenario: its answer cache must not carry a name across zones.
        let checker = SpfChecker::new(SpfSettings {
            dns_server: Some(server.addr()),
            dns_retransmit: Duration::from_millis(400),
            timeout: Duration::from_secs(1),
            header: HeaderKind::None,
            authserv_id: "mx.example.org".into(),
            hostname: "mx.example.org".into(),
        })
        .expect("checker");
        let tests = scenario["tests"].as_mapping().expect("tests");
        for (name, case) in tests {
            let name = text(name);
            let case = Case::from(case);
            match case.mismatch(&case.run(&checker)) {
                None => passed += 1,
                Some(why) => failures.push(format!("{name}: {why}")),
            }
        }
    }
    println!("RFC 7208 suite: {passed}/{CASES} passed");
    assert_eq!(passed + failures.len(), CASES, "cases read from the suite");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
