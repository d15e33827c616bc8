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
# Beside requests/s, the table gives each daemon's own CPU time per request: user + system
# of the daemon process and all its threads (/proc/PID/stat), read by the driver before and
# after each timed run and divided by the run's requests, start-up left out (see
# tcp_driver). The process is the greyspf daemon itself (it owns the sled store, there is
# no keeper process), postgrey's Perl daemon, the do-nothing daemon. The driver's own CPU
# is not counted. Then the ratios: greyspf / postgrey and greyspf / do-nothing of
# requests/s, postgrey / greyspf and greyspf / do-nothing of CPU per request.
# SETTLE_MS (1500): the wait after start-up and after each run before the CPU readings;
# longer than greyspf's store_flush_interval (1 s), so that the flush of what a run wrote
# counts as that run's work.
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
SETTLE_MS=${SETTLE_MS:-1500}
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
args=(--requests "$dir/requests.txt" --runs "$RUNS" --connections "$CONNECTIONS"
	--settle-ms "$SETTLE_MS")
# target NAME PIDFILE PREPARE-COMMAND: one daemon, restarted before each run, its CPU read
# through the process id the restart leaves in PIDFILE.
target() {
	local p
	p=$(free_port)
	args+=(--target "$1=127.0.0.1:$p" --pidfile "$1=$dir/$2.pid" --prepare "$1=$3 $p")
}
target "greyspf daemon" greyspf "bench/daemon.sh restart-greyspf $dir"
if command -v postgrey >/dev/null && getent passwd postgrey >/dev/null; then
	target postgrey postgrey "bench/daemon.sh restart-postgrey $dir"
	args+=(--ratio "rate:greyspf daemon/postgrey" --ratio "cpu:postgrey/greyspf daemon")
else
	echo "daemon.sh: postgrey not installed (package postgrey): its rows are skipped" >&2
fi
target "do-nothing daemon" null "bench/daemon.sh restart-null $dir"
args+=(--ratio "rate:greyspf daemon/do-nothing daemon" --ratio "cpu:greyspf daemon/do-nothing daemon")

pinning=unpinned
[ -n "$PIN" ] && pinning="pinned to CPU $PIN"
{
	echo "greyspf daemon on TCP, $REQUESTS requests, $RUNS runs, profile $PROFILE," \
		"$pinning, $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "Daemon CPU: the daemon process and all its threads (user + system), the driver's" \
		"own CPU not counted; summed over the runs and divided by their requests; process CPU" \
		"clock (ns), and /proc/PID/stat (10 ms ticks) as a check."
	echo
	"${TASKSET[@]}" "$BIN/tcp_driver" "${args[@]}"
} | tee "$dir/report.md"
