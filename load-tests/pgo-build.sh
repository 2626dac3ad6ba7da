#!/usr/bin/env bash
# Profile-guided build of the gateway: the release binary, laid out by how it runs.
#
# 1. builds an instrumented gateway (rustc -Cprofile-generate) into target/pgo-instrumented;
# 2. runs it behind the benchmark's two nginx upstreams (bench-gateway.toml) under a
#    mix of loads with oha, at 1 and 2 workers: keep-alive GETs at saturation and at
#    a fixed rate, uploads of 2 KB and 64 KB, h2c, and scrapes of the admin port;
#    every response must be a 200; it stops gracefully, which writes the profile;
# 3. merges the profile with llvm-profdata and builds the gateway again with
#    -Cprofile-use into target/pgo, and prints the binary's path.
#
# The same source: only code layout and inlining follow the profile (hot paths packed
# together and inlined, cold ones moved away and optimised for size). On the benchmark
# this cut user-space instructions per request by 21-25 % and instruction-cache misses
# by 41-44 % (load-tests/README.md, "Profile-guided build").
#
#   load-tests/pgo-build.sh          # ~5-15 min on 2 cores: two release builds and ~1 min of load
#
# Needs: oha, nginx, curl, ss (as compare.sh) and llvm-profdata that reads the profiles
# this rustc writes: rustup's `llvm-tools` component (`rustup component add llvm-tools`),
# or a packaged one (`llvm-profdata-NN`; here Debian's llvm-19 read rustc 1.95.0's, LLVM 22).
# Environment: PGO_OUT [target/pgo] (final CARGO_TARGET_DIR),
#   PGO_LLVM_PROFDATA [found as above], TRAIN_SECS [5] (seconds per saturating load),
#   PGO_TEST [0]: 1 first runs the gateway's tests (unit and integration) built from the
#   same source with the same profile (cargo builds tests with the test-only dependency
#   features, so they are not byte for byte the binary; the binary is built last).
# All load goes to 127.0.0.1, every run bounded in time.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=pgo-build
# shellcheck source=lib.sh
. "$HERE/lib.sh"

REPO=$LT_REPO
INSTR_DIR=$REPO/target/pgo-instrumented
PGO_OUT=${PGO_OUT:-$REPO/target/pgo}
mkdir -p "$PGO_OUT"
PGO_OUT=$(cd "$PGO_OUT" && pwd) # rustc needs the profile's absolute path: crates build in their own dirs
# Its release/ is deleted when the profile changes: never the plain build's target dir.
[[ "$PGO_OUT" != "$(mkdir -p "$REPO/target" && cd "$REPO/target" && pwd)" ]] ||
    die "PGO_OUT must not be the plain build's target dir ($PGO_OUT): give it a dir of its own"
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
"$PROFDATA" --version >/dev/null 2>&1 || die "$PROFDATA does not run"
log "llvm-profdata: $PROFDATA ($("$PROFDATA" --version 2>&1 | grep -m1 -i version | sed 's/^ *//')); rustc: $(rustc -vV | grep LLVM)"

# RUSTFLAGS replaces the config's rustflags, so any the caller set are kept by hand.
# CARGO_ENCODED_RUSTFLAGS would silently override the profile flags.
[[ -z "${CARGO_ENCODED_RUSTFLAGS:-}" ]] || die "unset CARGO_ENCODED_RUSTFLAGS (pass extra flags in RUSTFLAGS)"
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
load() { # status oha args...: one bounded run; every response must have that status
    local want=$1 out codes
    shift
    out=$(timeout 120 oha --no-tui -w "$@") || die "training load failed: oha $*"
    # oha's summary lists "[code] N responses" per status, and errors apart.
    codes=$(grep -oE '^ *\[[0-9]{3}\] [0-9]+ responses' <<<"$out" | tr -s ' ' | sed 's/^ //' | paste -sd, -)
    log "oha $*: $codes"
    [[ "$codes" =~ ^\[$want\]\ [0-9]+\ responses$ ]] && ! grep -q '^Error distribution' <<<"$out" ||
        die "training load answered other than $want: $codes $(grep -A3 '^Error distribution' <<<"$out")"
}
for w in 1 2; do
    start_gateway "$w"
    gw=$LAST_PID
    load 200 -c 64 -z "${TRAIN_SECS}s" "$url/"
    load 200 -c 32 -q 5000 -z "${TRAIN_SECS}s" "$url/"
    load 200 -c 16 -z 2s -m POST -D "$body_2k" "$url/"
    load 200 -c 8 -z 2s -m POST -D "$body_64k" "$url/"
    load 200 -c 16 -z 2s --http2 -p 8 "$url/"
    for _ in $(seq 20); do
        curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" || die "admin /metrics did not answer"
    done
    stop_pid "$gw" # SIGTERM: a graceful exit, which writes the profile
    shopt -s nullglob
    raw=("$PROFILES"/*.profraw)
    shopt -u nullglob
    ((${#raw[@]})) ||
        die "the instrumented gateway ($w workers) wrote no profile: did it exit gracefully? ($(tail -n 3 "$TMP/gateway-w$w.log"))"
    mkdir -p "$PROFILES/w$w" && mv "${raw[@]}" "$PROFILES/w$w/"
done
raw=("$PROFILES"/w1/*.profraw "$PROFILES"/w2/*.profraw)
log "training done: ${#raw[@]} raw profiles (1 and 2 workers)"

log "3/3: merge, then the profile-guided build into $PGO_OUT"
"$PROFDATA" merge -o "$TMP/gateway.profdata" "${raw[@]}" ||
    die "$PROFDATA could not read the profiles: it must match rustc's LLVM or be newer ('rustup component add llvm-tools')"
# The profile's name carries its hash: cargo does not watch the file's content, but a
# new name is a new RUSTFLAGS, which rebuilds every crate against the new profile. The
# builds for an older profile can never be used again, so they go.
profile=$PGO_OUT/gateway-$(sha256sum "$TMP/gateway.profdata" | cut -c1-12).profdata
if [[ ! -f "$profile" ]]; then
    rm -rf "$PGO_OUT/release" "$PGO_OUT"/gateway-*.profdata
    cp "$TMP/gateway.profdata" "$profile"
fi
pgo_cargo() { # cargo subcommand: with the profile, into $PGO_OUT
    RUSTFLAGS="$BASE_FLAGS -Cprofile-use=$profile" CARGO_TARGET_DIR=$PGO_OUT \
        cargo "$1" --release --locked -p gateway --manifest-path "$REPO/Cargo.toml"
}
if [[ "${PGO_TEST:-0}" == 1 ]]; then
    log "the gateway's tests, built with the same profile"
    pgo_cargo test
fi
pgo_cargo build
log "built $PGO_OUT/release/gateway (profile: $profile)"
echo "$PGO_OUT/release/gateway"
