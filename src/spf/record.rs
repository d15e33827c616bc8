//! Strict RFC 7208 record syntax: record selection, terms, macro strings and domain-specs.
//!
//! RFC 7208 §4.6 makes a syntax error anywhere in a record a permerror before any of it is
//! evaluated, so the whole record is parsed up front and evaluation only ever sees a record
//! that is valid in full. The grammar is the ABNF of RFC 7208 §4.5, §4.6.1, §5, §6 and §7.1,
//! with these readings where the RFC leaves room:
//!
//! - a term whose first `=` comes before any `:` or `/` is a modifier, and its name must be
//!   valid; `redirect` and `exp` are never parsed as unknown modifiers, so `redirect=-all` or an
//!   empty `exp=` is an error (the RFC 7208 errata reading);
//! - CIDR lengths take no leading zeros (`/032` is an error, like a leading zero in `ip4:`);
//! - a mechanism target is split from a trailing `/N` and `//N` only when those are digits,
//!   so `a:foo:bar/baz.example.com` names the host `foo:bar/baz.example.com`;
//! - the macro transformer digit must be non-zero (RFC 7208 §7.1) and is capped at 255.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The leading `v=spf1` tag of an SPF record, compared without regard to case.
const VERSION_TAG: &[u8] = b"v=spf1";

/// Largest transformer digit kept; any larger count already keeps every part of a value.
const MAX_KEEP: u8 = 255;

/// Why a record (or an explanation string) is not valid SPF syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyntaxError {
    /// A byte outside printable ASCII and space (control characters, non-ASCII text).
    BadCharacter(u8),
    UnknownMechanism(String),
    /// A mechanism with a missing, extra or malformed argument.
    BadArgument(String),
    BadCidr(String),
    BadAddress(String),
    BadModifierName(String),
    DuplicateModifier(&'static str),
    BadDomainSpec(String),
    BadMacro(String),
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxError::BadCharacter(byte) => write!(f, "invalid character 0x{byte:02x}"),
            SyntaxError::UnknownMechanism(term) => write!(f, "unknown mechanism \"{term}\""),
            SyntaxError::BadArgument(term) => write!(f, "malformed mechanism \"{term}\""),
            SyntaxError::BadCidr(term) => write!(f, "invalid CIDR length in \"{term}\""),
            SyntaxError::BadAddress(term) => write!(f, "invalid address in \"{term}\""),
            SyntaxError::BadModifierName(term) => write!(f, "invalid modifier \"{term}\""),
            SyntaxError::DuplicateModifier(name) => write!(f, "{name}= given more than once"),
            SyntaxError::BadDomainSpec(term) => write!(f, "invalid domain-spec in \"{term}\""),
            SyntaxError::BadMacro(term) => write!(f, "invalid macro in \"{term}\""),
        }
    }
}

/// Result of picking the SPF record out of the TXT records of a name (RFC 7208 §4.5).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selection<'a> {
    None,
    One(&'a [u8]),
    /// More than one record starts with `v=spf1`: a permerror, even when they are identical.
    Many,
}

/// Picks the records that begin with `v=spf1` followed by a space or the end of the text.
/// Other TXT records, whatever their content, are none of SPF's business.
pub(crate) fn select(records: &[Vec<u8>]) -> Selection<'_> {
    let mut found = None;
    for record in records {
        let tagged = record
            .get(..VERSION_TAG.len())
            .is_some_and(|tag| tag.eq_ignore_ascii_case(VERSION_TAG))
            && matches!(record.get(VERSION_TAG.len()), None | Some(b' '));
        if tagged {
            if found.is_some() {
                return Selection::Many;
            }
            found = Some(record.as_slice());
        }
    }
    found.map_or(Selection::None, Selection::One)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Mx {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Ptr(Option<MacroString>),
    Ip4 {
        network: Ipv4Addr,
        prefix: u8,
    },
    Ip6 {
        network: Ipv6Addr,
        prefix: u8,
    },
    Exists(MacroString),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directive {
    pub(crate) qualifier: Qualifier,
    pub(crate) mechanism: Mechanism,
}

/// A syntactically valid SPF record; unknown modifiers are checked and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) directives: Vec<Directive>,
    pub(crate) redirect: Option<MacroString>,
    pub(crate) exp: Option<MacroString>,
}

/// The macro letters of RFC 7208 §7.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Letter {
    Sender,
    LocalPart,
    SenderDomain,
    Domain,
    Ip,
    ValidatedName,
    IpVersion,
    Helo,
    /// `c`, `r` and `t` are allowed in explanation text only.
    ClientIp,
    Receiver,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MacroItem {
    /// Text copied as is, with `%%`, `%_` and `%-` already decoded.
    Literal(String),
    Expand {
        letter: Letter,
        /// Upper-case letter: the value is URL-escaped (RFC 7208 §7.3).
        escape: bool,
        /// Number of right-hand parts to keep; `None` keeps all.
        keep: Option<u8>,
        reverse: bool,
        /// Split characters; empty means the default `.`.
        delimiters: Vec<u8>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MacroString {
    pub(crate) items: Vec<MacroItem>,
}

impl MacroString {
    pub(crate) fn uses(&self, wanted: Letter) -> bool {
        self.items
            .iter()
            .any(|item| matches!(item, MacroItem::Expand { letter, .. } if *letter == wanted))
    }
}

/// Parses a selected record (the text starts with `v=spf1`).
pub(crate) fn parse(text: &[u8]) -> Result<Record, SyntaxError> {
    if let Some(&bad) = text.iter().find(|&&b| !(b' '..=b'~').contains(&b)) {
        return Err(SyntaxError::BadCharacter(bad));
    }
    // Checked above: every byte is printable ASCII or space, so this cannot fail.
    let text = std::str::from_utf8(text).map_err(|_| SyntaxError::BadCharacter(0))?;
    let body = text.get(VERSION_TAG.len()..).unwrap_or_default();
    let mut record = Record::default();
    for term in body.split(' ').filter(|term| !term.is_empty()) {
        parse_term(term, &mut record)?;
    }
    Ok(record)
}

/// Parses an explanation string fetched for `exp=` (RFC 7208 §6.2): macro text with spaces,
/// where `c`, `r` and `t` are also allowed.
pub(crate) fn parse_explanation(text: &[u8]) -> Result<MacroString, SyntaxError> {
    if let Some(&bad) = text.iter().find(|&&b| !(b' '..=b'~').contains(&b)) {
        return Err(SyntaxError::BadCharacter(bad));
    }
    let text = std::str::from_utf8(text).map_err(|_| SyntaxError::BadCharacter(0))?;
    parse_macro_string(text, true).map(|(string, _)| string)
}

fn parse_term(term: &str, record: &mut Record) -> Result<(), SyntaxError> {
    let first_special = term.find(['=', ':', '/']);
    if let Some(eq) = first_special.filter(|&pos| term.as_bytes().get(pos) == Some(&b'=')) {
        return parse_modifier(term, eq, record);
    }

    let (qualifier, rest) = match term.as_bytes().first() {
        Some(b'+') => (Qualifier::Pass, &term[1..]),
        Some(b'-') => (Qualifier::Fail, &term[1..]),
        Some(b'~') => (Qualifier::SoftFail, &term[1..]),
        Some(b'?') => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, argument) = rest.split_at(name_end);
    let mechanism = parse_mechanism(name, argument, term)?;
    record.directives.push(Directive {
        qualifier,
        mechanism,
    });
    Ok(())
}

/// A mechanism from its name and what follows the name (`:domain`, `/cidr`, or nothing).
fn parse_mechanism(name: &str, argument: &str, term: &str) -> Result<Mechanism, SyntaxError> {
    let bad = || SyntaxError::BadArgument(term.to_string());
    Ok(match name.to_ascii_lowercase().as_str() {
        "all" if argument.is_empty() => Mechanism::All,
        "all" => return Err(bad()),
        "include" => Mechanism::Include(domain_argument(argument, term)?.ok_or_else(bad)?),
        "exists" => Mechanism::Exists(domain_argument(argument, term)?.ok_or_else(bad)?),
        "ptr" => Mechanism::Ptr(domain_argument(argument, term)?),
        "a" | "mx" => {
            let (domain, cidr4, cidr6) = host_argument(argument, term)?;
            if name.eq_ignore_ascii_case("a") {
                Mechanism::A {
                    domain,
                    cidr4,
                    cidr6,
                }
            } else {
                Mechanism::Mx {
                    domain,
                    cidr4,
                    cidr6,
                }
            }
        }
        "ip4" => {
            let value = argument.strip_prefix(':').ok_or_else(bad)?;
            let (address, prefix) = split_prefix(value, 32, term)?;
            let network =
                parse_ip4(address).ok_or_else(|| SyntaxError::BadAddress(term.to_string()))?;
            Mechanism::Ip4 { network, prefix }
        }
        "ip6" => {
            let value = argument.strip_prefix(':').ok_or_else(bad)?;
            let (address, prefix) = split_prefix(value, 128, term)?;
            let network = address
                .parse::<Ipv6Addr>()
                .map_err(|_| SyntaxError::BadAddress(term.to_string()))?;
            Mechanism::Ip6 { network, prefix }
        }
        _ => return Err(SyntaxError::UnknownMechanism(term.to_string())),
    })
}

fn parse_modifier(term: &str, eq: usize, record: &mut Record) -> Result<(), SyntaxError> {
    let (name, value) = (&term[..eq], &term[eq + 1..]);
    let mut chars = name.chars();
    let valid_name = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(SyntaxError::BadModifierName(term.to_string()));
    }
    if name.eq_ignore_ascii_case("redirect") {
        if record.redirect.is_some() {
            return Err(SyntaxError::DuplicateModifier("redirect"));
        }
        record.redirect = Some(parse_domain_spec(value, term)?);
    } else if name.eq_ignore_ascii_case("exp") {
        if record.exp.is_some() {
            return Err(SyntaxError::DuplicateModifier("exp"));
        }
        record.exp = Some(parse_domain_spec(value, term)?);
    } else {
        // Unknown modifiers are ignored, but only once their value is a valid macro-string.
        parse_macro_string(value, false).map_err(|_| SyntaxError::BadMacro(term.to_string()))?;
    }
    Ok(())
}

/// `[":" domain-spec]` for include, exists and ptr; `None` when there is no argument.
fn domain_argument(argument: &str, term: &str) -> Result<Option<MacroString>, SyntaxError> {
    if argument.is_empty() {
        return Ok(None);
    }
    let spec = argument
        .strip_prefix(':')
        .ok_or_else(|| SyntaxError::BadArgument(term.to_string()))?;
    parse_domain_spec(spec, term).map(Some)
}

/// `[":" domain-spec] [dual-cidr-length]` for a and mx.
fn host_argument(argument: &str, term: &str) -> Result<(Option<MacroString>, u8, u8), SyntaxError> {
    let (spec, cidr) = match argument.strip_prefix(':') {
        Some(spec_and_cidr) => {
            let (spec, cidr) = split_dual_cidr(spec_and_cidr);
            (Some(spec), cidr)
        }
        None => (None, argument),
    };
    let (cidr4, cidr6) = parse_dual_cidr(cidr, term)?;
    let domain = spec.map(|spec| parse_domain_spec(spec, term)).transpose()?;
    Ok((domain, cidr4, cidr6))
}

/// Splits a trailing `/N`, `//N` or `/N//N` (digits only) off a domain-spec.
fn split_dual_cidr(value: &str) -> (&str, &str) {
    let mut spec_end = value.len();
    if let Some(pos) = value.rfind("//")
        && is_digits(&value[pos + 2..])
    {
        spec_end = pos;
    }
    if let Some(pos) = value[..spec_end].rfind('/')
        && is_digits(&value[pos + 1..spec_end])
    {
        spec_end = pos;
    }
    // A domain-spec never ends in `/`, so slashes left before the lengths belong to them:
    // `host///64` is reported as the bad CIDR length it is.
    if spec_end < value.len() {
        spec_end = value[..spec_end].trim_end_matches('/').len();
    }
    value.split_at(spec_end)
}

fn parse_dual_cidr(cidr: &str, term: &str) -> Result<(u8, u8), SyntaxError> {
    let bad = || SyntaxError::BadCidr(term.to_string());
    if cidr.is_empty() {
        return Ok((32, 128));
    }
    // dual-cidr-length = [ "/" ip4-length ] [ "//" ip6-length ]: the IPv4 part, when
    // present, has digits, so `///64` is an error and never an IPv6 length of 64.
    let (v4, v6) = match cidr.strip_prefix("//") {
        Some(v6) => (None, Some(v6)),
        None => {
            let rest = cidr.strip_prefix('/').ok_or_else(bad)?;
            match rest.split_once("//") {
                Some((v4, v6)) => (Some(v4), Some(v6)),
                None => (Some(rest), None),
            }
        }
    };
    let cidr4 = match v4 {
        Some(v4) => parse_cidr(v4, 32).ok_or_else(bad)?,
        None => 32,
    };
    let cidr6 = match v6 {
        Some(v6) => parse_cidr(v6, 128).ok_or_else(bad)?,
        None => 128,
    };
    Ok((cidr4, cidr6))
}

/// Splits `address[/N]` for ip4 and ip6.
fn split_prefix<'a>(value: &'a str, max: u8, term: &str) -> Result<(&'a str, u8), SyntaxError> {
    match value.split_once('/') {
        Some((address, length)) => {
            let prefix =
                parse_cidr(length, max).ok_or_else(|| SyntaxError::BadCidr(term.to_string()))?;
            Ok((address, prefix))
        }
        None => Ok((value, max)),
    }
}

/// A CIDR length: decimal, no leading zero, at most `max`.
fn parse_cidr(digits: &str, max: u8) -> Option<u8> {
    if !is_digits(digits) || (digits.len() > 1 && digits.starts_with('0')) || digits.len() > 3 {
        return None;
    }
    digits.parse::<u8>().ok().filter(|&n| n <= max)
}

fn is_digits(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

/// Dotted quad with no leading zeros and no omitted parts (RFC 7208 §5.6).
fn parse_ip4(value: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = value.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if !is_digits(part) || (part.len() > 1 && part.starts_with('0')) || part.len() > 3 {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// domain-spec = macro-string domain-end; domain-end = "." toplabel ["."] / macro-expand.
fn parse_domain_spec(spec: &str, term: &str) -> Result<MacroString, SyntaxError> {
    if spec.is_empty() {
        return Err(SyntaxError::BadDomainSpec(term.to_string()));
    }
    let (string, literal_tail) =
        parse_macro_string(spec, false).map_err(|_| SyntaxError::BadMacro(term.to_string()))?;
    if let Some(tail) = literal_tail {
        let tail = tail.strip_suffix('.').unwrap_or(tail);
        let valid = tail
            .rsplit_once('.')
            .is_some_and(|(_, toplabel)| is_toplabel(toplabel));
        if !valid {
            return Err(SyntaxError::BadDomainSpec(term.to_string()));
        }
    }
    Ok(string)
}

/// toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
fn is_toplabel(label: &str) -> bool {
    let bytes = label.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    {
        return false;
    }
    if bytes.contains(&b'-') {
        first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()
    } else {
        bytes.iter().any(u8::is_ascii_alphabetic)
    }
}

/// Parses a macro-string. Returns the items and, when the string does not end in a
/// macro-expand, the literal text after the last one (for the domain-end rule).
fn parse_macro_string(
    text: &str,
    explanation: bool,
) -> Result<(MacroString, Option<&str>), SyntaxError> {
    let bad = || SyntaxError::BadMacro(text.to_string());
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut literal = String::new();
    // Byte offset just after the last macro-expand ("%{...}", "%%", "%_" or "%-").
    let mut after_expand = 0;
    let mut pos = 0;
    while let Some(&byte) = bytes.get(pos) {
        if byte != b'%' {
            let allowed = (b'!'..=b'~').contains(&byte) || (explanation && byte == b' ');
            if !allowed {
                return Err(bad());
            }
            literal.push(char::from(byte));
            pos += 1;
            continue;
        }
        match bytes.get(pos + 1) {
            Some(b'%') => literal.push('%'),
            Some(b'_') => literal.push(' '),
            Some(b'-') => literal.push_str("%20"),
            Some(b'{') => {
                let inner_start = pos + 2;
                let close = text
                    .get(inner_start..)
                    .and_then(|rest| rest.find('}'))
                    .ok_or_else(bad)?
                    + inner_start;
                let inner = text.get(inner_start..close).ok_or_else(bad)?;
                let item = parse_expand(inner, explanation).ok_or_else(bad)?;
                if !literal.is_empty() {
                    items.push(MacroItem::Literal(std::mem::take(&mut literal)));
                }
                items.push(item);
                pos = close + 1;
                after_expand = pos;
                continue;
            }
            _ => return Err(bad()),
        }
        pos += 2;
        after_expand = pos;
    }
    if !literal.is_empty() {
        items.push(MacroItem::Literal(literal));
    }
    let tail = if after_expand > 0 && after_expand == text.len() {
        None
    } else {
        text.get(after_expand..)
    };
    Ok((MacroString { items }, tail))
}

/// The inside of `%{...}`: letter, optional digits, optional `r`, delimiters.
fn parse_expand(inner: &str, explanation: bool) -> Option<MacroItem> {
    let mut chars = inner.chars().peekable();
    let raw = chars.next()?;
    let letter = match raw.to_ascii_lowercase() {
        's' => Letter::Sender,
        'l' => Letter::LocalPart,
        'o' => Letter::SenderDomain,
        'd' => Letter::Domain,
        'i' => Letter::Ip,
        'p' => Letter::ValidatedName,
        'v' => Letter::IpVersion,
        'h' => Letter::Helo,
        'c' if explanation => Letter::ClientIp,
        'r' if explanation => Letter::Receiver,
        't' if explanation => Letter::Timestamp,
        _ => return None,
    };
    let mut keep: Option<u32> = None;
    while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        keep = Some(keep.unwrap_or(0).saturating_mul(10).saturating_add(digit));
    }
    if keep == Some(0) {
        return None;
    }
    let reverse = chars.next_if(|c| c.eq_ignore_ascii_case(&'r')).is_some();
    let mut delimiters = Vec::new();
    for c in chars {
        if !matches!(c, '.' | '-' | '+' | ',' | '/' | '_' | '=') {
            return None;
        }
        delimiters.push(c as u8);
    }
    Some(MacroItem::Expand {
        letter,
        escape: raw.is_ascii_uppercase(),
        keep: keep.map(|n| u8::try_from(n).unwrap_or(MAX_KEEP)),
        reverse,
        delimiters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Record {
        parse(text.as_bytes()).unwrap_or_else(|err| panic!("{text:?}: {err}"))
    }

    fn err(text: &str) -> SyntaxError {
        match parse(text.as_bytes()) {
            Ok(record) => panic!("{text:?} parsed as {record:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn selects_exactly_one_record() {
        let recs = |list: &[&str]| -> Vec<Vec<u8>> {
            list.iter().map(|r| r.as_bytes().to_vec()).collect()
        };
        let one = recs(&["v=spf1 -all", "google-site-verification=x"]);
        assert_eq!(select(&one), Selection::One(b"v=spf1 -all"));
        assert_eq!(select(&recs(&["v=spf1", "V=SpF1 +all"])), Selection::Many);
        assert_eq!(
            select(&recs(&["v=spf1 -all", "v=spf1 -all"])),
            Selection::Many
        );
        assert_eq!(select(&recs(&["v=spf10", "spf1"])), Selection::None);
        assert_eq!(select(&recs(&["v=spf1"])), Selection::One(b"v=spf1"));
        assert_eq!(select(&[]), Selection::None);
        let mixed = vec![b"v=spf1 a -all".to_vec(), vec![0x96]];
        assert_eq!(select(&mixed), Selection::One(b"v=spf1 a -all"));
    }

    #[test]
    fn accepts_valid_records() {
        let record = ok(
            "v=spf1 +a mx/24 -ip4:192.0.2.0/24 ~ip6:2001:db8::/32 ?include:_spf.example.com ptr exists:%{ir}.bl.example.org all",
        );
        assert_eq!(record.directives.len(), 8);
        assert_eq!(
            record.directives[2].mechanism,
            Mechanism::Ip4 {
                network: Ipv4Addr::new(192, 0, 2, 0),
                prefix: 24
            }
        );
        assert_eq!(record.directives[2].qualifier, Qualifier::Fail);
        assert!(ok("v=spf1").directives.is_empty());
        assert!(ok("v=spf1 ").directives.is_empty());
        assert_eq!(ok("v=spf1 a  -all ").directives.len(), 2);
        assert_eq!(ok("V=SPF1 IP4:1.2.3.4 -ALL").directives.len(), 2);
        assert_eq!(
            ok("v=spf1 ip4:1.1.1.1/0 ip4:1.2.3.4/32").directives.len(),
            2
        );
        assert_eq!(
            ok("v=spf1 ip6:Cafe:Babe:8000::/33 ip6:::FFFF:1.2.3.4")
                .directives
                .len(),
            2
        );
        assert_eq!(
            ok("v=spf1 a:foo.example.xn--zckzah -all").directives.len(),
            2
        );
        assert_eq!(ok("v=spf1 a:mail.example...com -all").directives.len(), 2);
        assert_eq!(ok("v=spf1 a:%{H}.bar -all").directives.len(), 2);
        assert_eq!(
            ok("v=spf1 exists:%{i}.%{l2r-}.user.%{d2}").directives.len(),
            1
        );
        assert_eq!(
            ok("v=spf1 a:macro%%percent%_%_space%-url-space.example.com")
                .directives
                .len(),
            1
        );
        assert_eq!(
            ok("v=spf1 include:o.spf.example.com. ~all")
                .directives
                .len(),
            2
        );
        assert!(
            ok("v=spf1 redirect=%{d}.d.spf.example.com.")
                .redirect
                .is_some()
        );
        assert!(
            ok("v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all")
                .exp
                .is_none()
        );
        assert!(ok("v=spf1 default=pass").directives.is_empty());
        assert!(ok("v=spf1 default=+").directives.is_empty());
        let record = ok("v=spf1 redirect=t5.example.com ~all exp=%{d}.exp.example.com");
        assert!(record.redirect.is_some() && record.exp.is_some());
    }

    #[test]
    fn dual_cidr_and_colon_domains() {
        let a = |text: &str| ok(text).directives[0].mechanism.clone();
        assert!(matches!(
            a("v=spf1 a/24//64"),
            Mechanism::A {
                domain: None,
                cidr4: 24,
                cidr6: 64
            }
        ));
        assert!(matches!(
            a("v=spf1 a//0"),
            Mechanism::A {
                domain: None,
                cidr4: 32,
                cidr6: 0
            }
        ));
        assert!(matches!(
            a("v=spf1 a//33"),
            Mechanism::A {
                domain: None,
                cidr4: 32,
                cidr6: 33
            }
        ));
        assert!(matches!(
            a("v=spf1 mx/0"),
            Mechanism::Mx {
                domain: None,
                cidr4: 0,
                cidr6: 128
            }
        ));
        let Mechanism::A {
            domain: Some(domain),
            cidr4: 24,
            cidr6: 128,
        } = a("v=spf1 a:foo.example.com/24")
        else {
            panic!("a:foo.example.com/24");
        };
        assert_eq!(
            domain.items,
            vec![MacroItem::Literal("foo.example.com".into())]
        );
        let Mechanism::Mx {
            domain: Some(domain),
            cidr4: 32,
            cidr6: 128,
        } = a("v=spf1 mx:foo:bar/baz.example.com")
        else {
            panic!("mx:foo:bar/baz.example.com");
        };
        assert_eq!(
            domain.items,
            vec![MacroItem::Literal("foo:bar/baz.example.com".into())]
        );
    }

    /// RFC 7208 §5.6: `dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]`, and
    /// an ip4-cidr-length has digits, so an empty IPv4 part before `//N` is a syntax error
    /// (a permerror), as pyspf and Mail::SPF have it, never the IPv6 length N.
    #[test]
    fn empty_ipv4_cidr_length_is_an_error() {
        for text in [
            "v=spf1 a///64 -all",
            "v=spf1 mx///64 -all",
            "v=spf1 a:host.example.com///64 -all",
            "v=spf1 mx:host.example.com///64 -all",
            "v=spf1 mx:%{d}///64 -all",
            "v=spf1 a/24///64 -all",
            "v=spf1 a/24//64/ -all",
        ] {
            assert_eq!(
                err(text),
                SyntaxError::BadCidr(text[7..text.len() - 5].into())
            );
        }
    }

    #[test]
    fn rejects_syntax_errors() {
        for text in [
            "v=spf1 ip4:1.2.3.4 -all moo",
            "v=spf1 moo.cow/far_out=man:dog/cat ip4:1.2.3.4 -all",
            "v=spf1 moo.cow:far_out=man:dog/cat ip4:1.2.3.4 -all",
            "v=spf1 ip4:1.2.3.4 redirect:t2.example.com",
            "v=spf1 1up=foo",
            "v=spf1 =all",
            "v=spf1 -all foo=%abc",
        ] {
            assert!(
                matches!(
                    err(text),
                    SyntaxError::UnknownMechanism(_)
                        | SyntaxError::BadModifierName(_)
                        | SyntaxError::BadMacro(_)
                ),
                "{text}"
            );
        }
        for text in [
            "v=spf1 -all.",
            "v=spf1 -all:foobar",
            "v=spf1 -all/8",
            "v=spf1 ptr/0 -all",
            "v=spf1 include +all",
            "v=spf1 exists",
            "v=spf1 ip4",
            "v=spf1 -all ip6",
        ] {
            assert!(
                matches!(
                    err(text),
                    SyntaxError::BadArgument(_) | SyntaxError::UnknownMechanism(_)
                ),
                "{text}"
            );
        }
        for text in [
            "v=spf1 ip4:1.2.3.4/33 -all",
            "v=spf1 ip4:1.2.3.4/032 -all",
            "v=spf1 ip4:1.2.3.4//32",
            "v=spf1 ip6:::1.1.1.1/129",
            "v=spf1 ip6:::1.1.1.1//33",
            "v=spf1 a/33 -all",
            "v=spf1 a//129 -all",
            "v=spf1 a/24/64 -all",
            "v=spf1 mx/33 -all",
        ] {
            assert!(matches!(err(text), SyntaxError::BadCidr(_)), "{text}");
        }
        for text in [
            "v=spf1 ip4:1.2.3.4:8080",
            "v=spf1 ip4:1.2.3",
            "v=spf1 ip4:01.2.3.4",
            "v=spf1 ip4:256.2.3.4",
            "v=spf1 ip6::CAFE::BABE",
        ] {
            assert!(matches!(err(text), SyntaxError::BadAddress(_)), "{text}");
        }
        for text in [
            "v=spf1 a:foo-bar -all",
            "v=spf1 a:111.222.33.44",
            "v=spf1 a:abc.123",
            "v=spf1 a:museum",
            "v=spf1 a:museum.",
            "v=spf1 a:example.-com",
            "v=spf1 a:example.com:8080",
            "v=spf1 a:",
            "v=spf1 mx: -all",
            "v=spf1 ptr:",
            "v=spf1 exists:",
            "v=spf1 include: -all",
            "v=spf1 include:ip5.example.com/24 -all",
            "v=spf1 exists:mail.example.com/24",
            "v=spf1 exp= -all",
            "v=spf1 exp=-all",
            "v=spf1 redirect=-all ?all",
            "v=spf1 ?all redirect=",
        ] {
            assert!(matches!(err(text), SyntaxError::BadDomainSpec(_)), "{text}");
        }
        for text in [
            "v=spf1 -exists:%(ir).sbl.example.com ?all",
            "v=spf1 exists:foo%(ir).sbl.example.com ?all",
            "v=spf1 exists:foo%.sbl.example.com ?all",
            "v=spf1 a:%{a}.example.com -all",
            "v=spf1 -all exp=%{r}.example.com",
            "v=spf1 a:%{d0}.example.com",
        ] {
            assert!(matches!(err(text), SyntaxError::BadMacro(_)), "{text}");
        }
        assert_eq!(
            err("v=spf1 exp=a.example.com -all exp=b.example.com"),
            SyntaxError::DuplicateModifier("exp")
        );
        assert_eq!(
            err("v=spf1 redirect=a.example.com -all redirect=a.example.com"),
            SyntaxError::DuplicateModifier("redirect")
        );
        assert_eq!(
            err("v=spf1 a:ctrl.example.com\rptr -all"),
            SyntaxError::BadCharacter(b'\r')
        );
        assert_eq!(
            err("v=spf1 a:foo.example.com\0"),
            SyntaxError::BadCharacter(0)
        );
        assert_eq!(
            parse(b"v=spf1 a:\xEF\xBB\xBFgarbage.example.net -all"),
            Err(SyntaxError::BadCharacter(0xEF))
        );
        assert_eq!(
            parse(b"v=spf1 \x80a:example.net -all"),
            Err(SyntaxError::BadCharacter(0x80))
        );
    }

    #[test]
    fn macro_items() {
        let record = ok("v=spf1 exists:%{l2r+-}.user.%{D2}");
        let Mechanism::Exists(spec) = &record.directives[0].mechanism else {
            panic!("exists");
        };
        assert_eq!(
            spec.items,
            vec![
                MacroItem::Expand {
                    letter: Letter::LocalPart,
                    escape: false,
                    keep: Some(2),
                    reverse: true,
                    delimiters: b"+-".to_vec(),
                },
                MacroItem::Literal(".user.".into()),
                MacroItem::Expand {
                    letter: Letter::Domain,
                    escape: true,
                    keep: Some(2),
                    reverse: false,
                    delimiters: Vec::new(),
                },
            ]
        );
        let text =
            parse_explanation(b"%{c} is queried as %{ir}.%{v}.arpa at %{t} by %{r}").unwrap();
        assert_eq!(text.items.len(), 9);
        assert!(text.uses(Letter::ClientIp));
        assert!(parse_explanation(b"The %{x}-files.").is_err());
        assert!(parse_explanation(b"\xEF\xBB\xBFExplanation").is_err());
        let decoded = parse_explanation(b"100%% sure%_%-").unwrap();
        assert_eq!(
            decoded.items,
            vec![MacroItem::Literal("100% sure %20".into())]
        );
    }
}
