//! Regular expressions over host names and mail addresses: one builder for every pattern a
//! configuration or a command gives, matching bytes with ASCII classes.
//!
//! Why ASCII and bytes: host names are ASCII (internationalised names travel as A-labels),
//! and postgrey, whose whitelist syntax greyspf reads, matches its patterns on bytes with
//! ASCII classes too. `\d`, `\w`, `\s` and case-insensitive matching therefore mean their
//! ASCII sense, and `.` matches any byte. A pattern that asks for Unicode (`(?u)`, `\p{..}`)
//! is refused when it is loaded, with the engine's message.
//!
//! Why not the regex crate's Unicode tables: they are tables of pointers (case folding,
//! property names), and a static-pie program relocates every such pointer at start, so each
//! page of them is a copy-on-write fault that every spawned instance pays before `main`,
//! whether it ever compiles a pattern or not (README, "Performance").

pub use regex::bytes::Regex;

/// Compiles `pattern`, case-insensitively (ASCII) when asked.
pub fn build(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| explain(e.to_string()))
}

/// The engine's message, with where to read why when it is about Unicode (the engine's
/// own advice, a crate feature, is not the administrator's to follow).
fn explain(message: String) -> String {
    match message.contains("Unicode") {
        true => format!("{message} (patterns are ASCII: see \"pattern\" in greyspf.conf(5))"),
        false => message,
    }
}

/// Checks the syntax of `pattern` as `build` reads it, without compiling it.
pub fn check_syntax(pattern: &str) -> Result<(), String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map(drop)
        .map_err(|e| explain(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_case_are_ascii() {
        let re = build(r"^mail\d+\.example\.com$", true).unwrap();
        assert!(re.is_match(b"MAIL12.example.com"));
        assert!(!re.is_match("mail\u{0663}.example.com".as_bytes()));
        let word = build(r"^\w+$", false).unwrap();
        assert!(word.is_match(b"abc_09"));
        assert!(!word.is_match("\u{e9}t\u{e9}".as_bytes()));
        // `.` is one byte: a letter of two bytes in a UTF-8 address (SMTPUTF8) takes two.
        let any = build(r"^.@example\.org$", false).unwrap();
        assert!(!any.is_match("\u{e9}@example.org".as_bytes()));
        assert!(
            build(r"^.+@example\.org$", false)
                .unwrap()
                .is_match("\u{e9}@example.org".as_bytes())
        );
        assert!(!build("^x$", false).unwrap().is_match(b"X"));
    }

    #[test]
    fn unicode_is_refused_by_the_syntax_check_and_the_build_alike() {
        for p in [r"\p{Greek}", r"(?u)\w", r"(?u:\d)"] {
            let hint = "(patterns are ASCII: see \"pattern\" in greyspf.conf(5))";
            assert!(check_syntax(p).unwrap_err().ends_with(hint), "{p}");
            assert!(build(p, false).unwrap_err().ends_with(hint), "{p}");
        }
        assert_eq!(check_syntax(r"(^|[.-])dyn([0-9.-]|$)"), Ok(()));
        assert!(check_syntax("(").unwrap_err().contains("unclosed group"));
    }
}
