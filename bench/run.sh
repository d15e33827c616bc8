#!/usr/bin/env bash
# bench/run.sh: one command that builds greyspf, generates the request streams and prints the benchmark tables.
#
# The driver (bench_driver) and the do-nothing policy (null_policy) are the bench/ crate,
# greyspf-bench, a workspace member that a plain cargo build or cargo test leaves out; this
# script builds it and greyspf with packaging/build-static.sh (static, as packaged).
#
#   bench/run.sh                       everything, with the defaults below
#   RUNS=10 REQUESTS=50000 bench/run.sh
#   ONLY=spf,postgrey bench/run.sh     only some parts (greylist, spf, score, postgrey, redis)
#   ONLY=hot bench/run.sh              rewrite packaging/hot-functions.ld (never with "all")
#
# Settings (environment): REQUESTS (requests per stream, 20000), RUNS (measured runs per
# policy, 5), WARMUP (1), SPAWNS (start-ups measured per policy, 200), CONCURRENCY (levels,
# "1,4,16,64"), SEED (1), OUT (where results go, target/bench), PROFILE (release; debug
# only to try the script quickly: debug figures mean nothing), ONLY (comma list of parts,
# "all"), SPF_REQUESTS (requests in the SPF stream, 10000), SPF_DOMAINS (1000),
# POSTGREY_REQUESTS (requests of the greylisting stream given to postgrey, 5000),
# SCORE_REQUESTS (requests of the scoring stream, 5000), PIN (a
# CPU number: run the one-stream and start-up tables, every policy, its helpers and the
# nameservers on that one CPU; unset: no pinning), NAMESERVERS (the SPF and scoring tables
# are made once per nameserver listed and installed, "nsd dnsmasq unbound": nsd and dnsmasq
# answer authoritatively, unbound is a caching resolver in front of nsd, as a mail server
# that uses DNS block lists runs one), SQLGREY_REQUESTS (requests of the
# greylisting stream in the Redis-and-sqlgrey table, 5000), BEFORE (the path of a greyspf
# binary from an earlier build: the scoring tables measure it too, as greyspf-score-before,
# side by side with this build, for a change's before and after in one run), HOT_REQUESTS
# (requests of each kind run under callgrind for packaging/hot-functions.ld, 20).
#
# Why PIN: the driver waits for each reply, as smtpd does, so every request is a hand-over
# between processes. On a quiet virtual machine the CPU that must take the hand-over is
# often idle, and waking it costs tens of microseconds (about 100 us per request for the
# do-nothing policy, against 5 us on a busy machine), which hides what the policies cost and
# makes the ratios between them depend on how busy the machine happens to be. On one CPU
# every hand-over is a plain context switch: the tables then compare the work each policy
# makes the machine do. The concurrency table is never pinned: it measures scaling.
#
# The comparisons run when their programs are installed and are skipped with a message
# otherwise: postfix-policyd-spf-python and postfix-policyd-spf-perl (Debian packages) on the
# SPF stream, policyd-weight on the scoring stream, postgrey and socat on the greylisting
# stream, redis-server (for store = redis), and sqlgrey with socat, sqlite3 and
# libdbd-sqlite3-perl. The SPF and scoring parts need root, ip netns and nsd, dnsmasq or
# unbound with nsd (packages nsd, dnsmasq-base, unbound): every SPF policy runs in a private
# network namespace whose only nameserver, on its loopback (127.0.0.1), serves the generated
# zones (for unbound: nsd serves them on 127.0.0.2, unbound asks it and caches), so greyspf
# (dns_server=) and the programs that use the system resolver (a resolv.conf bind-mounted by
# ip netns exec) ask the same server, and no query can leave the machine.
#
# Every policy is measured side by side with the others in the same driver run (runs
# interleaved), so a busy machine slows all of them alike; the machine line says what the
# figures were measured on. Results: $OUT/report.md (the tables) and one JSON per table.
# The exit status is non-zero when any policy gave a bad or missing reply, wrote to stderr,
# or did not exit cleanly at EOF.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-20000}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
SPAWNS=${SPAWNS:-200}
CONCURRENCY=${CONCURRENCY:-1,4,16,64}
SEED=${SEED:-1}
OUT=${OUT:-target/bench}
PROFILE=${PROFILE:-release}
ONLY=${ONLY:-all}
PIN=${PIN:-}
SPF_REQUESTS=${SPF_REQUESTS:-10000}
SPF_DOMAINS=${SPF_DOMAINS:-1000}
POSTGREY_REQUESTS=${POSTGREY_REQUESTS:-5000}
SCORE_REQUESTS=${SCORE_REQUESTS:-5000}
# The nameservers the SPF and scoring tables run against, one set of tables each, when
# installed.
NAMESERVERS=${NAMESERVERS:-nsd dnsmasq unbound}
SQLGREY_REQUESTS=${SQLGREY_REQUESTS:-5000}
BEFORE=${BEFORE:-}
HOT_REQUESTS=${HOT_REQUESTS:-20}

# Where packaging/build-static.sh puts greyspf and the benchmark tools (the bench/ crate):
# greyspf is measured as the Debian package ships it, a static binary, and the do-nothing
# policy is linked the same way so that the difference is greyspf's own.
BIN=target/$(rustc -vV | sed -n 's/^host: //p')/$PROFILE
DRIVER=$BIN/bench_driver
status=0
# Prefix of the driver's command line: the SPF tables run it inside the namespace.
IN_NETNS=()
NETNS=
NAMESERVER_PID=
# nsd behind unbound (NAMESERVER_PID), when the nameserver is unbound.
UPSTREAM_PID=
POSTGREY_DIR=
REDIS_PID=
REDIS_PORT=
SQLGREY_DIR=
SQLGREY_PID=
# policyd-weight's configuration while its cache daemon may run (stopped by cleanup).
POLW_CONF=
# Subnets added to dnsmasq's auth-zone (",NET,NET..."): it then answers the reverse zones
# of those networks authoritatively, also to queries without recursion (policyd-weight's).
AUTH_SUBNETS=
# The zones nsd serves, each from $WORK/ZONE.zone (the scoring tables add reverse zones).
NSD_ZONES=example
# A UDP syslog sink in the namespace, for policyd-weight.
SYSLOG_SINK_PID=

# ---------------------------------------------------------------------------------------
# Policies. Each add_* function appends the driver arguments for one policy to POLICIES;
# a comparison (postgrey, postfix-policyd-spf-python, ...) is one more function, skipped
# when its program is not installed.

# greyspf with a private state directory and nothing from /etc: an empty configuration file
# and every setting the benchmark depends on given with -o, as master.cf would.
# $1: state directory (may hold the driver's {run}/{n} placeholders); $2...: more -o NAME=VALUE.
greyspf_command() {
    local state=$1
    shift
    local command="${GREYSPF_PROGRAM:-$BIN/greyspf} -c $WORK/empty.conf -o state_directory=$state"
    command+=" -o syslog_socket=/nonexistent -o keeper_idle_timeout=10s"
    command+=" -o whitelist_clients=$WORK/empty.conf -o whitelist_recipients=$WORK/empty.conf"
    local setting
    for setting in "$@"; do
        command+=" -o $setting"
    done
    printf '%s' "$command"
}

# greyspf greylisting only (no DNS), every triplet passing at once (greylist_delay=0), so
# that each request does the full keeper round trip and stores or updates its triplet.
# $1: state directory; $2: "prepare" to start the keeper before each run (a fresh store,
# but not a cold keeper: the keeper's start is paid once per keeper, not per request).
add_greyspf_greylist() {
    local command
    command=$(greyspf_command "$1" greylist_delay=0 spf_enable=no)
    POLICIES+=(--policy "greyspf=$command")
    if [ "${2:-}" = prepare ]; then
        # One decision through the keeper starts it and waits until it answers.
        POLICIES+=(--prepare "greyspf=$command check --client-address 192.0.2.1 \
--sender prepare@bench.invalid --recipient prepare@bench.invalid")
    fi
}

# The do-nothing policy: the floor of the pipe, the process start and the driver.
add_null() {
    POLICIES+=(--policy "null=$BIN/null_policy")
}

# greyspf with SPF against the namespace's nameserver. $1: row name; $2: state directory;
# $3: "greylist" for SPF and greylisting in one decision (greylist_delay=0), anything else
# for SPF alone; $4: "prepare" to start the keeper before each run, as above.
add_greyspf_spf() {
    local name=$1 state=$2 command
    local settings=(spf_enable=yes dns_server=127.0.0.1:53)
    if [ "$3" = greylist ]; then
        settings+=(greylist_delay=0)
    else
        settings+=(greylist_enable=no)
    fi
    command=$(greyspf_command "$state" "${settings[@]}")
    POLICIES+=(--policy "$name=$command")
    if [ "${4:-}" = prepare ]; then
        POLICIES+=(--prepare "$name=$command check --client-address 192.0.2.1 \
--sender prepare@bench.invalid --recipient prepare@bench.invalid")
    fi
}

# greyspf with reputation scoring, SPF and greylisting in one decision (greylist_delay=0),
# against the namespace's nameserver and the lists of bench/score_zone.py. $1: row name;
# $2: state directory; $3: "prepare" to start the keeper before each run, as above.
add_greyspf_score() {
    local name=$1 state=$2 command
    command=$(greyspf_command "$state" spf_enable=yes dns_server=127.0.0.1:53 \
        greylist_delay=0 score_enable=yes score_rhsbl= \
        score_dnsbl=bl1.bench.example=4.5,bl2.bench.example=3.5,wl.bench.example=-5)
    POLICIES+=(--policy "$name=$command")
    if [ "${3:-}" = prepare ]; then
        POLICIES+=(--prepare "$name=$command check --client-address 192.0.2.1 \
--sender prepare@bench.invalid --recipient prepare@bench.invalid")
    fi
}

# policyd-weight (Debian package) as spawn(8) would run it: no action, requests on stdin.
# It logs through syslog over UDP to a sink in the namespace: when a log line cannot be
# sent, it waits a second and writes an emergency log instead.
# Its defaults, with the benchmark's lists for its DNSBL checks, the namespace's
# nameserver, and syslog over UDP (nothing listens in the namespace; there is no /dev/log
# to rely on). Its cache daemon's socket and lock go under the work directory.
# $1: "cold" stops its cache daemon before each start, so that a run begins with no client
# known, as each greyspf run does; "warm" keeps the cache daemon, and with it the answers
# of the run before (the same stream), as a long-running installation would.
add_policyd_weight() {
    local program=/usr/sbin/policyd-weight
    if [ ! -x "$program" ] || ! id polw >/dev/null 2>&1 || [ -z "$SYSLOG_SINK_PID" ]; then
        note "policyd-weight rows skipped: they need $program, its user polw and socat."
        return 0
    fi
    # Its lock directory must not be writable by others; run as root, it works as its
    # user polw (created by the package).
    # The directories its daemon mode would make: the cache daemon that a spawned
    # policyd-weight starts works in cores/cache, and without it each request waits.
    mkdir -p "$WORK/polw/cores/cache" "$WORK/polw/cores/master"
    chmod -R 755 "$WORK/polw"
    chown -R polw: "$WORK/polw"
    cat >"$WORK/policyd-weight.conf" <<CONF
\$syslog_socktype = 'udp';
\$NS = '127.0.0.1';
\$LOCKPATH = '$WORK/polw/';
\$SPATH = \$LOCKPATH.'/polw.sock';
@dnsbl_score = (
    'bl1.bench.example', 4.5, 0, 'BL1',
    'bl2.bench.example', 3.5, 0, 'BL2',
);
@rhsbl_score = ();
CONF
    # As its own user, as master.cf's user=polw would run it: as root it refuses to start
    # its cache daemon, and pays a second for each try.
    POLW_CONF=$WORK/policyd-weight.conf
    POLICIES+=(--policy "policyd-weight-$1=$POLW_AS $program -f $POLW_CONF")
    if [ "$1" = cold ]; then
        # -k stops the cache daemon (its status is not the point: none may be running).
        printf '#!/bin/sh\n%s -f %s -k\nexit 0\n' "$POLW_AS $program" "$POLW_CONF" \
            >"$WORK/policyd-weight-cold.sh"
        chmod 755 "$WORK/policyd-weight-cold.sh"
        POLICIES+=(--prepare "policyd-weight-cold=$WORK/policyd-weight-cold.sh")
    fi
}

# postfix-policyd-spf-python with the configuration its Debian package installs, written
# out here so that local edits of the system's copy do not change the figures.
add_policyd_spf_python() {
    local program=/usr/bin/policyd-spf
    if [ ! -x "$program" ]; then
        note "postfix-policyd-spf-python is not installed ($program): its rows are skipped."
        return 0
    fi
    printf '%s\n' 'debugLevel = 1' 'TestOnly = 1' 'HELO_reject = Fail' \
        'Mail_From_reject = Fail' 'PermError_reject = False' 'TempError_Defer = False' \
        'skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1' >"$WORK/policyd-spf.conf"
    POLICIES+=(--policy "policyd-spf-python=$program $WORK/policyd-spf.conf")
}

# postfix-policyd-spf-perl: no configuration file; it rejects fail and defers temperror.
add_policyd_spf_perl() {
    local program=/usr/sbin/postfix-policyd-spf-perl
    if [ ! -x "$program" ]; then
        note "postfix-policyd-spf-perl is not installed ($program): its rows are skipped."
        return 0
    fi
    POLICIES+=(--policy "policyd-spf-perl=$program")
}

# postgrey, a daemon: bench/postgrey.sh (the prepare step) starts it on a fresh database
# before each run and socat carries the driver's stdin/stdout to its socket, so its
# first-reply figure is socat's start and a connect, not postgrey's own start-up.
# $1: greylist delay in seconds, given to postgrey.
add_postgrey() {
    POLICIES+=(--policy "postgrey=socat STDIO UNIX-CONNECT:$POSTGREY_DIR/socket")
    POLICIES+=(--prepare "postgrey=env POSTGREY_DELAY=$1 bench/postgrey.sh start $POSTGREY_DIR")
}

# ---------------------------------------------------------------------------------------

note() {
    printf '\n%s\n' "$*" | tee -a "$REPORT"
}

want() {
    [ "$ONLY" = all ] || [[ ",$ONLY," == *",$1,"* ]]
}

# Runs a command as policyd-weight's user.
POLW_AS="setpriv --reuid=polw --regid=polw --clear-groups"

# Undoes what the SPF, scoring and postgrey parts set up; run on every exit.
cleanup() {
    if [ -n "$SYSLOG_SINK_PID" ]; then
        kill "$SYSLOG_SINK_PID" 2>/dev/null || true
        wait "$SYSLOG_SINK_PID" 2>/dev/null || true
        SYSLOG_SINK_PID=
    fi
    if [ -n "$POLW_CONF" ]; then
        # -k stops the cache daemon that the first policyd-weight process started.
        $POLW_AS /usr/sbin/policyd-weight -f "$POLW_CONF" -k >/dev/null 2>&1 || true
        POLW_CONF=
    fi
    if [ -n "$NAMESERVER_PID" ]; then
        kill "$NAMESERVER_PID" 2>/dev/null || true
        wait "$NAMESERVER_PID" 2>/dev/null || true
        NAMESERVER_PID=
    fi
    if [ -n "$UPSTREAM_PID" ]; then
        kill "$UPSTREAM_PID" 2>/dev/null || true
        wait "$UPSTREAM_PID" 2>/dev/null || true
        UPSTREAM_PID=
    fi
    if [ -n "$NETNS" ]; then
        ip netns delete "$NETNS" 2>/dev/null || true
        rm -rf "/etc/netns/$NETNS"
        NETNS=
    fi
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
    fi
    if [ -n "$SQLGREY_DIR" ]; then
        bench/sqlgrey.sh stop "$SQLGREY_DIR" || true
        rm -rf "$SQLGREY_DIR"
        SQLGREY_DIR=
        SQLGREY_PID=
    fi
    if [ -n "$POSTGREY_DIR" ]; then
        bench/postgrey.sh stop "$POSTGREY_DIR" || true
        rm -rf "$POSTGREY_DIR"
        POSTGREY_DIR=
    fi
}

# Creates the namespace and starts its nameserver; returns non-zero (after saying why) when
# this machine cannot. $1: nsd, dnsmasq or unbound; the zones are in $WORK (spf.zone for
# dnsmasq, ZONE.zone for each of $NSD_ZONES for nsd, which unbound asks).
start_netns() {
    local server=$1 missing=
    [ "$(id -u)" -eq 0 ] || missing="root (for ip netns)"
    command -v ip >/dev/null || missing="ip (iproute2)"
    case $server in
    nsd) command -v nsd >/dev/null || missing="nsd (package nsd)" ;;
    dnsmasq) command -v dnsmasq >/dev/null || missing="dnsmasq (package dnsmasq-base)" ;;
    unbound)
        command -v unbound >/dev/null || missing="${missing:+$missing and }unbound (package unbound)"
        command -v nsd >/dev/null || missing="${missing:+$missing and }nsd (package nsd)"
        ;;
    *) missing="a nameserver this script knows (nsd, dnsmasq or unbound, not $server)" ;;
    esac
    if [ -n "$missing" ]; then
        note "SPF tables with $server skipped: they need $missing."
        return 1
    fi
    NETNS=greyspf-bench-$$
    if ! ip netns add "$NETNS" 2>/dev/null; then
        NETNS=
        note "SPF tables skipped: cannot create a network namespace here (ip netns add failed)."
        return 1
    fi
    ip netns exec "$NETNS" ip link set lo up
    # ip netns exec bind-mounts this file over /etc/resolv.conf for what it runs.
    mkdir -p "/etc/netns/$NETNS"
    printf 'nameserver 127.0.0.1\n' >"/etc/netns/$NETNS/resolv.conf"
    local pin=() zone
    [ -z "$PIN" ] || pin=(taskset -c "$PIN")
    # nsd and dnsmasq answer only from the zones, authoritatively, as the domains' own
    # servers do: NXDOMAIN and NODATA carry the zone's SOA, so a resolver may cache them
    # (RFC 2308), as unbound does. A TTL of 5 minutes, as real SPF records commonly have,
    # lets a resolver that caches do so.
    if [ "$server" != dnsmasq ]; then
        # nsd on 127.0.0.1, where the policies ask; behind unbound on 127.0.0.2, lo's second
        # address, so that unbound has 127.0.0.1:53 and asks nsd over the loopback as a
        # resolver asks the lists' servers.
        local nsd_address=127.0.0.1
        if [ "$server" = unbound ]; then
            nsd_address=127.0.0.2
            ip netns exec "$NETNS" ip addr add 127.0.0.2/8 dev lo
        fi
        # nsd: the zone files, one server process, no database, no remote control, and no
        # response rate limiting (every query comes from the loopback).
        printf '%s\n' 'server:' "  ip-address: $nsd_address" '  port: 53' '  server-count: 1' \
            '  rrl-ratelimit: 0' '  rrl-whitelist-ratelimit: 0' \
            '  username: ""' '  database: ""' "  zonesdir: \"$WORK\"" \
            "  zonelistfile: \"$WORK/nsd.zonelist\"" "  xfrdfile: \"$WORK/nsd.xfrd\"" \
            "  xfrdir: \"$WORK\"" "  pidfile: \"$WORK/nsd.pid\"" "  logfile: \"$WORK/nsd.log\"" \
            'remote-control:' '  control-enable: no' \
            >"$WORK/nsd.conf"
        for zone in $NSD_ZONES; do
            printf '%s\n' 'zone:' "  name: \"$zone\"" "  zonefile: \"$zone.zone\"" \
                >>"$WORK/nsd.conf"
        done
        ip netns exec "$NETNS" "${pin[@]}" nsd -d -c "$WORK/nsd.conf" &
        NAMESERVER_PID=$!
    else
        # dnsmasq: no upstream, no hosts file; txt-record and host-record lines.
        printf '%s\n' no-resolv no-hosts port=53 listen-address=127.0.0.1 bind-interfaces \
            auth-server=ns.bench.example,127.0.0.1 "auth-zone=example$AUTH_SUBNETS" \
            auth-soa=1,hostmaster.bench.example,1200,120,604800 auth-ttl=300 \
            local=/example/ local=/in-addr.arpa/ local=/ip6.arpa/ local-ttl=300 pid-file= \
            "log-facility=$WORK/dnsmasq.log" \
            "conf-file=$WORK/spf.zone" >"$WORK/dnsmasq.conf"
        ip netns exec "$NETNS" "${pin[@]}" dnsmasq --keep-in-foreground \
            --conf-file="$WORK/dnsmasq.conf" &
        NAMESERVER_PID=$!
    fi
    if [ "$server" = unbound ]; then
        UPSTREAM_PID=$NAMESERVER_PID
        # unbound: a caching resolver on 127.0.0.1, as a mail server that uses DNS block
        # lists runs one (the lists refuse queries that come through public resolvers). It
        # reaches nsd through one stub zone per zone. Nothing needs the root: the only other
        # names asked (bench.invalid and 192.0.2.1 of the prepare requests) are in zones
        # unbound answers itself by default. Iterator only (no DNSSEC validation: the zones
        # are unsigned), one thread, no user change, chroot or control socket, its log in
        # the work directory. The reverse zones of 10/8 and 2001:db8::/32 are among those
        # it answers itself by default (private and documentation addresses); nodefault
        # leaves them to nsd. Caches larger than the default 4 MB each, so that they hold
        # what the warm-up run asked: with the defaults, 5000 requests of the scoring
        # stream (22,203 distinct names) sent 86,367 of 194,034 queries on to nsd, the
        # answers evicted before they were asked again; with these, 21,481, each name once.
        printf '%s\n' 'server:' '  interface: 127.0.0.1' '  port: 53' '  do-ip6: no' \
            '  access-control: 127.0.0.0/8 allow' '  do-not-query-localhost: no' \
            '  username: ""' '  chroot: ""' "  directory: \"$WORK\"" '  pidfile: ""' \
            '  use-syslog: no' "  logfile: \"$WORK/unbound.log\"" '  num-threads: 1' \
            '  module-config: "iterator"' '  msg-cache-size: 32m' '  rrset-cache-size: 64m' \
            '  local-zone: "10.in-addr.arpa." nodefault' \
            '  local-zone: "8.b.d.0.1.0.0.2.ip6.arpa." nodefault' \
            >"$WORK/unbound.conf"
        for zone in $NSD_ZONES; do
            printf '%s\n' 'stub-zone:' "  name: \"$zone\"" '  stub-addr: 127.0.0.2@53' \
                >>"$WORK/unbound.conf"
        done
        printf '%s\n' 'remote-control:' '  control-enable: no' >>"$WORK/unbound.conf"
        ip netns exec "$NETNS" "${pin[@]}" unbound -d -c "$WORK/unbound.conf" &
        NAMESERVER_PID=$!
    fi
    # Up when its UDP socket on 127.0.0.1:53 (0100007F:0035) shows, and for unbound nsd's
    # on 127.0.0.2:53 (0200007F:0035) too; at most 10 s.
    local sockets=(0100007F:0035) logs=$WORK/$server.log
    if [ "$server" = unbound ]; then
        sockets+=(0200007F:0035)
        logs+=" and $WORK/nsd.log"
    fi
    for _ in $(seq 1 200); do
        local udp socket up=yes
        udp=$(ip netns exec "$NETNS" cat /proc/net/udp)
        for socket in "${sockets[@]}"; do
            [[ $udp == *" $socket "* ]] || up=
        done
        [ -z "$up" ] || return 0
        kill -0 "$NAMESERVER_PID" 2>/dev/null || break
        [ -z "$UPSTREAM_PID" ] || kill -0 "$UPSTREAM_PID" 2>/dev/null || break
        sleep 0.05
    done
    note "SPF tables with $server skipped: it did not start (see $logs)."
    # The callers skip their tables and their cleanup: stop what did start (nsd, when
    # unbound did not) and remove the namespace here.
    cleanup
    return 1
}

# Who answers the policies' queries, for the notes above the tables. $1: the nameserver.
answered_by() {
    if [ "$1" = unbound ]; then
        printf '%s' "one unbound, a caching resolver on the loopback of a private network \
namespace, answers every policy: from its cache, or at a name's first asking from nsd, which \
serves the zones authoritatively on a second loopback address; the cache lasts over the \
runs of a table, so the warm-up run fills it"
    else
        printf '%s' "one $1 on the loopback of a private network namespace answers every \
policy, authoritatively"
    fi
}

# After cleanup has stopped unbound: its own count, logged as it stops, of the queries of
# the tables it served and how many it answered from its cache (the rest it resolved,
# asking nsd), so that the report shows the cache at work. The log is appended to by each
# start: the count is the one after the last start. $1: the nameserver.
cache_note() {
    [ "$1" = unbound ] && [ -e "$WORK/unbound.log" ] || return 0
    local stats
    stats=$(awk '/start of service/ { s = "" }
        match($0, /[0-9]+ queries, [0-9]+ answers from cache, [0-9]+ recursions/) {
            s = substr($0, RSTART, RLENGTH)
        }
        END { print s }' "$WORK/unbound.log")
    [ -z "$stats" ] || note "unbound over the two tables above: $stats (asking nsd)."
}

machine() {
    local cpu load
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    load=$(cut -d' ' -f1 /proc/loadavg)
    printf 'Machine: %s CPUs (%s), Linux %s, %s; load average %s; %s; %s.\n' \
        "$(nproc)" "${cpu:-unknown CPU}" "$(uname -r)" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$(rustc --version)" "$("$BIN"/greyspf --version)"
    if [ -n "$PIN" ]; then
        printf 'Pinned: the stream and start-up tables ran on CPU %s alone (taskset), policies, helpers and nameserver included.\n' "$PIN"
    fi
    # Other work on the machine slows every policy, but not alike: greyspf needs a core for
    # its keeper as well. Say so next to the figures rather than let them mislead.
    if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
        printf 'Warning: the machine was busy (load %s on %s CPUs): absolute figures are low and noisy.\n' \
            "$load" "$(nproc)"
    fi
}

# Runs the driver on one table; its stdout (the table) goes to the report too.
# $1: title; $2: JSON file name; the rest: driver arguments.
table() {
    local title=$1 json=$2
    shift 2
    printf '\n### %s\n\n' "$title" | tee -a "$REPORT"
    local rc=0 pin=()
    if [ -n "$PIN" ] && [ -z "${NO_PIN:-}" ]; then
        pin=(taskset -c "$PIN")
    fi
    "${IN_NETNS[@]}" "${pin[@]}" "$DRIVER" --json "$OUT/$json" "$@" | tee -a "$REPORT" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "(the driver reported problems: exit status $rc)" | tee -a "$REPORT"
        status=1
    fi
}

# Bytes the store takes on disk per distinct triplet. $1: a state directory after a run.
store_per_triplet() {
    local state=$1 triplets
    local store=$state/store
    [ -d "$store" ] || store=$state
    # The generator counts the stream's distinct triplets; the prepare step adds one.
    triplets=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["distinct_triplets"] + 1)' \
        "$WORK/greylist.stats.json")
    local disk apparent
    disk=$(( $(du -sk "$store" | cut -f1) * 1024 ))
    apparent=$(du -sb "$store" | cut -f1)
    printf '\nStore after one run of the greylisting stream: %s distinct triplets, %s bytes on disk (%s per triplet), %s bytes apparent (%s per triplet).\n' \
        "$triplets" "$disk" "$((disk / triplets))" "$apparent" "$((apparent / triplets))" | tee -a "$REPORT"
}

greylist_tables() {
    python3 bench/gen_requests.py --seed "$SEED" --requests "$REQUESTS" \
        --stats "$WORK/greylist.stats.json" >"$WORK/greylist.txt"
    printf 'Greylisting stream: %s requests (seed %s): new triplets, retries, several recipients per message, null senders, IPv6, BATV/VERP/SRS/+ext senders.\n' \
        "$REQUESTS" "$SEED" | tee -a "$REPORT"

    POLICIES=()
    add_greyspf_greylist "$WORK/state/stream-{run}" prepare
    add_null
    table "Greylisting stream, one process, $RUNS runs (+$WARMUP warm-up), interleaved" \
        stream.json --requests "$WORK/greylist.txt" --runs "$RUNS" --warmup "$WARMUP" \
        "${POLICIES[@]}"
    store_per_triplet "$WORK/state/stream-1"

    POLICIES=()
    add_greyspf_greylist "$WORK/state/spawn"
    add_null
    table "Start-up: spawn to first reply, one request per process, $SPAWNS processes (+$WARMUP warm-up)" \
        spawn.json --requests "$WORK/greylist.txt" --first-reply-only "$SPAWNS" \
        --warmup "$WARMUP" "${POLICIES[@]}"

    POLICIES=()
    add_greyspf_greylist "$WORK/state/concurrent-{n}-{run}" prepare
    add_null
    NO_PIN=1 table "Concurrency: N processes at once on one keeper, the stream split between them, $RUNS runs" \
        concurrency.json --requests "$WORK/greylist.txt" --concurrency "$CONCURRENCY" --split \
        --runs "$RUNS" --warmup "$WARMUP" "${POLICIES[@]}"
}

# The SPF stream: the same generator over a generated zone (pass, fail, softfail, neutral
# and none domains; clients of a pass domain inside its network), every policy in the
# namespace. greyspf alone (greylisting off: the pure SPF comparison) and greyspf with SPF
# and greylisting in one decision, beside the programs it replaces.
spf_tables() {
    python3 bench/spf_zone.py --seed "$SEED" --domains "$SPF_DOMAINS" \
        --domain-list "$WORK/spf.domains" --dnsmasq "$WORK/spf.zone" \
        --zone-file "$WORK/example.zone"
    python3 bench/gen_requests.py --seed "$SEED" --requests "$SPF_REQUESTS" \
        --spf-domains "$WORK/spf.domains" --stats "$WORK/spf.stats.json" >"$WORK/spf.txt"
    local server
    for server in $NAMESERVERS; do
        spf_tables_with "$server"
    done
}

# The SPF tables against one nameserver. Every query costs the nameserver's CPU as well as
# the policy's, on the same pinned CPU: dnsmasq looks its txt-record lines up one by one
# (tens of microseconds a query with a thousand domains), nsd from an indexed zone, unbound
# from its cache (a hash lookup) and only at a name's first asking from nsd, both on that
# CPU. unbound's cache lasts over the runs of one table, as a running resolver's does, so
# the warm-up run fills it; records and negative answers live 300 s (their TTL), so a table
# that runs longer has some names asked of nsd again, as a live resolver would.
spf_tables_with() {
    local server=$1 suffix=
    [ "$server" = nsd ] || suffix=-$server
    start_netns "$server" || return 0
    note "SPF stream: $SPF_REQUESTS requests (seed $SEED) over $SPF_DOMAINS sender domains \
(pass, fail, softfail, neutral, none in the shares of bench/spf_zone.py), HELO and MAIL FROM \
checked; $(answered_by "$server") (record TTL 300 s, negative TTL 300 s)."
    IN_NETNS=(ip netns exec "$NETNS")

    POLICIES=()
    add_greyspf_spf greyspf-spf "$WORK/state/spf-{run}" spf-only
    add_greyspf_spf greyspf-spf+greylist "$WORK/state/spf-grey-{run}" greylist prepare
    add_policyd_spf_python
    add_policyd_spf_perl
    add_null
    table "SPF stream ($server), one process, $RUNS runs (+$WARMUP warm-up), interleaved" \
        "spf-stream$suffix.json" --requests "$WORK/spf.txt" --runs "$RUNS" --warmup "$WARMUP" \
        "${POLICIES[@]}"

    POLICIES=()
    add_greyspf_spf greyspf-spf "$WORK/state/spf-spawn" spf-only
    add_greyspf_spf greyspf-spf+greylist "$WORK/state/spf-grey-spawn" greylist
    add_policyd_spf_python
    add_policyd_spf_perl
    add_null
    table "SPF start-up ($server): spawn to first reply on the SPF stream, $SPAWNS processes (+$WARMUP warm-up)" \
        "spf-spawn$suffix.json" --requests "$WORK/spf.txt" --first-reply-only "$SPAWNS" \
        --warmup "$WARMUP" "${POLICIES[@]}"
    IN_NETNS=()
    cleanup
    cache_note "$server"
}

# Reputation scoring: greyspf with scoring, SPF and greylisting against greyspf with SPF and
# greylisting alone, policyd-weight and the do-nothing policy, on the SPF stream's kind of
# requests with reverse DNS, HELO addresses, MX records and list entries for their clients
# (bench/score_zone.py). The records span the reverse zones as well: dnsmasq answers them
# as subnets of its auth-zone, nsd (and unbound through it) as zones of their own.
score_tables() {
    score_stream
    local server
    for server in $NAMESERVERS; do
        score_tables_with "$server"
    done
}

# The scoring stream (score.txt) and the zones that answer it (spf.zone, example.zone and
# the reverse zones), once per invocation.
score_stream() {
    [ ! -e "$WORK/score.txt" ] || return 0
    python3 bench/spf_zone.py --seed "$SEED" --domains "$SPF_DOMAINS" \
        --domain-list "$WORK/spf.domains" --dnsmasq "$WORK/spf.zone" \
        --zone-file "$WORK/example.zone"
    python3 bench/gen_requests.py --seed "$SEED" --requests "$SCORE_REQUESTS" \
        --spf-domains "$WORK/spf.domains" >"$WORK/score.txt"
    # The stream as smtpd would send it for this DNS data: its client names agree with the
    # reverse DNS, which greyspf and policyd-weight both take from the request.
    python3 bench/score_zone.py --seed "$SEED" --requests "$WORK/score.txt" \
        --postfix-names "$WORK/score-postfix.txt" --zone-file "$WORK/example.zone" \
        --reverse-zones "$WORK" >>"$WORK/spf.zone"
    mv "$WORK/score-postfix.txt" "$WORK/score.txt"
}

# packaging/hot-functions.ld, the functions a spawned instance runs for its first requests
# (static-layout.ld puts them side by side): greyspf under callgrind, one process per
# request, for the first HOT_REQUESTS requests of the scoring stream against nsd, with SPF
# and greylisting (the default) and then with scoring too; logging to a socket that is
# read, as with a syslog daemon. Only with ONLY=hot: it rewrites a file of the source tree,
# to be committed after the next build is measured.
hot_list() {
    if ! command -v valgrind >/dev/null || ! command -v socat >/dev/null; then
        note "hot-functions.ld not written: it needs valgrind and socat."
        return 0
    fi
    score_stream
    AUTH_SUBNETS=,10.0.0.0/8,2001:db8::/32,127.0.0.0/8
    NSD_ZONES="example 10.in-addr.arpa 8.b.d.0.1.0.0.2.ip6.arpa"
    start_netns nsd || return 0
    AUTH_SUBNETS=
    NSD_ZONES=example
    socat -u UNIX-RECV:"$WORK/log.sock" OPEN:/dev/null &
    SYSLOG_SINK_PID=$!
    local n kind
    local -A command
    for kind in spf score; do
        local settings=(spf_enable=yes dns_server=127.0.0.1:53 spf_timeout=30s
            syslog_socket="$WORK/log.sock")
        [ "$kind" = spf ] || settings+=(score_enable=yes score_timeout=30s score_rhsbl=
            score_dnsbl=bl1.bench.example=4.5,bl2.bench.example=3.5,wl.bench.example=-5)
        command[$kind]=$(greyspf_command "$WORK/state/hot-$kind" "${settings[@]}")
        # Not measured: the first request also starts the keeper, once in its life.
        # shellcheck disable=SC2086 # the command is words, as the driver splits it
        awk 'BEGIN { RS = ""; ORS = "\n\n" } { print; exit }' "$WORK/score.txt" |
            ip netns exec "$NETNS" ${command[$kind]} >/dev/null 2>&1
    done
    mkdir -p "$WORK/callgrind"
    # Zero-padded, so that the files list in request order.
    for n in $(seq -w 1 "$HOT_REQUESTS"); do
        awk -v n="$((10#$n))" 'BEGIN { RS = ""; ORS = "\n\n" } NR == n { print; exit }' \
            "$WORK/score.txt" >"$WORK/callgrind/request"
        for kind in spf score; do
            # shellcheck disable=SC2086
            ip netns exec "$NETNS" valgrind --tool=callgrind --demangle=no \
                --callgrind-out-file="$WORK/callgrind/$kind.$n" ${command[$kind]} \
                <"$WORK/callgrind/request" >/dev/null 2>&1
        done
    done
    # Written aside and moved into place whole: a failed run leaves the list as it was.
    python3 packaging/hot-functions.py --binary "$BIN/greyspf" \
        --libc "$(gcc -print-file-name=libc.a)" --first "$WORK"/callgrind/spf.* \
        --then "$WORK"/callgrind/score.* >"$WORK/hot-functions.ld"
    mv "$WORK/hot-functions.ld" packaging/hot-functions.ld
    note "packaging/hot-functions.ld written from $HOT_REQUESTS requests of each kind: \
$(grep -c '^    \*' packaging/hot-functions.ld) patterns."
    cleanup
}

# The scoring tables against one nameserver: dnsmasq answers a list or PTR query in about
# 60 µs of the shared CPU with this many records (it walks its record lines), nsd from
# indexed zones (the example zone and the two reverse zones of the clients), unbound from
# its cache (a hash lookup), a name's first asking going on to nsd. As in the SPF tables,
# unbound's cache lasts over the runs of one table (TTL 300 s), as a running resolver's
# does: the warm-up run fills it, and policyd-weight-cold starts with no client known to
# its own cache daemon but with unbound's cache warm, as on a mail server.
score_tables_with() {
    local server=$1 suffix=
    [ "$server" = nsd ] || suffix=-$server
    AUTH_SUBNETS=,10.0.0.0/8,2001:db8::/32,127.0.0.0/8
    NSD_ZONES="example 10.in-addr.arpa 8.b.d.0.1.0.0.2.ip6.arpa"
    start_netns "$server" || return 0
    AUTH_SUBNETS=
    NSD_ZONES=example
    if command -v socat >/dev/null; then
        ip netns exec "$NETNS" socat -u UDP-RECV:514,bind=127.0.0.1 OPEN:/dev/null &
        SYSLOG_SINK_PID=$!
    fi
    note "Scoring stream: $SCORE_REQUESTS requests (seed $SEED) of the SPF stream's kind; per \
client (bench/score_zone.py) half servers with forward-confirmed reverse DNS, a fifth dynamic-looking, \
the rest without reverse DNS, the client names in the requests as smtpd would send them; 10 % on \
bl1, 5 % on bl2, 5 % on the allow list wl; $(answered_by "$server"). policyd-weight-cold has \
its cache daemon stopped before each run, so that it starts with no client known, as every \
greyspf run does; policyd-weight-warm runs next, on the cache daemon that holds the answers of \
that run (the same stream)."
    IN_NETNS=(ip netns exec "$NETNS")

    POLICIES=()
    add_greyspf_score greyspf-score "$WORK/state/score$suffix-{run}" prepare
    [ -z "$BEFORE" ] || GREYSPF_PROGRAM=$BEFORE \
        add_greyspf_score greyspf-score-before "$WORK/state/score-before$suffix-{run}" prepare
    add_greyspf_spf greyspf-spf+greylist "$WORK/state/score-spf$suffix-{run}" greylist prepare
    # Cold first: the warm rows run right after it on the cache it filled.
    add_policyd_weight cold
    add_policyd_weight warm
    add_null
    table "Scoring stream ($server), one process, $RUNS runs (+$WARMUP warm-up), interleaved" \
        "score-stream$suffix.json" --requests "$WORK/score.txt" --runs "$RUNS" \
        --warmup "$WARMUP" "${POLICIES[@]}"

    POLICIES=()
    add_greyspf_score greyspf-score "$WORK/state/score-spawn$suffix"
    [ -z "$BEFORE" ] || GREYSPF_PROGRAM=$BEFORE \
        add_greyspf_score greyspf-score-before "$WORK/state/score-spawn-before$suffix"
    add_greyspf_spf greyspf-spf+greylist "$WORK/state/score-spf-spawn$suffix" greylist
    add_policyd_weight warm
    add_null
    table "Scoring start-up ($server): spawn to first reply, $SPAWNS processes (+$WARMUP warm-up)" \
        "score-spawn$suffix.json" --requests "$WORK/score.txt" --first-reply-only "$SPAWNS" \
        --warmup "$WARMUP" "${POLICIES[@]}"
    IN_NETNS=()
    cleanup
    cache_note "$server"
}

# greyspf and postgrey on the same greylisting stream (its first POSTGREY_REQUESTS requests:
# postgrey is slow enough that the full stream would dominate the run). Both with a 1 s
# delay (postgrey's shortest), so that on this replay new triplets are greylisted by both.
postgrey_tables() {
    local missing=
    command -v postgrey >/dev/null || missing="postgrey"
    command -v socat >/dev/null || missing="${missing:+$missing and }socat"
    [ "$(id -u)" -eq 0 ] || missing="${missing:+$missing and }root (postgrey drops privileges to its user)"
    if [ -n "$missing" ]; then
        note "postgrey table skipped: it needs $missing."
        return 0
    fi
    python3 bench/gen_requests.py --seed "$SEED" --requests "$POSTGREY_REQUESTS" \
        >"$WORK/greylist-postgrey.txt"
    # Outside the private work directory: the postgrey user must reach its database.
    POSTGREY_DIR=$(mktemp -d)
    chmod 755 "$POSTGREY_DIR"
    note "Greylisting stream for postgrey: the first $POSTGREY_REQUESTS requests of the greylisting \
stream (seed $SEED); greylist delay 1 s for both. postgrey runs as a daemon (restarted on an empty database \
before each run) reached through socat: its first-reply column is socat's start, not \
comparable; its own CPU time and memory are the helper columns."
    POLICIES=()
    local command
    command=$(greyspf_command "$WORK/state/pg-{run}" greylist_delay=1s spf_enable=no)
    POLICIES+=(--policy "greyspf=$command")
    POLICIES+=(--prepare "greyspf=$command check --client-address 192.0.2.1 \
--sender prepare@bench.invalid --recipient prepare@bench.invalid")
    add_postgrey 1
    add_null
    table "Greylisting: greyspf and postgrey, $RUNS runs (+$WARMUP warm-up), interleaved" \
        postgrey.json --requests "$WORK/greylist-postgrey.txt" --runs "$RUNS" \
        --warmup "$WARMUP" "${POLICIES[@]}"
    cleanup
}

# ---------------------------------------------------------------------------------------
# store = redis against the sled keeper and against sqlgrey. redis-server and sqlgrey are
# daemons this script starts once (not the driver), so their CPU time is not the driver's
# helper time: it is read from /proc/PID/stat before and after each table and divided by
# the requests they served (warm-up runs included; what they spend idle while the other
# policies run is counted too, so the figure is a little high).

# A free TCP port on 127.0.0.1, the kernel's choice.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU time (user and system, every thread) process $1 has used so far, in microseconds.
proc_cpu_us() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e6 / hz }' \
        "/proc/$1/stat"
}

# Puts every thread of the running daemons on CPU $1 (a taskset list).
daemons_on() {
    local pid
    for pid in $REDIS_PID $SQLGREY_PID; do
        taskset -a -p -c "$1" "$pid" >/dev/null
    done
}

# redis-server on a free loopback port, no snapshots, an append-only file written once a
# second (as the sled keeper flushes once a second), in the work directory.
start_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        note "Redis tables skipped: they need redis-server and redis-cli (package redis-server)."
        return 1
    fi
    mkdir -p "$WORK/redis"
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" --save '' \
        --appendonly yes --appendfsync everysec --logfile "$WORK/redis/log" \
        --daemonize no </dev/null >/dev/null 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 200); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    note "Redis tables skipped: redis-server did not answer (see $WORK/redis/log)."
    return 1
}

# sqlgrey when it and what it needs are installed; sets SQLGREY_DIR and SQLGREY_PID.
start_sqlgrey() {
    local missing=
    command -v sqlgrey >/dev/null || missing="sqlgrey"
    command -v socat >/dev/null || missing="${missing:+$missing, }socat"
    command -v sqlite3 >/dev/null || missing="${missing:+$missing, }sqlite3"
    perl -MDBD::SQLite -e 1 2>/dev/null || missing="${missing:+$missing, }libdbd-sqlite3-perl"
    [ "$(id -u)" -eq 0 ] || missing="${missing:+$missing, }root (sqlgrey drops privileges to its user)"
    if [ -n "$missing" ]; then
        note "sqlgrey rows skipped: they need $missing."
        return 1
    fi
    # Outside the private work directory: the sqlgrey user must reach its database.
    SQLGREY_DIR=$(mktemp -d)
    chmod 755 "$SQLGREY_DIR"
    SQLGREY_PORT=$(free_port)
    SQLGREY_PID=$(bench/sqlgrey.sh start "$SQLGREY_DIR" "$SQLGREY_PORT") || {
        note "sqlgrey rows skipped: it did not start (see $SQLGREY_DIR/log)."
        return 1
    }
}

# greyspf with store = redis. $1: greylist delay; $2: a name for its state directories. The
# prepare step empties Redis, so each run starts on an empty greylist; no keeper runs, the
# first request connects.
add_greyspf_redis() {
    local command
    command=$(greyspf_command "$WORK/state/$2-redis-{run}" "greylist_delay=$1" spf_enable=no \
        store=redis "redis_url=redis://127.0.0.1:$REDIS_PORT/0")
    POLICIES+=(--policy "greyspf-redis=$command")
    POLICIES+=(--prepare "greyspf-redis=redis-cli -p $REDIS_PORT FLUSHALL")
}

# greyspf with the sled keeper. $1: greylist delay; $2: a name for its state directories,
# one per table, so that every run gets a fresh store and a keeper started for it (and
# counted as its helper).
add_greyspf_sled() {
    local command
    command=$(greyspf_command "$WORK/state/$2-sled-{run}" "greylist_delay=$1" spf_enable=no)
    POLICIES+=(--policy "greyspf-sled=$command")
    POLICIES+=(--prepare "greyspf-sled=$command check --client-address 192.0.2.1 \
--sender prepare@bench.invalid --recipient prepare@bench.invalid")
}

add_sqlgrey() {
    # nodelay: no Nagle wait on socat's side of the loopback connection.
    POLICIES+=(--policy "sqlgrey=socat STDIO TCP:127.0.0.1:$SQLGREY_PORT,nodelay")
    POLICIES+=(--prepare "sqlgrey=bench/sqlgrey.sh reset $SQLGREY_DIR")
}

# One table, run twice when PIN is set: first with nothing pinned (wall-clock: requests/s,
# p50, p99 as smtpd would see them on this machine), then with the driver, every policy
# and both daemons on CPU $PIN (CPU: requests/s and CPU per request on one CPU, every
# hand-over a plain context switch). $1: title; $2: JSON base name; $3: requests in the
# stream; $4: the function that fills POLICIES, given a name for state directories; the
# rest: driver arguments.
redis_table() {
    local title=$1 json=$2 requests=$3 policies=$4 mode
    shift 4
    local modes=(wall)
    [ -z "$PIN" ] || modes+=(pinned)
    for mode in "${modes[@]}"; do
        local redis_before sqlgrey_before=0 heading
        if [ "$mode" = pinned ]; then
            daemons_on "$PIN"
            heading="$title; pinned to CPU $PIN (CPU figures)"
        else
            daemons_on "0-$(($(nproc) - 1))"
            heading="$title; not pinned (wall-clock figures)"
        fi
        POLICIES=()
        "$policies" "$json-$mode"
        redis_before=$(proc_cpu_us "$REDIS_PID")
        [ -z "$SQLGREY_PID" ] || sqlgrey_before=$(proc_cpu_us "$SQLGREY_PID")
        if [ "$mode" = pinned ]; then
            table "$heading" "$json-$mode.json" "$@" "${POLICIES[@]}"
        else
            NO_PIN=1 table "$heading" "$json-$mode.json" "$@" "${POLICIES[@]}"
        fi
        local redis_us sqlgrey_us=0
        redis_us=$(($(proc_cpu_us "$REDIS_PID") - redis_before))
        [ -z "$SQLGREY_PID" ] || sqlgrey_us=$(($(proc_cpu_us "$SQLGREY_PID") - sqlgrey_before))
        python3 bench/server_cpu.py "$OUT/$json-$mode.json" \
            --served "$(((RUNS + WARMUP) * requests))" \
            --server "greyspf-redis=redis-server:$redis_us" \
            --server "sqlgrey=sqlgrey:$sqlgrey_us" | tee -a "$REPORT"
    done
}

# The policies of the two tables; $1: a name for their state directories.
redis_stream_policies() {
    add_greyspf_redis 0 "$1"
    add_greyspf_sled 0 "$1"
    add_null
}

sqlgrey_policies() {
    add_greyspf_redis 5m "$1"
    add_greyspf_sled 5m "$1"
    add_sqlgrey
    add_null
}

redis_tables() {
    start_redis || return 0
    [ -s "$WORK/greylist.txt" ] || python3 bench/gen_requests.py --seed "$SEED" \
        --requests "$REQUESTS" >"$WORK/greylist.txt"
    note "store = redis: one redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') \
on 127.0.0.1 (TCP), no snapshots, append-only file fsynced every second (the sled keeper \
flushes every second too); emptied (FLUSHALL) before each run of greyspf-redis. \
redis-server's CPU time, read from /proc, is in the server column."
    redis_table "Greylisting stream ($REQUESTS requests, greylist_delay=0: every request \
stores or updates its triplet), store = redis against the sled keeper, $RUNS runs \
(+$WARMUP warm-up), interleaved" redis "$REQUESTS" redis_stream_policies \
        --requests "$WORK/greylist.txt" --runs "$RUNS" --warmup "$WARMUP"

    start_sqlgrey || { cleanup; return 0; }
    python3 bench/gen_requests.py --seed "$SEED" --requests "$SQLGREY_REQUESTS" \
        >"$WORK/greylist-sqlgrey.txt"
    note "sqlgrey $(sqlgrey --version 2>&1 | sed -n 's/^sqlgrey \([0-9.]*\).*/\1/p;q') \
with SQLite (in-process, so the database's CPU is sqlgrey's), reached through socat over \
TCP on 127.0.0.1 (socat's CPU is the policy column, sqlgrey's the server column), tables \
emptied before each run. All three with a 5-minute greylist delay (sqlgrey counts in \
minutes), so they make the same decisions on this replay: new triplets and early retries \
are deferred. The first $SQLGREY_REQUESTS requests of the greylisting stream."
    redis_table "Greylisting: store = redis, the sled keeper and sqlgrey on the same \
$SQLGREY_REQUESTS requests, $RUNS runs (+$WARMUP warm-up), interleaved" sqlgrey \
        "$SQLGREY_REQUESTS" sqlgrey_policies --requests "$WORK/greylist-sqlgrey.txt" \
        --runs "$RUNS" --warmup "$WARMUP"
    cleanup
}

main() {
    PROFILE=$PROFILE packaging/build-static.sh -p greyspf -p greyspf-bench >/dev/null
    mkdir -p "$OUT"
    # State directories of earlier invocations: their keepers are gone after the idle timeout.
    rm -rf "$OUT"/work.*
    WORK=$(mktemp -d "$OUT/work.XXXXXX")
    WORK=$(cd "$WORK" && pwd)
    # Started by root, greyspf's keeper and policyd-weight work as their own users, which
    # must reach their directories in here.
    mkdir "$WORK/state"
    chmod 711 "$WORK" "$WORK/state"
    # Every program runs from a copy written the way a package install writes it, in one
    # sequential pass, rather than from the linker's output: how a file came into the page
    # cache changes what each start pays to map it (greyspf started from the linker's output
    # took about 8 % more CPU than from a copy, measured), and copies put every program,
    # BEFORE too, in the same state.
    mkdir "$WORK/bin"
    install -m 755 "$BIN"/greyspf "$BIN"/null_policy "$BIN"/null_tcp_policy \
        "$BIN"/bench_driver "$BIN"/tcp_driver "$WORK/bin/"
    if [ -n "$BEFORE" ]; then
        install -m 755 "$BEFORE" "$WORK/bin/greyspf-before"
        BEFORE=$WORK/bin/greyspf-before
    fi
    BIN=$WORK/bin
    DRIVER=$BIN/bench_driver
    : >"$WORK/empty.conf"
    REPORT=$OUT/report.md
    : >"$REPORT"

    machine | tee -a "$REPORT"
    trap cleanup EXIT
    # So that an interrupted run still removes the namespace and stops the daemons.
    trap 'exit 130' INT TERM
    want greylist && greylist_tables
    want spf && spf_tables
    want score && score_tables
    want postgrey && postgrey_tables
    want redis && redis_tables
    [[ ",$ONLY," != *,hot,* ]] || hot_list

    # The stores are measured; drop them (about 6 MB per run). A keeper still idling on one
    # keeps its open files until its idle timeout and then exits.
    rm -rf "$WORK/state"
    printf '\nReport: %s; JSON: %s/*.json\n' "$REPORT" "$OUT"
    exit "$status"
}

main "$@"
