#!/usr/bin/env bash
# Side-by-side benchmark: the gateway vs nginx vs HAProxy vs direct-to-upstream.
#
# Starts two fast nginx upstreams on 127.0.0.1:18081/18082, then, one at a time,
# each proxy on 127.0.0.1:18090 (round-robin over the two upstreams, keep-alive
# upstream connections, no access log), and measures for each:
#   - throughput at $CONNS keep-alive connections (oha, $DURATION, median of $REPEATS rounds)
#   - latency p50/p99/p99.9 at a fixed rate ($RATE req/s for $RATE_DURATION, median of the rounds)
#   - CPU time of the proxy process (all its processes/threads) per request,
#     at saturation and at the fixed rate (utime+stime from /proc/<pid>/stat)
#   - peak RSS (VmHWM) after the load runs, and with $HOLD_CONNS open client connections
#   - upstream connections opened (stub_status "accepts" of the upstreams) per request
#   - where the whole machine's time went at saturation: busy CPU per request (from
#     /proc/stat), split into the proxy, the two upstreams and the rest (oha and
#     anything else running), idle CPU per request, and context switches per request
# and prints a markdown table with ratios to direct and to nginx.
# The targets are interleaved: each of the $REPEATS rounds runs every target once,
# in a rotated order, so background noise on a shared machine spreads evenly.
#
# All traffic goes to 127.0.0.1. Every run is bounded in time. Everything started
# here is stopped on exit; all generated configs and logs live in a mktemp dir.
#
# Usage: load-tests/compare.sh            # full: 10 s x 3, workers 1 and 2
#        QUICK=1 load-tests/compare.sh    # quick: 3 s x 1
# Environment (defaults in brackets):
#   PROXIES ["direct nginx haproxy gateway"]   WORKERS ["1 2"]
#     add `baseline` to measure a second gateway build (BASELINE_BIN, say an older
#     commit built into another target dir) in the same interleaved rounds
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

cpu_ticks() { # utime+stime (clock ticks) summed over the process tree, all threads
    local u s
    read -r u s < <(user_sys_ticks "$1")
    echo $((u + s))
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

CLK_TCK=$(getconf CLK_TCK)

machine_ticks() { # -> "busy idle ctxt": all CPUs' busy and idle ticks (/proc/stat), context switches
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; idle = $5 + $6 } /^ctxt / { c = $2 }
         END { print busy, idle, c }' /proc/stat
}
UPSTREAM_PIDS=()
upstream_ticks() { # utime+stime of both upstream nginx trees
    local t=0 pid
    for pid in "${UPSTREAM_PIDS[@]}"; do t=$((t + $(cpu_ticks "$pid"))); done
    echo "$t"
}

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
printf 'proxy\tworkers\trps_median\trps_runs\tp50_ms\tp99_ms\tp999_ms\tcpu_us_sat\tcpu_us_rate\trss_load_kb\trss_hold_kb\thold_ok\tup_conns\tup_reqs\treqs\terrors\trate_achieved\tmach_busy_us\tmach_idle_us\tup_us\tctxt_per_req\n' >"$RESULTS"

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

# ---- one round of one target ----------------------------------------------------
# measure_round name workers pid port round   (pid empty for direct)
# Appends one row to $ROUNDS. The hold phase runs in the last round only.
ROUNDS=$TMP/rounds.tsv
printf 'proxy\tworkers\tround\tok\tsecs\terrors\tticks_sat\trate_ok\trate_secs\tticks_rate\tp50_ms\tp99_ms\tp999_ms\trss_load_kb\trss_hold_kb\thold_ok\tup_conns\tup_reqs\tmach_busy\tmach_idle\tmach_ctxt\tup_ticks\n' >"$ROUNDS"
measure_round() {
    local name=$1 workers=$2 pid=$3 port=$4 round=$5 url="http://127.0.0.1:$4/"
    local tag="$name-w$workers-r$round"
    local c0=0 c1=0 c2=0 c3=0 ok secs errs

    upstream_counts
    local up0=$UPA upr0=$UPR
    run_oha "$TMP/$tag-warmup.json" -c "$CONNS" -z "$WARMUP" "$url" || true

    local mb0 mi0 mx0 mb1 mi1 mx1 ut0 ut1
    [[ -n "$pid" ]] && c0=$(cpu_ticks "$pid")
    read -r mb0 mi0 mx0 < <(machine_ticks)
    ut0=$(upstream_ticks)
    run_oha "$TMP/$tag-tput.json" -c "$CONNS" -z "$DURATION" "$url" || return 1
    [[ -n "$pid" ]] && c1=$(cpu_ticks "$pid")
    read -r mb1 mi1 mx1 < <(machine_ticks)
    ut1=$(upstream_ticks)
    read -r ok secs _ _ _ errs < <(oha_stats "$TMP/$tag-tput.json")
    upstream_counts
    local upc=$((UPA - up0)) upr=$((UPR - upr0))

    [[ -n "$pid" ]] && c2=$(cpu_ticks "$pid")
    run_oha "$TMP/$tag-rate.json" -c "$RATE_CONNS" -q "$RATE" -z "$RATE_DURATION" "$url" || return 1
    [[ -n "$pid" ]] && c3=$(cpu_ticks "$pid")
    local rok rsecs p50 p99 p999 rerrs
    read -r rok rsecs p50 p99 p999 rerrs < <(oha_stats "$TMP/$tag-rate.json")
    local rss_load=""
    [[ -n "$pid" ]] && rss_load=$(hwm_kb "$pid")

    local rss_hold="" hold_ok=""
    if ((round == REPEATS)); then
        python3 "$HOLDER" "$port" "$HOLD_CONNS" 60 >"$TMP/$tag-hold.out" 2>&1 &
        local hpid=$!
        PIDS+=("$hpid")
        for _ in $(seq 300); do grep -q ready "$TMP/$tag-hold.out" 2>/dev/null && break; sleep 0.1; done
        sleep "$HOLD_SECS"
        hold_ok=$(awk '/ready/ {print $2}' "$TMP/$tag-hold.out")
        [[ -n "$pid" ]] && rss_hold=$(hwm_kb "$pid")
        [[ -n "$pid" ]] && log "$tag: RSS $(rss_kb "$pid") kB with $HOLD_CONNS connections open (${hold_ok:-0} answered)"
        stop_pid "$hpid"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$workers" "$round" "$ok" "$secs" "$((errs + rerrs))" "$((c1 - c0))" "$rok" "$rsecs" \
        "$((c3 - c2))" "$p50" "$p99" "$p999" "$rss_load" "$rss_hold" "$hold_ok" "$upc" "$upr" \
        "$((mb1 - mb0))" "$((mi1 - mi0))" "$((mx1 - mx0))" "$((ut1 - ut0))" >>"$ROUNDS"
    log "$tag: $(python3 -c "print('%.0f' % ($ok / $secs))") req/s; at $RATE req/s p99 $p99 ms; upstream conns $upc; errors $((errs + rerrs))"
}

# The gateway binary is copied into the temp dir first, so a rebuild during the
# run (cargo replaces target/release/gateway) cannot mix two builds in one table.
stage_binary() { # name path -> prints "path built <time>, sha256 <hash>"; copies it to $TMP/name-bin
    cp "$2" "$TMP/$1-bin"
    echo "$2 built $(date -u -r "$2" +%FT%TZ), sha256 $(sha256sum "$2" | cut -c1-12)"
}
GATEWAY_NOTE=""
if [[ " $PROXIES " == *" gateway "* && -x "$GATEWAY_BIN" ]]; then
    GATEWAY_NOTE=$(stage_binary gateway "$GATEWAY_BIN")
    GATEWAY_BIN=$TMP/gateway-bin
    log "gateway: $GATEWAY_NOTE"
fi
BASELINE_NOTE=""
if [[ " $PROXIES " == *" baseline "* ]]; then
    [[ -x "${BASELINE_BIN:-}" ]] || die "PROXIES has baseline: set BASELINE_BIN to a gateway binary"
    BASELINE_NOTE=$(stage_binary baseline "$BASELINE_BIN")
    BASELINE_BIN=$TMP/baseline-bin
    log "baseline: $BASELINE_NOTE"
fi

# ---- upstreams -------------------------------------------------------------------
log "temp dir $TMP"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) cpus, load average $LOAD_START"
start_upstreams
UPSTREAM_PIDS=("${PIDS[@]}")

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
    gateway | baseline)
        local bin=$GATEWAY_BIN
        [[ $name == baseline ]] && bin=$BASELINE_BIN
        start_bg "$name-w$w" env GATEWAY_WORKERS="$w" "$bin" --config "$GATEWAY_CONFIG" --workers "$w"
        ;;
    esac
}

# Targets, interleaved: every round runs each target once (throughput, then the
# fixed rate), in an order rotated by one each round, so that drift in the
# background load of a shared machine hits every target alike instead of whichever
# happened to run during a noisy minute. Each proxy is started fresh for each round.
TARGETS=()
for name in $PROXIES; do
    case $name in
    direct) TARGETS+=("direct:-") ;;
    nginx | haproxy | gateway | baseline)
        if [[ $name == gateway && ! -x "$GATEWAY_BIN" ]]; then
            log "gateway: $GATEWAY_BIN not built (cargo build --release -p gateway); row pending"
            printf 'gateway\t-\tpending\n' >>"$RESULTS"
            continue
        fi
        for w in $WORKERS; do TARGETS+=("$name:$w"); done
        ;;
    *) die "unknown target $name (PROXIES: direct nginx haproxy gateway baseline)" ;;
    esac
done
((${#TARGETS[@]})) || die "nothing to measure"
n=${#TARGETS[@]}
per_round=$(python3 -c "import re
d=lambda v: sum(int(x)*{'ms':0.001,'s':1,'m':60,'h':3600}[u] for x,u in re.findall(r'(\d+)(ms|s|m|h)', v))
print(int(d('$WARMUP') + d('$DURATION') + d('$RATE_DURATION') + 2))")
log "${#TARGETS[@]} targets x $REPEATS rounds, about $((n * REPEATS * per_round / 60 + 1)) min"

for round in $(seq "$REPEATS"); do
    for ((k = 0; k < n; k++)); do
        t=${TARGETS[$(((k + round - 1) % n))]}
        name=${t%%:*} w=${t#*:}
        if [[ $name == direct ]]; then
            measure_round direct - "" "$UP1" "$round" || log "direct: round $round failed"
            continue
        fi
        start_proxy "$name" "$w"
        pid=$LAST_PID
        if ! wait_http "http://127.0.0.1:$PROXY_PORT/" 15; then
            log "$name-w$w did not become ready: $(tail -n 5 "$TMP/$name-w$w.log")"
            stop_pid "$pid"
            continue
        fi
        if [[ $name == gateway ]]; then
            curl -sf --max-time 2 "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null ||
                log "gateway: admin /ready not answering on :$ADMIN_PORT"
        fi
        measure_round "$name" "$w" "$pid" "$PROXY_PORT" "$round" || log "$name-w$w: round $round failed"
        if [[ $name == gateway ]]; then
            curl -sf --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$TMP/gateway-w$w-r$round-metrics.txt" || true
        fi
        stop_pid "$pid"
        sleep 1
    done
done

# rounds -> one row per target (the columns table.py reads)
python3 - "$ROUNDS" "$RESULTS" "$CLK_TCK" "${TARGETS[@]}" <<'PY'
import csv, statistics, sys
rounds_path, out_path, tck = sys.argv[1], sys.argv[2], float(sys.argv[3])
order = [tuple(t.split(":", 1)) for t in sys.argv[4:]]
rows = list(csv.DictReader(open(rounds_path), delimiter="\t"))
f = float
with open(out_path, "a") as out:
    for name, w in order:
        rs = [r for r in rows if r["proxy"] == name and r["workers"] == w]
        if not rs:
            out.write(f"{name}\t{w}\tfailed\n")
            continue
        rps = [f(r["ok"]) / f(r["secs"]) for r in rs]
        med = lambda k: "%.4f" % statistics.median(f(r[k]) for r in rs)
        ok = sum(int(r["ok"]) for r in rs)
        rok = sum(int(r["rate_ok"]) for r in rs)
        proxy = name != "direct"
        cpu_sat = "%.2f" % (sum(int(r["ticks_sat"]) for r in rs) / tck * 1e6 / max(ok, 1)) if proxy else ""
        cpu_rate = "%.2f" % (sum(int(r["ticks_rate"]) for r in rs) / tck * 1e6 / max(rok, 1)) if proxy else ""
        rss_load = max((int(r["rss_load_kb"]) for r in rs if r["rss_load_kb"]), default="")
        last = rs[-1]
        rate_ach = statistics.median(f(r["rate_ok"]) / f(r["rate_secs"]) for r in rs)
        per_req = lambda k, scale: "%.2f" % (sum(f(r[k]) for r in rs) * scale / max(ok, 1))
        us = 1e6 / tck
        out.write("\t".join(str(x) for x in [
            name, w, "%.0f" % statistics.median(rps), ",".join("%.0f" % x for x in rps),
            med("p50_ms"), med("p99_ms"), med("p999_ms"), cpu_sat, cpu_rate, rss_load,
            last["rss_hold_kb"], last["hold_ok"], sum(int(r["up_conns"]) for r in rs),
            sum(int(r["up_reqs"]) for r in rs), ok, sum(int(r["errors"]) for r in rs),
            "%.0f" % rate_ach, per_req("mach_busy", us), per_req("mach_idle", us),
            per_req("up_ticks", us), per_req("mach_ctxt", 1)]) + "\n")
PY

# ---- table -------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average $LOAD_START at start, $LOAD_END at end."
    echo "Versions: $(oha --version 2>/dev/null | head -n 1); $(nginx -v 2>&1); $(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3)."
    [[ -n "$GATEWAY_NOTE" ]] && echo "Gateway: $GATEWAY_NOTE; repo HEAD at the end of the run $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?')."
    [[ -n "$BASELINE_NOTE" ]] && echo "Baseline: $BASELINE_NOTE."
    echo
} >"$TMP/table.md"
python3 "$HERE/table.py" "$RESULTS" "$CONNS" "$DURATION" "$REPEATS" "$RATE" "$RATE_CONNS" "$RATE_DURATION" "$HOLD_CONNS" >>"$TMP/table.md"
echo
cat "$TMP/table.md"
