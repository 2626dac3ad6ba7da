#!/usr/bin/env bash
# Profile-guided build of the gateway: the release binary, laid out by how it runs.
#
# 1. builds an instrumented gateway (rustc -Cprofile-generate) into target/pgo-instrumented;
# 2. runs it behind the benchmark's two nginx upstreams (bench-gateway.toml) under a
#    mix of loads with oha, at 1 and 2 workers: keep-alive GETs at saturation and at
#    a fixed rate, uploads of 2 KB and 64 KB, h2c, responses the upstream answers 404,
#    and scrapes of the admin port; it stops gracefully, which writes the profile;
# 3. merges the profile with llvm-profdata and builds the gateway again with
#    -Cprofile-use into target/pgo, and prints the binary's path.
#
# Same source, same features, same tests: only code layout and inlining follow the
# profile (hot paths packed together, cold ones moved away). On the benchmark this cut
# user-space instructions per request by ~16 % and instruction-cache misses by ~30 %
# (load-tests/README.md, "Profile-guided build").
#
#   load-tests/pgo-build.sh          # ~10 min on 2 cores: two release builds and ~1 min of load
#
# Needs: oha, nginx, curl, ss (as compare.sh) and llvm-profdata that reads the profiles
# this rustc writes: rustup's `llvm-tools` component (`rustup component add llvm-tools`),
# or a packaged one (`llvm-profdata-NN`; Debian's llvm-19 reads rustc 1.95's, LLVM 22).
# Environment: PGO_OUT [target/pgo] (final CARGO_TARGET_DIR),
#   PGO_LLVM_PROFDATA [found as above], TRAIN_SECS [5] (seconds per saturating load).
# All load goes to 127.0.0.1, every run bounded in time.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=pgo-build
# shellcheck source=lib.sh
. "$HERE/lib.sh"

REPO=$LT_REPO
INSTR_DIR=$REPO/target/pgo-instrumented
PGO_OUT=${PGO_OUT:-$REPO/target/pgo}
TRAIN_SECS=${TRAIN_SECS:-5}
PROFILES=$INSTR_DIR/profiles

need_tools cargo rustc oha nginx curl ss
check_ports $UP1 $UP2 $ST1 $ST2 $PROXY_PORT $ADMIN_PORT

# llvm-profdata: rustup's own (same LLVM as rustc), else a packaged one, newest first.
find_profdata() {
    local sysroot c
    if [[ -n "${PGO_LLVM_PROFDATA:-}" ]]; then echo "$PGO_LLVM_PROFDATA"; return; fi
    sysroot=$(rustc --print sysroot)
    for c in "$sysroot"/lib/rustlib/*/bin/llvm-profdata; do
        [[ -x "$c" ]] && { echo "$c"; return; }
    done
    c=$(compgen -c llvm-profdata | sort -t- -k3 -n -r | head -n 1)
    [[ -n "$c" ]] && command -v "$c" && return
    return 1
}
PROFDATA=$(find_profdata) ||
    die "no llvm-profdata: 'rustup component add llvm-tools', or install a packaged one (Debian: apt-get install llvm-19)"
log "llvm-profdata: $PROFDATA ($("$PROFDATA" --version 2>&1 | grep -m1 -i version | sed 's/^ *//')); rustc: $(rustc -vV | grep LLVM)"

# RUSTFLAGS replaces the config's rustflags, so any the caller set are kept by hand.
BASE_FLAGS=${RUSTFLAGS:-}

log "1/3: instrumented build into $INSTR_DIR"
RUSTFLAGS="$BASE_FLAGS -Cprofile-generate=$PROFILES" CARGO_TARGET_DIR=$INSTR_DIR \
    cargo build --release --locked -p gateway --manifest-path "$REPO/Cargo.toml"
# Build scripts and proc macros were instrumented too and wrote profiles while
# building; only the gateway's own run counts.
rm -rf "$PROFILES"
GATEWAY_BIN=$INSTR_DIR/release/gateway

log "2/3: training run"
start_upstreams
body_2k=$TMP/body-2k body_64k=$TMP/body-64k
head -c 2048 /dev/zero | tr '\0' a >"$body_2k"
head -c 65536 /dev/zero | tr '\0' b >"$body_64k"
url=http://127.0.0.1:$PROXY_PORT
load() { # oha args...: one bounded run; its summary's first lines go to the log
    timeout 120 oha --no-tui "$@" | sed -n '2,3p' >>"$TMP/train.log"
}
for w in 1 2; do
    start_gateway "$w"
    gw=$LAST_PID
    load -c 64 -z "${TRAIN_SECS}s" "$url/"
    load -c 32 -q 5000 -z "${TRAIN_SECS}s" "$url/"
    load -c 16 -z 2s -m POST -D "$body_2k" "$url/"
    load -c 8 -z 2s -m POST -D "$body_64k" "$url/"
    load -c 16 -z 2s --http2 -p 8 "$url/"
    load -c 8 -z 1s "$url/no-such-page"
    for _ in $(seq 20); do
        curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" || die "admin /metrics did not answer"
    done
    stop_pid "$gw" # SIGTERM: a graceful exit, which writes the profile
done
shopt -s nullglob
raw=("$PROFILES"/*.profraw)
((${#raw[@]})) || die "the instrumented gateway wrote no profile (did it exit gracefully? $TMP/gateway-w2.log)"
log "training done: $(grep -c 'Success rate' "$TMP/train.log") loads, ${#raw[@]} raw profiles"

log "3/3: merge, then the profile-guided build into $PGO_OUT"
"$PROFDATA" merge -o "$TMP/gateway.profdata" "${raw[@]}" ||
    die "$PROFDATA could not read the profiles: it must match rustc's LLVM or be newer ('rustup component add llvm-tools')"
# The profile's name carries its hash: cargo does not watch the file's content, but a
# new name is a new RUSTFLAGS, which rebuilds every crate against the new profile.
mkdir -p "$PGO_OUT"
profile=$PGO_OUT/gateway-$(sha256sum "$TMP/gateway.profdata" | cut -c1-12).profdata
cp "$TMP/gateway.profdata" "$profile"
RUSTFLAGS="$BASE_FLAGS -Cprofile-use=$profile" CARGO_TARGET_DIR=$PGO_OUT \
    cargo build --release --locked -p gateway --manifest-path "$REPO/Cargo.toml"
log "built $PGO_OUT/release/gateway (profile: $profile)"
echo "$PGO_OUT/release/gateway"
