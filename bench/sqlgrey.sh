#!/usr/bin/env bash
# bench/sqlgrey.sh: a private sqlgrey daemon (SQLite database) for the benchmark.
#
#   bench/sqlgrey.sh start DIR PORT   start sqlgrey on 127.0.0.1:PORT with its database and
#                                     configuration in DIR; prints its pid once it answers
#   bench/sqlgrey.sh reset DIR        empty its tables (the driver's prepare step: every run
#                                     starts on an empty greylist, as greyspf's do)
#   bench/sqlgrey.sh stop DIR         stop it (if running)
#
# sqlgrey is a TCP policy daemon; the driver reaches it through socat. It runs in the
# foreground (with --daemonize it logs only to syslog, and dies without a syslog socket)
# under the benchmark script, not under the driver, so its CPU time is read from
# /proc/PID/stat before and after a table rather than counted as helper time. The daemon
# is kept across runs (its tables are emptied instead) so that its pid, and so its CPU
# account, covers the whole table.
#
# Configuration: SQLite (in-process: the database's CPU is sqlgrey's), the greylist delay
# of SQLGREY_DELAY minutes (default 5; sqlgrey counts in minutes), no whitelists (empty
# files in a private conf_dir), no log lines but errors.
set -euo pipefail

action=${1:?usage: sqlgrey.sh start DIR PORT | reset DIR | stop DIR}
dir=${2:?usage: sqlgrey.sh start DIR PORT | reset DIR | stop DIR}
user=${SQLGREY_USER:-sqlgrey}
delay=${SQLGREY_DELAY:-5}

start() {
    local port=${1:?sqlgrey.sh start needs a port}
    stop
    rm -rf "$dir/db" "$dir/conf"
    mkdir -p "$dir/db" "$dir/conf"
    local f
    for f in clients_fqdn_whitelist clients_ip_whitelist discrimination.regexp \
        dyn_fqdn.regexp smtp_server.regexp; do
        : >"$dir/conf/$f"
    done
    printf '%s\n' "conf_dir = $dir/conf" 'loglevel = 0' "user = $user" \
        "group = $(id -gn "$user")" "inet = 127.0.0.1:$port" "reconnect_delay = $delay" \
        'db_type = SQLite' "db_name = $dir/db/sqlgrey.db" >"$dir/sqlgrey.conf"
    chown "$user:" "$dir/db"
    sqlgrey -f "$dir/sqlgrey.conf" </dev/null >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    # Up when the port accepts connections and the database exists; at most 10 s.
    for _ in $(seq 1 200); do
        if [ -s "$dir/db/sqlgrey.db" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            cat "$dir/pid"
            return 0
        fi
        sleep 0.05
    done
    echo "sqlgrey.sh: sqlgrey did not listen on 127.0.0.1:$port within 10 s (see $dir/log)" >&2
    return 1
}

reset() {
    runuser -u "$user" -- sqlite3 "$dir/db/sqlgrey.db" \
        'DELETE FROM connect; DELETE FROM from_awl; DELETE FROM domain_awl;'
}

stop() {
    local pid
    [ -s "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    rm -f "$dir/pid"
    # Only a sqlgrey: a stale pid file must not make us signal some other process.
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q sqlgrey; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            [ -e "/proc/$pid" ] || break
            sleep 0.05
        done
        [ ! -e "/proc/$pid" ] || kill -9 "$pid" 2>/dev/null || true
    fi
}

case $action in
start) start "${3:-}" ;;
reset) reset ;;
stop) stop ;;
*)
    echo "usage: sqlgrey.sh start DIR PORT | reset DIR | stop DIR" >&2
    exit 64
    ;;
esac
