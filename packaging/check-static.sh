#!/bin/bash
# Checks that a static greyspf binary can never call into NSS.
#
# Usage: packaging/check-static.sh BINARY
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

bin=${1:-}
[ -n "$bin" ] || fail "usage: $0 BINARY"
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
