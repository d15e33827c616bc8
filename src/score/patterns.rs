//! The patterns of dynamic-looking host names (`score_dynamic_patterns`): the shipped default
//! matched by plain code, any other pattern a regular expression compiled on first use.
//!
//! Why not compile them all at start: compiling the default pattern cost a spawned instance
//! about 0.4 ms of CPU and a few hundred kB before its first reply (the regex engine builds
//! its literal searchers and sizes its cache pool from the cgroup files), and many
//! instances never judge a PTR name at all. The configuration is checked for syntax when it
//! is loaded, and `--check-config` compiles every pattern, so a bad one is still refused.

use std::sync::{Arc, OnceLock};

use crate::pattern::{self, Regex};

/// The default of `score_dynamic_patterns`, as the configuration and greyspf.conf(5) give it.
pub const DEFAULT_DYNAMIC_PATTERN: &str = "(^|[.-])(dyn|dynamic|dsl|adsl|vdsl|xdsl|pool|cable|dhcp|dial|dialup|ppp|pppoe|broadband|cust|customer|cpe)([0-9.-]|$)";

/// The words of the default pattern.
const DEFAULT_WORDS: [&str; 17] = [
    "dyn",
    "dynamic",
    "dsl",
    "adsl",
    "vdsl",
    "xdsl",
    "pool",
    "cable",
    "dhcp",
    "dial",
    "dialup",
    "ppp",
    "pppoe",
    "broadband",
    "cust",
    "customer",
    "cpe",
];

/// One pattern of dynamic-looking names.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `DEFAULT_DYNAMIC_PATTERN`, matched without a regex engine.
    Default,
    /// Any other regular expression, compiled the first time a name is judged; clones share
    /// the compiled form.
    Regex {
        source: String,
        compiled: Arc<OnceLock<Option<Regex>>>,
    },
}

impl Pattern {
    /// A pattern whose syntax is valid; compiling it waits for its first use.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text == DEFAULT_DYNAMIC_PATTERN {
            return Ok(Pattern::Default);
        }
        pattern::check_syntax(text).map_err(|e| format!("bad pattern {text:?}: {e}"))?;
        Ok(Pattern::Regex {
            source: text.to_string(),
            compiled: Arc::new(OnceLock::new()),
        })
    }

    /// Compiles the pattern now, as its first use would: what `--check-config` runs, so that
    /// a pattern too large for the engine is refused there rather than ignored later.
    pub fn compile(&self) -> Result<(), String> {
        match self {
            Pattern::Default => Ok(()),
            Pattern::Regex { source, .. } => compile(source).map(drop),
        }
    }

    /// Whether `name` (lower case) matches.
    pub fn is_match(&self, name: &str) -> bool {
        match self {
            Pattern::Default => matches_default(name),
            Pattern::Regex { source, compiled } => compiled
                .get_or_init(|| match compile(source) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        crate::logging::error(&format!(
                            "configuration: score_dynamic_patterns: {e}; the pattern matches \
                             nothing"
                        ));
                        None
                    }
                })
                .as_ref()
                .is_some_and(|re| re.is_match(name.as_bytes())),
        }
    }
}

fn compile(source: &str) -> Result<Regex, String> {
    pattern::build(source, false).map_err(|e| format!("bad pattern {source:?}: {e}"))
}

/// What `DEFAULT_DYNAMIC_PATTERN` matches: one of its words that starts the name or follows
/// a dot or hyphen, and ends the name or is followed by a digit, dot or hyphen.
fn matches_default(name: &str) -> bool {
    let bytes = name.as_bytes();
    let starts = (0..bytes.len()).filter(|&i| i == 0 || matches!(bytes[i - 1], b'.' | b'-'));
    starts.into_iter().any(|i| {
        DEFAULT_WORDS.iter().any(|word| {
            bytes[i..].starts_with(word.as_bytes())
                && bytes
                    .get(i + word.len())
                    .is_none_or(|&c| c.is_ascii_digit() || c == b'.' || c == b'-')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain matcher and the regular expression it replaces agree, on chosen names and
    /// on many names built from the words' pieces and the separators.
    #[test]
    fn the_default_matcher_is_the_default_pattern() {
        let re = pattern::build(DEFAULT_DYNAMIC_PATTERN, false).unwrap();
        let chosen = [
            "",
            "dyn",
            "dyn.",
            "dyn-",
            "dyn1",
            "dyna",
            "dynamic",
            "dynamic-9",
            "adsl",
            "x.adsl.example",
            "xadsl.example",
            "dialup7",
            "dialupx",
            "dial-up",
            "pppoe",
            "ppp0e",
            "a.cpe",
            "a_cpe",
            "host.pool.example.net",
            "pooled.example",
            "-cable",
            "cust.",
            "customer1",
            "customerx",
            "broadband",
            "mail.example.net",
            "dhcp-1-2-3",
            "é.dyn",
            "dyné",
        ];
        for name in chosen {
            assert_eq!(
                matches_default(name),
                re.is_match(name.as_bytes()),
                "{name:?}"
            );
        }
        let pieces = [
            "dyn", "amic", "a", "dsl", "x", "v", "pool", "cable", "dhcp", "dial", "up", "ppp",
            "oe", "broad", "band", "cust", "omer", "cpe", ".", "-", "1", "9", "e", "_",
        ];
        let mut seed: u64 = 1;
        let mut matched = 0;
        for _ in 0..20_000 {
            let mut name = String::new();
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for k in 0..(seed >> 60) as usize % 6 + 1 {
                let piece = (seed >> (k * 8 + 3)) as usize % pieces.len();
                name.push_str(pieces[piece]);
            }
            assert_eq!(
                matches_default(&name),
                re.is_match(name.as_bytes()),
                "{name:?}"
            );
            matched += usize::from(re.is_match(name.as_bytes()));
        }
        // Both kinds of name were tried, in numbers.
        assert!((2_000..18_000).contains(&matched), "{matched}");
    }

    #[test]
    fn other_patterns_compile_on_first_use_and_clones_share_them() {
        assert!(matches!(
            Pattern::parse(DEFAULT_DYNAMIC_PATTERN),
            Ok(Pattern::Default)
        ));
        let p = Pattern::parse("^ip-[0-9]+[.]").unwrap();
        let Pattern::Regex { compiled, .. } = p.clone() else {
            panic!("not a regex: {p:?}");
        };
        assert!(compiled.get().is_none());
        assert!(p.is_match("ip-7.example.net"));
        assert!(!p.is_match("mail.example.net"));
        assert!(compiled.get().is_some_and(Option::is_some));
        assert!(Pattern::parse("(").is_err());
        // Valid syntax, too large to compile: refused by compile(), matches nothing in use.
        let big = Pattern::parse(r"\w{1000}{1000}").unwrap();
        assert!(big.compile().unwrap_err().starts_with("bad pattern"));
        assert!(!big.is_match("a"));
    }
}
