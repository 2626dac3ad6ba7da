#!/usr/bin/env bash
# oha scenario: steady GET through the gateway.
#
#   load-tests/oha/steady-get.sh                 # against the full stack on :8000
#   MODE=bench load-tests/oha/steady-get.sh      # starts two nginx upstreams and the
#                                                # gateway with bench-gateway.toml on :18090
# Environment: BASE_URL [http://127.0.0.1:8000] (stack mode), CONNS [64],
#   DURATION [30s], RATE [unset = as fast as possible; e.g. 5000 for oha -q],
#   WORKERS [2] (bench mode: gateway worker threads), MAX_ERROR_PCT [0].
# In stack mode it first seeds a product (PUT /inventory/products/{id}) and then
# reads it (GET /inventory/products/{id}): gateway + inventory service.
# Exits non-zero when requests fail. Prints oha's figures; OUT_DIR keeps the JSON.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=steady-get
. "$HERE/../lib.sh"

MODE=${MODE:-stack}
CONNS=${CONNS:-64}
DURATION=${DURATION:-30s}
RATE=${RATE:-}
MAX_ERROR_PCT=${MAX_ERROR_PCT:-0}
need_tools oha python3 curl

case $MODE in
bench)
    need_tools nginx ss
    check_ports $UP1 $UP2 $ST1 $ST2 $PROXY_PORT $ADMIN_PORT
    start_upstreams
    start_gateway "${WORKERS:-2}"
    URL="http://127.0.0.1:$PROXY_PORT/"
    ;;
stack)
    BASE_URL=${BASE_URL:-http://127.0.0.1:8000}
    BASE_URL=${BASE_URL%/}
    require_local_url "$BASE_URL"
    PRODUCT="oha-steady-$$"
    curl -sf --max-time 5 -X PUT "$BASE_URL/inventory/products/$PRODUCT" \
        -H 'content-type: application/json' -d '{"stock": 1000}' >/dev/null ||
        die "could not seed $BASE_URL/inventory/products/$PRODUCT: is the stack running (cargo run --release --bin stack)?"
    URL="$BASE_URL/inventory/products/$PRODUCT"
    ;;
*) die "MODE must be stack or bench" ;;
esac

args=(-c "$CONNS" -z "$DURATION")
[[ -n "$RATE" ]] && args+=(-q "$RATE")
log "GET $URL with ${args[*]}"
timeout 3600 oha --no-tui --output-format json "${args[@]}" "$URL" >"$TMP/steady-get.json"
python3 "$HERE/summarize.py" "$TMP/steady-get.json" --label "steady GET $URL (${args[*]})" \
    --max-error-pct "$MAX_ERROR_PCT"
