#!/usr/bin/env bash
# bench/daemon.sh: greyspf daemon over TCP against postgrey over TCP and a do-nothing TCP
# policy daemon, on the same greylisting stream, over one connection and over 16.
#
#   bench/daemon.sh                  build, generate, measure, print the table
#   PROFILE=debug bench/daemon.sh    a quick try (debug figures say little)
#
# Settings (environment): REQUESTS (5000), RUNS (3), CONNECTIONS ("1,16"), SEED (1),
# PROFILE (release), OUT (target/bench-daemon), PIN (a CPU number: run every daemon and
# the driver on that CPU, so that requests/s measure the CPU work per request; unset: no
# pinning, so that they measure what smtpd waits for, hand-overs between CPUs included).
#
# Every run of every target starts its daemon again on a fresh store (the --prepare step),
# so every run does the same greylisting work: greyspf with store = sled (the daemon owns
# the store), postgrey 1.37 with its Berkeley DB, both with a 1 s delay (postgrey's
# shortest) and no whitelists. postgrey is skipped with a message when not installed.
# Needs root when postgrey runs (it drops to its user) and to run greyspf as it ships
# (started as root, serving as nobody here).
#
# Internal sub-commands (the prepare steps): restart-greyspf DIR PORT, restart-null PORT,
# restart-postgrey DIR PORT, stop DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-5000}
RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-1,16}
SEED=${SEED:-1}
PROFILE=${PROFILE:-release}
OUT=${OUT:-target/bench-daemon}
PIN=${PIN:-}
BIN=target/$PROFILE
TASKSET=()
if [ -n "$PIN" ]; then
	TASKSET=(taskset -c "$PIN")
fi

# Stops the process whose pid is in FILE, if it is still the one we started.
stop_pidfile() {
	local f=$1 pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	rm -f "$f"
	if [ -e "/proc/$pid" ]; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			[ -e "/proc/$pid" ] || return 0
			sleep 0.05
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
}

wait_port() {
	for _ in $(seq 1 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "daemon.sh: nothing listens on port $1 after 10 s" >&2
	return 1
}

case "${1:-}" in
restart-greyspf)
	dir=$2 port=$3
	stop_pidfile "$dir/greyspf.pid"
	rm -rf "$dir/state"
	install -d -m 0700 "$dir/state"
	user=$(id -un)
	if [ "$(id -u)" = 0 ]; then
		user=nobody
		chown nobody: "$dir/state"
	fi
	"${TASKSET[@]}" "$BIN/greyspf" -c /dev/null -o "listen=inet:127.0.0.1:$port" \
		-o "state_directory=$dir/state" -o daemon_user="$user" -o listen_unix_group= \
		-o spf_enable=no -o greylist_delay=1s -o whitelist_clients= \
		-o whitelist_recipients= -o trusted_networks= -o hostname=bench.invalid \
		-o syslog_socket="$dir/no-syslog" daemon </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/greyspf.pid"
	wait_port "$port"
	exit 0
	;;
restart-null)
	dir=$2 port=$3
	stop_pidfile "$dir/null.pid"
	"${TASKSET[@]}" "$BIN/null_tcp_policy" "127.0.0.1:$port" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/null.pid"
	wait_port "$port"
	exit 0
	;;
restart-postgrey)
	dir=$2 port=$3
	stop_pidfile "$dir/postgrey.pid"
	rm -rf "$dir/postgrey-db"
	install -d "$dir/postgrey-db"
	: >"$dir/empty"
	chown postgrey: "$dir/postgrey-db"
	"${TASKSET[@]}" postgrey --daemonize --pidfile="$dir/postgrey.pid" \
		--inet="127.0.0.1:$port" --dbdir="$dir/postgrey-db" --user=postgrey \
		--group="$(id -gn postgrey)" --delay=1 --whitelist-clients="$dir/empty" \
		--whitelist-recipients="$dir/empty" --hostname=bench.invalid \
		</dev/null >/dev/null 2>&1
	wait_port "$port"
	exit 0
	;;
stop)
	for f in greyspf null postgrey; do
		stop_pidfile "$2/$f.pid"
	done
	exit 0
	;;
"") ;;
*)
	echo "usage: bench/daemon.sh (see the comment at its top)" >&2
	exit 64
	;;
esac

flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build --locked "${flag[@]}" --bin greyspf
cargo build --locked "${flag[@]}" -p greyspf-bench --bin tcp_driver --bin null_tcp_policy

mkdir -p "$OUT"
dir=$(cd "$OUT" && pwd)
chmod 0755 "$dir"
trap 'bench/daemon.sh stop "$dir"' EXIT
python3 bench/gen_requests.py --requests "$REQUESTS" --seed "$SEED" >"$dir/requests.txt"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
args=(--requests "$dir/requests.txt" --runs "$RUNS" --connections "$CONNECTIONS")
p=$(free_port)
args+=(--target "greyspf daemon=127.0.0.1:$p" --prepare "greyspf daemon=bench/daemon.sh restart-greyspf $dir $p")
if command -v postgrey >/dev/null && getent passwd postgrey >/dev/null; then
	p=$(free_port)
	args+=(--target "postgrey=127.0.0.1:$p" --prepare "postgrey=bench/daemon.sh restart-postgrey $dir $p")
else
	echo "daemon.sh: postgrey not installed (package postgrey): its rows are skipped" >&2
fi
p=$(free_port)
args+=(--target "do-nothing daemon=127.0.0.1:$p" --prepare "do-nothing daemon=bench/daemon.sh restart-null $dir $p")

{
	echo "greyspf daemon on TCP, $REQUESTS requests, $RUNS runs, profile $PROFILE," \
		"${PIN:+pinned to CPU $PIN}${PIN:-unpinned}, $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	"${TASKSET[@]}" "$BIN/tcp_driver" "${args[@]}"
} | tee "$dir/report.md"
