#!/usr/bin/env bash
# System calls, context switches and CPU time per request of the proxy at a fixed rate,
# nginx against the gateway (or two gateway builds), one after the other, each with
# compare.sh's config. Counts come from `perf stat` on the proxy's threads (software
# events and syscall tracepoints, which work where hardware counters do not); requests
# are counted at the upstreams, so every target is divided by the same measure.
#
#   load-tests/syscalls.sh                                   # nginx, gateway; 1 worker
#   WORKERS=2 RATE=5000 load-tests/syscalls.sh
#   TARGETS="gateway baseline" BASELINE_BIN=/tmp/base-target/release/gateway WORKERS=2 load-tests/syscalls.sh
# Environment: TARGETS [nginx gateway] (also baseline), WORKERS [1], RATE [5000],
#   CONNS [32], DURATION [10] (seconds), GATEWAY_BIN, BASELINE_BIN, OUT_DIR,
#   SATURATE [0]: seconds of load at 64 connections before the counted run, as
#   compare.sh's throughput run comes before its fixed-rate one.
# Also prints user and system CPU time per request (from /proc/PID/stat), the time its
# threads waited runnable for a CPU (run delay, from /proc/PID/task/*/schedstat), its
# and the upstreams' context switches split into blocked and preempted (from
# /proc/PID/task/*/status) and oha's latency percentiles. A RATE above what the
# machine can serve (RATE=200000) measures at saturation.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=syscalls
. "$HERE/lib.sh"

TARGETS=${TARGETS:-"nginx gateway"}
WORKERS=${WORKERS:-1}
RATE=${RATE:-5000}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
EVENTS=context-switches,cpu-migrations,task-clock
for call in epoll_wait futex recvfrom writev read write sendto io_uring_enter; do
    EVENTS+=",syscalls:sys_enter_$call"
done
need_tools oha nginx perf curl
check_ports $UP1 $UP2 $ST1 $ST2 $PROXY_PORT $ADMIN_PORT

start_upstreams
UPSTREAM_PIDS=("${PIDS[@]}")
for name in $TARGETS; do
    d=$TMP/$name
    mkdir -p "$d"
    case $name in
    nginx)
        render "$HERE/conf/proxy-nginx.conf.in" "$d/nginx.conf" "$d" "" "" "$WORKERS"
        start_bg nginx nginx -p "$d" -c "$d/nginx.conf"
        ;;
    gateway) start_bg gateway "$GATEWAY_BIN" --config "$GATEWAY_CONFIG" --workers "$WORKERS" ;;
    baseline)
        [[ -x "${BASELINE_BIN:-}" ]] || die "baseline needs BASELINE_BIN"
        start_bg baseline "$BASELINE_BIN" --config "$GATEWAY_CONFIG" --workers "$WORKERS"
        ;;
    *) die "unknown target $name (nginx, gateway, baseline)" ;;
    esac
    pid=$LAST_PID
    wait_http "http://127.0.0.1:$PROXY_PORT/" 30 || die "$name did not start"
    # Warm up (and fill the pool) before counting.
    timeout 60 oha --no-tui -c "$CONNS" -z 2s "http://127.0.0.1:$PROXY_PORT/" >/dev/null
    if ((${SATURATE:-0} > 0)); then
        timeout $((SATURATE + 60)) oha --no-tui -c 64 -z "${SATURATE}s" "http://127.0.0.1:$PROXY_PORT/" >/dev/null
    fi
    pids=$(tree_pids "$pid" | paste -sd, -)
    upstream_counts
    before=$UPR
    read -r u0 s0 < <(user_sys_ticks "$pid")
    read -r rd0 ts0 < <(run_delay_ns "$pid")
    read -r pv0 pi0 < <(switches "$pid")
    read -r uv0 ui0 < <(switches "${UPSTREAM_PIDS[@]}")
    perf stat -e "$EVENTS" -p "$pids" -o "$d/perf-stat.txt" -- sleep "$((DURATION + 1))" &
    perf_pid=$!
    timeout $((DURATION + 60)) oha --no-tui -c "$CONNS" -q "$RATE" -z "${DURATION}s" \
        "http://127.0.0.1:$PROXY_PORT/" >"$d/oha.txt"
    wait "$perf_pid" || true
    read -r u1 s1 < <(user_sys_ticks "$pid")
    read -r rd1 ts1 < <(run_delay_ns "$pid")
    read -r pv1 pi1 < <(switches "$pid")
    read -r uv1 ui1 < <(switches "${UPSTREAM_PIDS[@]}")
    upstream_counts
    n=$((UPR - before))
    p50=$(awk '/ 50.00%/ {print $3, $4}' "$d/oha.txt")
    p99=$(awk '/ 99.00%/ {print $3, $4}' "$d/oha.txt")
    echo "== $name, $WORKERS worker(s), $RATE req/s over $CONNS connections: $n requests, p50 $p50, p99 $p99"
    awk -v n="$n" '/^ *[0-9][0-9,.]* +[a-z]/ {
        gsub(",", "", $1)
        if ($2 == "seconds") next
        if ($2 == "msec") printf "  %-32s %8.2f µs per request\n", "task-clock", $1 * 1000 / n
        else printf "  %-32s %8.3f per request\n", $2, $1 / n
    }' "$d/perf-stat.txt"
    # Where the time went: user space (the proxy's own code) or the kernel.
    awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
        printf "  %-32s %8.2f µs per request\n", "user time", u / hz * 1e6 / n
        printf "  %-32s %8.2f µs per request\n", "system time", s / hz * 1e6 / n
    }'
    # Waiting for a CPU while runnable: on shared cores, what a wake-up costs in latency.
    awk -v n="$n" -v d=$((rd1 - rd0)) -v t=$((ts1 - ts0)) 'BEGIN {
        printf "  %-32s %8.2f µs per request (%.3f timeslices per request)\n", "run delay", d / 1000 / n, t / n
    }'
    # Blocked (voluntary) or preempted: on two shared cores a proxy at saturation is
    # preempted by the upstream its write woke when the kernel puts that on its CPU.
    awk -v n="$n" -v pv=$((pv1 - pv0)) -v pi=$((pi1 - pi0)) -v uv=$((uv1 - uv0)) -v ui=$((ui1 - ui0)) 'BEGIN {
        printf "  %-32s %8.3f blocked, %.3f preempted per request\n", "switches, proxy", pv / n, pi / n
        printf "  %-32s %8.3f blocked, %.3f preempted per request\n", "switches, upstreams", uv / n, ui / n
    }'
    awk '$1 == "50.00%" || $1 == "90.00%" || $1 == "99.00%" || $1 == "99.90%" {
        printf "  %-32s %8s %s\n", "latency " $1, $3, $4
    }' "$d/oha.txt"
    stop_pid "$pid"
done
