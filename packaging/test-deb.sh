#!/bin/bash
# Installs the greyspf Debian package on this machine, checks that it works
# as the greyspf user, then removes and purges it. Needs root and a Debian
# system; meant for a clean CI machine (it purges an installed greyspf
# first).
#
# Usage: packaging/test-deb.sh [PACKAGE.deb]
#
# Without an argument, the newest target/debian/greyspf_*.deb is tested.
# Exits non-zero with a message on the first failure.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
BIN=/usr/sbin/greyspf
STATEDIR=/var/lib/greyspf
CONFDIR=/etc/greyspf

step() { echo "test-deb: $*"; }
fail() {
	echo "test-deb: FAILED: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root"
command -v dpkg >/dev/null || fail "dpkg not found: not a Debian system"

deb=${1:-}
if [ -z "$deb" ]; then
	deb=$(ls -t "$top"/target/debian/greyspf_*.deb 2>/dev/null | head -n1 || true)
fi
[ -n "$deb" ] && [ -f "$deb" ] || fail "no package given and none in target/debian (run packaging/build-deb.sh)"
version=$(dpkg-deb -f "$deb" Version)

tmp=$(mktemp -d)
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

# Runs a command as the greyspf user, with the environment of spawn(8):
# no HOME, only PATH and LANG, umask 077, cwd elsewhere than the state dir.
as_greyspf() {
	(cd / && umask 077 && setpriv --reuid=greyspf --regid=greyspf --init-groups \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@")
}

# The pids of processes that run as user greyspf.
greyspf_pids() {
	local uid d
	uid=$(id -u greyspf 2>/dev/null) || return 0
	for d in /proc/[0-9]*; do
		[ "$(stat -c %u "$d" 2>/dev/null)" = "$uid" ] && echo "${d#/proc/}"
	done
	return 0
}

if dpkg -s greyspf >/dev/null 2>&1; then
	step "purging the greyspf package installed before"
	dpkg -P greyspf >/dev/null || fail "dpkg -P of the greyspf installed before"
fi

# ---------------------------------------------------------------- install
step "dpkg -i $deb"
dpkg -i "$deb" >"$tmp/dpkg.out" 2>&1 || {
	cat "$tmp/dpkg.out" >&2
	fail "dpkg -i"
}
if grep -qi 'warning' "$tmp/dpkg.out"; then
	cat "$tmp/dpkg.out" >&2
	fail "dpkg -i printed warnings"
fi
[ "$(dpkg-query -W -f '${Status}' greyspf)" = "install ok installed" ] ||
	fail "package not in state 'install ok installed'"

[ -x "$BIN" ] || fail "$BIN missing or not executable"
for f in /usr/share/man/man8/greyspf.8.gz /usr/share/man/man5/greyspf.conf.5.gz \
	"$CONFDIR/greyspf.conf" "$CONFDIR/whitelist_clients" "$CONFDIR/whitelist_recipients" \
	/usr/share/doc/greyspf/copyright /usr/share/doc/greyspf/examples/master.cf \
	/usr/share/doc/greyspf/examples/main.cf; do
	[ -f "$f" ] || fail "$f not installed"
done
for f in greyspf.conf whitelist_clients whitelist_recipients; do
	dpkg-query -W -f '${Conffiles}\n' greyspf | grep -q " $CONFDIR/$f " ||
		fail "$CONFDIR/$f is not a conffile"
done

getent passwd greyspf >/dev/null || fail "user greyspf not created"
getent group greyspf >/dev/null || fail "group greyspf not created"
shell=$(getent passwd greyspf | cut -d: -f7)
case "$shell" in
*/nologin | /bin/false) ;;
*) fail "user greyspf has login shell $shell" ;;
esac
uid=$(id -u greyspf)
[ "$uid" -lt 1000 ] || fail "user greyspf is not a system user (uid $uid)"
[ -d "$STATEDIR" ] || fail "$STATEDIR not created"
[ "$(stat -c '%U:%G %a' "$STATEDIR")" = "greyspf:greyspf 700" ] ||
	fail "$STATEDIR is $(stat -c '%U:%G %a' "$STATEDIR"), expected greyspf:greyspf 700"

# ------------------------------------------------------ --version, config
step "greyspf --version"
out=$(as_greyspf "$BIN" --version) || fail "greyspf --version exited $?"
upstream=${version/\~/-}
case "$out" in
*"$upstream"*) ;;
*) fail "greyspf --version printed '$out', expected version $upstream" ;;
esac

step "greyspf --check-config"
as_greyspf "$BIN" --check-config >"$tmp/config.out" 2>"$tmp/config.err" ||
	fail "greyspf --check-config exited $?: $(cat "$tmp/config.err")"
# Every parameter of the shipped configuration file is known and printed.
keys=$(sed -n 's/^#\{0,1\} \{0,1\}\([a-z][a-z0-9_]*\)\( =\|:\).*/\1/p' "$CONFDIR/greyspf.conf" | sort -u)
[ -n "$keys" ] || fail "no parameters found in $CONFDIR/greyspf.conf"
for k in $keys; do
	grep -q "^$k = " "$tmp/config.out" || fail "--check-config does not print $k"
done
grep -qx "state_directory = $STATEDIR" "$tmp/config.out" ||
	fail "--check-config: state_directory is not $STATEDIR"
# The shipped file, with every default uncommented, gives the same settings.
sed 's/^#\([a-z][a-z0-9_]* =\)/\1/' "$CONFDIR/greyspf.conf" >"$tmp/all.conf"
chmod 0644 "$tmp/all.conf"
as_greyspf "$BIN" -c "$tmp/all.conf" --check-config >"$tmp/all.out" 2>&1 ||
	fail "shipped defaults, uncommented, do not pass --check-config: $(cat "$tmp/all.out")"
diff -u "$tmp/config.out" "$tmp/all.out" >&2 ||
	fail "the defaults in $CONFDIR/greyspf.conf differ from the built-in ones"
# A bad value is a configuration error (exit 78).
rc=0
as_greyspf "$BIN" -o greylist_delay=5x --check-config >/dev/null 2>&1 || rc=$?
[ "$rc" = 78 ] || fail "bad value: exit status $rc, expected 78"

# ----------------------------------------------------------- a request stream
# SPF is off here: a CI machine may have no DNS; SPF has its own tests.
step "piped requests as user greyspf"
request() { # client_address recipient protocol_state
	cat <<-EOF
		request=smtpd_access_policy
		protocol_state=$3
		protocol_name=ESMTP
		client_address=$1
		client_name=mail.example.net
		reverse_client_name=mail.example.net
		helo_name=mail.example.net
		sender=alice@example.net
		recipient=$2
		recipient_count=0
		queue_id=
		instance=1a2b.5f3c9d01.4e5f6.0
		size=0
		sasl_method=
		sasl_username=

	EOF
}
{
	request 192.0.2.25 bob@example.com RCPT
	request 192.0.2.25 bob@example.com RCPT
	request 192.0.2.26 bob@example.com RCPT
	request 192.0.2.25 postmaster@example.com RCPT
	request 127.0.0.1 carol@example.com RCPT
	request 192.0.2.25 dave@example.com MAIL
} >"$tmp/requests.txt"
cat >"$tmp/expected.txt" <<-'EOF'
	action=DEFER_IF_PERMIT Greylisted, please try again later

	action=DEFER_IF_PERMIT Greylisted, please try again later

	action=DEFER_IF_PERMIT Greylisted, please try again later

	action=DUNNO

	action=DUNNO

	action=DUNNO

EOF
rc=0
as_greyspf "$BIN" -o spf_enable=no -o keeper_idle_timeout=2s \
	<"$tmp/requests.txt" >"$tmp/replies.txt" 2>"$tmp/stderr.txt" || rc=$?
[ "$rc" = 0 ] || fail "greyspf exited $rc at end of input (stderr: $(cat "$tmp/stderr.txt"))"
[ ! -s "$tmp/stderr.txt" ] || fail "greyspf wrote to stderr: $(cat "$tmp/stderr.txt")"
diff -u "$tmp/expected.txt" "$tmp/replies.txt" >&2 || fail "unexpected replies"
[ -S "$STATEDIR/keeper.sock" ] || [ -n "$(ls -A "$STATEDIR")" ] ||
	fail "nothing in $STATEDIR after greylisting"
bad=$(find "$STATEDIR" ! -user greyspf | head -n1)
[ -z "$bad" ] || fail "$bad in $STATEDIR does not belong to greyspf"

# The example request file of the source tree: one well-formed reply per
# request block.
if [ -f "$top/examples/requests.txt" ]; then
	step "examples/requests.txt as user greyspf"
	cp "$top/examples/requests.txt" "$tmp/example.txt"
	chmod 0644 "$tmp/example.txt"
	rc=0
	as_greyspf "$BIN" -o spf_enable=no -o keeper_idle_timeout=2s \
		<"$tmp/example.txt" >"$tmp/example.out" 2>"$tmp/example.err" || rc=$?
	[ "$rc" = 0 ] || fail "examples/requests.txt: exit status $rc"
	[ ! -s "$tmp/example.err" ] || fail "examples/requests.txt: stderr: $(cat "$tmp/example.err")"
	blocks=$(awk 'NF { inblock = 1 } !NF && inblock { n++; inblock = 0 } END { print n + 0 }' "$tmp/example.txt")
	replies=$(grep -c '^action=' "$tmp/example.out" || true)
	[ "$blocks" = "$replies" ] ||
		fail "examples/requests.txt: $blocks requests but $replies replies"
	awk 'NR % 2 == 1 && !/^action=[^ ]/ { exit 1 } NR % 2 == 0 && $0 != "" { exit 1 }' \
		"$tmp/example.out" || fail "examples/requests.txt: malformed reply"
fi

# The daemon mode's units: installed, and left disabled.
step "systemd units installed and disabled"
for u in greyspf.service greyspf.socket; do
	[ -f "/lib/systemd/system/$u" ] || fail "/lib/systemd/system/$u not installed"
	if [ -n "$(find /etc/systemd/system -name "$u" 2>/dev/null | head -n1)" ]; then
		fail "$u was enabled by the package"
	fi
done

# ----------------------------------------------------------------- remove
# Let the keeper (idle timeout 2s) exit on its own before removing.
for _ in $(seq 1 50); do
	[ -z "$(greyspf_pids)" ] && break
	sleep 0.2
done
[ -z "$(greyspf_pids)" ] || fail "a greyspf process did not exit: $(greyspf_pids | tr '\n' ' ')"

step "dpkg -r greyspf"
dpkg -r greyspf >"$tmp/dpkg.out" 2>&1 || {
	cat "$tmp/dpkg.out" >&2
	fail "dpkg -r"
}
[ "$(dpkg-query -W -f '${Status}' greyspf)" = "deinstall ok config-files" ] ||
	fail "after dpkg -r: package state $(dpkg-query -W -f '${Status}' greyspf)"
[ ! -e "$BIN" ] || fail "$BIN still there after dpkg -r"
[ ! -e /usr/share/man/man8/greyspf.8.gz ] || fail "man page still there after dpkg -r"
for f in greyspf.conf whitelist_clients whitelist_recipients; do
	[ -f "$CONFDIR/$f" ] || fail "conffile $CONFDIR/$f removed by dpkg -r"
done
[ -d "$STATEDIR" ] && [ -n "$(ls -A "$STATEDIR")" ] ||
	fail "$STATEDIR or its data removed by dpkg -r"
getent passwd greyspf >/dev/null || fail "user greyspf removed by dpkg -r"

step "dpkg -P greyspf"
dpkg -P greyspf >"$tmp/dpkg.out" 2>&1 || {
	cat "$tmp/dpkg.out" >&2
	fail "dpkg -P"
}
if dpkg-query -W -f '${Status}' greyspf 2>/dev/null | grep -q 'config-files\|installed'; then
	fail "package still known to dpkg after dpkg -P"
fi
[ ! -e "$CONFDIR" ] || fail "$CONFDIR still there after dpkg -P: $(ls -A "$CONFDIR")"
[ ! -e "$STATEDIR" ] || fail "$STATEDIR still there after dpkg -P"
! getent passwd greyspf >/dev/null || fail "user greyspf still there after dpkg -P"
! getent group greyspf >/dev/null || fail "group greyspf still there after dpkg -P"
[ ! -e /usr/share/doc/greyspf ] || fail "/usr/share/doc/greyspf still there after dpkg -P"

step "OK: $deb installs, serves as user greyspf, removes and purges cleanly"
