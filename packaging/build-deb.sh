#!/bin/bash
# Builds the greyspf Debian package from an already built binary.
#
# Usage: packaging/build-deb.sh [BINARY]
#
#   BINARY   the built greyspf (default: $GREYSPF_BIN, else the static build
#            of packaging/build-static.sh for this machine's architecture,
#            target/<host triple>/release/greyspf of this source tree)
#
# Environment:
#   GREYSPF_BIN   the binary, when not given as argument
#   OUTDIR        where the .deb goes (default: target/debian)
#   DEBFULLNAME, DEBEMAIL   the Maintainer field
#   STRIP=no      keep the symbols in the packaged binary
#
# The version comes from Cargo.toml, the architecture from
# "dpkg --print-architecture", the dependencies from the shared libraries
# the binary needs (none for the static build, which is what the package
# is meant to ship; a dynamic target/release/greyspf also works and then
# depends on libc6). Prints the path of the .deb on the last line.
#
# The package passes lintian; the warnings it keeps are overridden, each
# with its reason, in packaging/greyspf.lintian-overrides.
set -euo pipefail
umask 022

die() {
	echo "build-deb: $*" >&2
	exit 1
}

top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${GREYSPF_BIN:-}}
if [ -z "$bin" ]; then
	triple=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p') ||
		die "no binary given, and no rustc to name this machine's target triple"
	[ -n "$triple" ] || die "no binary given, and no host triple in 'rustc -vV'"
	bin=$top/target/$triple/release/greyspf
fi
outdir=${OUTDIR:-$top/target/debian}

if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then die "no built binary at $bin (run: packaging/build-static.sh)"; fi
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# Version: the [package] version of Cargo.toml; a SemVer pre-release
# (1.0.0-rc.1) sorts before its release in Debian as 1.0.0~rc.1.
cargo_version=$(awk '
	/^\[/ { in_pkg = ($0 == "[package]") }
	in_pkg && /^version[ \t]*=/ {
		sub(/^version[ \t]*=[ \t]*"/, ""); sub(/".*/, ""); print; exit
	}' "$top/Cargo.toml")
[ -n "$cargo_version" ] || die "no version in $top/Cargo.toml"
version=${cargo_version/-/\~}
version=${version%%+*}
arch=$(dpkg --print-architecture)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
doc=$root/usr/share/doc/greyspf

install -d "$root/DEBIAN" "$root/usr/sbin" "$root/usr/share/man/man8" \
	"$root/usr/share/man/man5" "$root/etc/greyspf" "$doc/examples" \
	"$root/usr/share/lintian/overrides" "$root/lib/systemd/system"

# Binary.
install -m 0755 "$bin" "$root/usr/sbin/greyspf"
if [ "${STRIP:-yes}" != no ] && command -v strip >/dev/null; then
	strip --strip-unneeded --remove-section=.comment --remove-section=.note \
		"$root/usr/sbin/greyspf"
fi

# Manual pages.
gzip -9n -c "$top/man/greyspf.8" >"$root/usr/share/man/man8/greyspf.8.gz"
gzip -9n -c "$top/man/greyspf.conf.5" >"$root/usr/share/man/man5/greyspf.conf.5.gz"

# Configuration (conffiles).
for f in greyspf.conf whitelist_clients whitelist_recipients; do
	install -m 0644 "$top/packaging/$f" "$root/etc/greyspf/$f"
done

# The daemon mode's units, shipped disabled: no maintainer script enables or starts
# them (spawn mode is the default and needs none).
install -m 0644 "$top/packaging/greyspf.service" "$top/packaging/greyspf.socket" \
	"$root/lib/systemd/system/"

# Documentation.
install -m 0644 "$top/packaging/debian/copyright" "$doc/copyright"
if [ -f "$top/README.md" ]; then
	install -m 0644 "$top/README.md" "$doc/README.md"
fi
if [ -f "$top/CHANGELOG.md" ]; then
	gzip -9n -c "$top/CHANGELOG.md" >"$doc/CHANGELOG.md.gz"
fi
install -m 0644 "$top/packaging/master.cf" "$top/packaging/main.cf" "$doc/examples/"
if [ -f "$top/examples/requests.txt" ]; then
	install -m 0644 "$top/examples/requests.txt" "$doc/examples/requests.txt"
fi
# The lintian warnings that stay, each with its reason.
install -m 0644 "$top/packaging/greyspf.lintian-overrides" \
	"$root/usr/share/lintian/overrides/greyspf"
find "$root" -type f -exec chmod go-w {} +

# Depends: the packages of the shared libraries the binary links, with the
# version their symbols need; nothing for a static binary (build-static.sh).
shlib_depends() {
	local f=$1
	if command -v objdump >/dev/null && ! objdump -p "$f" | grep -q '^ *NEEDED'; then
		return
	fi
	if command -v dpkg-shlibdeps >/dev/null; then
		local d=$tmp/shlibdeps out
		mkdir -p "$d/debian"
		printf 'Source: greyspf\n\nPackage: greyspf\nArchitecture: any\n' >"$d/debian/control"
		if out=$(cd "$d" && dpkg-shlibdeps -O "$f" 2>/dev/null); then
			out=${out#shlibs:Depends=}
			if [ -n "$out" ]; then
				echo "$out"
				return
			fi
		fi
	fi
	# Without dpkg-dev: libc6, with the newest GLIBC symbol version used, and
	# the package of every other library the binary needs.
	local glibc='' deps='' soname path pkg
	if command -v objdump >/dev/null; then
		glibc=$(objdump -T "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
			sort -t. -k1,1n -k2,2n -k3,3n | tail -n1)
		for soname in $(objdump -p "$f" | awk '$1 == "NEEDED" { print $2 }'); do
			case "$soname" in
			libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | ld-linux*) continue ;;
			esac
			path=$("$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null | awk -v s="$soname" '$1 == s { print $NF; exit }')
			pkg=
			if [ -n "$path" ]; then
				pkg=$(dpkg -S "$path" 2>/dev/null | head -n1 | cut -d: -f1)
				[ -n "$pkg" ] || pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n1 | cut -d: -f1)
			fi
			[ -n "$pkg" ] || die "no package found for $soname, needed by $f"
			case ", $deps, " in *", $pkg, "*) ;; *) deps="$deps, $pkg" ;; esac
		done
	fi
	if [ -n "$glibc" ]; then
		echo "libc6 (>= $glibc)$deps"
	else
		echo "libc6$deps"
	fi
}
depends=$(shlib_depends "$root/usr/sbin/greyspf")
depends="${depends:+$depends, }passwd"

# Maintainer: DEBFULLNAME and DEBEMAIL, else the first author of Cargo.toml.
author=$(awk '
	/^\[/ { in_pkg = ($0 == "[package]") }
	in_pkg && /^authors[ \t]*=/ {
		sub(/^authors[ \t]*=[ \t]*\[[ \t]*"/, ""); sub(/".*/, ""); print; exit
	}' "$top/Cargo.toml")
if [ -n "${DEBEMAIL:-}" ]; then
	maintainer="${DEBFULLNAME:-greyspf developers} <$DEBEMAIL>"
elif [[ "$author" == *"<"*"@"*">" ]]; then
	maintainer=$author
else
	# No address is known: say so with a domain that cannot exist (RFC 2606),
	# not with localhost, which Debian's tools reject.
	maintainer="greyspf developers <greyspf@greyspf.invalid>"
fi

# The Debian changelog of this native package, pointing to the project's.
date=$(date -R -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"})
cat >"$tmp/changelog" <<EOF
greyspf ($version) unstable; urgency=medium

  * Release $cargo_version; the changes are listed in CHANGELOG.md.gz.

 -- $maintainer  $date
EOF
gzip -9n -c "$tmp/changelog" >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
homepage=$(awk '
	/^\[/ { in_pkg = ($0 == "[package]") }
	in_pkg && /^(homepage|repository)[ \t]*=/ {
		sub(/^[a-z]*[ \t]*=[ \t]*"/, ""); sub(/".*/, ""); print; exit
	}' "$top/Cargo.toml")

# Escapes a value for the replacement part of a sed s||| command.
sed_value() {
	printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}
sed -e "s|@VERSION@|$(sed_value "$version")|" -e "s|@ARCH@|$(sed_value "$arch")|" \
	-e "s|@DEPENDS@|$(sed_value "$depends")|" \
	-e "s|@INSTALLED_SIZE@|$installed_size|" \
	-e "s|@MAINTAINER@|$(sed_value "$maintainer")|" \
	-e "s|@HOMEPAGE@|$(sed_value "$homepage")|" \
	"$top/packaging/debian/control" | grep -v '^Homepage: *$' >"$root/DEBIAN/control"
install -m 0644 "$top/packaging/debian/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$top/packaging/debian/postinst" "$top/packaging/debian/postrm" "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
	xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$outdir"
deb=$outdir/greyspf_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
