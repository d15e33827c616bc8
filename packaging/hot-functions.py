#!/usr/bin/env python3
"""packaging/hot-functions.py: writes packaging/hot-functions.ld, the linker script lines
that put the code a spawned instance runs for its first requests next to each other.

Usage: packaging/hot-functions.py --binary GREYSPF --libc LIBC.A \
           --first CALLGRIND.OUT... [--then CALLGRIND.OUT...] >packaging/hot-functions.ld

bench/run.sh (ONLY=hot) makes the callgrind files: the static greyspf under
valgrind --tool=callgrind --demangle=no, one process per request, against the benchmark's
nameserver. --first names the runs of the default configuration (SPF and greylisting),
--then those of further configurations (scoring): their functions come after, so that a
default instance never maps them.

Why: the kernel maps a program's code in 64 KiB blocks around each page a process first
touches. Left where the compiler put them, the functions of one request are spread over
about 46 such blocks: 34 page faults and 2.9 MB of resident memory for every instance
(README, "Performance"). Side by side they fill a few blocks.

Each function is named by its section (one per function: .text.<symbol>), with its hash:
the hash of a symbol follows from its path, its type and the crate's metadata (package,
version, features, profile), not from the function's body, so it outlives most edits (a
new signature, or a closure added before another, changes it); and a generic
function's copies, one per type, differ only by it, so that without it the copies made for
code kept apart (Redis, TLS, the keeper) would come here too. LLVM's numbered copies
(".123") are matched whatever their number. The standard library's names (v0 mangling) are
stable for a toolchain. A name that matches nothing is
harmless. The C library's functions go by their archive members (static glibc has no
section per function), a string function with all its CPU variants.
"""

import argparse
import re
import subprocess
import sys

SUFFIX = re.compile(r"\.\d+$")
SAFE = re.compile(r"^[A-Za-z0-9_.$]+$")
VARIANT = re.compile(r"^([a-z0-9_]+)-(?:sse|ssse|avx|evex).*\.o$")


def functions(path):
    """The names of the functions a callgrind file saw run, in their first order."""
    seen = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
            if m:
                seen.setdefault(m.group(1).split("'")[0], None)
    return list(seen)


def defined(binary):
    """The code symbols of the binary: its own functions are the ones worth placing."""
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True,
                         check=True).stdout
    return {p[2] for p in (l.split() for l in out.splitlines()) if len(p) == 3
            and p[1] in "tTwWi"}


def members(libc):
    """Which archive member of the C library defines each function."""
    out = subprocess.run(["nm", "-A", "--defined-only", libc], capture_output=True,
                         text=True, check=True).stdout
    owner = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwWi":
            member = parts[0].rsplit(":", 2)[-2]
            owner.setdefault(parts[2], member)
    return owner


def patterns(names, symbols, owner, done):
    """Input section patterns for `names`, skipping those already given."""
    lines = []
    for name in names:
        if name not in symbols:
            continue
        if name.startswith("_ZN"):
            # LLVM's numbered copies (".123") change from build to build.
            key = SUFFIX.sub("", name) + "*"
            pattern = f"*(.text.{key} .text.unlikely.{key})"
        elif name in owner:
            # A string function's variant is chosen by the CPU at start (valgrind's is not
            # the machine's): every variant of a hot one goes, they are small.
            member = VARIANT.sub(r"\1-*.o", owner[name])
            pattern = f"*libc.a:{member}(.text .text.*)"
        elif SAFE.match(name):
            # The standard library's symbols (v0 mangling, no hash to strip), `main`.
            pattern = f"*(.text.{name} .text.unlikely.{name})"
        else:
            continue
        if pattern not in done:
            done.add(pattern)
            lines.append(f"    {pattern}")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--libc", required=True)
    parser.add_argument("--first", nargs="+", required=True)
    parser.add_argument("--then", nargs="*", default=[])
    args = parser.parse_args()
    symbols = defined(args.binary)
    owner = members(args.libc)
    done = set()
    first = [n for path in args.first for n in functions(path)]
    then = [n for path in args.then for n in functions(path)]
    out = ["/* packaging/hot-functions.ld: written by packaging/hot-functions.py (bench/run.sh,",
           " * ONLY=hot); included by static-layout.ld. The default configuration's functions",
           " * first, then those scoring adds. */"]
    out += patterns(first, symbols, owner, done)
    out.append("    /* scoring */")
    out += patterns(then, symbols, owner, done)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
