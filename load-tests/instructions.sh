#!/usr/bin/env bash
# User-space instructions and heap allocations per proxied request, the gateway against
# nginx (and against a second gateway build), under the benchmark's load: the figures
# of this suite that a busy machine does not move. callgrind counts each process's own
# instructions, whatever else runs (the same build, load and count repeat to ~1 %);
# the kernel's part of a request's cost (its TCP work, about two thirds on loopback)
# is not in it: compare.sh measures the whole, with the machine's noise.
#
# Runs profile.sh (TOOL=callgrind) for each target at saturation (64 connections) and
# at a fixed 1,000 req/s (32 connections), one worker or process each, and prints a
# markdown table with ratios to nginx.
#
#   load-tests/instructions.sh                               # target/release/gateway and nginx
#   GATEWAY_BIN=target/pgo/release/gateway BASELINE_BIN=/tmp/old-gateway load-tests/instructions.sh
#
# Environment: GATEWAY_BIN [target/release/gateway], BASELINE_BIN [unset: no baseline],
#   DURATION [5s] (each counted load), RATE [1000] (the fixed-rate load), OUT_DIR (keep
#   each run's callgrind output and log). ~1 min per run, six runs with a baseline.
# All load goes to 127.0.0.1, every run bounded in time (profile.sh's timeouts).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=instructions
. "$HERE/lib.sh"

DURATION=${DURATION:-5s}
RATE=${RATE:-1000}
need_tools valgrind oha nginx python3
[[ -x "$GATEWAY_BIN" ]] || die "$GATEWAY_BIN not found: cargo build --release -p gateway"
[[ -z "${BASELINE_BIN:-}" || -x "$BASELINE_BIN" ]] || die "BASELINE_BIN=$BASELINE_BIN is not executable"

targets=(gateway nginx)
[[ -n "${BASELINE_BIN:-}" ]] && targets=(gateway baseline nginx)

results=$TMP/results.tsv
: >"$results"
for target in "${targets[@]}"; do
    for load in saturation rate; do
        # One worker, and no fixed rate at saturation, whatever the caller's environment says.
        env_args=(TOOL=callgrind DURATION="$DURATION" WORKERS=1)
        case $target in
        gateway) env_args+=(TARGET=gateway GATEWAY_BIN="$GATEWAY_BIN") ;;
        baseline) env_args+=(TARGET=gateway GATEWAY_BIN="$BASELINE_BIN") ;;
        nginx) env_args+=(TARGET=nginx) ;;
        esac
        case $load in
        saturation) env_args+=(CONNS=64 RATE=) ;;
        rate) env_args+=(CONNS=32 RATE="$RATE") ;;
        esac
        run_log=$TMP/$target-$load.log
        log "$target, $load: profile.sh ${env_args[*]}"
        run_dir=$TMP/$target-$load
        env "${env_args[@]}" OUT_DIR="$run_dir" "$HERE/profile.sh" >"$run_log" 2>&1 ||
            die "profile.sh failed for $target ($load): $(tail -n 5 "$run_log")"
        ins=$(sed -n 's/.*instructions per request (start-up excluded): \([0-9]*\).*/\1/p' "$run_log")
        allocs=$(sed -n 's/^heap allocations per request: \([0-9.]*\).*/\1/p' "$run_log")
        reqs=$(sed -n 's/^requests proxied under load: \([0-9]*\);.*/\1/p' "$run_log")
        [[ -n "$ins" && -n "$allocs" ]] || die "no count from profile.sh for $target ($load): $(tail -n 5 "$run_log")"
        log "$target, $load: $ins instructions, $allocs allocations per request over $reqs requests"
        printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$load" "$ins" "$allocs" "$reqs" >>"$results"
    done
done

python3 - "$results" "$RATE" "$GATEWAY_BIN" "${BASELINE_BIN:-}" <<'PY'
import sys
path, rate, gateway, baseline = sys.argv[1:5]
rows = {}
for line in open(path):
    target, load, ins, allocs, reqs = line.split("\t")
    rows[(target, load)] = (int(ins), float(allocs), int(reqs))
print(f"Gateway: {gateway}" + (f"; baseline: {baseline}" if baseline else ""))
print()
print(f"| target | instructions / request, saturation | × nginx | at {rate} req/s | × nginx "
      f"| heap allocations / request, saturation | at {rate} req/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
targets = [t for t in ("gateway", "baseline", "nginx") if (t, "saturation") in rows]
for t in targets:
    sat, rat = rows[(t, "saturation")], rows[(t, "rate")]
    ratio = lambda mine, load: f"{mine / rows[('nginx', load)][0]:.2f}×"
    print(f"| {t} | {sat[0]:,} | {ratio(sat[0], 'saturation')} | {rat[0]:,} | {ratio(rat[0], 'rate')} "
          f"| {sat[1]:.2f} | {rat[1]:.2f} |")
if "baseline" in targets:
    for load, name in (("saturation", "saturation"), ("rate", f"{rate} req/s")):
        g, b = rows[("gateway", load)][0], rows[("baseline", load)][0]
        print(f"\ngateway against baseline at {name}: {g - b:+,} instructions per request ({g / b:.3f}×)", end="")
    print()
PY
