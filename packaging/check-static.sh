#!/bin/bash
# Checks that a static greyspf binary can never call into NSS.
#
# Usage: packaging/check-static.sh BINARY
#        packaging/check-static.sh --self-test
#
# --self-test builds three small static programs with rustc and checks that this check
# rejects the two that look up a user and a host name and accepts the third (CI runs it,
# so that a change of tools cannot make the check pass everything).
#
# A static glibc program that calls an NSS function (getpwnam, getaddrinfo and friends)
# still loads the NSS modules named in /etc/nsswitch.conf at run time, from the shared
# libraries of whatever glibc the machine has: a version mismatch then fails or crashes,
# and an LDAP or systemd user is silently not found. glibc warns about it once, at link
# time, where a build log hides it. This check fails instead.
#
# It fails when the binary is not static (an interpreter or a NEEDED library), has no
# symbol table to check, or defines one of the NSS entry points below. Functions that an
# unused part of std or libc refers to are dropped by the linker and do not count: what
# is in the binary is what can run. (glibc's built-in "files" and "dns" modules are linked
# in by fork(2) and are not entry points: only the public functions are looked for.)
set -euo pipefail

fail() {
	echo "check-static: FAILED: $*" >&2
	exit 1
}

# Builds the programs of --self-test and runs this check on each.
self_test() {
	local triple name
	self_test_dir=$(mktemp -d)
	local tmp=$self_test_dir
	trap 'rm -rf "$self_test_dir"' EXIT
	triple=$(rustc -vV | sed -n 's/^host: //p')
	printf '%s\n' '#[allow(deprecated)]' \
		'fn main() { println!("{:?}", std::env::home_dir()); }' >"$tmp/user.rs"
	printf '%s\n' 'use std::net::ToSocketAddrs;' \
		'fn main() { println!("{:?}", "localhost:25".to_socket_addrs().is_ok()); }' >"$tmp/host.rs"
	printf '%s\n' 'fn main() { println!("{}", std::process::id()); }' >"$tmp/plain.rs"
	for name in user host plain; do
		rustc -O -C target-feature=+crt-static --target "$triple" -o "$tmp/$name" "$tmp/$name.rs" ||
			fail "self-test: rustc could not build $name.rs"
	done
	"$0" "$tmp/user" >/dev/null 2>&1 && fail "self-test: a program calling getpwuid_r passed"
	"$0" "$tmp/host" >/dev/null 2>&1 && fail "self-test: a program calling getaddrinfo passed"
	"$0" "$tmp/plain" >/dev/null || fail "self-test: a program calling no NSS function failed"
	echo "check-static: self-test passed (NSS calls found, a clean program accepted)"
}

bin=${1:-}
[ -n "$bin" ] || fail "usage: $0 BINARY | --self-test"
if [ "$bin" = --self-test ]; then
	self_test
	exit 0
fi
[ -f "$bin" ] || fail "no file $bin"
command -v nm >/dev/null || fail "nm not found (binutils)"
command -v readelf >/dev/null || fail "readelf not found (binutils)"

if readelf -lW "$bin" | grep -q 'INTERP'; then
	fail "$bin is dynamically linked (it has a program interpreter)"
fi
needed=$(readelf -dW "$bin" | awk '/\(NEEDED\)/ { print $NF }' | tr -d '[]' | tr '\n' ' ')
[ -z "$needed" ] || fail "$bin needs shared libraries: $needed"

symbols=$(nm --defined-only "$bin" 2>/dev/null | awk '{ print $NF }') || true
[ -n "$symbols" ] || fail "$bin has no symbol table (stripped?): cannot check it"

# The public NSS lookups of glibc (the passwd, group, shadow, hosts, services, protocols,
# networks, rpc, ethers, netgroup and aliases databases), plain, reentrant and with the
# internal "__" prefix of their aliases.
nss='getpw(nam|uid|ent)|getgr(nam|gid|ent|ouplist)|initgroups|getsp(nam|ent)'
nss+='|getaddrinfo|getnameinfo|gethostby(name|name2|addr)|gethostent'
nss+='|getservby(name|port)|getservent|getprotoby(name|number)|getprotoent'
nss+='|getnetby(name|addr)|getnetent|getrpcby(name|number)|getrpcent'
nss+='|ether_(hostton|ntohost)|[sg]etnetgrent|innetgr|getaliasby(name)|getaliasent'
found=$(printf '%s\n' "$symbols" | grep -E "^_*($nss)(_r)?(@.*)?$" | sort -u | tr '\n' ' ') || true
[ -z "$found" ] || fail "$bin calls NSS functions, which a static binary cannot do safely: $found"

echo "check-static: $bin is static and calls no NSS function"
