# Shared shell helpers for compare.sh and the oha scenarios (sourced, not run).
# Provides: log/die, need_tools, check_ports, a mktemp dir ($TMP) removed on exit
# together with every process started through start_bg, config rendering, and
# starting the bench upstreams / the gateway with bench-gateway.toml.
# Nothing here installs anything.

LT_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_REPO=$(cd "$LT_HERE/.." && pwd)

UP1=18081 UP2=18082 ST1=18181 ST2=18182 PROXY_PORT=18090 ADMIN_PORT=18099
GATEWAY_BIN=${GATEWAY_BIN:-$LT_REPO/target/release/gateway}
GATEWAY_CONFIG=${GATEWAY_CONFIG:-$LT_HERE/bench-gateway.toml}

log() { printf '[%s %s] %s\n' "${LT_NAME:-load-tests}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_tools() { # tool...
    local missing=() t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if ((${#missing[@]})); then
        die "missing tools: ${missing[*]} (install them as load-tests/README.md says, section 'Install the tools')"
    fi
    if [[ " $* " == *" oha "* ]] && ! oha --help 2>&1 | grep -q -- '--output-format'; then
        die "this oha has no --output-format (need a recent oha: cargo install oha --locked)"
    fi
}

check_ports() { # port...
    local p
    for p in "$@"; do
        if ss -Htln "sport = :$p" | grep -q .; then
            die "port 127.0.0.1:$p is already in use; stop whatever listens there first"
        fi
    done
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-loadtest.XXXXXX")
PIDS=()
lt_cleanup() {
    local rc=$?
    set +e
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    rm -f "$TMP/gateway-bin" # compare.sh's copy of the binary: not worth keeping
    if [[ -n "${OUT_DIR:-}" ]]; then
        mkdir -p "$OUT_DIR" && cp -r "$TMP"/. "$OUT_DIR"/ 2>/dev/null && log "raw results copied to $OUT_DIR"
    fi
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap lt_cleanup EXIT
trap 'exit 130' INT TERM

LT_USER_LINE=""
[[ $(id -u) == 0 ]] && LT_USER_LINE="user root;"

render() { # template out dir [port] [status_port] [workers]
    sed -e "s|@DIR@|$3|g" -e "s|@PORT@|${4:-}|g" -e "s|@STATUS_PORT@|${5:-}|g" \
        -e "s|@WORKERS@|${6:-1}|g" -e "s|@USER@|$LT_USER_LINE|g" "$1" >"$2"
}

# start_bg name cmd...: start in the background, output to $TMP/name.log; pid in $LAST_PID
LAST_PID=""
start_bg() {
    local name=$1; shift
    "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop_pid() { # TERM, up to 10 s, then KILL
    local pid=$1 p keep=()
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

wait_http() { # url seconds
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.2
    done
    return 1
}

# pids of a process and its direct children (nginx master + workers)
tree_pids() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }

user_sys_ticks() { # pid -> "utime stime" (clock ticks) summed over the process tree, all threads
    local u=0 s=0 pid stat
    for pid in $(tree_pids "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # after "pid (comm) " the fields start at 3 (state); utime/stime are
        # fields 14/15 of /proc/<pid>/stat, i.e. the 12th and 13th here
        set -- $stat
        u=$((u + ${12})) s=$((s + ${13}))
    done
    echo "$u $s"
}

run_delay_ns() { # pid -> "run_delay_ns timeslices" summed over the process tree, all threads
    # /proc/<pid>/task/<tid>/schedstat: time on the CPU, time waiting on a run queue
    # (runnable but not running), timeslices run; all in ns since the thread started
    local pid
    for pid in $(tree_pids "$1"); do
        cat "/proc/$pid/task/"*/schedstat 2>/dev/null || true
    done | awk '{d += $2; n += $3} END {printf "%d %d\n", d, n}'
}

switches() { # pid... -> "voluntary involuntary" context switches summed over the process trees, all threads
    # voluntary: the thread blocked (say in epoll_wait); involuntary: it was preempted,
    # say by a task it woke that the kernel placed on its CPU
    local root pid
    for root in "$@"; do
        for pid in $(tree_pids "$root"); do
            cat "/proc/$pid/task/"*/status 2>/dev/null || true
        done
    done | awk '$1 == "voluntary_ctxt_switches:" {v += $2} $1 == "nonvoluntary_ctxt_switches:" {n += $2}
        END {printf "%d %d\n", v, n}'
}

start_upstreams() { # two one-worker nginx upstreams on $UP1/$UP2 (status on $ST1/$ST2)
    local pair port st d
    for pair in "$UP1:$ST1" "$UP2:$ST2"; do
        port=${pair%:*} st=${pair#*:}
        d=$TMP/upstream-$port; mkdir -p "$d"
        render "$LT_HERE/conf/upstream-nginx.conf.in" "$d/nginx.conf" "$d" "$port" "$st"
        start_bg "upstream-$port" nginx -p "$d" -c "$d/nginx.conf"
        wait_http "http://127.0.0.1:$port/" 10 ||
            die "upstream on :$port did not start: $(tail -n 5 "$TMP/upstream-$port.log" "$d/error.log" 2>/dev/null)"
    done
    log "upstreams up on 127.0.0.1:$UP1 and :$UP2"
}

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

start_gateway() { # workers; pid in $LAST_PID; waits until it proxies
    local w=$1
    [[ -x "$GATEWAY_BIN" ]] || die "$GATEWAY_BIN not found: build it with 'cargo build --release -p gateway'"
    start_bg "gateway-w$w" env GATEWAY_WORKERS="$w" "$GATEWAY_BIN" --config "$GATEWAY_CONFIG" --workers "$w"
    wait_http "http://127.0.0.1:$PROXY_PORT/" 15 ||
        die "gateway did not start: $(tail -n 5 "$TMP/gateway-w$w.log")"
    log "gateway up on 127.0.0.1:$PROXY_PORT (workers $w, pid $LAST_PID)"
}

require_local_url() { # url: load goes to this machine only, unless ALLOW_REMOTE=1
    local hostport=${1#*://}
    hostport=${hostport%%/*}
    case $hostport in
    127.0.0.1 | 127.0.0.1:* | localhost | localhost:* | \[::1\] | \[::1\]:*) ;;
    *)
        [[ "${ALLOW_REMOTE:-0}" == 1 ]] ||
            die "$1 is not on this machine; these scenarios send load to 127.0.0.1 only (ALLOW_REMOTE=1 overrides)"
        ;;
    esac
}
