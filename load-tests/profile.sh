#!/usr/bin/env bash
# Profile the gateway on the benchmark's hot path: starts the two nginx upstreams
# and target/release/gateway (bench-gateway.toml), drives it with oha, and records
# it with `perf record -g` (or, with TOOL=callgrind, runs it under valgrind
# --tool=callgrind for instruction counts and heap allocations per request, counted
# as calls into malloc/calloc/realloc/posix_memalign). Prints the top of the report.
#
#   load-tests/profile.sh                        # perf, 64 conns, 10 s, 1 worker
#   TOOL=callgrind DURATION=5s load-tests/profile.sh
#   TOOL=callgrind RATE=1000 CONNS=32 load-tests/profile.sh   # at a fixed rate (oha -q)
#   TOOL=callgrind TARGET=nginx load-tests/profile.sh  # nginx (compare.sh's proxy config,
#                                                       # one process) under the same load
# Environment: WORKERS [1], CONNS [64], DURATION [10s], RATE [unset: as fast as it goes],
#   TOOL [perf|callgrind], TARGET [gateway|nginx; nginx with TOOL=callgrind only],
#   OUT_DIR (keep perf.data / callgrind.out and the report), TOP [40].
# The release profile keeps line tables (debug = "line-tables-only"), so symbols resolve.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=profile
. "$HERE/lib.sh"

WORKERS=${WORKERS:-1}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
RATE_ARGS=()
[[ -n "${RATE:-}" ]] && RATE_ARGS=(-q "$RATE")
TOOL=${TOOL:-perf}
TOP=${TOP:-40}
need_tools oha nginx curl ss
check_ports $UP1 $UP2 $ST1 $ST2 $PROXY_PORT $ADMIN_PORT
[[ -x "$GATEWAY_BIN" ]] || die "$GATEWAY_BIN not found: cargo build --release -p gateway"

start_upstreams
case $TOOL in
perf)
    need_tools perf
    start_gateway "$WORKERS"
    gw=$LAST_PID
    log "perf record on pid $gw while oha runs $DURATION"
    start_bg perf perf record -F 999 -g --call-graph dwarf,16384 -o "$TMP/perf.data" -p "$gw"
    perf_pid=$LAST_PID
    sleep 1
    timeout 600 oha --no-tui -c "$CONNS" "${RATE_ARGS[@]}" -z "$DURATION" "http://127.0.0.1:$PROXY_PORT/" | sed -n '1,12p'
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    perf report -i "$TMP/perf.data" --no-children -g none --percent-limit 0.5 --stdio --sort dso,symbol 2>/dev/null |
        grep -E '^ +[0-9]' | sed -E 's/ +- +- *$//' | head -n "$TOP" | tee "$TMP/report.txt" || true
    ;;
callgrind)
    need_tools valgrind
    case ${TARGET:-gateway} in
    gateway)
        start_bg gateway-callgrind valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
            "$GATEWAY_BIN" --config "$GATEWAY_CONFIG" --workers "$WORKERS"
        ;;
    nginx)
        # compare.sh's proxy config, as one process (no master) so valgrind sees the worker.
        render "$HERE/conf/proxy-nginx.conf.in" "$TMP/proxy-nginx.conf" "$TMP" "" "" 1
        sed -i 's/^master_process on;/master_process off;/' "$TMP/proxy-nginx.conf"
        start_bg nginx-callgrind valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" \
            nginx -p "$TMP" -c "$TMP/proxy-nginx.conf"
        ;;
    *) die "TARGET must be gateway or nginx" ;;
    esac
    gw=$LAST_PID
    wait_http "http://127.0.0.1:$PROXY_PORT/" 60 || die "${TARGET:-gateway} under valgrind did not start"
    # Count the load only: start-up (config, threads, first connections) is zeroed.
    timeout 120 oha --no-tui -c "$CONNS" -n 1000 "http://127.0.0.1:$PROXY_PORT/" >/dev/null
    # Requests proxied = requests the two upstreams served (the same count for any target).
    upstream_counts; reqs0=$UPR
    callgrind_control --zero "$gw" >/dev/null
    timeout 600 oha --no-tui -c "$CONNS" "${RATE_ARGS[@]}" -z "$DURATION" "http://127.0.0.1:$PROXY_PORT/" | sed -n '1,12p'
    callgrind_control --dump "$gw" >/dev/null
    upstream_counts; reqs=$((UPR - reqs0))
    stop_pid "$gw"
    # Part 1 is the dump taken right after the load; the plain file holds shutdown.
    out=$TMP/callgrind.out.1
    callgrind_annotate "$out" 2>/dev/null | head -n $((TOP + 20)) | tee "$TMP/report.txt" || true
    total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$TMP/report.txt")
    if [[ -n "$total" && "${reqs:-0}" -gt 0 ]]; then
        echo "requests proxied under load: $reqs; instructions per request (start-up excluded): $((total / reqs))"
        # Heap allocations: calls into the C allocator's entry points, from the same dump.
        python3 - "$out" "$reqs" <<'PY'
import re, sys
path, reqs = sys.argv[1], int(sys.argv[2])
entry = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
names, calls, cfn = {}, {}, None
for line in open(path, errors="replace"):
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, i, name = m.groups()
        if name is not None:
            names[i] = name
        cfn = i if kind == "cfn" else None
        continue
    m = re.match(r"^calls=(\d+)", line)
    if m and cfn is not None:
        base = names.get(cfn, "").split(" ")[0]
        if base in entry:
            calls[base] = calls.get(base, 0) + int(m.group(1))
        cfn = None
total = sum(calls.values())
print(f"heap allocations per request: {total / reqs:.2f} ({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})")
PY
    fi
    ;;
*) die "TOOL must be perf or callgrind" ;;
esac
