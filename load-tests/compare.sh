#!/usr/bin/env bash
# Side-by-side benchmark: the gateway vs nginx vs HAProxy vs direct-to-upstream.
#
# Starts two fast nginx upstreams on 127.0.0.1:18081/18082, then, one at a time,
# each proxy on 127.0.0.1:18090 (round-robin over the two upstreams, keep-alive
# upstream connections, no access log), and measures for each:
#   - throughput at $CONNS keep-alive connections (oha, $DURATION, median of $REPEATS)
#   - latency p50/p99/p99.9 at a fixed rate ($RATE req/s for $RATE_DURATION)
#   - CPU time of the proxy process (all its processes/threads) per request,
#     at saturation and at the fixed rate (utime+stime from /proc/<pid>/stat)
#   - peak RSS (VmHWM) after the load runs, and with $HOLD_CONNS open client connections
#   - upstream connections opened (stub_status "accepts" of the upstreams) per request
# and prints a markdown table with ratios to direct and to nginx.
#
# All traffic goes to 127.0.0.1. Every run is bounded in time. Everything started
# here is stopped on exit; all generated configs and logs live in a mktemp dir.
#
# Usage: load-tests/compare.sh            # full: 10 s x 3, workers 1 and 2
#        QUICK=1 load-tests/compare.sh    # quick: 3 s x 1
# Environment (defaults in brackets):
#   PROXIES ["direct nginx haproxy gateway"]   WORKERS ["1 2"]
#   CONNS [64]  DURATION [10s]  REPEATS [3]  WARMUP [2s]
#   RATE [5000] RATE_CONNS [32] RATE_DURATION [10s]
#   HOLD_CONNS [1000] HOLD_SECS [3]
#   GATEWAY_BIN [<repo>/target/release/gateway]  GATEWAY_CONFIG [load-tests/bench-gateway.toml]
#   OUT_DIR [unset]: if set, the temp dir (raw oha JSON, generated configs, logs,
#                    results.tsv, table.md) is copied there at exit.
#   KEEP_TMP [0]: 1 keeps the temp dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=compare
# shellcheck source=lib.sh
. "$HERE/lib.sh"

if [[ "${QUICK:-0}" == 1 ]]; then
    : "${DURATION:=3s}" "${REPEATS:=1}" "${RATE_DURATION:=3s}" "${WARMUP:=1s}" "${HOLD_SECS:=2}"
fi
PROXIES=${PROXIES:-"direct nginx haproxy gateway"}
WORKERS=${WORKERS:-"1 2"}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-2s}
RATE=${RATE:-5000}
RATE_CONNS=${RATE_CONNS:-32}
RATE_DURATION=${RATE_DURATION:-10s}
HOLD_CONNS=${HOLD_CONNS:-1000}
HOLD_SECS=${HOLD_SECS:-3}

need_tools oha nginx haproxy python3 curl ss
check_ports $UP1 $UP2 $ST1 $ST2 $PROXY_PORT $ADMIN_PORT

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < HOLD_CONNS * 3)); then
    log "warning: open-file limit $(ulimit -n) may be too low for $HOLD_CONNS connections"
fi

# pids of a process and its direct children (nginx master + workers)
tree_pids() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }

cpu_ticks() { # utime+stime (clock ticks) summed over the process tree, all threads
    local sum=0 pid stat
    for pid in $(tree_pids "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # after "pid (comm) " the fields start at 3 (state); utime/stime are
        # fields 14/15 of /proc/<pid>/stat, i.e. the 12th and 13th here
        set -- $stat
        sum=$((sum + ${12} + ${13}))
    done
    echo "$sum"
}

proc_kb() { # field(VmHWM|VmRSS) pid: summed over the process tree, kB
    local sum=0 pid v
    for pid in $(tree_pids "$2"); do
        v=$(awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
hwm_kb() { proc_kb VmHWM "$1"; }
rss_kb() { proc_kb VmRSS "$1"; }

# Connections accepted and requests served by both upstreams (nginx stub_status
# "accepts" and "requests"). Each status query is itself one connection and one
# request to that nginx; those are counted in Q1/Q2 and subtracted, so the
# figures count only what the proxies (or oha, for direct) sent. Sets UPA, UPR.
Q1=0 Q2=0 UPA=0 UPR=0
upstream_status() { # port -> "accepts requests"
    curl -sf --max-time 2 "http://127.0.0.1:$1/status" |
        awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { print $1, $3 }'
}
upstream_counts() {
    local a1 r1 a2 r2
    Q1=$((Q1 + 1)); read -r a1 r1 < <(upstream_status $ST1)
    Q2=$((Q2 + 1)); read -r a2 r2 < <(upstream_status $ST2)
    UPA=$((a1 - Q1 + a2 - Q2))
    UPR=$((r1 - Q1 + r2 - Q2))
}

CLK_TCK=$(getconf CLK_TCK)

run_oha() { # out.json, oha args...
    local out=$1; shift
    timeout 600 oha --no-tui --output-format json "$@" >"$out" 2>"$out.err" || {
        log "oha failed: $(tail -n 3 "$out.err")"; return 1; }
}

# oha JSON -> "ok_count seconds p50_ms p99_ms p999_ms errors"
oha_stats() {
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
codes = d.get("statusCodeDistribution", {}) or {}
ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
bad = sum(v for k, v in codes.items() if not str(k).startswith("2"))
errs = d.get("errorDistribution", {}) or {}
# requests cut off by the -z deadline are not errors
errs = sum(v for k, v in errs.items() if "deadline" not in k)
lp = d.get("latencyPercentiles", {}) or {}
def ms(k):
    v = lp.get(k)
    return "nan" if v is None else "%.4f" % (v * 1000)
print(ok, "%.4f" % s["total"], ms("p50"), ms("p99"), ms("p99.9"), bad + errs)
PY
}

RESULTS=$TMP/results.tsv
printf 'proxy\tworkers\trps_median\trps_runs\tp50_ms\tp99_ms\tp999_ms\tcpu_us_sat\tcpu_us_rate\trss_load_kb\trss_hold_kb\thold_ok\tup_conns\tup_reqs\treqs\terrors\trate_achieved\n' >"$RESULTS"

HOLDER=$TMP/hold.py
cat >"$HOLDER" <<'PY'
# Open N keep-alive connections to 127.0.0.1:PORT, send one GET on each, read the
# response, then keep them all open until killed (or MAX seconds pass).
import socket, sys, time
port, n, max_secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks, ok = [], 0
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hold\r\n\r\n"
for _ in range(n):
    try:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError as e:
        print("connect failed:", e, file=sys.stderr)
        break
for s in socks:
    try:
        s.sendall(req)
    except OSError:
        pass
for s in socks:
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
        cl = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                cl = int(v.strip())
        while len(body) < cl:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
print("ready", ok, flush=True)
deadline = time.time() + max_secs
while time.time() < deadline:
    time.sleep(0.2)
PY

# ---- measure one target --------------------------------------------------------
# measure name workers pid port   (pid empty for direct)
measure() {
    local name=$1 workers=$2 pid=$3 port=$4 url="http://127.0.0.1:$4/"
    local tag="$name-w$workers" i rps_list=() ok_total=0 err_total=0 j
    local c0="" c1="" c2="" c3="" ok secs errs

    upstream_counts
    local up0=$UPA upr0=$UPR
    log "$tag: warmup $WARMUP"
    run_oha "$TMP/$tag-warmup.json" -c "$CONNS" -z "$WARMUP" "$url" || true

    [[ -n "$pid" ]] && c0=$(cpu_ticks "$pid")
    for i in $(seq "$REPEATS"); do
        log "$tag: throughput run $i/$REPEATS ($CONNS conns, $DURATION)"
        run_oha "$TMP/$tag-tput-$i.json" -c "$CONNS" -z "$DURATION" "$url" || return 1
        read -r ok secs _ _ _ errs < <(oha_stats "$TMP/$tag-tput-$i.json")
        rps_list+=("$(python3 -c "print('%.0f' % ($ok / $secs))")")
        ok_total=$((ok_total + ok)); err_total=$((err_total + errs))
    done
    [[ -n "$pid" ]] && c1=$(cpu_ticks "$pid")
    upstream_counts
    local upc=$((UPA - up0)) upr=$((UPR - upr0))
    local rss_load=""
    [[ -n "$pid" ]] && rss_load=$(hwm_kb "$pid")

    log "$tag: fixed rate $RATE req/s ($RATE_CONNS conns, $RATE_DURATION)"
    [[ -n "$pid" ]] && c2=$(cpu_ticks "$pid")
    run_oha "$TMP/$tag-rate.json" -c "$RATE_CONNS" -q "$RATE" -z "$RATE_DURATION" "$url" || return 1
    [[ -n "$pid" ]] && c3=$(cpu_ticks "$pid")
    local rok rsecs p50 p99 p999 rerrs
    read -r rok rsecs p50 p99 p999 rerrs < <(oha_stats "$TMP/$tag-rate.json")
    err_total=$((err_total + rerrs))

    local rss_hold="" hold_ok=""
    log "$tag: holding $HOLD_CONNS open connections"
    python3 "$HOLDER" "$port" "$HOLD_CONNS" 60 >"$TMP/$tag-hold.out" 2>&1 &
    local hpid=$!
    PIDS+=("$hpid")
    for _ in $(seq 300); do grep -q ready "$TMP/$tag-hold.out" 2>/dev/null && break; sleep 0.1; done
    sleep "$HOLD_SECS"
    hold_ok=$(awk '/ready/ {print $2}' "$TMP/$tag-hold.out")
    [[ -n "$pid" ]] && rss_hold=$(hwm_kb "$pid")
    [[ -n "$pid" ]] && log "$tag: RSS now $(rss_kb "$pid") kB with the connections open"
    stop_pid "$hpid"

    local cpu_sat="" cpu_rate=""
    if [[ -n "$pid" ]]; then
        cpu_sat=$(python3 -c "print('%.2f' % (($c1 - $c0) / $CLK_TCK * 1e6 / max($ok_total, 1)))")
        cpu_rate=$(python3 -c "print('%.2f' % (($c3 - $c2) / $CLK_TCK * 1e6 / max($rok, 1)))")
    fi
    local median
    median=$(printf '%s\n' "${rps_list[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    local rate_ach; rate_ach=$(python3 -c "print('%.0f' % ($rok / $rsecs))")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$workers" "$median" "$(IFS=,; echo "${rps_list[*]}")" "$p50" "$p99" "$p999" \
        "$cpu_sat" "$cpu_rate" "$rss_load" "$rss_hold" "$hold_ok" "$upc" "$upr" "$ok_total" \
        "$err_total" "$rate_ach" >>"$RESULTS"
    log "$tag: median ${median} req/s (runs ${rps_list[*]}), p99 ${p99} ms, cpu ${cpu_sat:-n/a} us/req, upstream conns $upc for $ok_total reqs, errors $err_total"
}

# The gateway binary is copied into the temp dir first, so a rebuild during the
# run (cargo replaces target/release/gateway) cannot mix two builds in one table.
GATEWAY_NOTE=""
if [[ " $PROXIES " == *" gateway "* && -x "$GATEWAY_BIN" ]]; then
    GATEWAY_NOTE="$GATEWAY_BIN built $(date -u -r "$GATEWAY_BIN" +%FT%TZ), sha256 $(sha256sum "$GATEWAY_BIN" | cut -c1-12)"
    cp "$GATEWAY_BIN" "$TMP/gateway-bin"
    GATEWAY_BIN=$TMP/gateway-bin
    log "gateway: $GATEWAY_NOTE"
fi

# ---- upstreams -------------------------------------------------------------------
log "temp dir $TMP"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) cpus, load average $LOAD_START"
start_upstreams

start_proxy() { # name workers; pid in $LAST_PID
    local name=$1 w=$2 d=$TMP/$1-w$2
    mkdir -p "$d"
    case $name in
    nginx)
        render "$HERE/conf/proxy-nginx.conf.in" "$d/nginx.conf" "$d" "" "" "$w"
        start_bg "$name-w$w" nginx -p "$d" -c "$d/nginx.conf"
        ;;
    haproxy)
        render "$HERE/conf/haproxy.cfg.in" "$d/haproxy.cfg" "$d" "" "" "$w"
        start_bg "$name-w$w" haproxy -db -f "$d/haproxy.cfg"
        ;;
    gateway)
        start_bg "$name-w$w" env GATEWAY_WORKERS="$w" "$GATEWAY_BIN" --config "$GATEWAY_CONFIG" --workers "$w"
        ;;
    esac
}

for name in $PROXIES; do
    if [[ $name == direct ]]; then
        measure direct - "" "$UP1"
        continue
    fi
    if [[ $name == gateway && ! -x "$GATEWAY_BIN" ]]; then
        log "gateway: $GATEWAY_BIN not built (cargo build --release -p gateway); row pending"
        printf 'gateway\t-\tpending\n' >>"$RESULTS"
        continue
    fi
    for w in $WORKERS; do
        start_proxy "$name" "$w"
        pid=$LAST_PID
        if ! wait_http "http://127.0.0.1:$PROXY_PORT/" 15; then
            log "$name-w$w did not become ready: $(tail -n 5 "$TMP/$name-w$w.log")"
            stop_pid "$pid"
            printf '%s\t%s\tfailed\n' "$name" "$w" >>"$RESULTS"
            continue
        fi
        if [[ $name == gateway ]]; then
            curl -sf --max-time 2 "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null ||
                log "gateway: admin /ready not answering on :$ADMIN_PORT"
        fi
        measure "$name" "$w" "$pid" "$PROXY_PORT" ||
            printf '%s\t%s\tfailed\n' "$name" "$w" >>"$RESULTS"
        if [[ $name == gateway ]]; then
            curl -sf --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$TMP/gateway-w$w-metrics.txt" || true
        fi
        stop_pid "$pid"
        sleep 1
    done
done

# ---- table -------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average $LOAD_START at start, $LOAD_END at end."
    echo "Versions: $(oha --version 2>/dev/null | head -n 1); $(nginx -v 2>&1); $(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3)."
    [[ -n "$GATEWAY_NOTE" ]] && echo "Gateway: $GATEWAY_NOTE; repo HEAD at the end of the run $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo
} >"$TMP/table.md"
python3 "$HERE/table.py" "$RESULTS" "$CONNS" "$DURATION" "$REPEATS" "$RATE" "$RATE_CONNS" "$RATE_DURATION" "$HOLD_CONNS" >>"$TMP/table.md"
echo
cat "$TMP/table.md"
