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
# Environment: PROFILE (release or debug, default release), RUSTFLAGS (kept, +crt-static
# added), CARGO (default cargo).
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

# Packed relative relocations (DT_RELR; glibc 2.36, binutils 2.38): a static-pie program
# relocates itself at every start, and its table of relocations shrinks from about 260 KiB,
# read by every instance, to about 4 KiB. Measured with the README's example stream: about
# 280 KiB less resident memory per instance (README, "Several MX hosts").
flags=(-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs)
if [ -n "${CARGO_ENCODED_RUSTFLAGS+set}" ]; then
	# Cargo prefers this one to RUSTFLAGS: extend it instead (fields separated by 0x1f).
	sep=$'\x1f'
	joined=$(IFS=$sep; echo "${flags[*]}")
	CARGO_ENCODED_RUSTFLAGS="${CARGO_ENCODED_RUSTFLAGS:+$CARGO_ENCODED_RUSTFLAGS$sep}$joined"
	export CARGO_ENCODED_RUSTFLAGS
else
	export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }${flags[*]}"
fi

(cd "$top" && "$cargo" build --locked "${profile_args[@]}" --target "$triple" "$@") >&2

bin=$top/target/$triple/$profile/greyspf
[ -x "$bin" ] || die "cargo did not produce $bin"
"$top/packaging/check-static.sh" "$bin" >&2
dynamic=$(readelf -d "$bin")
grep -q '(RELR)' <<<"$dynamic" || die "$bin has no packed relocations (DT_RELR)"
echo "$bin"
