#!/usr/bin/env bash
# bench/postgrey.sh: starts and stops a private postgrey daemon for the benchmark.
#
#   bench/postgrey.sh start DIR    stop any postgrey of DIR, then start one on a fresh
#                                  database, listening on DIR/socket; returns once it answers
#   bench/postgrey.sh stop DIR     stop the postgrey of DIR (if any)
#
# postgrey is a daemon that speaks the policy protocol on a socket, not on stdin, so the
# driver reaches it through socat. The driver runs "start" as the --prepare step of every
# postgrey run: each run gets an empty database, as greyspf gets a fresh store, and the
# daemon (started under the driver) has its CPU time counted as the policy's helper time.
#
# DIR must be reachable by the postgrey user (the daemon drops root privileges), so it is
# not under a private temporary directory. Empty whitelist files: greyspf runs with none.
set -euo pipefail

action=${1:?usage: postgrey.sh start|stop DIR}
dir=${2:?usage: postgrey.sh start|stop DIR}
user=${POSTGREY_USER:-postgrey}
# postgrey reads --delay=0 as "not given" (300 s), so 1 s is its shortest delay: the
# benchmark runs both services with the same 1 s, under which a replayed stream greylists.
delay=${POSTGREY_DELAY:-1}

stop() {
    local pid
    [ -s "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    rm -f "$dir/pid"
    # Only a postgrey: a stale pid file must not make us signal some other process.
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgrey; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            [ -e "/proc/$pid" ] || break
            sleep 0.05
        done
        [ ! -e "/proc/$pid" ] || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/socket"
}

start() {
    stop
    rm -rf "$dir/db"
    mkdir -p "$dir/db"
    : >"$dir/empty"
    chown "$user:" "$dir" "$dir/db"
    postgrey --daemonize --pidfile="$dir/pid" --unix="$dir/socket" --dbdir="$dir/db" \
        --user="$user" --group="$(id -gn "$user")" --delay="$delay" \
        --whitelist-clients="$dir/empty" --whitelist-recipients="$dir/empty" \
        --hostname=bench.invalid </dev/null >/dev/null 2>&1
    for _ in $(seq 1 200); do
        if [ -S "$dir/socket" ] && [ -s "$dir/pid" ]; then
            return 0
        fi
        sleep 0.05
    done
    echo "postgrey.sh: postgrey did not open $dir/socket within 10 s" >&2
    return 1
}

case $action in
start) start ;;
stop) stop ;;
*)
    echo "usage: postgrey.sh start|stop DIR" >&2
    exit 64
    ;;
esac
