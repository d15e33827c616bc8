//! Regular expressions over host names and mail addresses: one builder for every pattern a
//! configuration or a command gives, matching bytes with ASCII classes.
//!
//! Why ASCII and bytes: host names are ASCII (internationalised names travel as A-labels),
//! and postgrey, whose whitelist syntax greyspf reads, matches its patterns on bytes with
//! ASCII classes too. `\d`, `\w`, `\s`, `\b` and case-insensitive matching therefore mean
//! their ASCII sense, and `.` matches one byte. What would need Unicode tables (`\p{..}`, or
//! `\w` after `(?u)`) is refused when the pattern is loaded, with the engine's message.
//!
//! Why not the regex crate's Unicode tables: they are tables of pointers (case folding,
//! property names), and a static-pie program relocates every such pointer at start, so each
//! page of them is a copy-on-write fault that every spawned instance pays before `main`,
//! whether it ever compiles a pattern or not (README, "Performance").

pub use regex::bytes::Regex;

/// Compiles `pattern`, case-insensitively (ASCII) when asked. The syntax check runs first:
/// for a Unicode word boundary the engine says no more than "error building NFA".
pub fn build(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
    check_syntax(pattern)?;
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
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| explain(e.to_string()))?;
    // The parser accepts a Unicode word boundary (`(?u)\b`) that only the engine, without
    // its Unicode tables, refuses: refused here too, so that it is refused at load.
    match hir.properties().look_set().contains_word_unicode() {
        true => Err(explain(
            "a Unicode word boundary ((?u)\\b or (?u)\\B) needs Unicode tables".to_string(),
        )),
        false => Ok(()),
    }
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
        for p in [
            r"\p{Greek}",
            r"(?u)\w",
            r"(?u:\d)",
            r"(?u)\bdyn",
            r"(?u:\B)",
        ] {
            let hint = "(patterns are ASCII: see \"pattern\" in greyspf.conf(5))";
            assert!(check_syntax(p).unwrap_err().ends_with(hint), "{p}");
            assert!(build(p, false).unwrap_err().ends_with(hint), "{p}");
        }
        assert!(check_syntax("^[\u{e4}\u{f6}\u{fc}]+@example\\.de$").is_err());
        // A letter outside ASCII outside a class is its bytes, matched case-sensitively.
        let letter = build("^j\u{fc}rgen@", true).unwrap();
        assert!(letter.is_match("J\u{fc}rgen@example.de".as_bytes()));
        assert!(!letter.is_match("J\u{dc}RGEN@example.de".as_bytes()));
        assert_eq!(check_syntax(r"(^|[.-])dyn([0-9.-]|$)"), Ok(()));
        assert!(check_syntax("(").unwrap_err().contains("unclosed group"));
    }
}
