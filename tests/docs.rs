//! The documentation against the code: every configuration key and command-line option
//! exists in the man pages (and the reverse for keys), the example configuration names
//! every key with its default, and the README shows the packaged Postfix snippets.

use std::collections::BTreeSet;
use std::process::Command;

use greyspf::config::KEYS;

const BIN: &str = env!("CARGO_BIN_EXE_greyspf");

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The keys the code knows, as `--check-config` prints them.
fn code_keys() -> Vec<(String, String)> {
    let out = Command::new(BIN)
        .args(["-c", "/dev/null", "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn every_key_is_in_the_manual_and_nothing_else() {
    let man = read("man/greyspf.conf.5");
    let lines: Vec<&str> = man.lines().collect();
    let mut documented = BTreeSet::new();
    for w in lines.windows(2) {
        if (w[0] == ".TP" || w[0] == ".TQ") && (w[1].starts_with(".B ") || w[1].starts_with(".BR "))
        {
            let name = w[1].split_whitespace().nth(1).unwrap().replace("\\-", "-");
            if name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                documented.insert(name);
            }
        }
    }
    let keys: BTreeSet<String> = code_keys().into_iter().map(|(k, _)| k).collect();
    assert_eq!(documented, keys, "greyspf.conf(5) and the code disagree");
    // The kind of value, from the one definition of each key, heads its entry.
    for k in KEYS {
        let (name, kind) = (k.name, k.kind);
        assert!(
            man.contains(&format!(".BR {name} \" ({kind}, default"))
                || man.contains(&format!(".B {name}\n({kind}, default")),
            "{name} is not documented as a {kind} in greyspf.conf(5)"
        );
    }
    // Defaults that are plain text appear in the key's entry.
    for (k, v) in code_keys() {
        if ["hostname", "spf_authserv_id", "spf_skip_networks"].contains(&k.as_str())
            || v.is_empty()
        {
            continue;
        }
        let entry = man
            .split(&format!("\n.BR {k} \" ("))
            .nth(1)
            .or_else(|| man.split(&format!("\n.B {k}\n")).nth(1))
            .unwrap_or_else(|| panic!("{k}"));
        let entry = &entry[..entry.find("\n.TP").unwrap_or(entry.len())];
        assert!(
            entry.contains(&v) || entry.contains(&v.replace('-', "\\-")),
            "default {v:?} of {k} not in its entry"
        );
    }
}

#[test]
fn example_configuration_lists_every_key_with_its_default() {
    let conf = read("packaging/greyspf.conf");
    for (k, v) in code_keys() {
        let plain = format!("#{k} = {v}");
        let derived = format!("# {k}:");
        assert!(
            conf.lines()
                .any(|l| l.trim_end() == plain.trim_end() || l.starts_with(&derived)),
            "packaging/greyspf.conf lacks {plain:?}"
        );
    }
    // A comment line that reads like a parameter (`# name = ...` or `# name: ...`) names
    // a real one: the package test reads the file that way.
    let known: BTreeSet<String> = code_keys().into_iter().map(|(k, _)| k).collect();
    let like = greyspf::pattern::build(r"^# ?([a-z][a-z0-9_]*)( =|:)", false).unwrap();
    for l in conf.lines() {
        if let Some(c) = like.captures(l.as_bytes()) {
            assert!(
                known.contains(String::from_utf8_lossy(&c[1]).as_ref()),
                "packaging/greyspf.conf: {l:?} looks like a parameter"
            );
        }
    }
    // The example parses, and uncommenting its defaults changes nothing.
    let dir = std::env::temp_dir().join(format!("greyspf-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uncommented: String = conf
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && rest.contains(" = ") =>
            {
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    let file = dir.join("defaults.conf");
    std::fs::write(&file, uncommented).unwrap();
    let run = |c: &str| {
        Command::new(BIN)
            .args(["-c", c, "--check-config"])
            .output()
            .unwrap()
    };
    let shipped = run(&std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/greyspf.conf")
        .display()
        .to_string());
    let defaults = run(&file.display().to_string());
    let baseline = run("/dev/null");
    assert!(shipped.status.success() && defaults.status.success());
    assert_eq!(
        String::from_utf8_lossy(&defaults.stdout),
        String::from_utf8_lossy(&baseline.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&shipped.stdout),
        String::from_utf8_lossy(&baseline.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_option_and_command_is_in_the_manual() {
    let man = read("man/greyspf.8").replace("\\-", "-");
    let help = |args: &[&str]| {
        let o = Command::new(BIN).args(args).arg("--help").output().unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let mut commands = Vec::new();
    let top = help(&[]);
    let mut in_commands = false;
    for l in top.lines() {
        if l.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            match l.split_whitespace().next() {
                Some(c) if l.starts_with("  ") && c != "help" => commands.push(c.to_string()),
                _ if !l.starts_with("  ") => in_commands = false,
                _ => {}
            }
        }
    }
    assert!(commands.len() >= 7, "{commands:?}");
    let mut sets = vec![(String::new(), top)];
    for c in &commands {
        assert!(
            man.contains(&format!(".B {c}"))
                || man.contains(&format!(".BR {c} "))
                || man.contains(&format!("\n{c}\n")),
            "command {c} not in greyspf(8)"
        );
        sets.push((c.clone(), help(&[c])));
    }
    for (cmd, text) in sets {
        for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
            if let Some(opt) = word.strip_prefix("--") {
                let opt = opt.split('=').next().unwrap().split('<').next().unwrap();
                if opt.is_empty() || opt == "help" || opt == "version" {
                    continue;
                }
                assert!(
                    man.contains(&format!("--{opt}")),
                    "option --{opt} of {cmd:?} not in greyspf(8)"
                );
            }
        }
    }
}

#[test]
fn readme_shows_the_packaged_snippets() {
    let readme = read("README.md");
    for f in ["packaging/master.cf", "packaging/main.cf"] {
        for l in read(f)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            assert!(
                readme.lines().any(|r| r == l),
                "{f} line {l:?} not in README.md"
            );
        }
    }
    let man = read("man/greyspf.8");
    for l in read("packaging/main.cf")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        assert!(
            man.contains(&l.replace('-', "\\-")) || man.contains(l),
            "packaging/main.cf line {l:?} not in greyspf(8)"
        );
    }
}
