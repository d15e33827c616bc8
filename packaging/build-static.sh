#!/bin/bash
# Builds greyspf as a static binary for this machine's architecture (glibc's static-pie),
# checks that it can never call into NSS, and prints its path on the last line.
#
# Usage: packaging/build-static.sh [CARGO BUILD ARGUMENTS...]
#
#   packaging/build-static.sh                  target/<host triple>/release/greyspf
#   PROFILE=debug packaging/build-static.sh    target/<host triple>/debug/greyspf
#   packaging/build-static.sh -p greyspf -p greyspf-bench   the benchmark tools too
#
# Why static: Postfix starts one greyspf per smtpd process, so what each process maps is
# paid many times over. A static binary maps no shared library: measured with the README's
# example stream, about 1.6 MB less resident memory per instance and about 0.5 ms less
# start-up (README, "Performance"). The Debian package ships this build.
#
# Why a script: rustc links a program statically only for a target named with --target
# (build scripts and proc-macros, built for the host, must stay dynamic), and cargo takes
# RUSTFLAGS from the environment in place of any configured flags, so +crt-static is added
# here to whatever RUSTFLAGS already holds, never dropped by it. A plain
# "cargo build --release" stays a normal dynamic build in target/release/.
#
# Environment: PROFILE (release or debug, default release), RUSTFLAGS or
# CARGO_ENCODED_RUSTFLAGS (kept, the flags below added), CARGO (default cargo).
set -euo pipefail

die() {
	echo "build-static: $*" >&2
	exit 1
}

top=$(cd "$(dirname "$0")/.." && pwd)
cargo=${CARGO:-cargo}
profile=${PROFILE:-release}
case $profile in
release) profile_args=(--release) ;;
debug) profile_args=() ;;
*) die "PROFILE must be release or debug, not '$profile'" ;;
esac

triple=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$triple" ] || die "no host triple in 'rustc -vV'"
case $triple in
*-linux-gnu*) ;;
*) die "static linking is set up for glibc targets only, not $triple" ;;
esac

# Two choices of layout that keep each instance small (README, "Several MX hosts", has the
# figures): packed relative relocations (DT_RELR; glibc 2.36, binutils 2.38 or lld), so that
# the table a static-pie program reads to relocate itself at every start shrinks from about
# 260 KiB to 4 KiB; and static-layout.ld, which puts the code an instance never runs by
# default (Redis, TLS, daemon, scoring, keeper) after the rest, and the code it runs for its
# first requests before it, side by side (hot-functions.ld, found through the -L given
# before -T: GNU ld reads the script, INCLUDE too, where -T stands). And random numbers (DNS
# query IDs) straight from getrandom(2): by default the getrandom crate looks the function
# up with dlsym, which a static program cannot, and falls back to polling /dev/random and
# reading /dev/urandom, two more files and about 25 µs at every start. And no CPU feature
# probing by the SHA-256 (keeper digest, privacy HMAC) and ChaCha (the random numbers of
# DNS IDs) code at every start: each probe is a run of CPUID instructions, which a
# virtual machine traps, about 25 µs together here; SHA-256 runs in portable code (a
# few blocks a request) and ChaCha in SSE2, which every x86-64 has.
flags=(-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs
	-C "link-arg=-Wl,-L,$top/packaging" -C "link-arg=-Wl,-T,$top/packaging/static-layout.ld"
	--cfg 'getrandom_backend="linux_getrandom"' --cfg 'sha2_backend="soft"'
	--cfg 'chacha20_backend="sse2"')
# Cargo prefers CARGO_ENCODED_RUSTFLAGS (fields separated by 0x1f) to RUSTFLAGS: the flags
# go there, after those of either that were set, so a path with spaces stays one field.
sep=$'\x1f'
if [ -z "${CARGO_ENCODED_RUSTFLAGS+set}" ] && [ -n "${RUSTFLAGS:-}" ]; then
	read -ra words <<<"$RUSTFLAGS"
	CARGO_ENCODED_RUSTFLAGS=$(IFS=$sep; echo "${words[*]}")
fi
joined=$(IFS=$sep; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS="${CARGO_ENCODED_RUSTFLAGS:+$CARGO_ENCODED_RUSTFLAGS$sep}$joined"
unset RUSTFLAGS

(cd "$top" && "$cargo" build --locked "${profile_args[@]}" --target "$triple" "$@") >&2

bin=$top/target/$triple/$profile/greyspf
[ -x "$bin" ] || die "cargo did not produce $bin"
"$top/packaging/check-static.sh" "$bin" >&2
dynamic=$(readelf -d "$bin")
grep -q '(RELR)' <<<"$dynamic" || die "$bin has no packed relocations (DT_RELR)"
sections=$(readelf -SW "$bin")
grep -q ' \.text\.apart ' <<<"$sections" || die "$bin has no .text.apart: static-layout.ld matched nothing"
grep -q ' \.text\.hot ' <<<"$sections" || die "$bin has no .text.hot: hot-functions.ld matched nothing"
echo "$bin"
