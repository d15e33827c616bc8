//! Triplet keys: sender and recipient normalisation (BATV, SRS, VERP, +extension).

/// Normalises an envelope sender so that the many addresses one sender uses for bounces
/// map to one key: SRS decoded to the original address, BATV tags removed, `+extension`
/// stripped, stand-alone digit runs (VERP) replaced by `#`, all lowercase.
pub fn normalize_sender(sender: &str) -> String {
    let lower = sender.to_ascii_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return lower;
    };
    let (local, domain) = match decode_srs(local) {
        Some((orig_local, orig_domain)) => (orig_local.to_string(), orig_domain.to_string()),
        None => (local.to_string(), domain.to_string()),
    };
    let local = strip_batv(&local);
    let local = strip_extension(local);
    format!("{}@{}", verp_digits(local), domain)
}

/// Normalises a recipient: `+extension` stripped, lowercase.
pub fn normalize_recipient(recipient: &str) -> String {
    let lower = recipient.to_ascii_lowercase();
    match lower.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{}", strip_extension(local), domain),
        None => strip_extension(&lower).to_string(),
    }
}

fn strip_extension(local: &str) -> &str {
    match local.find('+') {
        // "+foo" alone is a whole local part, not an extension.
        Some(0) | None => local,
        Some(i) => &local[..i],
    }
}

/// A BATV tag is `K DDD SSSSSS`: a key digit, three day digits and six hex digits.
fn is_batv_tag(s: &str) -> bool {
    s.len() == 10
        && s.bytes().take(4).all(|b| b.is_ascii_digit())
        && s.bytes().skip(4).all(|b| b.is_ascii_hexdigit())
}

/// Removes a BATV `prvs=` tag in either order seen in the wild: `prvs=TAG=user` (RFC
/// draft) and `prvs=user=TAG` (some older implementations).
fn strip_batv(local: &str) -> &str {
    let Some(rest) = local
        .strip_prefix("prvs=")
        .or_else(|| local.strip_prefix("msprvs1="))
    else {
        return local;
    };
    match rest.split_once('=') {
        Some((tag, user)) if is_batv_tag(tag) || !user.is_empty() && !is_batv_tag(user) => user,
        Some((user, tag)) if is_batv_tag(tag) => user,
        _ => local,
    }
}

/// Decodes SRS0 (`SRS0=HHH=TT=domain=local`) and SRS1 (`SRS1=HHH=fwd==HHH=TT=domain=local`)
/// to the original local part and domain. Separators after the SRS0/SRS1 tag may be `=`,
/// `+` or `-`, as the specification allows.
fn decode_srs(local: &str) -> Option<(&str, &str)> {
    let rest = if let Some(r) = local.strip_prefix("srs1") {
        let r = r.strip_prefix(['=', '+', '-'])?;
        // hash=first-forwarder==<SRS0 body without its tag>
        let (_, body) = r.split_once("==")?;
        body
    } else {
        local.strip_prefix("srs0")?.strip_prefix(['=', '+', '-'])?
    };
    let mut parts = rest.splitn(4, '=');
    let (_hash, _tt, domain, orig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if domain.is_empty() || orig.is_empty() {
        return None;
    }
    Some((orig, domain))
}

/// Replaces digit runs that stand alone as a word (Perl's `\b\d+\b`, as postgrey does) by
/// `#`, so VERP bounce addresses with message or list numbers share one key.
fn verp_digits(local: &str) -> String {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = local.as_bytes();
    let mut out = String::with_capacity(local.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() && (i == 0 || !is_word(bytes[i - 1])) {
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j == bytes.len() || !is_word(bytes[j]) {
                out.push('#');
                i = j;
                continue;
            }
            out.push_str(&local[i..j]);
            i = j;
            continue;
        }
        // Multi-byte characters are copied whole; only ASCII bytes are inspected above.
        let ch_len = local[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&local[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_table() {
        let table = [
            ("User@Example.COM", "user@example.com"),
            ("user+list@example.com", "user@example.com"),
            ("prvs=1234abcdef=user@example.com", "user@example.com"),
            ("prvs=user=1234abcdef@example.com", "user@example.com"),
            ("PRVS=0123ABCDEF=user@example.com", "user@example.com"),
            (
                "bounce-12345-678@lists.example.org",
                "bounce-#-#@lists.example.org",
            ),
            (
                "bounce-mc.us5_123.456-user=example.com@mail.example.net",
                "bounce-mc.us5_123.#-user=example.com@mail.example.net",
            ),
            ("user123@example.com", "user123@example.com"),
            ("123@example.com", "#@example.com"),
            (
                "SRS0=HHH=TT=example.org=alice@forwarder.example",
                "alice@example.org",
            ),
            (
                "SRS0+HHH=TT=example.org=alice@forwarder.example",
                "alice@example.org",
            ),
            (
                "SRS1=XXX=fwd1.example==HHH=TT=example.org=alice@fwd2.example",
                "alice@example.org",
            ),
            (
                "SRS0=HHH=TT=example.org=prvs=1234abcdef=alice@forwarder.example",
                "alice@example.org",
            ),
            (
                "SRS0=broken@forwarder.example",
                "srs0=broken@forwarder.example",
            ),
            ("", ""),
            ("postmaster", "postmaster"),
            ("+x@example.com", "+x@example.com"),
            ("üser-42@example.com", "üser-#@example.com"),
        ];
        for (input, want) in table {
            assert_eq!(normalize_sender(input), want, "input {input:?}");
        }
    }

    #[test]
    fn recipient_table() {
        assert_eq!(
            normalize_recipient("Bob+Tag@Example.com"),
            "bob@example.com"
        );
        assert_eq!(normalize_recipient("bob@example.com"), "bob@example.com");
        assert_eq!(normalize_recipient("postmaster"), "postmaster");
        // Digits in recipients are kept: they are real mailboxes, not VERP cookies.
        assert_eq!(
            normalize_recipient("user-42@example.com"),
            "user-42@example.com"
        );
    }
}
