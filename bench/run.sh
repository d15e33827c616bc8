#!/usr/bin/env bash
# bench/run.sh: one command that builds greyspf, generates the request streams and prints the benchmark tables.
#
#   bench/run.sh                       everything, with the defaults below
#   RUNS=10 REQUESTS=50000 bench/run.sh
#
# Settings (environment): REQUESTS (requests per stream, 20000), RUNS (measured runs per
# policy, 5), WARMUP (1), SPAWNS (start-ups measured per policy, 200), CONCURRENCY (levels,
# "1,4,16,64"), SEED (1), OUT (where results go, target/bench), PROFILE (release; debug
# only to try the script quickly: debug figures mean nothing).
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

BIN=target/$PROFILE
DRIVER=$BIN/examples/bench_driver
status=0

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
    local command="$BIN/greyspf -c $WORK/empty.conf -o state_directory=$state"
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
    POLICIES+=(--policy "null=$BIN/examples/null_policy")
}

# ---------------------------------------------------------------------------------------

machine() {
    local cpu load
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    load=$(cut -d' ' -f1 /proc/loadavg)
    printf 'Machine: %s CPUs (%s), Linux %s, %s; load average %s; %s; %s.\n' \
        "$(nproc)" "${cpu:-unknown CPU}" "$(uname -r)" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$(rustc --version)" "$($BIN/greyspf --version)"
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
    local rc=0
    "$DRIVER" --json "$OUT/$json" "$@" | tee -a "$REPORT" || rc=$?
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

main() {
    if [ "$PROFILE" = release ]; then
        cargo build --release --locked --bins --examples
    else
        cargo build --locked --bins --examples
    fi

    mkdir -p "$OUT"
    # State directories of earlier invocations: their keepers are gone after the idle timeout.
    rm -rf "$OUT"/work.*
    WORK=$(mktemp -d "$OUT/work.XXXXXX")
    WORK=$(cd "$WORK" && pwd)
    : >"$WORK/empty.conf"
    REPORT=$OUT/report.md
    : >"$REPORT"

    python3 bench/gen_requests.py --seed "$SEED" --requests "$REQUESTS" \
        --stats "$WORK/greylist.stats.json" >"$WORK/greylist.txt"

    machine | tee -a "$REPORT"
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
    table "Concurrency: N processes at once on one keeper, the stream split between them, $RUNS runs" \
        concurrency.json --requests "$WORK/greylist.txt" --concurrency "$CONCURRENCY" --split \
        --runs "$RUNS" --warmup "$WARMUP" "${POLICIES[@]}"

    # The stores are measured; drop them (about 6 MB per run). A keeper still idling on one
    # keeps its open files until its idle timeout and then exits.
    rm -rf "$WORK/state"
    printf '\nReport: %s; JSON: %s/*.json\n' "$REPORT" "$OUT"
    exit "$status"
}

main "$@"
